//! A leader whose disk fills up, on real `keel serve` processes: node 1's data dir is a small
//! tmpfs that the test fills. Writes get 503 `storage_unavailable` with the reason in
//! `/v1/status` and `/metrics`, the storage does not stop, and once space is back writes go on
//! by themselves, with every acknowledged write still there, after a restart too.
//!
//! Mounting the tmpfs needs root (CAP_SYS_ADMIN), as CI and the development machines have: the
//! test fails, not skips, without it.

mod support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use support::Cluster;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A tmpfs mounted for the test's life.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(at).expect("mount point");
        let output = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "keel-test"])
            .arg(at)
            .output()
            .expect("run mount");
        assert!(
            output.status.success(),
            "this test mounts a tmpfs to fill it, which needs root: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        Tmpfs(at.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Writes `path` until the file system is full; returns the bytes written.
fn fill(path: &Path) -> u64 {
    let mut file = std::fs::File::create(path).expect("filler");
    let chunk = vec![0xa5u8; 64 << 10];
    let mut written = 0u64;
    let mut size = chunk.len();
    while size > 0 {
        match file.write(&chunk[..size]) {
            Ok(n) => written += n as u64,
            Err(error) if error.raw_os_error() == Some(libc::ENOSPC) => size /= 2,
            Err(error) => panic!("filling {}: {error}", path.display()),
        }
    }
    let _ = file.sync_all();
    written
}

/// One plain HTTP/1.1 request; returns the status and the body.
async fn request(endpoint: &str, method: &str, path: &str, body: &[u8]) -> (u16, String) {
    try_request(endpoint, method, path, body)
        .await
        .unwrap_or_else(|| panic!("{method} {path} to {endpoint}: no answer"))
}

/// [`request`], or `None` if the node does not answer (not started yet, say).
async fn try_request(
    endpoint: &str,
    method: &str,
    path: &str,
    body: &[u8],
) -> Option<(u16, String)> {
    let mut stream = tokio::net::TcpStream::connect(endpoint).await.ok()?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {endpoint}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.ok()?;
    stream.write_all(body).await.ok()?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.ok()?;
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    Some((status, body))
}

async fn status_of(endpoint: &str) -> serde_json::Value {
    let (status, body) = request(endpoint, "GET", "/v1/status", b"").await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).expect("status JSON")
}

/// Waits until `probe` returns `Some`, up to `limit`.
async fn eventually<T>(
    what: &str,
    limit: Duration,
    mut probe: impl AsyncFnMut() -> Option<T>,
) -> T {
    let until = Instant::now() + limit;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(Instant::now() < until, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_writes_then_resumes_losing_nothing() {
    let mut cluster = Cluster::new("disk-full");
    // The first segment is preallocated (64 MiB): room for it and a little more.
    let disk = Tmpfs::mount(&cluster.dir.join("node1"), "80m");
    // Small snapshots, so that the leader soon writes a file, which a full disk refuses.
    let flags = [
        "--max-raft-state-bytes",
        "262144",
        "--request-timeout-ms",
        "1000",
    ];
    for i in 0..3 {
        cluster.start_with(i, &flags);
    }
    let leader = cluster.endpoint(0);
    eventually("node 1 to lead", Duration::from_secs(30), async || {
        let (_, body) = try_request(&leader, "GET", "/v1/status", b"").await?;
        let status: serde_json::Value = serde_json::from_str(&body).ok()?;
        if status["role"] == "leader" {
            return Some(());
        }
        try_request(&leader, "POST", "/v1/leader", br#"{"to": 1}"#).await;
        None
    })
    .await;

    let value = |n: u32| format!("{n:08}").repeat(2048); // 16 KiB
    let mut acknowledged = Vec::new();
    let mut n = 0u32;
    for _ in 0..5 {
        n += 1;
        let (code, body) =
            request(&leader, "PUT", &format!("/v1/kv/k{n}"), value(n).as_bytes()).await;
        assert_eq!(code, 200, "{body}");
        acknowledged.push(n);
    }

    let filler = disk.0.join("filler");
    let filled = fill(&filler);
    assert!(filled > 0, "the tmpfs had room left to fill");

    // Writes go on into the preallocated segment until the leader snapshots and finds no
    // room for the file: from then on they are refused, saying why.
    let refusal = eventually(
        "writes to be refused",
        Duration::from_secs(60),
        async || {
            n += 1;
            let (code, body) =
                request(&leader, "PUT", &format!("/v1/kv/k{n}"), value(n).as_bytes()).await;
            match code {
                200 => {
                    acknowledged.push(n);
                    None
                }
                503 if body.contains("storage_unavailable") => Some(body),
                // Proposed before the shortage showed, and not committed within the timeout: not
                // acknowledged, so it may or may not be there.
                503 => None,
                other => panic!("unexpected answer {other}: {body}\n{}", cluster.logs()),
            }
        },
    )
    .await;
    assert!(refusal.contains("No space left on device"), "{refusal}");

    let status = status_of(&leader).await;
    let reason = status["storage_unavailable"].as_str().unwrap_or_default();
    assert!(reason.contains("No space left on device"), "{status}");
    assert_eq!(status["role"], "leader", "the node still serves: {status}");
    let (_, metrics) = request(&leader, "GET", "/metrics", b"").await;
    assert!(
        metrics.contains("keel_storage_available 0"),
        "{}",
        metrics
            .lines()
            .filter(|l| l.contains("storage"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    // Reads go on.
    let (code, body) = request(&leader, "GET", "/v1/kv/k1", b"").await;
    assert_eq!((code, body), (200, value(1)));

    // Space comes back: writes resume without a restart.
    std::fs::remove_file(&filler).expect("remove the filler");
    eventually("writes to resume", Duration::from_secs(30), async || {
        n += 1;
        let (code, _) = request(&leader, "PUT", &format!("/v1/kv/k{n}"), value(n).as_bytes()).await;
        if code == 200 {
            acknowledged.push(n);
        }
        (code == 200).then_some(())
    })
    .await;
    let status = status_of(&leader).await;
    assert!(status["storage_unavailable"].is_null(), "{status}");

    // Every acknowledged write is there, on node 1 after a restart too (read from its own
    // state once it has applied what was committed before it stopped).
    let committed = status["commit_index"].as_u64().expect("commit index");
    cluster.terminate(0);
    cluster.start_with(0, &flags);
    eventually(
        "node 1 to apply again",
        Duration::from_secs(30),
        async || {
            let (code, body) = try_request(&leader, "GET", "/v1/status", b"").await?;
            let status: serde_json::Value = serde_json::from_str(&body).ok()?;
            (code == 200 && status["applied_index"].as_u64()? >= committed).then_some(())
        },
    )
    .await;
    for &k in &acknowledged {
        let path = format!("/v1/kv/k{k}?consistency=stale");
        let (code, body) = request(&leader, "GET", &path, b"").await;
        assert_eq!((code, body.len()), (200, value(k).len()), "key k{k}");
        assert_eq!(body, value(k), "key k{k}");
    }
    drop(cluster);
    drop(disk);
}
