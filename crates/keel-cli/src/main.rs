//! The `keel` command.

mod certs;
mod client;
mod dev;
mod serve;
mod token;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// glibc's allocator took about a fifth of a node's CPU under load (fragmented free lists,
/// `malloc_consolidate`); mimalloc's thread-local free lists make the many short-lived
/// allocations of request handling cheap.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Turns transparent huge pages off for this process and the nodes it starts (the flag is
/// inherited). mimalloc asks for huge pages on its arenas; a node frees and reuses memory at a
/// high rate, and each page the allocator returned and then touched again was refaulted as a
/// zeroed 2 MiB page: followers spent about a third of their CPU in `clear_page` and held four
/// times the memory (390 MiB against 100 MiB resident after 10 s of 64 writers).
fn disable_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_THP_DISABLE only sets a flag of the calling process; it touches no memory.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}

/// keel: a replicated key-value store on Raft.
///
/// Start a local 3-node cluster with `keel dev`, then read and write keys with `keel put`,
/// `keel get` and friends (or plain HTTP: see README.md). `keel serve` runs one node of a real
/// multi-machine cluster.
#[derive(Parser, Debug)]
#[command(name = "keel", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    endpoints: client::Endpoints,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a local cluster on loopback (3 nodes, HTTP on 127.0.0.1:8081-8083, peers on
    /// 7081-7083, data under ./keel-data), restarting nodes that die, until Ctrl-C.
    Dev(dev::DevArgs),
    /// Run one node of a cluster, until SIGINT or SIGTERM.
    Serve(Box<serve::ServeArgs>),
    /// Print a new random peer secret (64 hex digits) for `keel serve --peer-secret-file`:
    /// `(umask 077; keel secret > peer-secret)`, then copy that file to every member.
    Secret,
    /// Make a cluster's CA and certificates for its members (`--node`) and clients
    /// (`--client`) under --dir, for `keel serve --certs DIR`. Existing files are kept.
    Certs(certs::CertsArgs),
    /// Make and revoke bearer tokens of clients in an access file, for
    /// `keel serve --access FILE`.
    Token(token::TokenArgs),
    #[command(flatten)]
    Client(client::ClientCommand),
}

/// Errors the command reports as one line.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Bad flags or configuration (exit code 2).
    #[error("{0}")]
    Config(String),
    /// Something failed while starting or running (exit code 1).
    #[error("{0}")]
    Start(String),
}

fn main() -> ExitCode {
    disable_transparent_huge_pages();
    let cli = Cli::parse();
    let default_filter = match cli.command {
        Command::Serve(_) | Command::Dev(_) => "info",
        Command::Client(_) | Command::Secret | Command::Certs(_) | Command::Token(_) => "warn",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let threads = match &cli.command {
        Command::Serve(args) => args.threads.unwrap_or(0),
        // Client commands and the dev supervisor do little work.
        _ => 1,
    };
    let mut builder = match threads {
        1 => tokio::runtime::Builder::new_current_thread(),
        _ => tokio::runtime::Builder::new_multi_thread(),
    };
    if threads > 1 {
        builder.worker_threads(threads);
    }
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("keel: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Dev(args) => dev::dev(args).await,
            Command::Serve(args) => serve::serve(*args).await,
            Command::Secret => keel_server::PeerSecret::generate()
                .map(|secret| println!("{secret}"))
                .map_err(|e| CliError::Start(format!("cannot make a random secret: {e}"))),
            Command::Certs(args) => certs::certs(args),
            Command::Token(args) => token::token(args),
            Command::Client(command) => client::run(command, &cli.endpoints).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("keel: {e}");
            match e {
                CliError::Config(_) => ExitCode::from(2),
                CliError::Start(_) => ExitCode::FAILURE,
            }
        }
    }
}
