//! `keel certs`: a cluster's CA and its members' and clients' certificates, in one directory
//! laid out the way `keel serve --certs DIR` and the client commands read it:
//!
//! ```text
//! DIR/cluster              the cluster's name (a CA serves one cluster)
//! DIR/ca.pem, ca-key.pem   the CA (keep ca-key.pem off the members: it makes new members)
//! DIR/node-ID.pem, node-ID-key.pem         node ID's certificate and key
//! DIR/client-NAME.pem, client-NAME-key.pem a client's certificate and key
//! ```
//!
//! Files that exist are kept: running it again with another `--node` adds that node's files
//! and changes nothing else (`--renew` issues the named certificates again). Keys are written
//! readable by their owner only, and every file under another name first, then renamed.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::Args;
use keel_net::{ClusterCa, TlsFiles};

use crate::CliError;

/// Flags of `keel certs`.
#[derive(Args, Debug)]
pub struct CertsArgs {
    /// Directory for the CA and the certificates (created if missing).
    #[arg(long, value_name = "DIR", default_value = "keel-certs")]
    pub dir: PathBuf,
    /// The cluster's name, as given to `keel serve --cluster`.
    #[arg(long, default_value = "keel")]
    pub cluster: String,
    /// A member's certificate: its id, and optionally the DNS names and IP addresses clients
    /// reach its HTTPS API at (ID or ID=HOST,HOST...). Repeat for each member.
    #[arg(long, value_name = "ID[=HOST,...]")]
    pub node: Vec<String>,
    /// A client certificate for this name (letters, digits and '-'): for the CLI, `keel bench`
    /// or an application, when the API requires client certificates. Repeatable.
    #[arg(long, value_name = "NAME")]
    pub client: Vec<String>,
    /// Issue the named node and client certificates again even if their files exist (to renew
    /// them before they expire; members reload changed files by themselves).
    #[arg(long)]
    pub renew: bool,
}

/// Where `keel serve --certs DIR` finds node `id`'s files.
pub fn node_files(dir: &Path, id: u64) -> TlsFiles {
    TlsFiles {
        ca: dir.join("ca.pem"),
        cert: dir.join(format!("node-{id}.pem")),
        key: dir.join(format!("node-{id}-key.pem")),
    }
}

/// Where a client finds the files of client `name` in `dir`.
pub fn client_files(dir: &Path, name: &str) -> TlsFiles {
    TlsFiles {
        ca: dir.join("ca.pem"),
        cert: dir.join(format!("client-{name}.pem")),
        key: dir.join(format!("client-{name}-key.pem")),
    }
}

/// Runs `keel certs`.
pub fn certs(args: CertsArgs) -> Result<(), CliError> {
    let mut nodes = Vec::new();
    for spec in &args.node {
        let (id, hosts) = match spec.split_once('=') {
            Some((id, hosts)) => (id, hosts.split(',').map(|h| h.trim().to_string()).collect()),
            None => (spec.as_str(), Vec::new()),
        };
        let id: u64 = id.trim().parse().ok().filter(|id| *id > 0).ok_or_else(|| {
            CliError::Config(format!(
                "bad --node {spec:?}: expected ID or ID=HOST,HOST..."
            ))
        })?;
        nodes.push((id, hosts));
    }
    let made = ensure(&args.dir, &args.cluster, &nodes, &args.client, args.renew)?;
    for path in &made {
        println!("wrote {}", path.display());
    }
    if made.is_empty() {
        println!("nothing to do: every file exists (--renew issues them again)");
    }
    Ok(())
}

