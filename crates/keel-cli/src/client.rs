//! The client subcommands: `get`, `put`, `append`, `delete`, `cas`, `status` and `bench`.

use std::io::Write as _;
use std::time::Duration;

use clap::{Args, Subcommand};
use keel_client::bench::{self, BenchOptions, Workload};
use std::path::{Path, PathBuf};

use keel_client::{
    BearerToken, Client, ClientError, ClientOptions, ClientTls, Consistency, TlsFiles,
    parse_endpoints,
};

use crate::CliError;

/// Where the client commands connect.
#[derive(Args, Debug, Clone)]
pub struct Endpoints {
    /// Nodes to talk to, comma-separated HOST:PORT of their HTTP API; any node will do (it
    /// forwards to the leader). Defaults to the `keel dev` cluster.
    #[arg(
        long,
        global = true,
        env = "KEEL_ENDPOINTS",
        default_value = "127.0.0.1:8081,127.0.0.1:8082,127.0.0.1:8083",
        value_name = "HOST:PORT,..."
    )]
    pub endpoints: String,
    /// Give up on a request (after retrying other nodes) after this many seconds.
    #[arg(long, global = true, default_value_t = 10.0, value_name = "SECONDS")]
    pub timeout: f64,
    /// HTTPS: the CA certificate that signed the nodes' certificates. Implied (with the
    /// `keel dev` client certificate) by https:// endpoints when ./keel-data/certs has them.
    #[arg(
        long,
        id = "tls_cacert",
        global = true,
        env = "KEEL_CACERT",
        value_name = "FILE"
    )]
    pub cacert: Option<PathBuf>,
    /// HTTPS: this client's certificate, for nodes that require one.
    #[arg(
        long,
        id = "tls_cert",
        global = true,
        env = "KEEL_CERT",
        value_name = "FILE"
    )]
    pub cert: Option<PathBuf>,
    /// HTTPS: this client's private key.
    #[arg(
        long = "key",
        id = "tls_key",
        global = true,
        env = "KEEL_KEY",
        value_name = "FILE"
    )]
    pub key: Option<PathBuf>,
    /// A bearer token (`keel token create` prints one), for a cluster that authenticates
    /// clients by an access file. Prefer the environment variable or --token-file: a flag's
    /// value is visible to other users of the machine.
    #[arg(
        long,
        global = true,
        env = "KEEL_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub token: Option<String>,
    /// Read the bearer token from this file.
    #[arg(
        long,
        global = true,
        env = "KEEL_TOKEN_FILE",
        value_name = "FILE",
        conflicts_with = "token"
    )]
    pub token_file: Option<PathBuf>,
}

/// Where `keel dev` keeps its CA and client certificate.
const DEV_CERTS: &str = "keel-data/certs";

impl Endpoints {
    /// The bearer token given, if any.
    fn bearer_token(&self) -> Result<Option<BearerToken>, CliError> {
        let text = match (&self.token, &self.token_file) {
            (Some(token), _) => token.clone(),
            (None, Some(path)) => std::fs::read_to_string(path).map_err(|e| {
                CliError::Config(format!(
                    "cannot read the token file {}: {e}",
                    path.display()
                ))
            })?,
            (None, None) => return Ok(None),
        };
        BearerToken::new(&text)
            .map(Some)
            .map_err(|e| CliError::Config(e.to_string()))
    }

    /// The TLS files to use: the flags', or for https:// endpoints without them, `keel dev`'s
    /// when they exist; `None` for plain HTTP.
    fn tls_files(&self) -> Option<TlsFiles> {
        let (cert, key) = (self.cert.clone(), self.key.clone());
        if let Some(ca) = self.cacert.clone() {
            return Some(TlsFiles { ca, cert, key });
        }
        let https = self
            .endpoints
            .split(',')
            .any(|e| e.trim().starts_with("https://"));
        let dev = Path::new(DEV_CERTS);
        if !https || !dev.join("ca.pem").exists() {
            return None;
        }
        let own = |name: &str| Some(dev.join(name)).filter(|p| p.exists());
        let (cert, key) = match (cert, key) {
            (None, None) => (own("client-keel-dev.pem"), own("client-keel-dev-key.pem")),
            given => given,
        };
        Some(TlsFiles {
            ca: dev.join("ca.pem"),
            cert,
            key,
        })
    }
}

