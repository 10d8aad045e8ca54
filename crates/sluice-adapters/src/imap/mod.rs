//! The IMAP adapter: receive each mail of a folder as a message.
//!
//! ```toml
//! adapter = { type = "imap", url = "imaps://orders@mail.example.com/INBOX",
//!             password_env = "IMAP_PASSWORD", after = "move", move_to = "Processed" }
//! ```
//!
//! One session reads one folder: each pass takes the mails not done yet
//! (`UID SEARCH`), reads each by partial fetches, publishes it with its
//! parts ([`crate::support::mailparts`]), then deletes, moves or flags it
//! (`after`); between passes it waits in `IDLE` where the server offers
//! it. What a crash left published but not done is found at the next start
//! by the messages the location holds (`imap.uid`, `imap.uid_validity`).

mod receive;
mod session;
#[cfg(test)]
mod tests;

pub use receive::{After, ImapReceiveConfig, ImapReceiver, PROMOTES};

crate::support::mailparts::mail_receive_adapter!(ImapReceiveConfig, PROMOTES);
