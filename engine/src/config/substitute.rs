//! `${…}` substitution in YAML values, `WITH` values and `config_file` paths.
//!
//! | form | meaning |
//! |---|---|
//! | `${VAR}` | the variable; missing → an error naming it and where it was used |
//! | `${VAR:-default}` | the default when VAR is unset or empty (the default may hold `${…}`) |
//! | `${VAR:?message}` | required: missing → an error with the message |
//! | `${kafka_brokers}` | a variable of the active profile |
//! | `${HOME}`, `${USER}` | system variables |
//! | `${DATE}`, `${TIME}` | today (`2024-01-31`) and now (`13-05-09`), UTC |
//! | `$${…}` | a literal `${…}` |
//!
//! ```sql
//! WITH ('orders.topic' = 'orders-${ENVIRONMENT:-dev}-${VERSION}')
//! ```

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use super::error::ConfigError;

/// Where variable values come from: the environment (a snapshot, so tests need not touch the
/// process's), the active profile's variables, and the dynamic `DATE`/`TIME`.
#[derive(Debug, Clone)]
pub struct Variables {
    env: BTreeMap<String, String>,
    profile: BTreeMap<String, String>,
    profile_name: Option<String>,
    now: DateTime<Utc>,
}

impl Variables {
    /// Variables from an explicit environment and profile.
    pub fn new(env: BTreeMap<String, String>, profile: BTreeMap<String, String>) -> Self {
        Self { env, profile, profile_name: None, now: Utc::now() }
    }

    /// Variables from the process environment and `profile`.
    pub fn from_process(profile: BTreeMap<String, String>) -> Self {
        let mut env: BTreeMap<String, String> = std::env::vars().collect();
        // ${USER} and ${HOME} work even where the shell did not export them.
        if !env.contains_key("USER") {
            let user = env.get("LOGNAME").cloned().or_else(|| whoami::username().ok());
            if let Some(u) = user {
                env.insert("USER".into(), u);
            }
        }
        if !env.contains_key("HOME") {
            if let Some(h) = std::env::home_dir() {
                env.insert("HOME".into(), h.display().to_string());
            }
        }
        // FERRIS_FIXED_TIME (RFC 3339) pins ${DATE} and ${TIME}, for reproducible runs and tests.
        let fixed = env.get("FERRIS_FIXED_TIME").and_then(|t| DateTime::parse_from_rfc3339(t).ok()).map(|t| t.with_timezone(&Utc));
        let vars = Self::new(env, profile);
        match fixed {
            Some(t) => vars.with_now(t),
            None => vars,
        }
    }

    /// Fixes the clock (tests).
    pub fn with_now(mut self, now: DateTime<Utc>) -> Self {
        self.now = now;
        self
    }

    /// Replaces the profile variables.
    pub fn with_profile(mut self, profile: BTreeMap<String, String>) -> Self {
        self.profile = profile;
        self
    }

    /// Replaces the profile variables with those of the profile `name`.
    pub fn with_named_profile(mut self, name: Option<String>, profile: BTreeMap<String, String>) -> Self {
        self.profile = profile;
        self.profile_name = name;
        self
    }

    /// An environment variable.
    pub fn env(&self, name: &str) -> Option<&str> {
        self.env.get(name).map(String::as_str)
    }

    /// The value of `name`: environment, then profile, then the dynamic variables.
    pub fn lookup(&self, name: &str) -> Option<String> {
        if let Some(v) = self.env.get(name) {
            return Some(v.clone());
        }
        if let Some(v) = self.profile.get(name) {
            return Some(v.clone());
        }
        match name {
            "DATE" => Some(self.now.format("%Y-%m-%d").to_string()),
            "TIME" => Some(self.now.format("%H-%M-%S").to_string()),
            _ => None,
        }
    }

