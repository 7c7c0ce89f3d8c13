//! `keel token`: bearer tokens for clients of a cluster that authenticates by an access file
//! (`keel serve --access FILE`; see `keel_server::auth`).
//!
//! A token is made here, printed once, and only its SHA-256 is written to the file: whoever
//! reads the file cannot use it to pose as a client.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use keel_server::auth::{Access, Grant, new_token, token_hash};

use crate::CliError;

/// `keel token ...`.
#[derive(Args, Debug)]
pub struct TokenArgs {
    #[command(subcommand)]
    command: TokenCommand,
}

#[derive(Subcommand, Debug)]
enum TokenCommand {
    /// Make a token for a new client, add the client and its grants to the access file, and
    /// print the token (only here: the file keeps its hash). Members read the file again
    /// within a second of the change.
    Create {
        /// The client's name: letters, digits and '-', lower case.
        name: String,
        /// What it may do: read, write, admin, read:PREFIX or write:PREFIX (repeat for more).
        #[arg(long = "grant", value_name = "GRANT", required = true)]
        grants: Vec<String>,
        /// The access file (made if absent).
        #[arg(long, value_name = "FILE", default_value = "keel-access.toml")]
        access: PathBuf,
    },
    /// Remove a client (its token and grants) from the access file.
    Revoke {
        /// The client's name.
        name: String,
        /// The access file.
        #[arg(long, value_name = "FILE", default_value = "keel-access.toml")]
        access: PathBuf,
    },
}

/// Runs `keel token ...`.
pub fn token(args: TokenArgs) -> Result<(), CliError> {
    match args.command {
        TokenCommand::Create {
            name,
            grants,
            access,
        } => create(&name, &grants, &access),
        TokenCommand::Revoke { name, access } => revoke(&name, &access),
    }
}

fn read(path: &Path) -> Result<String, CliError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        Err(e) => Err(CliError::Config(format!(
            "cannot read {}: {e}",
            path.display()
        ))),
    }
}

fn check(path: &Path, text: &str) -> Result<Access, CliError> {
    Access::parse(text).map_err(|e| CliError::Config(format!("{}: {e}", path.display())))
}

/// Writes the file whole, through a temporary file and a rename, so that a member reading it
/// meanwhile sees the old or the new one, never half.
fn write(path: &Path, text: &str) -> Result<(), CliError> {
    let fail = |e: std::io::Error| CliError::Start(format!("cannot write {}: {e}", path.display()));
    let temporary = path.with_extension("toml.tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&temporary).map_err(fail)?;
    file.write_all(text.as_bytes()).map_err(fail)?;
    file.sync_all().map_err(fail)?;
    std::fs::rename(&temporary, path).map_err(fail)
}

fn create(name: &str, grants: &[String], path: &Path) -> Result<(), CliError> {
    for grant in grants {
        Grant::parse(grant).map_err(CliError::Config)?;
    }
    let text = read(path)?;
    if check(path, &text)?.client(name).is_some() {
        return Err(CliError::Config(format!(
            "client {name:?} is in {} already; `keel token revoke {name}` first to give it a \
             new token",
            path.display()
        )));
    }
    let token = new_token();
    let grants: Vec<String> = grants.iter().map(|g| format!("{g:?}")).collect();
    let mut new = text.clone();
    if new.is_empty() {
        new.push_str(
            "# keel access file: who may do what (keel serve --access FILE). Tokens are kept as\n\
             # their SHA-256 only. Grants: read, write, admin, read:PREFIX, write:PREFIX.\n",
        );
    } else if !new.ends_with('\n') {
        new.push('\n');
    }
    new.push_str(&format!(
        "\n[[client]]\nname = {name:?}\ntoken_sha256 = \"{}\"\ngrants = [{}]\n",
        token_hash(&token),
        grants.join(", ")
    ));
    check(path, &new)?;
    write(path, &new)?;
    eprintln!(
        "added client {name:?} to {}; keep its token secret (it is not stored anywhere):",
        path.display()
    );
    println!("{token}");
    Ok(())
}

fn revoke(name: &str, path: &Path) -> Result<(), CliError> {
    let text = read(path)?;
    check(path, &text)?;
    let mut table: toml::Table =
        toml::from_str(&text).map_err(|e| CliError::Config(format!("{}: {e}", path.display())))?;
    let Some(toml::Value::Array(clients)) = table.get_mut("client") else {
        return Err(CliError::Config(format!(
            "{} lists no clients",
            path.display()
        )));
    };
    let before = clients.len();
    clients.retain(|client| client.get("name").and_then(toml::Value::as_str) != Some(name));
    if clients.len() == before {
        return Err(CliError::Config(format!(
            "client {name:?} is not in {}",
            path.display()
        )));
    }
    let new = toml::to_string(&table)
        .map_err(|e| CliError::Start(format!("cannot write the access file: {e}")))?;
    check(path, &new)?;
    write(path, &new)?;
    eprintln!(
        "removed client {name:?} from {}; members stop admitting it within a second",
        path.display()
    );
    Ok(())
}
