//! The web console in a real browser: three `keel serve` processes, and headless Chromium
//! driven by Playwright (`tests/console/console.test.mjs`) checking what the page shows and
//! does: the members and the leader, a write through the key box, the load chart, adding and
//! removing a member, moving the leadership, the leader's death seen live, and the page moving
//! to another member when its own dies. Screenshots go to
//! `target/console-screenshots/`.
//!
//! It needs Debian's `chromium` (installed here with apt-get when missing and running as root,
//! as `.ci/run` does) and Node.js with `playwright-core` (installed into `tests/console/` with
//! npm when missing). Without them it fails, saying what is missing: it never skips.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use keel_client::{Client, ClientOptions};
use support::{Cluster, free_port, wait_for_leader};

/// Where a browser is: `$env` if set, else Debian's `package` at `default`, installed with
/// apt-get if it is missing and this process may.
fn browser(env: &str, default: &str, package: &str) -> PathBuf {
    let path = std::env::var_os(env).map_or_else(|| PathBuf::from(default), PathBuf::from);
    if !path.exists() && path == Path::new(default) {
        eprintln!("{package} is missing; installing Debian's package (apt-get install {package})");
        let _ = Command::new("apt-get")
            .args(["install", "-y", "-q", package])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status();
    }
    assert!(
        path.exists(),
        "the console tests need {package} at {} (Debian: apt-get install {package}; or set \
         {env} to its binary)",
        path.display()
    );
    path
}

fn chromium() -> PathBuf {
    browser("KEEL_CHROMIUM", "/usr/bin/chromium", "chromium")
}

fn firefox() -> PathBuf {
    browser("KEEL_FIREFOX", "/usr/bin/firefox-esr", "firefox-esr")
}

/// The directory of the browser test script, with `playwright-core` installed in it.
fn playwright() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/console");
    if !dir.join("node_modules/playwright-core").exists()
        || !dir.join("node_modules/puppeteer-core").exists()
    {
        let installed = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&dir)
            .status();
        assert!(
            installed.is_ok_and(|s| s.success()),
            "the console tests need Node.js and npm to install playwright-core and \
             puppeteer-core into {} \
             (cd there and run npm ci)",
            dir.display()
        );
    }
    dir
}

