//! Mutual TLS for Stride's gRPC links: gateway → scheduler (`Control`), agent → scheduler
//! (`AgentLink`), gateway and health checkers → agent (`AgentApi`).
//!
//! Every process of a secured cluster holds the cluster CA, a certificate that CA signed and its
//! key (`--tls-ca`, `--tls-cert`, `--tls-key`). A server built from [`MutualTls::server`] accepts
//! only clients that present a certificate signed by the CA; a client built from
//! [`MutualTls::client`] accepts only servers whose certificate the CA signed and names the host
//! it dialled (a DNS name or an IP address in the certificate's subject alternative names).
//!
//! ```text
//!  agent ──TLS, client cert──► scheduler: handshake fails unless the cert chains to the CA
//!        ◄──server cert─────── agent checks the scheduler's cert and host name the same way
//! ```

use std::path::{Path, PathBuf};

use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

/// Why the TLS material cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} holds no PEM {what}")]
    NotPem { path: PathBuf, what: &'static str },
    #[error("mutual TLS needs all of --tls-ca, --tls-cert and --tls-key; {0} missing")]
    Incomplete(&'static str),
}

/// The CA to trust and this process' own certificate and key, ready for tonic.
#[derive(Clone, Debug)]
pub struct MutualTls {
    ca: Certificate,
    identity: Identity,
}

fn read_pem(path: &Path, marker: &str, what: &'static str) -> Result<Vec<u8>, TlsError> {
    let bytes = std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    if !String::from_utf8_lossy(&bytes).contains(marker) {
        return Err(TlsError::NotPem {
            path: path.to_path_buf(),
            what,
        });
    }
    Ok(bytes)
}

impl MutualTls {
    /// Reads the three PEM files.
    pub fn load(ca: &Path, cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let ca = read_pem(ca, "-----BEGIN CERTIFICATE-----", "certificate")?;
        let cert = read_pem(cert, "-----BEGIN CERTIFICATE-----", "certificate")?;
        let key = read_pem(key, "PRIVATE KEY-----", "private key")?;
        Ok(Self {
            ca: Certificate::from_pem(ca),
            identity: Identity::from_pem(cert, key),
        })
    }

    /// All three paths, or none (plaintext); anything in between is a configuration error, so
    /// that a forgotten flag never silently turns encryption off.
    pub fn from_paths(
        ca: Option<&Path>,
        cert: Option<&Path>,
        key: Option<&Path>,
    ) -> Result<Option<Self>, TlsError> {
        match (ca, cert, key) {
            (None, None, None) => Ok(None),
            (Some(ca), Some(cert), Some(key)) => Self::load(ca, cert, key).map(Some),
            (None, _, _) => Err(TlsError::Incomplete("--tls-ca is")),
            (_, None, _) => Err(TlsError::Incomplete("--tls-cert is")),
            (_, _, None) => Err(TlsError::Incomplete("--tls-key is")),
        }
    }

    /// A server that requires a client certificate signed by the CA.
    pub fn server(&self) -> ServerTlsConfig {
        ServerTlsConfig::new()
            .identity(self.identity.clone())
            .client_ca_root(self.ca.clone())
    }

    /// A client that trusts only the CA and presents this process' certificate.
    pub fn client(&self) -> ClientTlsConfig {
        ClientTlsConfig::new()
            .ca_certificate(self.ca.clone())
            .identity(self.identity.clone())
    }
}

/// The URL to dial for a gRPC address (`host:port` or a URL): `https://` with TLS, `http://`
/// without. A URL's scheme is made to agree, since tonic only speaks TLS to `https://`.
pub fn grpc_url(address: &str, tls: bool) -> String {
    let address = address.trim();
    let rest = address
        .strip_prefix("http://")
        .or_else(|| address.strip_prefix("https://"))
        .unwrap_or(address);
    format!("{}://{rest}", if tls { "https" } else { "http" })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_follow_the_tls_setting() {
        assert_eq!(grpc_url("10.0.0.1:5051", false), "http://10.0.0.1:5051");
        assert_eq!(grpc_url("10.0.0.1:5051", true), "https://10.0.0.1:5051");
        assert_eq!(grpc_url("http://leader:5051", true), "https://leader:5051");
        assert_eq!(grpc_url("https://leader:5051", false), "http://leader:5051");
    }

    #[test]
    fn partial_material_is_refused() {
        let p = Path::new("/nonexistent");
        assert!(matches!(MutualTls::from_paths(None, None, None), Ok(None)));
        assert!(matches!(
            MutualTls::from_paths(Some(p), None, Some(p)),
            Err(TlsError::Incomplete(_))
        ));
        assert!(matches!(
            MutualTls::from_paths(Some(p), Some(p), Some(p)),
            Err(TlsError::Read { .. })
        ));
    }
}
