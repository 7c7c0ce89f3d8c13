//! HTTPS to the nodes: the cluster's CA to trust, and a client certificate to present when the
//! nodes require one.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};

use crate::error::ClientError;

/// Files for HTTPS: the CA that signed the nodes' certificates, and this client's certificate
/// and key (both or neither).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// The CA certificate (PEM) the nodes' certificates must chain to.
    pub ca: PathBuf,
    /// This client's certificate (PEM), for nodes that require one.
    pub cert: Option<PathBuf>,
    /// Its private key (PEM).
    pub key: Option<PathBuf>,
}

/// A client's TLS settings, ready to connect with.
#[derive(Clone)]
pub struct ClientTls {
    /// For reqwest: HTTP/2 or HTTP/1.1 by ALPN.
    pub(crate) config: Arc<ClientConfig>,
    /// For the benchmark's own HTTP/1.1 connections.
    pub(crate) http1: Arc<ClientConfig>,
}

/// Two settings are equal when they are the same loaded settings (clones of one another).
impl PartialEq for ClientTls {
    fn eq(&self, other: &ClientTls) -> bool {
        Arc::ptr_eq(&self.config, &other.config)
    }
}

impl Eq for ClientTls {}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls").finish_non_exhaustive()
    }
}

impl ClientTls {
    /// Reads the files; any problem is an error naming the file.
    pub fn load(files: &TlsFiles) -> Result<ClientTls, ClientError> {
        let bad = |path: &Path, why: String| {
            ClientError::InvalidInput(format!("{}: {why}", path.display()))
        };
        let certs = |path: &Path| -> Result<Vec<CertificateDer<'static>>, ClientError> {
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| bad(path, format!("cannot read it: {e}")))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| bad(path, format!("not PEM certificates: {e}")))?;
            if certs.is_empty() {
                return Err(bad(path, "holds no certificate".into()));
            }
            Ok(certs)
        };
        let mut roots = RootCertStore::empty();
        for cert in certs(&files.ca)? {
            roots
                .add(cert)
                .map_err(|e| bad(&files.ca, format!("not a usable CA certificate: {e}")))?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| ClientError::InvalidInput(e.to_string()))?
            .with_root_certificates(roots);
        let config = match (&files.cert, &files.key) {
            (Some(cert), Some(key)) => {
                let chain = certs(cert)?;
                let key = PrivateKeyDer::from_pem_file(key)
                    .map_err(|e| bad(key, format!("no private key in PEM form: {e}")))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| bad(cert, format!("does not go with its key: {e}")))?
            }
            (None, None) => builder.with_no_client_auth(),
            _ => {
                return Err(ClientError::InvalidInput(
                    "a client certificate needs its key, and a key its certificate (--cert and \
                     --key together)"
                        .into(),
                ));
            }
        };
        let mut http1 = config.clone();
        http1.alpn_protocols = vec![b"http/1.1".to_vec()];
        let mut config = config;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(ClientTls {
            config: Arc::new(config),
            http1: Arc::new(http1),
        })
    }

    /// Opens TLS over `stream` to `endpoint` (`host:port`; the node's certificate must name the
    /// host), speaking HTTP/1.1.
    pub(crate) async fn connect_http1(
        &self,
        endpoint: &str,
        stream: tokio::net::TcpStream,
    ) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, String> {
        let host = endpoint
            .rsplit_once(':')
            .map_or(endpoint, |(host, _)| host)
            .trim_start_matches('[')
            .trim_end_matches(']');
        let name = ServerName::try_from(host.to_string())
            .map_err(|e| format!("{host} is no name for TLS: {e}"))?;
        tokio_rustls::TlsConnector::from(self.http1.clone())
            .connect(name, stream)
            .await
            .map_err(|e| format!("TLS: {e}"))
    }
}

/// A TLS configuration for a client that speaks plain HTTP only: it trusts no one. Given to
/// reqwest so that it never looks for a process-wide crypto provider (which an application
/// embedding this crate may want to choose itself).
pub(crate) fn plain_http_only() -> ClientConfig {
    ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("ring supports TLS 1.3")
        .with_root_certificates(RootCertStore::empty())
        .with_no_client_auth()
}
