//! The SMTP adapter: send each message as a mail.
//!
//! ```toml
//! adapter = { type = "smtp", url = "smtp://mail.example.com:587", username = "sluice",
//!             password_env = "SMTP_PASSWORD", from = "Sluice <sluice@example.com>",
//!             to = "%property:mail.to%", subject = "Invoice %SourceFileName%",
//!             attach = true }
//! ```
//!
//! `smtp://` (port 25 by default) upgrades with `STARTTLS`: `starttls =
//! "required"` (the default) refuses a server that does not offer it,
//! `"opportunistic"` goes on in clear without it (but never sends a
//! password in clear), `"off"` never asks. `smtps://` (port 465) is TLS
//! from the first byte. The certificate is checked against the built-in
//! roots and `tls_ca`. With `username`, the password (`password`,
//! `password_env` or `password_file`) logs in by the strongest mechanism
//! both sides have.
//!
//! `from`, `to`, `cc`, `bcc`, `subject`, `content_type`, `attachment_name`
//! and `text` take macros (`%property:mail.to%`); `to`, `cc` and `bcc` are
//! lists (`a@x.org, Name <b@y.org>`). A value with a line break (header
//! injection) or an address that is not one suspends the message, not
//! resumable (resubmit it edited).
//!
//! The body is the mail's text, of `content_type` (default: the message's
//! `mail.content_type`, else `http.content_type`, else `text/plain;
//! charset=utf-8`), or with `attach = true` an attachment named
//! `attachment_name` (default `%SourceFileName%`) under the text `text`.
//! The message's other parts are attachments, named as their parts. Every
//! part is sent in base64 as it is read: a mail of any size costs a
//! buffer, not its size.
//!
//! Each recipient's answer is kept. A recipient the server takes (250) is
//! done, and a later attempt does not send to it again (the box keeps the
//! list with the entry). One refused for now (4xx) is retried; one refused
//! for good (5xx) suspends the message (resumable) with the server's words,
//! once every other recipient is done: resuming it sends to the refused
//! ones only. The mail's `Message-ID` is `<message id@from's domain>`, the
//! same on every attempt; it and the server's answer are the tracking
//! record's detail.

mod mail;
mod send;
#[cfg(test)]
mod tests;

pub use send::{SmtpSendConfig, SmtpTransmitter, StartTls};

impl crate::SendAdapter for SmtpSendConfig {
    fn resolve_paths(&mut self, base: &std::path::Path) {
        SmtpSendConfig::resolve_paths(self, base);
    }
    fn build(&self) -> Result<std::sync::Arc<dyn crate::Transmitter>, crate::AdapterError> {
        Ok(std::sync::Arc::new(SmtpSendConfig::build(self)?))
    }
    fn resources(&self) -> Vec<crate::Claim> {
        vec![crate::Claim::shared(
            "url",
            crate::Resource::Endpoint(crate::support::secret::redact_url(&self.url)),
        )]
    }
    /// As many mails at once as the port keeps connections open.
    fn default_concurrency(&self) -> usize {
        self.max_connections
    }
    fn delivers_in_parts(&self) -> bool {
        true
    }
    fn needs(&self) -> Vec<crate::Need> {
        self.templates()
            .into_iter()
            .filter_map(|(key, text)| crate::macros::Template::parse(text).ok().map(|t| t.needs(key)))
            .flatten()
            .collect()
    }
}
