//! Finds the application config file, in the guide's order: `--config`, `FERRIS_CONFIG_FILE`,
//! `./ferris.yaml`, `./configs/ferris.yaml`, `~/.ferris/config.yaml`, `/etc/ferris/config.yaml`.

use std::path::{Path, PathBuf};

use super::error::ConfigError;
use super::substitute::Variables;

/// Where discovery looks, so that tests can point it at temporary directories.
#[derive(Debug, Clone)]
pub struct Places {
    /// The working directory.
    pub cwd: PathBuf,
    /// The home directory, if known.
    pub home: Option<PathBuf>,
    /// The system directory (`/etc/ferris`).
    pub etc: PathBuf,
}

impl Places {
    /// The real places: the process's working directory, `$HOME` and `/etc/ferris`.
    pub fn system(vars: &Variables) -> Self {
        Self {
            cwd: std::env::current_dir().unwrap_or_else(|_| PathBuf::from(".")),
            home: vars.env("HOME").map(PathBuf::from),
            etc: PathBuf::from("/etc/ferris"),
        }
    }
}

/// The config file to use, or none. An explicit `--config` or `FERRIS_CONFIG_FILE` that does
/// not exist is an error; the other places are used only when present.
pub fn discover(cli: Option<&Path>, vars: &Variables, places: &Places) -> Result<Option<PathBuf>, ConfigError> {
    let missing = |p: &Path, by: &str| ConfigError::Unreadable {
        what: "config file",
        path: p.to_path_buf(),
        referenced_by: by.to_string(),
        message: "no such file".into(),
    };
    if let Some(p) = cli {
        let (p, _) = vars.substitute(&p.display().to_string(), "--config")?;
        let p = PathBuf::from(p);
        return if p.is_file() { Ok(Some(p)) } else { Err(missing(&p, "--config")) };
    }
    if let Some(p) = vars.env("FERRIS_CONFIG_FILE").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        return if p.is_file() { Ok(Some(p)) } else { Err(missing(&p, "FERRIS_CONFIG_FILE")) };
    }
    let mut candidates = vec![places.cwd.join("ferris.yaml"), places.cwd.join("configs/ferris.yaml")];
    if let Some(h) = &places.home {
        candidates.push(h.join(".ferris/config.yaml"));
    }
    candidates.push(places.etc.join("config.yaml"));
    Ok(candidates.into_iter().find(|p| p.is_file()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn the_guides_order() {
        let d = tempfile::tempdir().unwrap();
        let (cwd, home, etc) = (d.path().join("work"), d.path().join("home"), d.path().join("etc"));
        for dir in [&cwd, &cwd.join("configs"), &home.join(".ferris"), &etc] {
            std::fs::create_dir_all(dir).unwrap();
        }
        let places = Places { cwd: cwd.clone(), home: Some(home.clone()), etc: etc.clone() };
        let none = Variables::new(BTreeMap::new(), BTreeMap::new());
        assert_eq!(discover(None, &none, &places).unwrap(), None);
        let steps = [etc.join("config.yaml"), home.join(".ferris/config.yaml"), cwd.join("configs/ferris.yaml"), cwd.join("ferris.yaml")];
        for p in &steps {
            std::fs::write(p, "profiles: {}\n").unwrap();
            assert_eq!(discover(None, &none, &places).unwrap().as_ref(), Some(p), "after creating {}", p.display());
        }
        let env_file = d.path().join("env.yaml");
        std::fs::write(&env_file, "").unwrap();
        let env = Variables::new([("FERRIS_CONFIG_FILE".to_string(), env_file.display().to_string())].into(), BTreeMap::new());
        assert_eq!(discover(None, &env, &places).unwrap(), Some(env_file.clone()));
        let cli = d.path().join("cli.yaml");
        std::fs::write(&cli, "").unwrap();
        assert_eq!(discover(Some(&cli), &env, &places).unwrap(), Some(cli));
        assert!(discover(Some(Path::new("/nope.yaml")), &env, &places).unwrap_err().to_string().contains("--config"));
        let bad = Variables::new([("FERRIS_CONFIG_FILE".to_string(), "/nope.yaml".to_string())].into(), BTreeMap::new());
        assert!(discover(None, &bad, &places).unwrap_err().to_string().contains("FERRIS_CONFIG_FILE"));
    }
}
