//! The FTP adapter: send to a folder on an FTP or FTPS server.
//!
//! ```toml
//! adapter = { type = "ftp", url = "ftpes://partner@ftp.example.com/inbound",
//!             password_env = "PARTNER_FTP_PASSWORD", file_name = "%SourceFileName%" }
//! ```
//!
//! The scheme says how the connection is protected, as FileZilla and curl
//! name them: `ftp://` plain (user name and password in clear: only on a
//! network you trust), `ftpes://` explicit TLS (`AUTH TLS` on the usual port
//! 21, then `PBSZ 0` and `PROT P`: the data connections are protected
//! too), `ftps://` implicit TLS (TLS from the first byte, port 990 by
//! default). The server's certificate is checked against the built-in
//! roots and `tls_ca` (a PEM file) for a private PKI. The user name is the
//! URL's; the password comes from `password`, `password_env` or
//! `password_file` (never from the URL). Transfers are binary, in passive
//! mode; a data connection goes to the control connection's address,
//! whatever address the server names (it cannot point Sluice elsewhere).
//!
//! Names that start with `.sluice-` belong to Sluice: `.sluice-tmp.<send
//! port>.<id>.<attempt>` is a file being uploaded by a send port.
//!
//! Receiving: the folder is listed every `poll_interval` (`MLSD`, or `LIST`
//! where the server lacks it); a file is taken once two listings show it
//! with the same size and time, renamed to `.sluice-claim.<id>.<name>` (two
//! nodes or locations cannot both take it), downloaded into the box, and
//! deleted only after the publish committed. A failure puts it back under
//! its name; the next start resolves claims a crash left.

#[cfg(test)]
mod implicit_tests;
mod receive;
#[cfg(test)]
mod receive_tests;
mod send;
mod session;
#[cfg(test)]
mod tests;

pub use receive::{FtpReceiveConfig, FtpReceiver, Listing, PROMOTES};
pub use send::{FtpSendConfig, FtpTransmitter};

crate::support::fetch::remote_receive_adapter!(FtpReceiveConfig, PROMOTES);

crate::support::remote::file_transfer_send_adapter!(FtpSendConfig);
