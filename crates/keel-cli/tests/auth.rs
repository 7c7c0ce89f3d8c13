//! Authentication and authorization on the client API, against three `keel serve` processes
//! serving HTTPS with an access file made by `keel token create`: who gets 401 and 403, that
//! followers forward a client's identity and nobody can forge it, that sessions belong to
//! their client, that a revoked token stops working without a restart, and the unauthenticated
//! monitoring listener.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use support::{Cluster, free_port};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Runs `keel` with `args`; returns its exit code, stdout and stderr.
fn keel(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_keel"))
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("run keel");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// `keel token create NAME --grant ...` into `access`; returns the token it printed.
fn create_token(access: &Path, name: &str, grants: &[&str]) -> String {
    let access = access.to_str().unwrap();
    let mut args = vec!["token", "create", name, "--access", access];
    for grant in grants {
        args.extend(["--grant", grant]);
    }
    let (code, out, err) = keel(&args, &[]);
    assert_eq!(code, Some(0), "keel token create: {err}");
    let token = out.trim().to_string();
    assert!(token.starts_with("keel_"), "{out}");
    token
}

/// One HTTPS request: the status, and the body as text.
struct Answer {
    status: u16,
    head: String,
    body: String,
}

/// A client's TLS settings: the cluster CA, and optionally a certificate (`client-NAME.pem`
/// under `certs`, or a node's).
fn tls_config(certs: &Path, cert: Option<&str>) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(certs.join("ca.pem")).expect("CA") {
        roots.add(cert.expect("PEM")).expect("a CA");
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .expect("TLS 1.3")
    .with_root_certificates(roots);
    Arc::new(match cert {
        None => builder.with_no_client_auth(),
        Some(name) => {
            let chain: Vec<_> = CertificateDer::pem_file_iter(certs.join(format!("{name}.pem")))
                .expect("cert")
                .map(|c| c.expect("PEM"))
                .collect();
            let key =
                PrivateKeyDer::from_pem_file(certs.join(format!("{name}-key.pem"))).expect("key");
            builder
                .with_client_auth_cert(chain, key)
                .expect("a client certificate")
        }
    })
}

/// Sends one HTTP/1.1 request over TLS to `addr` and reads the whole answer.
async fn request(
    addr: &str,
    tls: &Arc<rustls::ClientConfig>,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Answer {
    try_request(addr, tls, method, path, headers, body)
        .await
        .unwrap_or_else(|e| panic!("{method} {path} to {addr}: {e}"))
}

/// [`request`], or why it could not be sent.
async fn try_request(
    addr: &str,
    tls: &Arc<rustls::ClientConfig>,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> std::io::Result<Answer> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    let mut tls = tokio_rustls::TlsConnector::from(tls.clone())
        .connect(ServerName::try_from("127.0.0.1").unwrap(), stream)
        .await?;
    let mut text = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (name, value) in headers {
        text.push_str(&format!("{name}: {value}\r\n"));
    }
    text.push_str("\r\n");
    text.push_str(body);
    tls.write_all(text.as_bytes()).await?;
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), tls.read_to_end(&mut answer))
        .await
        .expect("an answer within 20 s")
        .ok();
    if answer.is_empty() {
        // Refused in the TLS handshake (TLS 1.3 tells the client only once it reads).
        return Err(std::io::Error::other(
            "the connection closed without an answer",
        ));
    }
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {answer:?}"));
    Ok(Answer {
        status,
        head: head.to_ascii_lowercase(),
        body: body.to_string(),
    })
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// Asserts an answer's status and error code.
#[track_caller]
fn expect(answer: &Answer, status: u16, code: &str, what: &str) {
    assert_eq!(
        answer.status, status,
        "{what}: got {} {}",
        answer.status, answer.body
    );
    assert!(
        answer.body.contains(&format!("\"code\":\"{code}\"")),
        "{what}: {}",
        answer.body
    );
}

/// The leader's index in the cluster, by the nodes' status (through the admin listener of
/// each, which needs no credentials).
async fn leader(admin: &[String], tls: &Arc<rustls::ClientConfig>) -> usize {
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        for (i, addr) in admin.iter().enumerate() {
            if let Ok(Ok(answer)) = tokio::time::timeout(
                Duration::from_secs(2),
                try_request(addr, tls, "GET", "/v1/status", &[], ""),
            )
            .await
                && answer.body.contains("\"role\":\"leader\"")
            {
                return i;
            }
        }
        assert!(Instant::now() < until, "no leader within 30 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_are_authenticated_authorized_and_bound_to_their_sessions() {
    let mut cluster = Cluster::new("auth");
    let certs: PathBuf = cluster.certs[0].clone();
    let (code, _, err) = keel(
        &[
            "certs",
            "--cluster",
            "processes-test",
            "--dir",
            certs.to_str().unwrap(),
            "--client",
            "opsc",
            "--client",
            "stranger",
        ],
        &[],
    );
    assert_eq!(code, Some(0), "{err}");
    let access = cluster.dir.join("access.toml");
    let app = create_token(&access, "app", &["write:app/"]);
    let app2 = create_token(&access, "app2", &["write:app/"]);
    let reader = create_token(&access, "reader", &["read"]);
    let ops = create_token(&access, "ops", &["admin"]);
    let bencher = create_token(&access, "bencher", &["write"]);
    // A certificate client, by name: the file lists it without a token.
    let mut text = std::fs::read_to_string(&access).unwrap();
    text.push_str("\n[[client]]\nname = \"opsc\"\ngrants = [\"write\", \"admin\"]\n");
    std::fs::write(&access, text).unwrap();
    let file = std::fs::read_to_string(&access).unwrap();
    assert!(!file.contains(&app), "the access file holds a token itself");

    let admin: Vec<String> = (0..3)
        .map(|_| format!("127.0.0.1:{}", free_port()))
        .collect();
    for (i, admin_addr) in admin.iter().enumerate() {
        let access = access.to_str().unwrap().to_string();
        cluster.start_with(
            i,
            &["--https", "--access", &access, "--admin-addr", admin_addr],
        );
    }
    let anonymous = tls_config(&certs, None);
    let leader = leader(&admin, &anonymous).await;
    let follower = (leader + 1) % 3;
    let at = |i: usize| cluster.endpoint(i);

    // No credentials, or a token nobody issued: 401, saying how to authenticate.
    let answer = request(&at(follower), &anonymous, "PUT", "/v1/kv/app/a", &[], "v").await;
    expect(&answer, 401, "unauthenticated", "no credentials");
    assert!(
        answer.head.contains("www-authenticate: bearer"),
        "{}",
        answer.head
    );
    let forged = bearer("keel_0000");
    let answer = request(
        &at(leader),
        &anonymous,
        "GET",
        "/v1/kv/app/a",
        &[("Authorization", &forged)],
        "",
    )
    .await;
    expect(&answer, 401, "unauthenticated", "unknown token");
    let answer = request(&at(leader), &anonymous, "GET", "/v1/status", &[], "").await;
    expect(
        &answer,
        401,
        "unauthenticated",
        "status without credentials",
    );

    // A token with write:app/: writes under app/ through a follower (forwarded with the
    // client's identity) and reads them; nothing else.
    let app_auth = bearer(&app);
    let answer = request(
        &at(follower),
        &anonymous,
        "PUT",
        "/v1/kv/app/a",
        &[("Authorization", &app_auth)],
        "1",
    )
    .await;
    assert_eq!(
        answer.status, 200,
        "app writes app/a via a follower: {}",
        answer.body
    );
    let answer = request(
        &at(follower),
        &anonymous,
        "GET",
        "/v1/kv/app/a",
        &[("Authorization", &app_auth)],
        "",
    )
    .await;
    assert_eq!((answer.status, answer.body.as_str()), (200, "1"));
    for (method, path) in [
        ("PUT", "/v1/kv/other"),
        ("GET", "/v1/kv/other"),
        ("DELETE", "/v1/kv/other"),
    ] {
        let answer = request(
            &at(follower),
            &anonymous,
            method,
            path,
            &[("Authorization", &app_auth)],
            "x",
        )
        .await;
        expect(&answer, 403, "forbidden", &format!("app {method} {path}"));
    }
    for (method, path) in [
        ("GET", "/v1/status"),
        ("GET", "/metrics"),
        ("GET", "/v1/members"),
        ("POST", "/v1/leader"),
    ] {
        let answer = request(
            &at(leader),
            &anonymous,
            method,
            path,
            &[("Authorization", &app_auth)],
            "",
        )
        .await;
        expect(&answer, 403, "forbidden", &format!("app {method} {path}"));
    }

    // read: gets anything, writes nothing. admin: status and membership, no keys.
    let reader_auth = bearer(&reader);
    let answer = request(
        &at(follower),
        &anonymous,
        "GET",
        "/v1/kv/app/a",
        &[("Authorization", &reader_auth)],
        "",
    )
    .await;
    assert_eq!((answer.status, answer.body.as_str()), (200, "1"));
    let answer = request(
        &at(follower),
        &anonymous,
        "PUT",
        "/v1/kv/app/a",
        &[("Authorization", &reader_auth)],
        "2",
    )
    .await;
    expect(&answer, 403, "forbidden", "reader writes");
    let ops_auth = bearer(&ops);
    let answer = request(
        &at(follower),
        &anonymous,
        "GET",
        "/v1/members",
        &[("Authorization", &ops_auth)],
        "",
    )
    .await;
    assert_eq!(answer.status, 200, "ops lists members: {}", answer.body);
    let answer = request(
        &at(follower),
        &anonymous,
        "GET",
        "/v1/kv/app/a",
        &[("Authorization", &ops_auth)],
        "",
    )
    .await;
    expect(&answer, 403, "forbidden", "admin reads a key");

    // A certificate client the file names: writes anywhere, through a follower too.
    let opsc = tls_config(&certs, Some("client-opsc"));
    let answer = request(&at(follower), &opsc, "PUT", "/v1/kv/cert-key", &[], "c").await;
    assert_eq!(
        answer.status, 200,
        "opsc writes via a follower: {}",
        answer.body
    );
    // A member's certificate (a node joining through a follower, say): forwarded as that
    // member, which may do everything. Posing as a member changes nothing for anyone else.
    let member = tls_config(&certs, Some(&format!("node-{}", follower + 1)));
    let answer = request(&at(follower), &member, "PUT", "/v1/kv/member-key", &[], "m").await;
    assert_eq!(
        answer.status, 200,
        "a member writes via a follower: {}",
        answer.body
    );
    let answer = request(&at(follower), &member, "GET", "/v1/members", &[], "").await;
    assert_eq!(
        answer.status, 200,
        "a member lists members: {}",
        answer.body
    );
    let as_member = [("Keel-Forwarded-Member", "1"), ("Keel-Forwarded", "1")];
    let answer = request(
        &at(leader),
        &anonymous,
        "PUT",
        "/v1/kv/app/m",
        &as_member,
        "s",
    )
    .await;
    expect(
        &answer,
        401,
        "unauthenticated",
        "anonymous posing as a member",
    );
    let answer = request(
        &at(leader),
        &anonymous,
        "PUT",
        "/v1/kv/member-key",
        &[("Authorization", &app_auth), as_member[0]],
        "s",
    )
    .await;
    expect(&answer, 403, "forbidden", "app posing as a member");

    // A certificate of the CA the file does not name: 403, and naming another client in the
    // header only members may set changes nothing.
    let stranger = tls_config(&certs, Some("client-stranger"));
    let posing = [("Keel-Forwarded-Client", "opsc"), ("Keel-Forwarded", "1")];
    for node in [leader, follower] {
        let answer = request(&at(node), &stranger, "PUT", "/v1/kv/cert-key", &posing, "s").await;
        expect(&answer, 403, "forbidden", "a stranger posing as opsc");
        let answer = request(&at(node), &anonymous, "PUT", "/v1/kv/app/b", &posing, "s").await;
        expect(&answer, 401, "unauthenticated", "anonymous posing as opsc");
        let answer = request(
            &at(node),
            &anonymous,
            "PUT",
            "/v1/kv/cert-key",
            &[("Authorization", &app_auth), posing[0]],
            "s",
        )
        .await;
        expect(&answer, 403, "forbidden", "app posing as opsc");
    }
    let answer = request(&at(leader), &opsc, "GET", "/v1/kv/cert-key", &[], "").await;
    assert_eq!(
        (answer.status, answer.body.as_str()),
        (200, "c"),
        "nobody overwrote it"
    );

    // Sessions belong to their client: app2 with app's client id and sequence number gets
    // its own write applied, not app's cached answer; app's retry still gets its own.
    let session = |token: &str, seq: &str| {
        [
            ("Authorization", bearer(token)),
            ("Keel-Client-Id", "4242".to_string()),
            ("Keel-Request-Seq", seq.to_string()),
        ]
    };
    let headers = |h: &[(&'static str, String); 3]| {
        h.iter().map(|(n, v)| (*n, v.clone())).collect::<Vec<_>>()
    };
    let send = |node: usize, token: &str, seq: &str, value: &str| {
        let h = headers(&session(token, seq));
        let addr = at(node);
        let tls = anonymous.clone();
        let value = value.to_string();
        async move {
            let h: Vec<(&str, &str)> = h.iter().map(|(n, v)| (*n, v.as_str())).collect();
            request(&addr, &tls, "PUT", "/v1/kv/app/s", &h, &value).await
        }
    };
    let first = send(follower, &app, "5", "from-app").await;
    assert_eq!(first.status, 200, "{}", first.body);
    let other = send(follower, &app2, "5", "from-app2").await;
    assert_eq!(other.status, 200, "{}", other.body);
    assert_ne!(first.body, other.body, "app2 got app's cached answer");
    let answer = request(
        &at(leader),
        &anonymous,
        "GET",
        "/v1/kv/app/s",
        &[("Authorization", &app_auth)],
        "",
    )
    .await;
    assert_eq!(answer.body, "from-app2", "app2's write was applied");
    let lower = send(leader, &app2, "4", "stale").await;
    expect(
        &lower,
        409,
        "stale_request",
        "app2's own older sequence number",
    );
    let retry = send(leader, &app, "5", "from-app").await;
    assert_eq!(
        retry.body, first.body,
        "app's retry is answered from its own session"
    );

    // The CLI and bench take the token from the environment.
    let endpoints: Vec<String> = (0..3).map(|i| format!("https://{}", at(i))).collect();
    let endpoints = endpoints.join(",");
    let ca = certs.join("ca.pem");
    let env = [
        ("KEEL_ENDPOINTS", endpoints.as_str()),
        ("KEEL_CACERT", ca.to_str().unwrap()),
        ("KEEL_TOKEN", app.as_str()),
    ];
    let (code, _, err) = keel(&["put", "app/cli", "from-cli"], &env);
    assert_eq!(code, Some(0), "keel put with KEEL_TOKEN: {err}");
    let (code, out, err) = keel(&["get", "app/cli"], &env);
    assert_eq!((code, out.trim()), (Some(0), "from-cli"), "{err}");
    let (code, _, err) = keel(&["put", "elsewhere", "x"], &env);
    assert_ne!(code, Some(0));
    assert!(err.contains("may not write"), "{err}");
    // Listing keys needs read of every key under the prefix: app/ yes, everything no.
    let (code, out, err) = keel(&["list", "app/", "--sizes"], &env);
    assert_eq!(code, Some(0), "keel list app/: {err}");
    let listed: Vec<&str> = out.lines().collect();
    assert!(listed.contains(&"app/cli\t8"), "{out}");
    assert!(listed.iter().all(|l| l.starts_with("app/")), "{out}");
    let (code, _, err) = keel(&["list"], &env);
    assert_ne!(code, Some(0));
    assert!(err.contains("may not read"), "{err}");
    let mut bench_env = env;
    bench_env[2] = ("KEEL_TOKEN", bencher.as_str());
    let (code, out, err) = keel(
        &[
            "bench",
            "--clients",
            "4",
            "--duration",
            "1",
            "--warmup",
            "0.2",
        ],
        &bench_env,
    );
    assert_eq!(code, Some(0), "keel bench with a token: {out}{err}");
    assert!(out.contains("errors: none"), "{out}");

    // Revoking a token takes effect without a restart (the file is read again on change).
    let (code, _, err) = keel(
        &[
            "token",
            "revoke",
            "reader",
            "--access",
            access.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code, Some(0), "{err}");
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let answer = request(
            &at(follower),
            &anonymous,
            "GET",
            "/v1/kv/app/a",
            &[("Authorization", &reader_auth)],
            "",
        )
        .await;
        if answer.status == 401 {
            break;
        }
        assert!(
            Instant::now() < until,
            "the revoked token still works after 20 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let answer = request(
        &at(follower),
        &anonymous,
        "GET",
        "/v1/kv/app/a",
        &[("Authorization", &app_auth)],
        "",
    )
    .await;
    assert_eq!(answer.status, 200, "app still works: {}", answer.body);

    // The monitoring listener: metrics and status without credentials, nothing else.
    let answer = request(&admin[follower], &anonymous, "GET", "/metrics", &[], "").await;
    assert_eq!(answer.status, 200);
    assert!(
        answer.body.contains("keel_applied_index"),
        "{}",
        answer.body
    );
    let answer = request(&admin[follower], &anonymous, "GET", "/v1/kv/app/a", &[], "").await;
    expect(&answer, 404, "no_route", "a key on the monitoring listener");
}

/// A client port beyond loopback that authenticates nobody is refused at start, saying what
/// to give; a broken access file is refused with its line.
#[test]
fn a_node_refuses_to_serve_unauthenticated_clients_beyond_loopback() {
    let cluster = Cluster::new("auth-config");
    let certs = cluster.certs[0].to_str().unwrap().to_string();
    let data = cluster.dir.join("d1");
    let peer = format!("127.0.0.1:{}", free_port());
    let client = format!("0.0.0.0:{}", free_port());
    let peers = format!("1={peer}");
    let base = [
        "serve",
        "--id",
        "1",
        "--cluster",
        "processes-test",
        "--peer-addr",
        &peer,
        "--client-addr",
        &client,
        "--peers",
        &peers,
        "--certs",
        &certs,
        "--https",
        "--data-dir",
        data.to_str().unwrap(),
    ];
    let (code, _, err) = keel(&base, &[]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("clients are not authenticated") && err.contains("--access"),
        "{err}"
    );

    let access = cluster.dir.join("bad-access.toml");
    std::fs::write(&access, "[[client]]\nname = \"x\"\ngrants = [\"root\"]\n").unwrap();
    let mut args = base.to_vec();
    let access = access.to_str().unwrap().to_string();
    args.extend(["--access", &access]);
    let (code, _, err) = keel(&args, &[]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("unknown permission \"root\""), "{err}");
}

/// With client certificates required on the client port, the monitoring listener still asks
/// for none: it is for scrapers that hold no credentials.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_listener_asks_no_client_certificate() {
    let mut cluster = Cluster::new("auth-admin-certs");
    let certs = cluster.certs[0].clone();
    let admin = format!("127.0.0.1:{}", free_port());
    cluster.start_with(
        0,
        &["--https", "--require-client-cert", "--admin-addr", &admin],
    );
    let anonymous = tls_config(&certs, None);
    let until = Instant::now() + Duration::from_secs(30);
    let answer = loop {
        match try_request(&admin, &anonymous, "GET", "/metrics", &[], "").await {
            Ok(answer) => break answer,
            Err(error) => {
                assert!(Instant::now() < until, "no answer from {admin}: {error}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert!(answer.body.contains("keel_term"), "{}", answer.body);
    // The client port, by contrast, takes no client without a certificate.
    let refused = try_request(&cluster.endpoint(0), &anonymous, "GET", "/v1/kv/x", &[], "").await;
    assert!(
        refused.is_err() || refused.as_ref().is_ok_and(|a| a.status == 401),
        "an anonymous client on the client port: {:?}",
        refused.map(|a| a.status)
    );
}
