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
//! Receiving (polling a folder, claiming by rename) is not built yet.

mod send;
mod session;
#[cfg(test)]
mod tests;

use std::path::Path;

pub use send::{FtpSendConfig, FtpTransmitter};

impl crate::SendAdapter for FtpSendConfig {
    fn resolve_paths(&mut self, base: &Path) {
        FtpSendConfig::resolve_paths(self, base);
    }
    fn build(&self) -> Result<std::sync::Arc<dyn crate::Transmitter>, crate::AdapterError> {
        Ok(std::sync::Arc::new(FtpSendConfig::build(self)?))
    }
    fn resources(&self) -> Vec<crate::Claim> {
        vec![crate::Claim::shared(
            "url",
            crate::Resource::Endpoint(crate::support::secret::redact_url(&self.url)),
        )]
    }
    /// As many deliveries at once as the port keeps connections open.
    fn default_concurrency(&self) -> usize {
        self.max_connections
    }
    fn needs(&self) -> Vec<crate::Need> {
        crate::macros::Template::parse(&self.file_name)
            .map(|t| t.needs("file_name"))
            .unwrap_or_default()
    }
}