/// A client subcommand.
#[derive(Subcommand, Debug)]
pub enum ClientCommand {
    /// Print a key's value (exit code 1 and a message on stderr if it is absent).
    Get {
        /// The key.
        key: String,
        /// Answer from the node's own copy at once, which may be behind the leader.
        #[arg(long)]
        stale: bool,
    },
    /// List keys in byte order, one per line: all of them, or those starting with PREFIX.
    List {
        /// Only keys that start with this.
        prefix: Option<String>,
        /// Stop after this many keys.
        #[arg(long)]
        limit: Option<usize>,
        /// Print each key's value size too (key, a tab, bytes).
        #[arg(long)]
        sizes: bool,
        /// Answer from the node's own copy at once, which may be behind the leader.
        #[arg(long)]
        stale: bool,
    },
    /// Set a key's value.
    Put {
        /// The key.
        key: String,
        /// The value.
        value: String,
    },
    /// Append to a key's value (an absent key counts as empty).
    Append {
        /// The key.
        key: String,
        /// What to append.
        suffix: String,
    },
    /// Remove a key.
    Delete {
        /// The key.
        key: String,
    },
    /// Compare-and-set: set KEY to NEW only if it holds EXPECTED (or, with --absent, only if
    /// it does not exist). Prints whether it did.
    Cas {
        /// The key.
        key: String,
        /// The value the key must hold now (omit with --absent).
        #[arg(required_unless_present = "absent")]
        expected: Option<String>,
        /// The new value.
        new: Option<String>,
        /// Set only if the key does not exist.
        #[arg(long)]
        absent: bool,
    },
    /// Show every node: id, address, role, membership, term, commit and applied index, lag,
    /// leader; then the configuration.
    Status {
        /// Refresh the table every second (on a terminal, in place) until interrupted.
        #[arg(long)]
        watch: bool,
    },
    /// Show or change the cluster's members (changes go to the leader and wait for their
    /// commit).
    #[command(subcommand)]
    Member(MemberCommand),
    /// Move the cluster's leadership.
    #[command(subcommand)]
    Leader(LeaderCommand),
    /// Load a running cluster and report throughput and latency percentiles.
    Bench(BenchArgs),
}

/// `keel member ...`.
#[derive(Subcommand, Debug)]
pub enum MemberCommand {
    /// List the members: id, role (voter or learner), peer and client address.
    List,
    /// Add a node as a learner (it receives the log but does not vote). Start it first with
    /// `keel serve --id ID ... --join ENDPOINTS`, which also asks for this by itself.
    Add {
        /// The new node's id: one no member has, or ever had.
        id: u64,
        /// Where it listens for Raft traffic.
        #[arg(long, value_name = "IP:PORT")]
        peer_addr: String,
        /// Where it serves clients.
        #[arg(long, value_name = "HOST:PORT")]
        client_addr: String,
    },
    /// Make a learner a voter (refused while its log lags the leader's).
    Promote {
        /// The learner.
        id: u64,
    },
    /// Remove a member (the leader too: it hands leadership over first).
    Remove {
        /// The member.
        id: u64,
    },
}

/// `keel leader ...`.
#[derive(Subcommand, Debug)]
pub enum LeaderCommand {
    /// Hand leadership to another voter: the most up-to-date one, or --to ID.
    Transfer {
        /// The voter to take over.
        #[arg(long, value_name = "ID")]
        to: Option<u64>,
    },
}

