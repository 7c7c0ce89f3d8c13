//! Mutual TLS between members: who a peer is, proven by a certificate of the cluster's CA.
//!
//! Every connection between members runs TLS 1.3, and both sides present a certificate signed
//! by the cluster's certificate authority. A member's certificate names it with a DNS name of
//! the form [`node_name`]: `node-<id>.<cluster id in hex>.keel`. The dialer asks for the name of
//! the node it calls, so rustls refuses an acceptor that is not that node of that cluster; the
//! acceptor checks the dialer's certificate against the id its hello claims, so a member cannot
//! pose as another, and a certificate of another cluster (even one signed by the same CA)
//! names no member of this one. Everything after the TLS handshake, the hello included, is
//! encrypted and authenticated.
//!
//! `keel certs` makes such a CA and certificates; any CA works if its certificates carry these
//! names. The files are read again when they change (looked at, at most once a second, before
//! a dial or accept, so a renewed certificate is used by the connections after that) or when [`PeerTls::reload`] is called
//! (`keel serve` does on SIGHUP). A reload that fails keeps the certificates in use and logs why.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use keel::NodeId;
use parking_lot::Mutex;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::{ParsedCertificate, WebPkiClientVerifier};
use rustls::{ClientConfig, RootCertStore, ServerConfig};

/// The DNS name a member's certificate carries: `node-<id>.<cluster_id as 16 hex digits>.keel`.
pub fn node_name(cluster_id: u64, id: NodeId) -> String {
    format!("node-{id}.{cluster_id:016x}.keel")
}

/// Where a member's CA, certificate and key are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// The cluster CA's certificate (PEM): peers' certificates must be signed by it.
    pub ca: PathBuf,
    /// This member's certificate chain (PEM), naming it with [`node_name`].
    pub cert: PathBuf,
    /// This member's private key (PEM).
    pub key: PathBuf,
}

/// A member's TLS settings that cannot work, with the file and the reason.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct TlsError {
    /// The file at fault.
    pub path: PathBuf,
    /// What is wrong with it.
    pub reason: String,
}

/// A member's TLS identity and trust: the rustls configurations for both ends of a connection,
/// reloaded when the files change.
pub struct PeerTls {
    files: TlsFiles,
    cluster_id: u64,
    node_id: NodeId,
    current: Mutex<Loaded>,
}

#[derive(Clone)]
struct Loaded {
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
    /// The client API over HTTPS, without and with client certificates required.
    https: Arc<ServerConfig>,
    https_client_certs: Arc<ServerConfig>,
    /// Forwarding client requests to the leader's HTTPS API.
    forward: Arc<ClientConfig>,
    stamps: [Option<SystemTime>; 3],
    /// When the files' times were last looked at.
    checked: Instant,
}

/// How often the files' modification times are looked at (each look is three `stat` calls,
/// blocking, on the path of every new connection otherwise).
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// ALPN protocols of the HTTPS API, preferred first.
const HTTP_ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

impl std::fmt::Debug for PeerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerTls")
            .field("files", &self.files)
            .field("name", &node_name(self.cluster_id, self.node_id))
            .finish()
    }
}

impl PeerTls {
    /// Reads the files and checks that the certificate names node `node_id` of cluster
    /// `cluster_id` and is signed by the CA.
    pub fn load(files: TlsFiles, cluster_id: u64, node_id: NodeId) -> Result<PeerTls, TlsError> {
        let loaded = load(&files, cluster_id, node_id)?;
        Ok(PeerTls {
            files,
            cluster_id,
            node_id,
            current: Mutex::new(loaded),
        })
    }

    /// The files this identity comes from.
    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// Reads the files again now. On an error the certificates in use stay.
    pub fn reload(&self) -> Result<(), TlsError> {
        let loaded = load(&self.files, self.cluster_id, self.node_id)?;
        *self.current.lock() = loaded;
        tracing::info!(
            "reloaded the peer TLS certificates from {}",
            self.files.cert.display()
        );
        Ok(())
    }

    /// Reloads if a file changed since the last load (a failed reload is logged, and tried
    /// again at the next change).
    fn refresh(&self) -> Loaded {
        let current = {
            let mut current = self.current.lock();
            if current.checked.elapsed() < CHECK_EVERY {
                return current.clone();
            }
            current.checked = Instant::now();
            current.clone()
        };
        let stamps = stamps(&self.files);
        if stamps == current.stamps {
            return current;
        }
        match load(&self.files, self.cluster_id, self.node_id) {
            Ok(loaded) => {
                tracing::info!(
                    "peer TLS files changed; reloaded them from {}",
                    self.files.cert.display()
                );
                *self.current.lock() = loaded.clone();
                loaded
            }
            Err(error) => {
                tracing::warn!(
                    "peer TLS files changed but cannot be used: {error}; keeping the old ones"
                );
                // Do not retry until they change again.
                self.current.lock().stamps = stamps;
                current
            }
        }
    }