    /// Describes where the variables `used` got their values, for `explain`:
    /// `${ENVIRONMENT}, ${kafka_brokers} (profile)`.
    pub fn describe(&self, used: &[String]) -> String {
        used.iter()
            .map(|n| {
                if self.env.contains_key(n) {
                    format!("${{{n}}}")
                } else if self.profile.contains_key(n) {
                    match &self.profile_name {
                        Some(p) => format!("${{{n}}} (profile '{p}')"),
                        None => format!("${{{n}}} (profile)"),
                    }
                } else if n == "DATE" || n == "TIME" {
                    format!("${{{n}}} (dynamic)")
                } else {
                    format!("${{{n}}} (default)")
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Substitutes every `${…}` in `text`. `used_in` says where the text came from, for errors.
    /// Returns the result and the names of the variables used.
    pub fn substitute(&self, text: &str, used_in: &str) -> Result<(String, Vec<String>), ConfigError> {
        let mut used = Vec::new();
        let out = self.expand(text, used_in, &mut used, 0)?;
        Ok((out, used))
    }

    fn expand(&self, text: &str, used_in: &str, used: &mut Vec<String>, depth: usize) -> Result<String, ConfigError> {
        if depth > 8 {
            return Err(ConfigError::Unterminated { used_in: used_in.into(), text: text.into() });
        }
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(i) = rest.find('$') {
            out.push_str(&rest[..i]);
            let after = &rest[i..];
            if let Some(escaped) = after.strip_prefix("$${") {
                out.push_str("${");
                rest = escaped;
                continue;
            }
            if !after.starts_with("${") {
                out.push('$');
                rest = &after[1..];
                continue;
            }
            let body_start = 2;
            let end = matching_brace(&after[body_start..]).ok_or_else(|| ConfigError::Unterminated { used_in: used_in.into(), text: text.into() })?;
            let body = &after[body_start..body_start + end];
            rest = &after[body_start + end + 1..];
            let (name, op, arg) = match (body.find(":-"), body.find(":?")) {
                (Some(d), q) if q.is_none_or(|q| d < q) => (&body[..d], "-", &body[d + 2..]),
                (_, Some(q)) => (&body[..q], "?", &body[q + 2..]),
                _ => (body, "", ""),
            };
            let name = name.trim();
            if !used.iter().any(|u| u == name) {
                used.push(name.to_string());
            }
            // With an operator (`:-`, `:?`), an empty value counts as unset, as in the shell.
            let value = self.lookup(name).filter(|v| op.is_empty() || !v.is_empty());
            match (value, op) {
                (Some(v), _) => out.push_str(&v),
                (None, "-") => out.push_str(&self.expand(arg, used_in, used, depth + 1)?),
                (None, "?") => {
                    return Err(ConfigError::RequiredVariable {
                        name: name.into(),
                        used_in: used_in.into(),
                        message: if arg.is_empty() { "it must be set".into() } else { arg.to_string() },
                    })
                }
                (None, _) => return Err(ConfigError::MissingVariable { name: name.into(), used_in: used_in.into() }),
            }
        }
        out.push_str(rest);
        Ok(out)
    }
}

/// The index of the `}` closing a `${`, allowing nested `${…}` in defaults.
fn matching_brace(s: &str) -> Option<usize> {
    let mut depth = 0usize;
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'$' if bytes.get(i + 1) == Some(&b'{') => {
                depth += 1;
                i += 2;
                continue;
            }
            b'}' if depth == 0 => return Some(i),
            b'}' => depth -= 1,
            _ => {}
        }
        i += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn vars() -> Variables {
        let env: BTreeMap<String, String> = [("ENVIRONMENT", "prod"), ("VERSION", "v2"), ("HOME", "/home/ada"), ("USER", "ada"), ("EMPTY", "")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let profile = [("kafka_brokers".to_string(), "localhost:9092".to_string())].into_iter().collect();
        Variables::new(env, profile).with_now(Utc.with_ymd_and_hms(2024, 1, 31, 13, 5, 9).unwrap())
    }

    #[test]
    fn every_form() {
        let v = vars();
        let cases = [
            ("plain", "plain"),
            ("${ENVIRONMENT}", "prod"),
            ("${MISSING:-dev}", "dev"),
            ("${ENVIRONMENT:-dev}", "prod"),
            ("${EMPTY:-fallback}", "fallback"),
            ("orders-${ENVIRONMENT:-dev}-${VERSION}", "orders-prod-v2"),
            ("jdbc:postgresql://${DB_HOST:-db}:${DB_PORT:-5432}/x", "jdbc:postgresql://db:5432/x"),
            ("${kafka_brokers}", "localhost:9092"),
            ("${HOME}/${USER}", "/home/ada/ada"),
            ("audit-${DATE}.jsonl", "audit-2024-01-31.jsonl"),
            ("${TIME}", "13-05-09"),
            ("$${NOT_A_VAR} costs $5", "${NOT_A_VAR} costs $5"),
            ("${MISSING:-${VERSION}}", "v2"),
            ("${MISSING:-a:-b}", "a:-b"),
        ];
        for (input, want) in cases {
            assert_eq!(v.substitute(input, "test").unwrap().0, want, "{input}");
        }
        assert_eq!(v.substitute("${ENVIRONMENT}-${VERSION}-${ENVIRONMENT}", "t").unwrap().1, vec!["ENVIRONMENT", "VERSION"]);
    }

    #[test]
    fn errors_name_the_variable_and_the_place() {
        let v = vars();
        let e = v.substitute("${DB_USER}", "configs/db.yaml: connection.username").unwrap_err();
        assert_eq!(
            e.to_string(),
            "variable 'DB_USER' is not set (used in configs/db.yaml: connection.username); set it, or give a default with ${DB_USER:-value}"
        );
        let e = v.substitute("${API_KEY:?ask the ops team}", "'x.key' in WITH").unwrap_err();
        assert_eq!(e.to_string(), "variable 'API_KEY' is required (used in 'x.key' in WITH): ask the ops team");
        assert!(matches!(v.substitute("${OPEN", "t"), Err(ConfigError::Unterminated { .. })));
    }
}