/// Flags of `keel bench`.
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Concurrent clients, each with one request in flight.
    #[arg(long, default_value_t = 16)]
    pub clients: usize,
    /// Seconds to measure (after the warm-up).
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Seconds of load before measuring.
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,
    /// put, get, mixed (half puts) or mixed:N (N% puts).
    #[arg(long, default_value = "put")]
    pub workload: Workload,
    /// Bytes per value.
    #[arg(long, default_value_t = 256)]
    pub value_size: usize,
    /// Number of distinct keys.
    #[arg(long, default_value_t = 10_000)]
    pub key_space: u64,
    /// Send every request to the leader (found through /v1/status) instead of spreading the
    /// clients over the endpoints.
    #[arg(long)]
    pub leader_only: bool,
    /// Reads answer from the node's own copy (for get and mixed workloads).
    #[arg(long)]
    pub stale: bool,
    /// Speak HTTP/2 (one multiplexed connection per node, as gRPC clients of etcd do) instead
    /// of one HTTP/1.1 connection per client.
    #[arg(long)]
    pub http2: bool,
}

fn client(endpoints: &Endpoints) -> Result<Client, CliError> {
    let mut options = ClientOptions::with_endpoints(parse_endpoints(&endpoints.endpoints));
    if endpoints.timeout <= 0.0 {
        return Err(CliError::Config(
            "--timeout must be a positive number of seconds".into(),
        ));
    }
    options.deadline = seconds("timeout", endpoints.timeout)?;
    if let Some(files) = endpoints.tls_files() {
        options.tls = Some(ClientTls::load(&files).map_err(|e| CliError::Config(e.to_string()))?);
    }
    options.token = endpoints.bearer_token()?;
    Client::new(options).map_err(|e| CliError::Config(e.to_string()))
}

fn failed(e: ClientError) -> CliError {
    match e {
        ClientError::InvalidInput(message) => CliError::Config(message),
        other => CliError::Start(other.to_string()),
    }
}

/// The longest time a flag in seconds may give: far beyond any real use, and far from where
/// adding it to the clock would overflow.
const MAX_SECONDS: f64 = 30.0 * 86_400.0;

fn seconds(what: &str, value: f64) -> Result<Duration, CliError> {
    if (0.0..=MAX_SECONDS).contains(&value) {
        Ok(Duration::from_secs_f64(value))
    } else {
        Err(CliError::Config(format!(
            "--{what} must be a number of seconds from 0 to {MAX_SECONDS} (30 days)"
        )))
    }
}