    /// The configuration for accepting a connection (client certificates required).
    pub(crate) fn server_config(&self) -> Arc<ServerConfig> {
        self.refresh().server
    }

    /// The configuration for dialing a peer.
    pub(crate) fn client_config(&self) -> Arc<ClientConfig> {
        self.refresh().client
    }

    /// The configuration for serving the client API over HTTPS with this node's certificate
    /// (HTTP/2 or HTTP/1.1 by ALPN), requiring client certificates of the cluster's CA if
    /// `client_certs`; otherwise one is asked for, and verified if the client presents it.
    pub fn https_config(&self, client_certs: bool) -> Arc<ServerConfig> {
        let loaded = self.refresh();
        if client_certs {
            loaded.https_client_certs
        } else {
            loaded.https
        }
    }

    /// The configuration for forwarding a client's request to another member's HTTPS API:
    /// trusts the cluster's CA, and presents this node's certificate.
    pub fn forward_config(&self) -> Arc<ClientConfig> {
        self.refresh().forward
    }

    /// The name the dialer expects node `id`'s certificate to carry.
    pub(crate) fn server_name(&self, id: NodeId) -> ServerName<'static> {
        ServerName::try_from(node_name(self.cluster_id, id)).expect("node names are DNS names")
    }

    /// Whether `cert` (a dialer's or client's, already verified against the CA by rustls)
    /// names node `id` of this cluster.
    pub fn names(&self, cert: &CertificateDer<'_>, id: NodeId) -> bool {
        names(cert, self.cluster_id, id)
    }

    /// Whom `cert` (a client's, already verified against the CA by rustls) names in this
    /// cluster: a member ([`node_name`]) or a client ([`crate::certs::client_name`]); `None`
    /// for a certificate that names neither (of another cluster, say).
    pub fn holder(&self, cert: &CertificateDer<'_>) -> Option<Holder> {
        holder(cert, self.cluster_id)
    }
}

/// Whom a certificate names in a cluster (see [`PeerTls::holder`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Holder {
    /// A member, by id.
    Node(NodeId),
    /// A client, by the name `keel certs --client NAME` gave it (lower case).
    Client(String),
}

fn holder(cert: &CertificateDer<'_>, cluster_id: u64) -> Option<Holder> {
    let parsed = webpki::EndEntityCert::try_from(cert).ok()?;
    let suffix = format!(".{cluster_id:016x}.keel");
    // The names are candidates only: each is confirmed by rustls' own name check below.
    let found = parsed.valid_dns_names().find_map(|name| {
        let rest = name.strip_suffix(&suffix)?;
        if let Some(id) = rest.strip_prefix("node-") {
            return id.parse().ok().map(Holder::Node);
        }
        let client = rest.strip_suffix(".client")?;
        let name = crate::certs::client_name(cluster_id, client).ok()?;
        (name.strip_suffix(&suffix)?.strip_suffix(".client")? == client)
            .then(|| Holder::Client(client.to_string()))
    })?;
    let full = match &found {
        Holder::Node(id) => node_name(cluster_id, *id),
        Holder::Client(client) => format!("{client}.client{suffix}"),
    };
    let parsed = ParsedCertificate::try_from(cert).ok()?;
    let name = ServerName::try_from(full).ok()?;
    rustls::client::verify_server_name(&parsed, &name)
        .is_ok()
        .then_some(found)
}

fn names(cert: &CertificateDer<'_>, cluster_id: u64, id: NodeId) -> bool {
    let Ok(parsed) = ParsedCertificate::try_from(cert) else {
        return false;
    };
    let Ok(name) = ServerName::try_from(node_name(cluster_id, id)) else {
        return false;
    };
    rustls::client::verify_server_name(&parsed, &name).is_ok()
}

