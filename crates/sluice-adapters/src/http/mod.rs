//! HTTP adapters. Receive (`type = "http"` on a receive location): the
//! request body streams into the box; one-way answers `202` once durable,
//! request-response answers with the message routed back (see `reply`).
//! Send (`type = "http"` on a send port): the body streams from the box into
//! the request, optionally gzip-compressed; the answer decides delivered,
//! retry or fail, and solicit-response publishes it as a new message.

mod body;
mod guard;
mod receive;
mod reply;
mod send;

pub use guard::{FD_RESERVE, fd_limit, raise_fd_limit};
pub use receive::{HttpAuth, HttpReceiveConfig, HttpReceiver, MinRateConfig, ReceiveMode, ServerTls};
pub use send::{Compress, HttpSendConfig, HttpTransmitter, SendMode};
