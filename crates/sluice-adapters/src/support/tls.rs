//! TLS settings (rustls, ring provider) for network adapters: a server's
//! certificate and key, a client's extra certificate authorities.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::AdapterError;

/// How a mail protocol's plain URL (`smtp://`, `pop3://`, `imap://`)
/// protects the connection: upgraded in it (`STARTTLS`, POP3's `STLS`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StartTls {
    /// Upgrade; refuse a server that does not offer it.
    #[default]
    Required,
    /// Upgrade where the server offers it, go on in clear where not (but
    /// never log in in clear).
    Opportunistic,
    /// Never upgrade: everything in clear, the password too.
    Off,
}

/// A server's TLS: its certificate chain and private key, PEM files
/// (relative to the configuration file): `tls = { cert = "cert.pem", key = "key.pem" }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerTls {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl ServerTls {
    pub fn resolve_paths(&mut self, base: &Path) {
        super::names::resolve_in_place(base, &mut self.cert);
        super::names::resolve_in_place(base, &mut self.key);
    }

    /// The rustls server settings, offering `alpn` (e.g. `h2`, `http/1.1`),
    /// safe default protocol versions, no client certificates. Errors name
    /// the key (`tls.cert`, `tls.key`) and the file.
    pub fn server_config(&self, alpn: &[&[u8]]) -> Result<rustls::ServerConfig, AdapterError> {
        let bad = AdapterError::Config;
        let certs = CertificateDer::pem_file_iter(&self.cert)
            .and_then(|i| i.collect::<Result<Vec<_>, _>>())
            .map_err(|e| bad(format!("tls.cert {}: {e}", self.cert.display())))?;
        if certs.is_empty() {
            return Err(bad(format!("tls.cert {}: no certificate in it", self.cert.display())));
        }
        let key = PrivateKeyDer::from_pem_file(&self.key)
            .map_err(|e| bad(format!("tls.key {}: no private key read: {e}", self.key.display())))?;
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| bad(format!("tls: {e}")))?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| bad(format!("tls: the certificate and key do not go together: {e}")))?;
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(config)
    }

    /// [`server_config`](Self::server_config) as an acceptor for tokio streams.
    pub fn acceptor(&self, alpn: &[&[u8]]) -> Result<tokio_rustls::TlsAcceptor, AdapterError> {
        Ok(tokio_rustls::TlsAcceptor::from(Arc::new(self.server_config(alpn)?)))
    }
}

/// The crypto provider every adapter uses.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The certificate authorities of a PEM file, trusted by a client besides
/// the built-in roots (a private PKI): `key` names the setting in errors
/// (`tls_ca`). An empty file is an error.
pub fn ca_certificates(key: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, AdapterError> {
    let bad = AdapterError::Config;
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|i| i.collect::<Result<Vec<_>, _>>())
        .map_err(|e| bad(format!("{key} {}: not PEM certificates: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(bad(format!("{key} {}: no certificate in it", path.display())));
    }
    Ok(certs)
}

/// A TLS client: the built-in roots (Mozilla's, webpki-roots) and those of
/// the PEM file `tls_ca` (the setting's name in errors).
#[cfg(any(feature = "ftp", feature = "smtp", feature = "pop3", feature = "imap"))]
pub fn client_connector(tls_ca: Option<&Path>) -> Result<tokio_rustls::TlsConnector, AdapterError> {
    Ok(tokio_rustls::TlsConnector::from(client_config(tls_ca)?))
}

/// The settings of [`client_connector`], for a client that makes a
/// connector of its own per connection ([`own_sessions`]).
#[cfg(any(feature = "ftp", feature = "smtp", feature = "pop3", feature = "imap"))]
pub fn client_config(tls_ca: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, AdapterError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = tls_ca {
        for cert in ca_certificates("tls_ca", path)? {
            roots
                .add(cert)
                .map_err(|e| AdapterError::Config(format!("tls_ca {}: {e}", path.display())))?;
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| AdapterError::Config(format!("TLS: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// A connector with `config`'s settings and a session cache of its own:
/// the TLS sessions its connections resume are theirs alone. An FTP
/// control connection's data connections must resume its session
/// (vsftpd's `require_ssl_reuse`); with one cache for a pool of control
/// connections, a new one could take the ticket another's data connection
/// needed.
#[cfg(feature = "ftp")]
pub fn own_sessions(config: &rustls::ClientConfig) -> tokio_rustls::TlsConnector {
    let mut c = config.clone();
    c.resumption = rustls::client::Resumption::in_memory_sessions(8);
    tokio_rustls::TlsConnector::from(Arc::new(c))
}
