//! What a FILE receive location's look at its folder leaves alone
//! (subfolders, symbolic links, names that are not UTF-8...), logged once
//! per entry instead of on every poll.

use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::path::Path;

/// Most skipped entries remembered as logged. A name is at most 255 bytes
/// on the usual Linux file systems, so the memory stays near 1 MiB (twice
/// that while a look at the folder is counting what is still there);
/// entries beyond it are counted in one line (`left_out`), not listed.
pub(crate) const MAX_NOTICED: usize = 4096;

/// Why an entry that matches the mask is not received.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Skip {
    /// A file whose name is not UTF-8 (it could not be a `file.name`).
    NotUtf8,
    /// A folder: a location takes the files of its own folder only.
    Subfolder,
    /// A symbolic link, and `follow_symlinks` is off.
    Symlink,
    /// A symbolic link to a folder (`follow_symlinks` on).
    LinkToFolder,
    /// A symbolic link to nothing, or to what cannot be looked at.
    DanglingLink,
    /// A FIFO, socket or device: reading one could block for ever.
    NotAFile,
}

impl Skip {
    /// The one line that says it is skipped, and what to do about it.
    fn log(self, location: &str, file: &Path) {
        let file_shown = file.display();
        match self {
            // Debug shows the bytes that are not UTF-8 escaped (`\xE9`).
            Skip::NotUtf8 => tracing::warn!(location = %location, file = ?file,
                "skipping a file whose name is not UTF-8 (logged once); rename it to a UTF-8 name to receive it"),
            Skip::Subfolder => tracing::info!(location = %location, file = %file_shown,
                "skipping a subfolder of the receive folder (logged once): only the folder's own files are received"),
            Skip::Symlink => tracing::warn!(location = %location, file = %file_shown,
                "skipping a symbolic link (logged once); set follow_symlinks = true on the location to receive the files links point to"),
            Skip::LinkToFolder => tracing::warn!(location = %location, file = %file_shown,
                "skipping a symbolic link to a folder (logged once): only files are received"),
            Skip::DanglingLink => tracing::warn!(location = %location, file = %file_shown,
                "skipping a symbolic link that points to nothing that can be read (logged once)"),
            Skip::NotAFile => tracing::warn!(location = %location, file = %file_shown,
                "skipping something that is not a regular file, a FIFO, socket or device (logged once)"),
        }
    }
}

/// Which skipped entries were logged already: an entry is logged the
/// first time a look at the folder meets it, and forgotten once a whole
/// look no longer finds it, so a file that comes back is logged again.
#[derive(Debug, Default)]
pub(crate) struct Noticed {
    logged: HashSet<(OsString, Skip)>,
    /// Those met during the current look.
    seen: HashSet<(OsString, Skip)>,
    /// Met during the current look but not remembered (memory full).
    left_out: usize,
    /// The last look left some out, and said so.
    said_left_out: bool,
}

impl Noticed {
    /// Log `name` (in `folder`) as skipped for `why`, unless it was already.
    pub(crate) fn skip(&mut self, location: &str, folder: &Path, name: &OsStr, why: Skip) {
        let key = (name.to_os_string(), why);
        if self.logged.contains(&key) {
            self.seen.insert(key);
        } else if self.logged.len() >= MAX_NOTICED {
            self.left_out += 1;
        } else {
            why.log(location, &folder.join(name));
            self.logged.insert(key.clone());
            self.seen.insert(key);
        }
    }

    /// The end of a look at the folder; `whole` if it went through every
    /// entry (a look that stopped at its batch has not seen them all, so it
    /// forgets nothing).
    pub(crate) fn end(&mut self, location: &str, folder: &Path, whole: bool) {
        if whole {
            self.logged = std::mem::take(&mut self.seen);
        } else {
            self.seen.clear();
        }
        let left_out = std::mem::take(&mut self.left_out);
        if left_out > 0 && !self.said_left_out {
            tracing::warn!(location = %location, path = %folder.display(), left_out, remembered = MAX_NOTICED,
                "more entries of the receive folder are skipped (subfolders, links, names that are not UTF-8) than are listed one by one");
            self.said_left_out = true;
        } else if left_out == 0 && whole {
            self.said_left_out = false;
        }
    }

    #[cfg(test)]
    fn remembered(&self) -> usize {
        self.logged.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_is_logged_once_while_it_stays_and_again_after_it_went() {
        let (dir, mut n) = (Path::new("/in"), Noticed::default());
        let look = |n: &mut Noticed, names: &[&str], whole: bool| {
            let before = n.remembered();
            for name in names {
                n.skip("loc", dir, OsStr::new(name), Skip::Subfolder);
            }
            let logged = n.remembered().saturating_sub(before);
            n.end("loc", dir, whole);
            logged
        };
        assert_eq!(look(&mut n, &["a", "b"], true), 2);
        assert_eq!(look(&mut n, &["a", "b"], true), 0, "not again while there");
        assert_eq!(look(&mut n, &["a"], false), 0);
        assert_eq!(n.remembered(), 2, "a partial look forgets nothing");
        assert_eq!(look(&mut n, &["a"], true), 0);
        assert_eq!(n.remembered(), 1, "b went away: forgotten");
        assert_eq!(look(&mut n, &["a", "b"], true), 1, "b is back: said again");
        // The same name skipped for another reason is another entry.
        n.skip("loc", dir, OsStr::new("a"), Skip::Symlink);
        assert_eq!(n.remembered(), 3);
    }

    #[test]
    fn the_memory_is_capped() {
        let (dir, mut n) = (Path::new("/in"), Noticed::default());
        for _ in 0..2 {
            for i in 0..MAX_NOTICED + 10 {
                n.skip("loc", dir, OsStr::new(&format!("d{i}")), Skip::Subfolder);
            }
            assert_eq!(n.left_out, 10);
            n.end("loc", dir, true);
            assert!(n.said_left_out);
            assert_eq!(n.remembered(), MAX_NOTICED);
        }
    }
}
