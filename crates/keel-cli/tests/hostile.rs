//! A hostile process against three `keel serve` run as a real cluster is (mutual TLS between
//! members, and a peer secret) while clients write. It reaches every member's peer port and
//! tries what once stopped or misled a cluster: a forged AppendEntries of term 2^63 - 1 whose
//! entry is a command of an unknown version, a vote request of that term, a hello whose client
//! address is a URL, the first chunk of a 4 GiB snapshot, and silent connections by the hundred;
//! once over plain TCP, and once over
//! TLS with a certificate of a node of another cluster, made with the cluster CA's own key.
//! The cluster must keep serving, no node may adopt the term or stop, the history must be
//! linearizable and no acknowledged write lost.

mod support;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use bytes::Bytes;
use keel::codec::MAX_TERM;
use keel::message::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use keel::{Entry, Membership, Payload, Request};
use keel_client::{Client, ClientOptions};
use keel_net::wire;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use support::{Cluster, History, NODES, check_clients, client_loop, wait_for_leader, wait_until};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// What the attacker sends after connecting: a hello claiming to be another member (with a URL
/// for a client address on one of the connections), then forged requests.
fn attack_frames(cluster_id: u64, to: u64, url_for_address: bool) -> Vec<u8> {
    let from = if to == 2 { 1 } else { 2 };
    let hello = wire::Hello {
        cluster_id,
        from,
        to,
        client_addr: if url_for_address {
            "evil.example/steal?x=:80".into()
        } else {
            "127.0.0.1:1".into()
        },
        nonce: None,
    };
    let forged = Request::AppendEntries(AppendEntriesRequest {
        term: MAX_TERM,
        leader_id: from,
        prev_log_index: 0,
        prev_log_term: 0,
        entries: vec![Entry {
            index: 1,
            term: MAX_TERM,
            // Version byte 0x6a: no build wrote it.
            payload: Payload::Command(Bytes::from_static(b"junk")),
        }],
        leader_commit: 1,
    });
    let vote = Request::Vote(VoteRequest {
        term: MAX_TERM,
        candidate_id: from,
        last_log_index: u64::MAX >> 1,
        last_log_term: MAX_TERM,
        pre_vote: false,
        transfer: true,
    });
    // A plausible term, so that only authentication stands in its way.
    let snapshot = Request::InstallSnapshot(InstallSnapshotRequest {
        term: 7,
        leader_id: from,
        last_included_index: 1 << 40,
        last_included_term: 7,
        offset: 0,
        total_len: 4 << 30,
        membership: Membership::with_voters([from]),
        data: Bytes::from(vec![0x5a; 1 << 20]),
        done: false,
    });
    let mut out = hello.encode().to_vec();
    out.extend_from_slice(&wire::encode_request(1, &forged));
    out.extend_from_slice(&wire::encode_request(2, &vote));
    out.extend_from_slice(&wire::encode_request(3, &snapshot));
    out
}

/// Sends `frames` on `stream` and reads whatever comes back until the node closes it (or 10 s
/// pass); returns what came back.
async fn send_and_drain<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    frames: &[u8],
) -> Vec<u8> {
    let _ = stream.write_all(frames).await;
    let mut back = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut back)).await;
    back
}

