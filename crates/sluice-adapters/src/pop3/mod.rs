//! The POP3 adapter: receive each mail of a mailbox as a message.
//!
//! ```toml
//! adapter = { type = "pop3", url = "pop3s://orders@mail.example.com",
//!             password_env = "POP3_PASSWORD" }
//! ```
//!
//! Each poll is one session: mails published before and not yet deleted
//! are deleted (`DELE`), then up to `max_per_poll` new ones are read
//! (`RETR`, streamed by `client.rs`, a client of Sluice's own), published
//! with their parts ([`crate::support::mailparts`]) and marked for deletion;
//! the server deletes them at `QUIT`, and only then are their messages
//! released. A POP3 mailbox has no claims: what a crash left published but
//! not deleted is found at the next start by the messages the location
//! holds (`pop3.uidl`).

mod client;
mod receive;
#[cfg(test)]
mod tests;

pub use receive::{PROMOTES, Pop3ReceiveConfig, Pop3Receiver};

crate::support::mailparts::mail_receive_adapter!(Pop3ReceiveConfig, PROMOTES);
