//! The one way to open a message box: from a **store URL**.
//!
//! ```text
//! sqlite:PATH            the embedded SQLite box in the database file PATH
//! sqlite:///abs/PATH     the same, written as a URL
//! postgres://...         a PostgreSQL box for a group of nodes (not built yet)
//! ```
//!
//! The host and the CLI open the box only through [`open`] and use it only
//! through the [`MessageBox`] trait: they never name a backend type. A
//! backend is behind a Cargo feature (`sqlite`, on by default).
//!
//! A relative SQLite path is taken as it is given; the caller resolves it
//! first ([`StoreUrl::resolve`]: the node's configuration resolves it against
//! the configuration file's folder, like every other path in it).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use sluice_msgbox::{BoxError, Clock, MessageBox, SystemClock};

/// The schemes this build knows, and whether each is built.
pub const SCHEMES: &[(&str, bool)] = &[("sqlite", cfg!(feature = "sqlite")), ("postgres", false)];

/// File name of the default SQLite box inside the data directory.
pub const DEFAULT_SQLITE_FILE: &str = "msgbox.sqlite";

/// Who opens the box, which decides what opening does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The node (`sluice serve`): creates the box if needed, migrates it,
    /// discards what this node left unpublished; the node then calls
    /// [`MessageBox::recover`]. Only a node maintains the storage (gives
    /// freed space back).
    Node,
    /// A command that changes the box beside a running node (`sluice
    /// suspended resume`, `sluice publish`): the box must exist; no
    /// recovery (it would discard what the node is writing).
    BesideNode,
    /// A command that only reads (`sluice status`, `sluice messages`): every
    /// change fails with [`BoxError::Closed`].
    ReadOnly,
}

/// How to open: what every backend understands.
#[derive(Clone)]
pub struct StoreOptions {
    /// The node the handle works for: it owns the leases, holds and staged
    /// interchanges made through it (see [`MessageBox::recover`]).
    pub node_id: String,
    pub clock: Arc<dyn Clock>,
    /// Record tracking events.
    pub tracking: bool,
    /// Make every change durable before answering (`false` only for benchmarks).
    pub sync: bool,
    /// Context properties the box indexes for message search (applied by
    /// the node's open only; see the backend's options).
    pub index: Vec<sluice_msgbox::Key>,
}

impl StoreOptions {
    pub fn new(node_id: impl Into<String>) -> StoreOptions {
        StoreOptions {
            node_id: node_id.into(),
            clock: Arc::new(SystemClock),
            tracking: true,
            sync: true,
            index: Vec::new(),
        }
    }
}

impl fmt::Debug for StoreOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreOptions")
            .field("node_id", &self.node_id)
            .field("tracking", &self.tracking)
            .field("sync", &self.sync)
            .field("index", &self.index)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store `{url}`: unknown scheme `{scheme}` (known: {})", known())]
    UnknownScheme { url: String, scheme: String },
    #[error("store `{url}`: {message}")]
    Invalid { url: String, message: String },
    #[error("store `{url}`: the {scheme} message box is not built yet{why}")]
    NotBuilt {
        url: String,
        scheme: String,
        why: &'static str,
    },
    #[error(transparent)]
    Box(#[from] BoxError),
}

fn known() -> String {
    SCHEMES
        .iter()
        .map(|(s, built)| {
            if *built {
                format!("{s}:")
            } else {
                format!("{s}: (not built)")
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// A parsed store URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreUrl {
    /// `sqlite:PATH`: the database file.
    Sqlite(PathBuf),
    /// `postgres://...` (or `postgresql://`): parsed, not built yet.
    Postgres(String),
}

impl StoreUrl {
    /// Parse `url`; an unknown scheme is an error naming the known ones.
    pub fn parse(url: &str) -> Result<StoreUrl, StoreError> {
        let Some((scheme, rest)) = url.split_once(':') else {
            return Err(StoreError::Invalid {
                url: url.into(),
                message: format!("a store URL starts with its scheme (known: {})", known()),
            });
        };
        match scheme {
            "sqlite" => {
                // `sqlite:///abs` and `sqlite://rel` as well as `sqlite:path`.
                let path = rest.strip_prefix("//").unwrap_or(rest);
                if path.is_empty() {
                    return Err(StoreError::Invalid {
                        url: url.into(),
                        message: "the SQLite store needs a file path: `sqlite:PATH`".into(),
                    });
                }
                Ok(StoreUrl::Sqlite(PathBuf::from(path)))
            }
            "postgres" | "postgresql" => Ok(StoreUrl::Postgres(url.to_string())),
            other => Err(StoreError::UnknownScheme {
                url: url.into(),
                scheme: other.into(),
            }),
        }
    }

    /// The default store: the SQLite box `msgbox.sqlite` in `data_dir`.
    pub fn default_in(data_dir: &Path) -> StoreUrl {
        StoreUrl::Sqlite(data_dir.join(DEFAULT_SQLITE_FILE))
    }

    /// The same store with a relative file path taken against `base`.
    pub fn resolve(self, base: &Path) -> StoreUrl {
        match self {
            StoreUrl::Sqlite(p) if p.is_relative() => StoreUrl::Sqlite(base.join(p)),
            other => other,
        }
    }

    /// Whether this build can open it; the error says why not.
    pub fn check(&self) -> Result<(), StoreError> {
        match self {
            #[cfg(feature = "sqlite")]
            StoreUrl::Sqlite(_) => Ok(()),
            #[cfg(not(feature = "sqlite"))]
            StoreUrl::Sqlite(_) => Err(StoreError::NotBuilt {
                url: self.to_string(),
                scheme: "sqlite".into(),
                why: " into this binary (Cargo feature `sqlite`)",
            }),
            StoreUrl::Postgres(url) => Err(StoreError::NotBuilt {
                url: url.clone(),
                scheme: "PostgreSQL".into(),
                why: " (it is planned for a group of nodes sharing one box)",
            }),
        }
    }
}

impl fmt::Display for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreUrl::Sqlite(p) => write!(f, "sqlite:{}", p.display()),
            StoreUrl::Postgres(url) => f.write_str(url),
        }
    }
}

