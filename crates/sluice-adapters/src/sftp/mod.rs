//! The SFTP adapter: receive from and send to a folder on an SSH server.
//!
//! ```toml
//! adapter = { type = "sftp", url = "sftp://partner@sftp.example.com/inbound",
//!             private_key_file = "/etc/sluice/partner_ed25519",
//!             host_key = "ssh-ed25519 AAAAC3Nza...", file_name = "%SourceFileName%" }
//! ```
//!
//! The server's host key is always checked: pinned (`host_key`, as
//! `ssh-keyscan` prints it) or listed in an OpenSSH `known_hosts` file; a
//! server with another key is refused, and one configured with neither is
//! a configuration error (`accept_unknown_host_key = true` is for tests).
//! Login by private key (`private_key_file` or `private_key_env`, with an
//! optional passphrase) or by password (`password_env`, `password_file`,
//! `password`); never from the URL. SSH by russh (ring), SFTP by
//! russh-sftp.
//!
//! A file is uploaded as `.sluice-tmp.<send port>.<id>.<attempt>`, synced
//! (`fsync@openssh.com` where the server has it) and renamed into place.
//! SFTP's rename refuses to replace a file, so an existing file is never
//! replaced unless `overwrite = true`; one with the same bytes is an
//! earlier delivery of the message.
//!
//! Receiving: the folder is listed every `poll_interval` (`READDIR`, a
//! batch at a time, on a channel of its own); a file is taken once two
//! listings show it with the same size and time, renamed to
//! `.sluice-claim.<id>.<name>`, read into the box (exactly its size), and
//! deleted only after the publish committed (`support::fetch`).

mod guard;
mod receive;
mod send;
mod session;
#[cfg(test)]
mod tests;

pub use receive::{PROMOTES, SftpFolder, SftpReceiveConfig, SftpReceiver};
pub use send::{SftpSendConfig, SftpTransmitter};

crate::support::fetch::remote_receive_adapter!(SftpReceiveConfig, PROMOTES);

crate::support::remote::file_transfer_send_adapter!(SftpSendConfig);