fn screenshots() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    target.join("console-screenshots")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_shows_the_cluster_live_and_acts_on_it() {
    let browser = chromium();
    let script_dir = playwright();
    let mut cluster = Cluster::new("console");
    for i in 0..3 {
        cluster.start(i);
    }
    let client = Client::new(ClientOptions::with_endpoints(cluster.endpoints())).expect("client");
    wait_for_leader(&client, &cluster, Duration::from_secs(30)).await;

    // The same table in a terminal: `keel status --watch` redraws it every second.
    let mut watch = tokio::process::Command::new(env!("CARGO_BIN_EXE_keel"))
        .args([
            "--endpoints",
            &cluster.endpoints().join(","),
            "status",
            "--watch",
        ])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("run keel status --watch");
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(
        watch.stdout.take().expect("piped"),
    ));
    let (mut refreshes, mut leaders) = (0, 0);
    let until = Instant::now() + Duration::from_secs(30);
    while refreshes < 3 {
        let line = tokio::time::timeout_at(until.into(), lines.next_line())
            .await
            .expect("keel status --watch refreshes every second")
            .expect("read")
            .expect("keel status --watch ended");
        if line.contains("UTC (every 1 s") {
            refreshes += 1;
        }
        if line.contains("leader") {
            leaders += 1;
        }
    }
    assert!(leaders >= 2, "each table shows the leader");
    watch.kill().await.expect("stop keel status --watch");

    let nodes: Vec<String> = (0..3)
        .map(|i| format!("{}={}", i + 1, cluster.endpoint(i)))
        .collect();
    let pids: Vec<String> = (0..3)
        .map(|i| {
            let pid = cluster.children[i].as_ref().expect("started").id();
            format!("{}={pid}", i + 1)
        })
        .collect();
    let spare = format!("127.0.0.1:{},127.0.0.1:{}", free_port(), free_port());
    let shots = screenshots();
    // This run's screenshots only (a failure.png of an earlier run would mislead).
    for entry in std::fs::read_dir(&shots).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.contains("firefox") {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    let mut child = tokio::process::Command::new("node")
        .arg("console.test.mjs")
        .current_dir(&script_dir)
        .env("KEEL_NODES", nodes.join(","))
        .env("KEEL_PIDS", pids.join(","))
        .env("KEEL_SPARE", &spare)
        .env("KEEL_SCREENSHOTS", &shots)
        .env("KEEL_CHROMIUM", &browser)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("run node (the console tests need Node.js)");
    let stdout = child.stdout.take().expect("piped");
    let stderr = child.stderr.take().expect("piped");
    let output = tokio::spawn(async move {
        use tokio::io::AsyncReadExt;
        let (mut out, mut err) = (String::new(), String::new());
        let (mut stdout, mut stderr) = (stdout, stderr);
        let _ = tokio::join!(
            stdout.read_to_string(&mut out),
            stderr.read_to_string(&mut err)
        );
        (out, err)
    });
    let started = Instant::now();
    let status = tokio::time::timeout(Duration::from_secs(240), child.wait())
        .await
        .unwrap_or_else(|_| panic!("the browser tests did not finish within 240 s"))
        .expect("wait for node");
    let (out, err) = output.await.expect("output");
    println!("{out}");
    eprintln!("{err}");
    assert!(
        status.success(),
        "the browser tests failed after {:?} (screenshots in {}):\n{out}\n{err}\n{}",
        started.elapsed(),
        shots.display(),
        cluster.logs()
    );
    for shot in [
        "01-cluster.png",
        "02-keys.png",
        "03-load.png",
        "04-member-added.png",
        "05-member-removed.png",
        "06-leader-moved.png",
        "07-new-leader.png",
        "08-moved-to-another-node.png",
        "09-phone.png",
    ] {
        assert!(shots.join(shot).exists(), "no screenshot {shot}");
    }
}

/// The same page in Firefox (Debian's firefox-esr over WebDriver BiDi, `console/firefox.test.mjs`):
/// the cluster shows, a write through the key box lands, it fits a phone's width.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_works_in_firefox() {
    let browser = firefox();
    let script_dir = playwright();
    let mut cluster = Cluster::new("console-firefox");
    for i in 0..3 {
        cluster.start(i);
    }
    let client = Client::new(ClientOptions::with_endpoints(cluster.endpoints())).expect("client");
    wait_for_leader(&client, &cluster, Duration::from_secs(30)).await;
    let nodes: Vec<String> = (0..3)
        .map(|i| format!("{}={}", i + 1, cluster.endpoint(i)))
        .collect();
    let shots = screenshots();
    for name in [
        "10-firefox.png",
        "11-firefox-phone.png",
        "failure-firefox.png",
    ] {
        let _ = std::fs::remove_file(shots.join(name));
    }
    let run = tokio::process::Command::new("node")
        .arg("firefox.test.mjs")
        .current_dir(&script_dir)
        .env("KEEL_NODES", nodes.join(","))
        .env("KEEL_SCREENSHOTS", &shots)
        .env("KEEL_FIREFOX", &browser)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(180), run)
        .await
        .expect("the Firefox tests finish within 180 s")
        .expect("run node (the console tests need Node.js)");
    let (out, err) = (
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    println!("{out}");
    assert!(
        output.status.success(),
        "the Firefox tests failed (screenshots in {}):\n{out}\n{err}\n{}",
        shots.display(),
        cluster.logs()
    );
    for shot in ["10-firefox.png", "11-firefox-phone.png"] {
        assert!(shots.join(shot).exists(), "no screenshot {shot}");
    }
}
