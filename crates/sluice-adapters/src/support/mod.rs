//! What every adapter needs, network adapters above all, in one place, so a
//! new adapter does not grow its own copy:
//!
//! - [`secret`]: passwords and tokens from the configuration, the
//!   environment or a file, in a type that never prints its value;
//! - [`tls`]: rustls server settings (certificate and key) and client
//!   trust (extra certificate authorities);
//! - [`names`]: safe file names and path resolution against the
//!   configuration file's folder;
//! - [`codec`]: decoding a transport's own encoding (HTTP
//!   `Content-Encoding`, a `.gz` attachment) through the pipeline's decode
//!   stage, so every adapter has the same limits (zstd window, size cap);
//! - [`fd`]: the process's open-files limit and the reserve kept for the
//!   box and the other adapters;
//! - [`net`]: listening addresses, `ip:port` or `host:port` resolved at load;
//! - [`poll`]: the loop of a polled source (FILE, FTP): look, take within
//!   the concurrency and the throttle, retry what failed, stop cleanly;
//! - [`fetch`]: receiving from a folder on a server (FTP, SFTP): listings
//!   that agree, claims by rename, downloads of exactly the claimed size;
//! - [`pool`]: a bounded pool of connections to one server, checked before reuse;
//! - [`remote`]: a file-transfer URL (`ftp://`, `sftp://`) checked, and a
//!   TCP connection to it within limits;
//! - [`mime`] (feature `mail`): a mail split into its parts as it
//!   streams, each decoded, within limits of depth, parts and header size;
//! - [`mailparts`] (feature `mail`): a mail read from a stream handed on
//!   as a message's parts (its text, its attachments), and its headers
//!   promoted;
//! - [`retry`]: when a polled source tries a failed item again (doubling waits);
//! - [`guard`]: what keeps one client from holding a listener shut (caps on
//!   connections and uploads per listener and per client address, the
//!   process's file descriptors, idle and stalled connections);
//! - [`body`] (feature `http`): a request body as an `AsyncRead` that ends
//!   in an error unless it arrived whole (`CompleteBody`), paced (`Paced`:
//!   idle and minimum-rate limits) and capped (`Capped`);
//! - [`serve`] (feature `http`): an HTTP listener's accept loop and
//!   connections under those guards, for the HTTP receive location and the
//!   node's REST API alike.

#[cfg(feature = "http")]
pub mod body;
pub mod codec;
pub mod fd;
#[cfg(any(feature = "ftp", feature = "sftp"))]
pub mod fetch;
pub mod guard;
#[cfg(all(test, feature = "mail"))]
pub(crate) mod mail_tests;
#[cfg(feature = "mail")]
pub mod mailparts;
#[cfg(feature = "mail")]
pub mod mime;
pub mod names;
pub mod net;
pub mod poll;
pub mod pool;
#[cfg(any(
    feature = "ftp",
    feature = "sftp",
    feature = "smtp",
    feature = "pop3",
    feature = "imap"
))]
pub mod remote;
pub mod retry;
pub mod secret;
#[cfg(feature = "http")]
pub mod serve;
pub mod tls;

pub use fd::{FD_RESERVE, fd_limit, raise_fd_limit};
pub use names::{plain_file_name, resolve};
pub use secret::Secret;

/// Property keys from (namespace, name) pairs, as the `PROMOTES` lists write them.
pub fn keys(pairs: &[(&str, &str)]) -> Vec<sluice_model::Key> {
    pairs
        .iter()
        .map(|(namespace, name)| sluice_model::Key {
            namespace: namespace.to_string(),
            name: name.to_string(),
        })
        .collect()
}
