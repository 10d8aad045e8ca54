//! Safe file and path names.

use std::path::{Path, PathBuf};

/// `p` against the configuration file's folder `base` (absolute paths are
/// kept as they are). Every adapter's `resolve_paths` uses it.
pub fn resolve(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() { p.to_path_buf() } else { base.join(p) }
}

/// Resolve an optional path in place (`tls.cert`, `password_file`...).
pub fn resolve_in_place(base: &Path, p: &mut PathBuf) {
    *p = resolve(base, p);
}

/// Names that start with this belong to Sluice (claims, temporary files):
/// no name made from a message may take one.
pub const RESERVED_PREFIX: &str = ".sluice-";

/// What a send port writes a file under until it is whole, then moves it
/// into place (FILE, FTP): `.sluice-tmp.<send port>.<message id>.<n>`.
pub const TMP_PREFIX: &str = ".sluice-tmp.";

/// What a receive location renames a file to while it takes it, so no
/// other reader takes it too (FILE, FTP): `.sluice-claim.<message id>.<name>`.
pub const CLAIM_PREFIX: &str = ".sluice-claim.";

/// Check that `name` (made from a template, a peer's file name, a context
/// value) is a plain file name: not empty, not `.` or `..`, no `/`, `\` or
/// NUL, not one of Sluice's own (`.sluice-*`). A value from a message must
/// never steer a write outside its folder. The error says why, without the
/// `Err` having to name the template.
pub fn plain_file_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\\', '\0']) {
        return Err(format!("`{}` is not a plain file name", name.escape_debug()));
    }
    if name.starts_with(RESERVED_PREFIX) {
        return Err(format!(
            "`{name}` starts with {RESERVED_PREFIX}; such names are Sluice's own"
        ));
    }
    Ok(())
}

/// A path with `.` components and trailing slashes dropped, for comparing
/// two configured paths; symbolic links are followed when the path exists.
pub fn normalized(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| p.components().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_names_pass() {
        for bad in ["", ".", "..", "a/b", "..\\x", "a\0b", ".sluice-claim.x"] {
            assert!(plain_file_name(bad).is_err(), "{bad:?}");
        }
        for good in ["a.xml", ".hidden", "..x", "résumé.pdf"] {
            assert!(plain_file_name(good).is_ok(), "{good:?}");
        }
        assert_eq!(normalized(Path::new("/no/such/./dir/")), PathBuf::from("/no/such/dir"));
    }
}
