//! Secrets (passwords, tokens) in the configuration.
//!
//! An adapter that needs one offers three keys, exactly one of which must
//! be given: `password = "..."` (inline), `password_env = "NAME"` (an
//! environment variable) or `password_file = "path"` (a file, relative to
//! the configuration file; one trailing newline is dropped). The value is a
//! [`Secret`]: its `Debug` and `Display` never show it, so a configuration
//! printed with `{:?}` or an error message cannot leak it.
//!
//! ```ignore
//! #[serde(default)] password: Option<Secret>,
//! #[serde(default)] password_env: Option<String>,
//! #[serde(default)] password_file: Option<PathBuf>,
//! ...
//! let p = Secret::from_config("auth.password", &self.password, &self.password_env, &self.password_file)?;
//! ```

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::AdapterError;

/// A secret value; never printed (`Secret(..)`).
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The value, for the one place that must use it (a header, a login).
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The secret configured as `<what>`, `<what>_env` or `<what>_file`
    /// (exactly one). `what` names the key in errors (`auth.password`).
    pub fn from_config(
        what: &str,
        inline: &Option<Secret>,
        env: &Option<String>,
        file: &Option<PathBuf>,
    ) -> Result<Secret, AdapterError> {
        match (inline, env, file) {
            (Some(v), None, None) => Ok(v.clone()),
            (None, Some(var), None) => std::env::var(var)
                .map(Secret)
                .map_err(|_| AdapterError::Config(format!("{what}_env: the environment variable {var} is not set"))),
            (None, None, Some(path)) => read_file(path)
                .map_err(|e| AdapterError::Config(format!("{what}_file: cannot read {}: {e}", path.display()))),
            _ => Err(AdapterError::Config(format!(
                "give exactly one of `{what}`, `{what}_env` and `{what}_file`"
            ))),
        }
    }
}

fn read_file(path: &Path) -> std::io::Result<Secret> {
    let mut text = std::fs::read_to_string(path)?;
    if text.ends_with('\n') {
        text.pop();
        if text.ends_with('\r') {
            text.pop();
        }
    }
    Ok(Secret(text))
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("(secret)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_comes_from_exactly_one_place_and_never_prints() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, "from-file\n").unwrap();
        let inline = Some(Secret::new("inline-value"));
        let s = Secret::from_config("auth.password", &inline, &None, &None).unwrap();
        assert_eq!(s.expose(), "inline-value");
        assert!(!format!("{s:?} {s}").contains("inline-value"));
        let s = Secret::from_config("auth.password", &None, &None, &Some(file.clone())).unwrap();
        assert_eq!(s.expose(), "from-file");
        let e = Secret::from_config("auth.password", &inline, &None, &Some(file)).unwrap_err();
        assert!(e.to_string().contains("exactly one of `auth.password`"), "{e}");
        let e = Secret::from_config("auth.password", &None, &Some("SLUICE_NO_SUCH_VAR_12".into()), &None).unwrap_err();
        assert!(e.to_string().contains("SLUICE_NO_SUCH_VAR_12 is not set"), "{e}");
        let e = Secret::from_config("auth.token", &None, &None, &Some(dir.path().join("none"))).unwrap_err();
        assert!(e.to_string().contains("auth.token_file: cannot read"), "{e}");
    }
}

/// `url` as it may be shown (logs, errors, where a message was delivered):
/// a `user:password@` in it becomes `***@`.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_string();
    };
    let rest = &url[scheme_end..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{}***{}", &url[..scheme_end], &rest[at..]),
        None => url.to_string(),
    }
}

#[cfg(test)]
mod url_tests {
    use super::redact_url;

    #[test]
    fn credentials_in_a_url_are_never_shown() {
        assert_eq!(
            redact_url("https://bob:s3cret@example.com/in?a=b"),
            "https://***@example.com/in?a=b"
        );
        assert_eq!(redact_url("http://token@h:8080"), "http://***@h:8080");
        assert_eq!(
            redact_url("http://h/p@q"),
            "http://h/p@q",
            "an @ in the path is not userinfo"
        );
        assert_eq!(redact_url("https://example.com/x"), "https://example.com/x");
        assert_eq!(redact_url("not a url"), "not a url");
    }
}