/// Accepts any server certificate: the attacker does not care whom it talks to.
#[derive(Debug)]
struct AnyServer(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A TLS client presenting a certificate of node `id` of cluster "evil", made with the key of
/// the CA whose files are in `dir` (the cluster's own), as the CA of cluster "evil".
fn foreign_member(dir: &std::path::Path, id: u64) -> tokio_rustls::TlsConnector {
    let ca_cert = std::fs::read_to_string(dir.join("ca.pem")).expect("the CA");
    let ca_key = std::fs::read_to_string(dir.join("ca-key.pem")).expect("the CA key");
    let ca = keel_net::ClusterCa::from_pem("evil", ca_cert, &ca_key).expect("the CA");
    let issued = ca.node(id, &[]).expect("a certificate");
    let chain = vec![CertificateDer::from_pem_slice(issued.cert_pem.as_bytes()).expect("PEM")];
    let key = PrivateKeyDer::from_pem_slice(issued.key_pem.as_bytes()).expect("PEM");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyServer(provider)))
        .with_client_auth_cert(chain, key)
        .expect("a client certificate");
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_peer_cannot_stop_or_mislead_the_cluster() {
    let mut cluster = Cluster::new("hostile");
    for i in 0..NODES as usize {
        cluster.start(i);
    }
    let options = ClientOptions {
        deadline: Duration::from_secs(20),
        ..ClientOptions::with_endpoints(cluster.endpoints())
    };
    let admin = Client::new(options).expect("client");
    wait_for_leader(&admin, &cluster, Duration::from_secs(30)).await;

    let start = Instant::now();
    let history: History = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (1..=4u64)
        .map(|id| {
            let client = admin.new_session();
            tokio::spawn(client_loop(
                id,
                client,
                start,
                history.clone(),
                stop.clone(),
            ))
        })
        .collect();
    let progress = |history: &History| history.lock().len();
    wait_until(
        || progress(&history) >= 100,
        Duration::from_secs(30),
        "initial load",
    )
    .await;

    let cluster_id = keel_net::cluster_id("processes-test");
    let mut silent = Vec::new();
    for (i, port) in cluster.peer_ports[..NODES as usize].iter().enumerate() {
        let addr = format!("127.0.0.1:{port}");
        let to = i as u64 + 1;
        // Plain TCP: dropped in the TLS handshake, before a hello is read; told nothing.
        for url in [false, true] {
            let stream = tokio::net::TcpStream::connect(&addr)
                .await
                .expect("connect");
            let back = send_and_drain(stream, &attack_frames(cluster_id, to, url)).await;
            let text = String::from_utf8_lossy(&back);
            assert!(
                !text.contains("cluster") && !text.contains("node"),
                "a plain dialer was told {text:?}"
            );
        }
        // TLS with a certificate of another cluster: refused in the TLS handshake (its issuer
        // is not the cluster's CA) or, were it past that, at the hello (it names no member of
        // this cluster); nothing it sent is taken either way.
        let stream = tokio::net::TcpStream::connect(&addr)
            .await
            .expect("connect");
        let name = ServerName::try_from("attacker.invalid").expect("a name");
        let foreign = foreign_member(&cluster.certs[0], if to == 2 { 1 } else { 2 });
        if let Ok(tls) = foreign.connect(name, stream).await {
            let back = send_and_drain(tls, &attack_frames(cluster_id, to, false)).await;
            let text = String::from_utf8_lossy(&back);
            assert!(
                text.is_empty() || text.contains("its certificate does not name that node"),
                "node {to} answered the foreign member {text:?}"
            );
        }
        // Silent connections by the hundred.
        for _ in 0..100 {
            if let Ok(stream) = tokio::net::TcpStream::connect(&addr).await {
                silent.push(stream);
            }
        }
    }

    // The cluster goes on serving meanwhile.
    let before = progress(&history);
    wait_until(
        || progress(&history) >= before + 300,
        Duration::from_secs(60),
        "load during and after the attacks",
    )
    .await;
    drop(silent);
    for i in 0..NODES as usize {
        let status = admin
            .status(&cluster.endpoint(i))
            .await
            .expect("every node answers");
        assert!(
            status.term < 1_000,
            "node {} is at term {}",
            i + 1,
            status.term
        );
        assert_ne!(status.role, "stopped", "node {} stopped", i + 1);
        assert!(
            status.snapshot_index < 1 << 40,
            "node {} took the forged snapshot",
            i + 1
        );
        assert!(
            status
                .members
                .iter()
                .all(|m| m.client_addr.as_deref().is_none_or(|a| !a.contains('/'))),
            "node {} took a URL for a client address: {:?}",
            i + 1,
            status.members
        );
    }
    let all: Vec<usize> = (0..NODES as usize).collect();
    let operations = check_clients(&admin, &cluster, &all, &stop, clients, &history).await;
    println!("{operations} operations, linearizable, under attack");
}