/// Makes the CA in `dir` if it has none, and the certificates of `nodes` and `clients` that
/// are missing (all of them with `renew`); returns the files written.
pub fn ensure(
    dir: &Path,
    cluster: &str,
    nodes: &[(u64, Vec<String>)],
    clients: &[String],
    renew: bool,
) -> Result<Vec<PathBuf>, CliError> {
    let failed = |path: &Path, e: std::io::Error| {
        CliError::Start(format!("cannot write {}: {e}", path.display()))
    };
    std::fs::create_dir_all(dir).map_err(|e| failed(dir, e))?;
    let mut written = Vec::new();
    let name_file = dir.join("cluster");
    let ca_file = dir.join("ca.pem");
    let ca_key_file = dir.join("ca-key.pem");
    let ca = if ca_file.exists() {
        let recorded = std::fs::read_to_string(&name_file).map_err(|e| {
            CliError::Config(format!(
                "{} has a CA but no readable {}: {e}",
                dir.display(),
                name_file.display()
            ))
        })?;
        if recorded.trim() != cluster {
            return Err(CliError::Config(format!(
                "the CA in {} is cluster {:?}'s, not {cluster:?}: give --cluster {}, or another \
                 --dir",
                dir.display(),
                recorded.trim(),
                recorded.trim()
            )));
        }
        let read = |path: &Path| {
            std::fs::read_to_string(path)
                .map_err(|e| CliError::Config(format!("cannot read {}: {e}", path.display())))
        };
        ClusterCa::from_pem(cluster, read(&ca_file)?, &read(&ca_key_file)?)
            .map_err(|e| CliError::Config(format!("{}: {e}", ca_key_file.display())))?
    } else {
        let ca = ClusterCa::generate(cluster)
            .map_err(|e| CliError::Start(format!("cannot make a CA: {e}")))?;
        write(&ca_key_file, &ca.key_pem(), true).map_err(|e| failed(&ca_key_file, e))?;
        write(&name_file, &format!("{cluster}\n"), false).map_err(|e| failed(&name_file, e))?;
        write(&ca_file, ca.cert_pem(), false).map_err(|e| failed(&ca_file, e))?;
        written.extend([ca_file.clone(), ca_key_file.clone()]);
        ca
    };
    let mut issue = |files: TlsFiles, make: &dyn Fn() -> Result<keel_net::Issued, String>| {
        if files.cert.exists() && files.key.exists() && !renew {
            return Ok(());
        }
        let issued = make().map_err(CliError::Config)?;
        write(&files.key, &issued.key_pem, true).map_err(|e| failed(&files.key, e))?;
        write(&files.cert, &issued.cert_pem, false).map_err(|e| failed(&files.cert, e))?;
        written.extend([files.cert, files.key]);
        Ok::<(), CliError>(())
    };
    for (id, hosts) in nodes {
        issue(node_files(dir, *id), &|| {
            ca.node(*id, hosts).map_err(|e| format!("node {id}: {e}"))
        })?;
    }
    for name in clients {
        issue(client_files(dir, name), &|| {
            ca.client(name).map_err(|e| format!("client {name}: {e}"))
        })?;
    }
    Ok(written)
}

/// Writes `text` to `path` through a temporary file and a rename; `secret` files are made
/// readable by their owner only.
fn write(path: &Path, text: &str, secret: bool) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, if secret { 0o600 } else { 0o644 });
    let mut file = options.open(&tmp)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificates_load_as_the_nodes_identity_and_a_second_run_keeps_the_ca() {
        let dir = std::env::temp_dir().join(format!("keel-certs-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let nodes = vec![(1, vec!["127.0.0.1".to_string()]), (2, Vec::new())];
        let made = ensure(&dir, "prod", &nodes, &["alice".into()], false).unwrap();
        assert_eq!(made.len(), 2 + 2 * 3, "{made:?}");
        let id = keel_net::cluster_id("prod");
        keel_net::PeerTls::load(node_files(&dir, 1), id, 1).expect("node 1's identity");
        let error = keel_net::PeerTls::load(node_files(&dir, 2), id, 1).unwrap_err();
        assert!(
            error.to_string().contains("does not name node 1"),
            "{error}"
        );
        let ca = std::fs::read(dir.join("ca.pem")).unwrap();

        // Again with a third node: only its files are written, by the same CA.
        let nodes = vec![(1, Vec::new()), (3, Vec::new())];
        let made = ensure(&dir, "prod", &nodes, &[], false).unwrap();
        assert_eq!(
            made,
            vec![dir.join("node-3.pem"), dir.join("node-3-key.pem")]
        );
        assert_eq!(std::fs::read(dir.join("ca.pem")).unwrap(), ca);
        keel_net::PeerTls::load(node_files(&dir, 3), id, 3).expect("node 3's identity");

        // Another cluster's name is refused rather than mixing CAs.
        let error = ensure(&dir, "other", &nodes, &[], false).unwrap_err();
        assert!(error.to_string().contains("cluster \"prod\"'s"), "{error}");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.join("node-1-key.pem"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "a key readable by others: {mode:o}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
