//! HTTP adapters. Built so far: the send side, one-way (`type = "http"` on a
//! send port): the body streams from the box into the request, optionally
//! gzip-compressed on the way; the response decides delivered, retry or fail.

mod send;

pub use send::{Compress, HttpSendConfig, HttpTransmitter};
