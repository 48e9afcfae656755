//! Output path templates: `{date}`, `{hour}`, `{timestamp}`, `{batch_id}`, and the S3-style
//! `{year}`, `{month}`, `{day}`, plus time-based rotation.
//!
//! ```sql
//! WITH ('audit.path' = 'out/orders_{date}.jsonl', 'audit.rotation' = 'hourly', 'audit.max_files' = '24')
//! ```

use chrono::{DateTime, Utc};

/// How often a sink starts a new file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rotation {
    /// One file for the whole run (or as the template says).
    Never,
    /// A new file every hour.
    Hourly,
    /// A new file every day.
    Daily,
}

impl Rotation {
    /// Reads `rotation`: `hourly`, `daily`, or `never` (the default).
    pub fn from_properties(props: &crate::properties::Properties) -> crate::error::Result<Self> {
        match props.get("rotation").map(|r| r.to_ascii_lowercase()) {
            None => Ok(Rotation::Never),
            Some(r) => match r.as_str() {
                "none" | "never" => Ok(Rotation::Never),
                "hourly" | "hour" => Ok(Rotation::Hourly),
                "daily" | "day" => Ok(Rotation::Daily),
                _ => Err(crate::error::ConnectorError::invalid(props.full_key("rotation"), format!("unknown rotation '{r}'; use hourly or daily"))),
            },
        }
    }
}

/// A parsed path template.
#[derive(Debug, Clone)]
pub struct PathTemplate {
    template: String,
    rotation: Rotation,
}

const VARIABLES: [&str; 7] = ["{date}", "{hour}", "{timestamp}", "{batch_id}", "{year}", "{month}", "{day}"];

impl PathTemplate {
    /// A template for `path`. With a rotation and no time variable in the path, the period
    /// is added before the extension (`audit.jsonl` → `audit-2024-01-31.jsonl`).
    pub fn new(path: &str, rotation: Rotation) -> Self {
        let has_time = ["{date}", "{hour}", "{timestamp}", "{day}"].iter().any(|v| path.contains(v));
        let template = match rotation {
            Rotation::Never => path.to_string(),
            _ if has_time => path.to_string(),
            Rotation::Daily => insert_before_extension(path, "-{date}"),
            Rotation::Hourly => insert_before_extension(path, "-{date}-{hour}"),
        };
        Self { template, rotation }
    }

    /// True when the path does not change during the run.
    pub fn is_fixed(&self) -> bool {
        !VARIABLES.iter().any(|v| self.template.contains(v))
    }

    /// True when every batch goes to a file of its own.
    pub fn per_batch(&self) -> bool {
        self.template.contains("{batch_id}") || self.template.contains("{timestamp}")
    }

    /// The rotation it was built with.
    pub fn rotation(&self) -> Rotation {
        self.rotation
    }

    /// The path for a batch written at `now`.
    pub fn render(&self, now: DateTime<Utc>, batch_id: u64) -> String {
        self.template
            .replace("{date}", &now.format("%Y-%m-%d").to_string())
            .replace("{hour}", &now.format("%H").to_string())
            .replace("{timestamp}", &now.format("%Y%m%dT%H%M%S%.3fZ").to_string())
            .replace("{batch_id}", &batch_id.to_string())
            .replace("{year}", &now.format("%Y").to_string())
            .replace("{month}", &now.format("%m").to_string())
            .replace("{day}", &now.format("%d").to_string())
    }

    /// The deepest directory of the template that holds no variable: every file it renders is
    /// under it.
    pub fn fixed_dir(&self) -> std::path::PathBuf {
        let cut = VARIABLES.iter().filter_map(|v| self.template.find(v)).min().unwrap_or(self.template.len());
        let fixed = &self.template[..cut];
        let dir = match fixed.rfind('/') {
            Some(i) => &fixed[..i],
            None => "",
        };
        if dir.is_empty() && self.template.starts_with('/') {
            std::path::PathBuf::from("/")
        } else if dir.is_empty() {
            std::path::PathBuf::from(".")
        } else {
            std::path::PathBuf::from(dir)
        }
    }

    /// A glob matching every file this template can produce (for `max_files`).
    pub fn glob(&self) -> String {
        let mut g = glob::Pattern::escape(&self.template);
        for v in VARIABLES {
            g = g.replace(&glob::Pattern::escape(v), "*");
        }
        g
    }
}

fn insert_before_extension(path: &str, suffix: &str) -> String {
    let file_start = path.rfind('/').map(|i| i + 1).unwrap_or(0);
    let name = &path[file_start..];
    // keep multi-part extensions such as .jsonl.gz together
    match name.find('.').filter(|i| *i > 0) {
        Some(dot) => format!("{}{}{}", &path[..file_start + dot], suffix, &path[file_start + dot..]),
        None => format!("{path}{suffix}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn renders_variables() {
        let now = Utc.with_ymd_and_hms(2024, 1, 31, 13, 5, 9).unwrap();
        let t = PathTemplate::new("out/{year}/{month}/{day}/orders_{date}_{hour}_{batch_id}.json", Rotation::Never);
        assert_eq!(t.render(now, 7), "out/2024/01/31/orders_2024-01-31_13_7.json");
        assert!(t.per_batch());
        assert_eq!(PathTemplate::new("a/{timestamp}.csv", Rotation::Never).render(now, 0), "a/20240131T130509.000Z.csv");
        assert!(PathTemplate::new("a/b.csv", Rotation::Never).is_fixed());
        assert_eq!(t.fixed_dir(), std::path::PathBuf::from("out"));
        assert_eq!(PathTemplate::new("b.csv", Rotation::Never).fixed_dir(), std::path::PathBuf::from("."));
        assert_eq!(PathTemplate::new("/x/y/{date}/b.csv", Rotation::Never).fixed_dir(), std::path::PathBuf::from("/x/y"));
    }

    #[test]
    fn rotation_adds_the_period() {
        let now = Utc.with_ymd_and_hms(2024, 1, 31, 13, 5, 9).unwrap();
        assert_eq!(PathTemplate::new("logs/audit.jsonl.gz", Rotation::Daily).render(now, 0), "logs/audit-2024-01-31.jsonl.gz");
        assert_eq!(PathTemplate::new("logs/audit", Rotation::Hourly).render(now, 0), "logs/audit-2024-01-31-13");
        assert_eq!(PathTemplate::new("logs/a_{date}.log", Rotation::Daily).render(now, 0), "logs/a_2024-01-31.log");
        assert_eq!(PathTemplate::new("logs/audit.jsonl", Rotation::Daily).glob(), "logs/audit-*.jsonl");
    }
}
