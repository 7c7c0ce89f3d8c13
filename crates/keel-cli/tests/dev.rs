//! `keel dev` as the README's tour drives it: a member removed from its cluster is stopped and
//! stays down, whether it led or followed; and `keel dev --tls`, whose nodes serve HTTPS to
//! clients with certificates only, followers forwarding to the leader over HTTPS.

mod support;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use keel_client::{Client, ClientOptions};
use support::{free_port, wait_until};

/// `keel dev` running in a temp dir; stopped (SIGTERM, then SIGKILL) when dropped.
struct Dev {
    dir: std::path::PathBuf,
    child: Option<Child>,
}

impl Dev {
    fn start(name: &str, client_port: u16, peer_port: u16, extra: &[&str]) -> Dev {
        let dir = std::env::temp_dir().join(format!("keel-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let log = std::fs::File::create(dir.join("dev.log")).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_keel"))
            .arg("dev")
            .arg("--data-dir")
            .arg(dir.join("data"))
            .args(["--client-port", &client_port.to_string()])
            .args(["--peer-port", &peer_port.to_string()])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("start keel dev");
        Dev {
            dir,
            child: Some(child),
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("dev.log")).unwrap_or_default()
    }

    /// SIGTERM, and waits (up to 30 s) for keel dev to stop its nodes and exit.
    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // SAFETY: kill(2) with a pid this process spawned; SIGTERM touches no memory here.
        unsafe {
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
        let until = Instant::now() + Duration::from_secs(30);
        while child.try_wait().expect("poll child").is_none() {
            if Instant::now() > until {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "keel dev did not stop within 30 s of SIGTERM\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        if std::thread::panicking() {
            if let Some(mut child) = self.child.take() {
                // SAFETY: as in `stop`.
                unsafe {
                    libc::kill(child.id() as i32, libc::SIGTERM);
                }
                std::thread::sleep(Duration::from_secs(2));
                let _ = child.kill();
                let _ = child.wait();
            }
        } else {
            self.stop();
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// `count` consecutive free ports (keel dev gives node i the base port + i - 1).
fn free_ports(count: u16) -> u16 {
    let mut base = free_port();
    let mut run = 1;
    while run < count {
        let next = free_port();
        if next == base + run {
            run += 1;
        } else {
            base = next;
            run = 1;
        }
    }
    base
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keel_dev_stops_a_removed_follower_and_keeps_it_down() {
    let client_port = free_ports(3);
    let peer_port = free_ports(3);
    let mut dev = Dev::start("dev-remove", client_port, peer_port, &[]);
    let endpoints: Vec<String> = (0..3)
        .map(|i| format!("127.0.0.1:{}", client_port + i))
        .collect();
    let client = Client::new(ClientOptions {
        deadline: Duration::from_secs(20),
        ..ClientOptions::with_endpoints(endpoints.clone())
    })
    .expect("client");

    // Wait for a leader, then pick a follower: the case keel dev used to miss, since a removed
    // follower is never told that its removal committed.
    let until = Instant::now() + Duration::from_secs(30);
    let leader = loop {
        let status = client.cluster_status().await;
        if let Some((_, s)) = status.leader() {
            break s.node_id;
        }
        assert!(Instant::now() < until, "no leader in 30 s\n{}", dev.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let follower = if leader == 1 { 2 } else { 1 };
    client.put("before", "removal").await.expect("write");
    let members = client.remove_member(follower).await.expect("remove");
    assert!(members.members.iter().all(|m| m.id != follower));

    let stopped = format!("[dev] node {follower} was removed from the cluster; stopping it");
    let down = format!("[dev] node {follower} stopped");
    wait_until(
        || dev.log().contains(&stopped) && dev.log().contains(&down),
        Duration::from_secs(30),
        "keel dev to stop the removed follower",
    )
    .await;
    let log = dev.log();
    assert!(log.contains("it was removed, so it stays down"), "{log}");
    let removed = &endpoints[follower as usize - 1];
    assert!(
        client.status(removed).await.is_err(),
        "the removed node still answers on {removed}\n{log}"
    );
    // The other two go on.
    client.put("after", "removal").await.expect("write");
    dev.stop();
    let log = dev.log();
    assert!(
        !log.contains(&format!("[dev] node {follower} exited")),
        "keel dev restarted the removed node\n{log}"
    );
}

/// Runs the `keel` command and returns its exit code, stdout and stderr.
fn keel(args: &[&str]) -> (Option<i32>, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_keel"))
        .args(args)
        .output()
        .expect("run keel");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keel_dev_tls_serves_https_to_clients_with_certificates_only() {
    let client_port = free_ports(3);
    let peer_port = free_ports(3);
    let dev = Dev::start("dev-tls", client_port, peer_port, &["--tls"]);
    let certs = dev.dir.join("data").join("certs");
    let file = |name: &str| certs.join(name).to_string_lossy().into_owned();
    let (ca, cert, key) = (
        file("ca.pem"),
        file("client-keel-dev.pem"),
        file("client-keel-dev-key.pem"),
    );
    // Every node, followers too (they forward to the leader over HTTPS), through the CLI.
    let until = Instant::now() + Duration::from_secs(60);
    for port in client_port..client_port + 3 {
        let endpoint = format!("https://127.0.0.1:{port}");
        let value = format!("v{port}");
        let tls = ["--cacert", &ca, "--cert", &cert, "--key", &key];
        loop {
            let mut args = vec!["--endpoints", &endpoint, "--timeout", "5"];
            args.extend(tls);
            args.extend(["put", "k", &value]);
            let (code, stdout, stderr) = keel(&args);
            if code == Some(0) {
                assert!(stdout.starts_with("ok (index"), "{stdout}");
                break;
            }
            assert!(
                Instant::now() < until,
                "put through {endpoint} failed: {stderr}\n{}",
                dev.log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let mut args = vec!["--endpoints", &endpoint];
        args.extend(tls);
        args.extend(["get", "k"]);
        let (code, stdout, stderr) = keel(&args);
        assert_eq!(code, Some(0), "{stderr}");
        assert_eq!(stdout.trim(), value);
    }
    // A client cannot pose as a forwarding node: a forwarded header from a connection whose
    // certificate names no member is ignored, so a follower still forwards the write (over
    // plain HTTP anyone can set it, and one naming two hops would stop the forwarding).
    let admin_endpoints = format!("https://127.0.0.1:{client_port}");
    let mut args = vec!["--endpoints", &admin_endpoints];
    let tls = ["--cacert", &ca, "--cert", &cert, "--key", &key];
    args.extend(tls);
    args.push("status");
    let (_, table, _) = keel(&args);
    let follower = table
        .lines()
        .find(|line| line.contains("follower"))
        .and_then(|line| line.split_whitespace().nth(1))
        .unwrap_or_else(|| panic!("no follower in\n{table}"))
        .to_string();
    let answer = https_put_posing_as_forwarded(&follower, &certs).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    let endpoint = format!("https://127.0.0.1:{client_port}");
    // Without a client certificate the TLS handshake fails; plain HTTP gets no answer either.
    let (code, _, stderr) = keel(&[
        "--endpoints",
        &endpoint,
        "--cacert",
        &ca,
        "--timeout",
        "2",
        "get",
        "k",
    ]);
    assert_ne!(code, Some(0), "served without a client certificate");
    assert!(!stderr.is_empty());
    let plain = format!("127.0.0.1:{client_port}");
    let (code, _, _) = keel(&["--endpoints", &plain, "--timeout", "2", "get", "k"]);
    assert_ne!(code, Some(0), "served plain HTTP");
    // An https:// endpoint without a CA is a usage error, saying what is missing.
    let (code, _, stderr) = keel(&["--endpoints", &endpoint, "get", "k"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("--cacert"), "{stderr}");
}

/// PUTs a key through `addr` over HTTPS with the `keel dev` client certificate, claiming in the
/// forwarded header to have come through nodes 1 and 2; returns the answer's head.
async fn https_put_posing_as_forwarded(addr: &str, certs: &std::path::Path) -> String {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(certs.join("ca.pem")).expect("CA") {
        roots.add(cert.expect("PEM")).expect("a CA");
    }
    let chain: Vec<_> = CertificateDer::pem_file_iter(certs.join("client-keel-dev.pem"))
        .expect("cert")
        .map(|c| c.expect("PEM"))
        .collect();
    let key = PrivateKeyDer::from_pem_file(certs.join("client-keel-dev-key.pem")).expect("key");
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .expect("TLS 1.3")
    .with_root_certificates(roots)
    .with_client_auth_cert(chain, key)
    .expect("a client certificate");
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let host = addr.rsplit_once(':').expect("host:port").0.to_string();
    let mut tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(ServerName::try_from(host).expect("a name"), stream)
        .await
        .expect("TLS");
    let request = format!(
        "PUT /v1/kv/posing HTTP/1.1\r\nHost: {addr}\r\nKeel-Forwarded: 1,2\r\n\
         Content-Length: 1\r\nConnection: close\r\n\r\nv"
    );
    tls.write_all(request.as_bytes()).await.expect("write");
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), tls.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}