/// Open the box `url` names, for `role`.
pub fn open(url: &StoreUrl, role: Role, opts: &StoreOptions) -> Result<Arc<dyn MessageBox>, StoreError> {
    url.check()?;
    match url {
        #[cfg(feature = "sqlite")]
        StoreUrl::Sqlite(path) => Ok(sqlite::open(path, role, opts)?),
        _ => unreachable!("check() refused it"),
    }
}

/// Parse `url` and [`open`] it.
pub fn open_url(url: &str, role: Role, opts: &StoreOptions) -> Result<Arc<dyn MessageBox>, StoreError> {
    open(&StoreUrl::parse(url)?, role, opts)
}

#[cfg(feature = "sqlite")]
mod sqlite {
    use super::*;
    use sluice_msgbox_sqlite::{Options, SqliteBox};

    pub fn open(path: &Path, role: Role, opts: &StoreOptions) -> Result<Arc<dyn MessageBox>, BoxError> {
        let options = Options {
            sync: opts.sync,
            tracking: opts.tracking,
            node_id: opts.node_id.clone(),
            index: opts.index.clone(),
            ..Options::default()
        };
        Ok(match role {
            Role::Node => Arc::new(SqliteBox::open_file(path, opts.clock.clone(), options)?),
            Role::BesideNode => Arc::new(SqliteBox::open_file_beside_node(path, opts.clock.clone(), options)?),
            Role::ReadOnly => Arc::new(SqliteBox::open_file_read_only(path)?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sqlite_urls() {
        assert_eq!(
            StoreUrl::parse("sqlite:data/msgbox.sqlite").unwrap(),
            StoreUrl::Sqlite("data/msgbox.sqlite".into())
        );
        assert_eq!(
            StoreUrl::parse("sqlite:///var/lib/sluice/box.sqlite").unwrap(),
            StoreUrl::Sqlite("/var/lib/sluice/box.sqlite".into())
        );
        let e = StoreUrl::parse("sqlite:").unwrap_err().to_string();
        assert!(e.contains("needs a file path"), "{e}");
    }

    #[test]
    fn relative_paths_resolve_against_a_base() {
        let base = Path::new("/etc/sluice");
        assert_eq!(
            StoreUrl::parse("sqlite:data/x.sqlite").unwrap().resolve(base),
            StoreUrl::Sqlite("/etc/sluice/data/x.sqlite".into())
        );
        assert_eq!(
            StoreUrl::parse("sqlite:/srv/x.sqlite").unwrap().resolve(base),
            StoreUrl::Sqlite("/srv/x.sqlite".into())
        );
        assert_eq!(
            StoreUrl::default_in(Path::new("/d")).to_string(),
            "sqlite:/d/msgbox.sqlite"
        );
    }

    #[test]
    fn unknown_and_unbuilt_schemes_say_so() {
        let e = StoreUrl::parse("mysql://db/sluice").unwrap_err().to_string();
        assert!(e.contains("unknown scheme `mysql`") && e.contains("sqlite:"), "{e}");
        assert!(e.contains("postgres: (not built)"), "{e}");
        let e = StoreUrl::parse("nonsense").unwrap_err().to_string();
        assert!(e.contains("starts with its scheme"), "{e}");
        let pg = StoreUrl::parse("postgres://postgres@127.0.0.1:5432/sluice").unwrap();
        let e = pg.check().unwrap_err().to_string();
        assert!(e.contains("PostgreSQL message box is not built yet"), "{e}");
        let e = open(&pg, Role::Node, &StoreOptions::new("n"))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("not built yet"), "{e}");
    }

    #[tokio::test]
    async fn opens_sqlite_for_each_role() {
        let dir = tempfile::tempdir().unwrap();
        let url = StoreUrl::parse("sqlite:box/msgbox.sqlite").unwrap().resolve(dir.path());
        let opts = StoreOptions::new("node-1");
        let e = open(&url, Role::ReadOnly, &opts).err().unwrap().to_string();
        assert!(e.contains("no such file"), "a reader does not create the box: {e}");
        assert!(
            open(&url, Role::BesideNode, &opts).is_err(),
            "nor does a command beside a node"
        );
        let node = open(&url, Role::Node, &opts).unwrap();
        assert!(dir.path().join("box/msgbox.sqlite").exists());
        assert_eq!(node.recover().await.unwrap(), Default::default());
        let beside = open(&url, Role::BesideNode, &opts).unwrap();
        let reader = open(&url, Role::ReadOnly, &opts).unwrap();
        assert_eq!(reader.counts().await.unwrap().spool, 0);
        assert!(node.commit_stats().is_some());
        for b in [reader, beside, node] {
            b.close().await.unwrap();
        }
    }
}
