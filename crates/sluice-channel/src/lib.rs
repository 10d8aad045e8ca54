//! The host channel: how an isolated host instance (a child process of the
//! node, running one host's receive locations and send ports) reaches the
//! message box, which only the node opens.
//!
//! ```text
//!  instance (sluice host-instance)              node (sluice serve)
//!  units ── RemoteBox ══ Unix socket ══ Connection::serve ── MessageBox
//!            calls by id, frames of postcard        ledger: leases, content,
//!            bodies one chunk per call              interchanges the instance holds
//!  ports <── Wake(port) ─────────────────────────── a message queued for them
//!  units stop <── Drain ─────────────────────────── recycle (memory limit, restart)
//! ```
//!
//! `wire` is the protocol; `client` the instance's side ([`RemoteBox`], a
//! [`MessageBox`](sluice_msgbox::MessageBox) whose calls the node answers);
//! `server` the node's side ([`Connection`]), which keeps a ledger of what
//! each instance holds and gives it back when the instance's connection
//! ends.
//!
//! Architecture Invariant: the node stays the only owner of the box. An
//! instance commits nothing itself: every change is a call the node's box
//! makes, and an answer is sent only after the box answered.
//!
//! Architecture Invariant: a body crosses the channel one chunk per call,
//! so a message of any size costs each side one chunk in flight; every
//! frame is capped ([`wire::MAX_FRAME`]) and the calls one instance has in
//! the node at once are capped in bytes.

mod client;
mod server;
pub mod wire;

pub use client::{Channel, Incoming, RemoteBox, RemoteChunks};
pub use server::{
    Connection, GivenBack, InstanceHandle, MAX_CONTENTS, MAX_HELD_AT_ONCE, MAX_INTERCHANGES, MAX_LEASE_AT_ONCE,
    MAX_LEASE_BODIES, MAX_LEASES, NodeSide,
};

/// Why a channel could not be set up or went wrong.
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    #[error("{doing}: {error}")]
    Io { doing: String, error: std::io::Error },
    #[error("encoding a frame for the host channel: {0}")]
    Encode(postcard::Error),
    #[error("host channel: {0}")]
    Protocol(String),
}

#[cfg(test)]
mod tests;
