//! Making a cluster's certificate authority and its members' and clients' certificates, named
//! as [`crate::tls`] expects (`keel certs` and `keel dev` use this).
//!
//! The CA is an ECDSA P-256 key with a self-signed certificate valid for ten years; member and
//! client certificates are valid for two years (renew them by issuing new ones from the same CA:
//! members reload changed files). A CA can be recreated from its key and cluster name alone,
//! to issue more certificates later.

use keel::NodeId;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use time::{Duration, OffsetDateTime};

use crate::tls::node_name;

/// A certificate could not be made (a host name that is no DNS name or IP address, a key file
/// that is not an ECDSA key in PEM form...).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CertError(String);

impl From<rcgen::Error> for CertError {
    fn from(error: rcgen::Error) -> CertError {
        CertError(error.to_string())
    }
}

/// A certificate and its private key, both PEM.
#[derive(Clone, Debug)]
pub struct Issued {
    /// The certificate.
    pub cert_pem: String,
    /// The private key (PKCS#8).
    pub key_pem: String,
}

/// A cluster's certificate authority.
pub struct ClusterCa {
    cluster: String,
    params: CertificateParams,
    key: KeyPair,
    cert_pem: String,
}

impl std::fmt::Debug for ClusterCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterCa")
            .field("cluster", &self.cluster)
            .finish_non_exhaustive()
    }
}

impl ClusterCa {
    /// A new CA for cluster `cluster` (its name, as given to `keel serve --cluster`).
    pub fn generate(cluster: &str) -> Result<ClusterCa, CertError> {
        let key = KeyPair::generate()?;
        let params = ca_params(cluster, OffsetDateTime::now_utc());
        let cert_pem = params.self_signed(&key)?.pem();
        Ok(ClusterCa {
            cluster: cluster.to_string(),
            params,
            key,
            cert_pem,
        })
    }

    /// The CA of `cluster` whose certificate is `cert_pem` and key `key_pem` (as written by
    /// [`ClusterCa::cert_pem`] and [`ClusterCa::key_pem`]), to issue more certificates.
    pub fn from_pem(
        cluster: &str,
        cert_pem: String,
        key_pem: &str,
    ) -> Result<ClusterCa, CertError> {
        let key = KeyPair::from_pem(key_pem)
            .map_err(|e| CertError(format!("not a CA key in PEM form: {e}")))?;
        // The issuer of a certificate is the CA's subject name and key identifier, which depend
        // only on the cluster's name and the key: the validity dates do not matter here.
        let params = ca_params(cluster, OffsetDateTime::now_utc());
        Ok(ClusterCa {
            cluster: cluster.to_string(),
            params,
            key,
            cert_pem,
        })
    }

    /// The CA's certificate, which every member and client trusts.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA's private key: keep it off the members, it can make new ones.
    pub fn key_pem(&self) -> String {
        self.key.serialize_pem()
    }

    /// A certificate for node `id`: names it as a member of this cluster, for peer TLS in both
    /// directions, and also carries `hosts` (DNS names or IP addresses that clients use to
    /// reach its HTTPS API).
    pub fn node(&self, id: NodeId, hosts: &[String]) -> Result<Issued, CertError> {
        let cluster_id = crate::cluster_id(&self.cluster);
        let mut names = vec![node_name(cluster_id, id)];
        names.extend(hosts.iter().cloned());
        let mut params = CertificateParams::new(names).map_err(|e| {
            CertError(format!(
                "a host of node {id} is not a DNS name or IP address: {e}"
            ))
        })?;
        params.distinguished_name = name(&format!("keel node {id}"), &self.cluster);
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        self.issue(params)
    }

    /// A certificate for a client of the HTTP API called `client` (its identity).
    pub fn client(&self, client: &str) -> Result<Issued, CertError> {
        let cluster_id = crate::cluster_id(&self.cluster);
        let mut params = CertificateParams::new(vec![client_name(cluster_id, client)?])
            .map_err(|e| CertError(format!("client name {client:?}: {e}")))?;
        params.distinguished_name = name(client, &self.cluster);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.issue(params)
    }

    fn issue(&self, mut params: CertificateParams) -> Result<Issued, CertError> {
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::days(1);
        params.not_after = now + Duration::days(2 * 365);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate()?;
        let issuer = Issuer::from_params(&self.params, &self.key);
        let cert = params.signed_by(&key, &issuer)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// The DNS name a client certificate carries: `<client>.client.<cluster id in hex>.keel`. A
/// client name is a DNS label: letters, digits and `-`, at most 63 bytes.
pub fn client_name(cluster_id: u64, client: &str) -> Result<String, CertError> {
    let label_ok = !client.is_empty()
        && client.len() <= 63
        && client
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !client.starts_with('-')
        && !client.ends_with('-');
    if !label_ok {
        return Err(CertError(format!(
            "client name {client:?} must be letters, digits and '-' (at most 63, not starting \
             or ending with '-')"
        )));
    }
    Ok(format!(
        "{}.client.{cluster_id:016x}.keel",
        client.to_ascii_lowercase()
    ))
}

fn ca_params(cluster: &str, now: OffsetDateTime) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = name(&format!("keel CA of cluster {cluster}"), cluster);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.not_before = now - Duration::days(1);
    params.not_after = now + Duration::days(10 * 365);
    params
}

fn name(common: &str, cluster: &str) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, common);
    name.push(DnType::OrganizationName, format!("keel cluster {cluster}"));
    name
}