/// Runs a client subcommand, printing its answer on stdout.
pub async fn run(command: ClientCommand, endpoints: &Endpoints) -> Result<(), CliError> {
    let client = client(endpoints)?;
    match command {
        ClientCommand::Get { key, stale } => {
            let consistency = if stale {
                Consistency::Stale
            } else {
                Consistency::Linearizable
            };
            match client.get(&key, consistency).await {
                Ok(value) => {
                    let mut out = std::io::stdout().lock();
                    let _ = out.write_all(&value);
                    if std::io::IsTerminal::is_terminal(&out) {
                        let _ = out.write_all(b"\n");
                    }
                    Ok(())
                }
                Err(e) => Err(failed(e)),
            }
        }
        ClientCommand::List {
            prefix,
            limit,
            sizes,
            stale,
        } => {
            let consistency = if stale {
                Consistency::Stale
            } else {
                Consistency::Linearizable
            };
            let prefix = prefix.unwrap_or_default();
            let mut left = limit.unwrap_or(usize::MAX);
            let mut after: Option<String> = None;
            let mut out = std::io::stdout().lock();
            // Page by page: each page is one read, so a long listing is not one snapshot.
            while left > 0 {
                let page = left.min(keel_client::MAX_LIST_LIMIT);
                let listed = client
                    .list(&prefix, after.as_deref(), page, consistency)
                    .await
                    .map_err(failed)?;
                for entry in &listed.keys {
                    let line = if sizes {
                        format!("{}\t{}\n", entry.key, entry.size)
                    } else {
                        format!("{}\n", entry.key)
                    };
                    if out.write_all(line.as_bytes()).is_err() {
                        return Ok(()); // stdout closed (| head)
                    }
                }
                left -= listed.keys.len();
                match listed.keys.last() {
                    Some(last) if listed.more => after = Some(last.key.clone()),
                    _ => break,
                }
            }
            Ok(())
        }
        ClientCommand::Put { key, value } => {
            let written = client.put(&key, value).await.map_err(failed)?;
            println!("ok (index {})", written.index);
            Ok(())
        }
        ClientCommand::Append { key, suffix } => {
            let written = client.append(&key, suffix).await.map_err(failed)?;
            println!("ok (index {})", written.index);
            Ok(())
        }
        ClientCommand::Delete { key } => {
            let written = client.delete(&key).await.map_err(failed)?;
            println!("ok (index {})", written.index);
            Ok(())
        }
        ClientCommand::Cas {
            key,
            expected,
            new,
            absent,
        } => {
            // With --absent the single positional value is the new one.
            let (expected, new) = match (absent, expected, new) {
                (true, Some(new), None) | (true, None, Some(new)) => (None, new),
                (false, Some(expected), Some(new)) => (Some(expected), new),
                _ => {
                    return Err(CliError::Config(
                        "usage: keel cas KEY EXPECTED NEW, or keel cas --absent KEY NEW".into(),
                    ));
                }
            };
            let outcome = client
                .cas(&key, expected.as_deref().map(str::as_bytes), new.as_bytes())
                .await
                .map_err(failed)?;
            if outcome.succeeded {
                println!("swapped (index {})", outcome.index);
            } else {
                println!(
                    "not swapped: the current value differs (index {})",
                    outcome.index
                );
            }
            Ok(())
        }
        ClientCommand::Status { watch: false } => {
            let status = client.cluster_status().await;
            print!("{}", status.table());
            if status.leader().is_none() {
                eprintln!("no leader among the reachable nodes");
            }
            Ok(())
        }
        ClientCommand::Status { watch: true } => {
            let terminal = std::io::IsTerminal::is_terminal(&std::io::stdout());
            let mut ticks = tokio::time::interval(std::time::Duration::from_secs(1));
            loop {
                ticks.tick().await;
                let status = client.cluster_status().await;
                let mut text = String::new();
                if terminal {
                    // Home the cursor and clear the screen: the table redraws in place.
                    text.push_str("\x1b[H\x1b[2J");
                }
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                let (h, m, s) = (now / 3600 % 24, now / 60 % 60, now % 60);
                text.push_str(&format!(
                    "{h:02}:{m:02}:{s:02} UTC (every 1 s; Ctrl-C stops)\n"
                ));
                text.push_str(&status.table());
                if status.leader().is_none() {
                    text.push_str("no leader among the reachable nodes\n");
                }
                if !terminal {
                    text.push('\n');
                }
                let mut out = std::io::stdout().lock();
                if out
                    .write_all(text.as_bytes())
                    .and_then(|()| out.flush())
                    .is_err()
                {
                    return Ok(()); // stdout closed
                }
            }
        }
        ClientCommand::Member(command) => {
            let members = match command {
                MemberCommand::List => client.members().await,
                MemberCommand::Add {
                    id,
                    peer_addr,
                    client_addr,
                } => client.add_member(id, &peer_addr, &client_addr).await,
                MemberCommand::Promote { id } => client.promote_member(id).await,
                MemberCommand::Remove { id } => client.remove_member(id).await,
            }
            .map_err(failed)?;
            print!("{}", keel_client::members_table(&members));
            Ok(())
        }
        ClientCommand::Leader(LeaderCommand::Transfer { to }) => {
            let changed = client.transfer_leader(to).await.map_err(failed)?;
            match changed.leader {
                Some(leader) => println!("node {leader} leads"),
                None => println!("leadership moved; the new leader is not known yet"),
            }
            Ok(())
        }
        ClientCommand::Bench(args) => {
            let mut client_options = client.options().clone();
            client_options.http2 = args.http2;
            let options = BenchOptions {
                client: client_options,
                clients: args.clients,
                duration: seconds("duration", args.duration)?,
                warmup: seconds("warmup", args.warmup)?,
                workload: args.workload,
                value_size: args.value_size,
                key_space: args.key_space,
                preload: true,
                leader_only: args.leader_only,
                consistency: if args.stale {
                    Consistency::Stale
                } else {
                    Consistency::Linearizable
                },
            };
            let report = bench::run(&options, bench::print_progress)
                .await
                .map_err(failed)?;
            println!("{report}");
            Ok(())
        }
    }
}