fn stamps(files: &TlsFiles) -> [Option<SystemTime>; 3] {
    [&files.ca, &files.cert, &files.key]
        .map(|path| std::fs::metadata(path).and_then(|m| m.modified()).ok())
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn load(files: &TlsFiles, cluster_id: u64, node_id: NodeId) -> Result<Loaded, TlsError> {
    let stamps = stamps(files);
    let fail = |path: &Path, reason: String| TlsError {
        path: path.to_path_buf(),
        reason,
    };
    let ca = read_certs(&files.ca)?;
    let chain = read_certs(&files.cert)?;
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| fail(&files.key, format!("no private key in PEM form: {e}")))?;
    let mut roots = RootCertStore::empty();
    for cert in ca {
        roots
            .add(cert)
            .map_err(|e| fail(&files.ca, format!("not a usable CA certificate: {e}")))?;
    }
    if !names(&chain[0], cluster_id, node_id) {
        return Err(fail(
            &files.cert,
            format!(
                "the certificate does not name node {node_id} of this cluster (it must carry \
                 the DNS name {}; `keel certs` makes such certificates)",
                node_name(cluster_id, node_id)
            ),
        ));
    }
    let roots = Arc::new(roots);
    // The certificate must chain to the CA peers trust, or every peer would refuse it.
    let own = WebPkiServerVerifier::builder_with_provider(roots.clone(), provider())
        .build()
        .map_err(|e| {
            fail(
                &files.ca,
                format!("cannot verify certificates with it: {e}"),
            )
        })?;
    let now = rustls::pki_types::UnixTime::now();
    let name = ServerName::try_from(node_name(cluster_id, node_id)).expect("a DNS name");
    own.verify_server_cert(&chain[0], &chain[1..], &name, &[], now)
        .map_err(|e| {
            fail(
                &files.cert,
                format!(
                    "not a valid certificate of the CA in {}: {e}",
                    files.ca.display()
                ),
            )
        })?;
    let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider())
        .build()
        .map_err(|e| fail(&files.ca, format!("cannot verify peers with it: {e}")))?;
    let server = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| fail(&files.cert, e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain.clone(), key.clone_key())
        .map_err(|e| fail(&files.cert, format!("does not go with its key: {e}")))?;
    let client = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| fail(&files.cert, e.to_string()))?
        .with_root_certificates(roots.clone())
        .with_client_auth_cert(chain.clone(), key.clone_key())
        .map_err(|e| fail(&files.cert, format!("does not go with its key: {e}")))?;
    let https_verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider())
        .build()
        .map_err(|e| fail(&files.ca, format!("cannot verify clients with it: {e}")))?;
    let https_server = |verifier: Arc<dyn rustls::server::danger::ClientCertVerifier>| {
        let builder = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| fail(&files.cert, e.to_string()))?;
        let builder = builder.with_client_cert_verifier(verifier);
        let mut config = builder
            .with_single_cert(chain.clone(), key.clone_key())
            .map_err(|e| fail(&files.cert, format!("does not go with its key: {e}")))?;
        config.alpn_protocols = HTTP_ALPN.iter().map(|p| p.to_vec()).collect();
        Ok::<_, TlsError>(Arc::new(config))
    };
    // Without required client certificates, one is still asked for (and verified if given):
    // members forwarding to the leader present theirs, and so may clients authenticating by
    // certificate rather than by token.
    let optional_verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider())
        .allow_unauthenticated()
        .build()
        .map_err(|e| fail(&files.ca, format!("cannot verify clients with it: {e}")))?;
    let https = https_server(optional_verifier)?;
    let https_client_certs = https_server(https_verifier)?;
    let mut forward = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| fail(&files.cert, e.to_string()))?
        .with_root_certificates(roots.clone())
        .with_client_auth_cert(chain.clone(), key.clone_key())
        .map_err(|e| fail(&files.cert, format!("does not go with its key: {e}")))?;
    forward.alpn_protocols = HTTP_ALPN.iter().map(|p| p.to_vec()).collect();
    Ok(Loaded {
        server: Arc::new(server),
        client: Arc::new(client),
        https,
        https_client_certs,
        forward: Arc::new(forward),
        stamps,
        checked: Instant::now(),
    })
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let fail = |reason: String| TlsError {
        path: path.to_path_buf(),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| fail(format!("cannot read it: {e}")))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| fail(format!("not PEM certificates: {e}")))?;
    if certs.is_empty() {
        return Err(fail("holds no certificate".into()));
    }
    Ok(certs)
}

/// A client configuration that trusts no one: for an HTTP client (reqwest) that speaks plain
/// HTTP only, so that it never looks for a process-wide crypto provider.
pub fn plain_http_only() -> ClientConfig {
    ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("ring supports TLS 1.3")
        .with_root_certificates(RootCertStore::empty())
        .with_no_client_auth()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ClusterCa, cluster_id};

    fn der(pem: &str) -> CertificateDer<'static> {
        CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()
    }

    /// A certificate names a member or a client of its own cluster, and nothing in another.
    #[test]
    fn a_certificate_names_its_member_or_client_in_its_cluster_only() {
        let ca = ClusterCa::generate("alpha").unwrap();
        let alpha = cluster_id("alpha");
        let node = der(&ca.node(3, &["localhost".into()]).unwrap().cert_pem);
        let client = der(&ca.client("Ops-1").unwrap().cert_pem);
        assert_eq!(holder(&node, alpha), Some(Holder::Node(3)));
        assert_eq!(holder(&client, alpha), Some(Holder::Client("ops-1".into())));
        let beta = cluster_id("beta");
        assert_eq!(holder(&node, beta), None);
        assert_eq!(holder(&client, beta), None);
        assert_eq!(holder(&CertificateDer::from(vec![0x30, 1, 2]), alpha), None);
    }
}
