//! HTTP adapters, one-way so far. Receive (`type = "http"` on a receive
//! location): the request body streams into the box, `202` once durable.
//! Send (`type = "http"` on a send port): the body streams from the box into
//! the request, optionally gzip-compressed; the answer decides delivered,
//! retry or fail. Request-response and solicit-response are to come.

mod receive;
mod send;

pub use receive::{HttpAuth, HttpReceiveConfig, HttpReceiver};
pub use send::{Compress, HttpSendConfig, HttpTransmitter};
