//! Who may do what on the client API: clients authenticate by bearer token or by client
//! certificate, and an access file grants each client permissions, optionally per key prefix.
//!
//! ```toml
//! # keel access file (`keel serve --access FILE`): every member should have the same.
//! [[client]]
//! name = "app"                 # a token client; `keel token create app ...` writes this
//! token_sha256 = "9f86d0..."   # the SHA-256 of its token, never the token itself
//! grants = ["write:app/", "read"]
//!
//! [[client]]
//! name = "ops"                 # the client certificate `keel certs --client ops` makes
//! grants = ["admin", "read"]
//! ```
//!
//! Permissions: `read` (get keys), `write` (put, append, compare-and-set and delete keys; implies
//! `read`), `admin` (membership, leadership transfer, `/v1/status`, `/metrics`). `read` and
//! `write` may be limited to keys starting with a prefix (`write:app/`); a client may hold
//! several grants. A client is named by its token or by the client certificate of that name
//! (a certificate names its client `<name>.client.<cluster>.keel`); a member's certificate has
//! every permission. Without an access file but with client certificates required
//! (`--require-client-cert`), every certificate of the cluster's CA has every permission.
//!
//! Every request is authenticated before its handler runs ([`authenticate`]): no credentials,
//! or a token the file does not list, gets 401 `unauthenticated`; a request for what the
//! client's grants do not cover gets 403 `forbidden` (for keys, checked against the key the
//! handler decodes: [`allow_key`]). A client's sessions belong to it ([`Identity::owner`]: the
//! KV state machine keys sessions by owner and client id and caps each owner's).
//!
//! A follower forwards a request with the client's `Authorization` header, and names the
//! client in [`FORWARDED_CLIENT_HEADER`] (or a member, in [`FORWARDED_MEMBER_HEADER`]); the
//! leader believes those headers only from a connection presenting a member's certificate (over
//! HTTPS), so no client can forge them.
//!
//! The file is read again when it changes (looked at, at most once a second, as requests
//! arrive) and on [`Authenticator::reload`] (`keel serve` does on SIGHUP); a file that no
//! longer parses keeps the grants in use and logs why.

// Helpers return `Result<_, Response>` so an early answer can be `?`-propagated.
#![allow(clippy::result_large_err)]

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use keel::NodeId;
use keel_net::Holder;
use parking_lot::{Mutex, RwLock};
use serde::Deserialize;

use crate::http::{Api, FORWARDED_HEADER, Incoming, error};
use crate::listener::ClientCert;

/// The header a follower names a forwarded request's client in. Believed only from a member
/// (see the module documentation); ignored from anyone else.
pub const FORWARDED_CLIENT_HEADER: &str = "keel-forwarded-client";

/// The header a follower names a forwarded request's member in, when a member (by its
/// certificate: a node joining, say) sent it. Believed only from a member, as
/// [`FORWARDED_CLIENT_HEADER`].
pub const FORWARDED_MEMBER_HEADER: &str = "keel-forwarded-member";

/// What a grant allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Permission {
    /// Get keys.
    Read,
    /// Put, append, compare-and-set and delete keys; implies `Read`.
    Write,
    /// Membership, leadership transfer, status and metrics.
    Admin,
}

impl Permission {
    fn name(self) -> &'static str {
        match self {
            Permission::Read => "read",
            Permission::Write => "write",
            Permission::Admin => "admin",
        }
    }
}

/// One permission, on every key or on keys starting with `prefix`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    /// What it allows.
    pub permission: Permission,
    /// For `Read` and `Write`: only keys starting with these bytes.
    pub prefix: Option<Vec<u8>>,
}

impl Grant {
    /// Reads a grant as the access file writes it: `read`, `write`, `admin`, `read:PREFIX` or
    /// `write:PREFIX`.
    pub fn parse(text: &str) -> Result<Grant, String> {
        let (permission, prefix) = match text.split_once(':') {
            Some((permission, prefix)) => (permission, Some(prefix)),
            None => (text, None),
        };
        let permission = match permission {
            "read" => Permission::Read,
            "write" => Permission::Write,
            "admin" => Permission::Admin,
            other => {
                return Err(format!(
                    "unknown permission {other:?} in grant {text:?}: use read, write or admin, \
                     optionally read:PREFIX or write:PREFIX"
                ));
            }
        };
        match prefix {
            Some(_) if permission == Permission::Admin => Err(format!(
                "grant {text:?}: admin is not limited to keys; give it as \"admin\""
            )),
            Some("") => Err(format!(
                "grant {text:?} has an empty prefix; leave it out to grant every key"
            )),
            prefix => Ok(Grant {
                permission,
                prefix: prefix.map(|p| p.as_bytes().to_vec()),
            }),
        }
    }

    /// Whether this grant allows `need` on `key` (`None`: on some key, or not about keys).
    fn allows(&self, need: Permission, key: Option<&[u8]>) -> bool {
        let covers = match need {
            Permission::Read => self.permission <= Permission::Write,
            Permission::Write => self.permission == Permission::Write,
            Permission::Admin => self.permission == Permission::Admin,
        };
        covers
            && match (&self.prefix, key) {
                (Some(prefix), Some(key)) => key.starts_with(prefix),
                _ => true,
            }
    }
}

impl fmt::Display for Grant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.permission.name())?;
        if let Some(prefix) = &self.prefix {
            write!(f, ":{}", String::from_utf8_lossy(prefix))?;
        }
        Ok(())
    }
}

/// An authenticated client.
#[derive(Debug, PartialEq, Eq)]
pub struct Client {
    /// Its name: the access file's, and its certificate's.
    pub name: String,
    /// What it may do.
    pub grants: Vec<Grant>,
    /// The owner of its sessions: [`owner_of`] its name.
    pub owner: u64,
}

impl Client {
    fn new(name: String, grants: Vec<Grant>) -> Client {
        let owner = owner_of(&name);
        Client {
            name,
            grants,
            owner,
        }
    }
}

/// Who sent a request, as far as the node could tell.
#[derive(Clone, Debug)]
pub enum Identity {
    /// A member of the cluster (by its certificate): may do everything.
    Member(NodeId),
    /// A client.
    Client(Arc<Client>),
}

impl Identity {
    /// Whether this identity may do `need` (on `key`, for a read or write of one).
    pub fn allows(&self, need: Permission, key: Option<&[u8]>) -> bool {
        match self {
            Identity::Member(_) => true,
            Identity::Client(client) => client.grants.iter().any(|g| g.allows(need, key)),
        }
    }

    /// The owner of this identity's sessions (never 0: that is the anonymous owner).
    pub fn owner(&self) -> u64 {
        match self {
            // Not a client name (those have no ':'), so no client shares a member's sessions.
            Identity::Member(id) => owner_of(&format!("member:{id}")),
            Identity::Client(client) => client.owner,
        }
    }

    fn describe(&self) -> String {
        match self {
            Identity::Member(id) => format!("member {id}"),
            Identity::Client(client) => format!("client {:?}", client.name),
        }
    }
}

/// The owner of a named client's sessions: the first 8 bytes of the SHA-256 of its name, never
/// 0. Every member computes the same, so sessions keep their owner whoever leads.
pub fn owner_of(name: &str) -> u64 {
    let digest = ring::digest::digest(&ring::digest::SHA256, name.as_bytes());
    let bytes: [u8; 8] = digest.as_ref()[..8]
        .try_into()
        .expect("SHA-256 is 32 bytes");
    u64::from_le_bytes(bytes).max(1)
}

/// A new random bearer token: `keel_` and 64 hex digits (256 bits from the OS).
pub fn new_token() -> String {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .expect("the OS random source works");
    format!("keel_{}", hex(&bytes))
}

/// The SHA-256 of a token, in hex: what the access file keeps. Tokens are 256 random bits, so a
/// fast hash is enough: nobody can search that space for a token that hashes alike.
pub fn token_hash(token: &str) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, token.as_bytes()).as_ref())
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(2 * bytes.len());
    for b in bytes {
        text.push(DIGITS[usize::from(b >> 4)] as char);
        text.push(DIGITS[usize::from(b & 15)] as char);
    }
    text
}

/// The 32 bytes that 64 hex digits (either case) spell, if they do.
fn unhex(text: &str) -> Option<[u8; 32]> {
    let text = text.as_bytes();
    if text.len() != 64 {
        return None;
    }
    let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut bytes = [0u8; 32];
    for (i, pair) in text.chunks_exact(2).enumerate() {
        bytes[i] = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(bytes)
}

/// The access file as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileForm {
    #[serde(default)]
    client: Vec<ClientForm>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClientForm {
    name: String,
    #[serde(default)]
    token_sha256: Option<String>,
    #[serde(default)]
    grants: Vec<String>,
}

/// An access file, parsed: the clients by name and by their tokens' hashes.
#[derive(Debug, Default)]
pub struct Access {
    by_name: HashMap<String, Arc<Client>>,
    /// By the SHA-256 of their token: a request's token is hashed and looked up, with no
    /// text made of it.
    by_token: HashMap<[u8; 32], Arc<Client>>,
}

impl Access {
    /// Parses an access file's text (see the module documentation).
    pub fn parse(text: &str) -> Result<Access, String> {
        let form: FileForm = toml::from_str(text).map_err(|e| e.to_string())?;
        let mut access = Access::default();
        for entry in form.client {
            let name = entry.name;
            keel_net::certs::client_name(0, &name).map_err(|e| e.to_string())?;
            if name.to_ascii_lowercase() != name {
                return Err(format!(
                    "client name {name:?} must be lower case (as certificates carry it)"
                ));
            }
            let grants = entry
                .grants
                .iter()
                .map(|g| Grant::parse(g))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("client {name:?}: {e}"))?;
            let client = Arc::new(Client::new(name.clone(), grants));
            if let Some(hash) = entry.token_sha256 {
                let Some(hash) = unhex(&hash) else {
                    return Err(format!(
                        "client {name:?}: token_sha256 must be 64 hex digits (keel token \
                         create writes it)"
                    ));
                };
                if access.by_token.insert(hash, client.clone()).is_some() {
                    return Err(format!(
                        "client {name:?}: another client has the same token"
                    ));
                }
            }
            if access.by_name.insert(name.clone(), client).is_some() {
                return Err(format!("client {name:?} is listed twice"));
            }
        }
        Ok(access)
    }

    /// Reads and parses an access file.
    pub fn load(path: &Path) -> Result<Access, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("access file {}: {e}", path.display()))?;
        Access::parse(&text).map_err(|e| format!("access file {}: {e}", path.display()))
    }

    /// The client named `name`.
    pub fn client(&self, name: &str) -> Option<&Arc<Client>> {
        self.by_name.get(name)
    }

    /// The client whose token this is.
    pub fn client_with_token(&self, token: &str) -> Option<&Arc<Client>> {
        let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
        let digest: &[u8; 32] = digest.as_ref().try_into().expect("SHA-256 is 32 bytes");
        self.by_token.get(digest)
    }

    /// How many clients it lists.
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    /// Whether it lists no client.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }
}

/// How often the access file is looked at for changes, at most.
const RECHECK: Duration = Duration::from_secs(1);

/// Most certificate clients remembered without an access file (each is a name and its owner
/// hash); past it the memory is cleared and refilled.
const MAX_REMEMBERED_CERT_CLIENTS: usize = 4096;

/// The access file in use, read again when it changes.
struct AccessFile {
    path: PathBuf,
    current: RwLock<Arc<Access>>,
    /// When the file was last looked at, and its modification time then.
    checked: Mutex<(Instant, Option<SystemTime>)>,
}

impl AccessFile {
    fn current(&self) -> Arc<Access> {
        let changed = {
            let mut checked = self.checked.lock();
            if checked.0.elapsed() < RECHECK {
                false
            } else {
                checked.0 = Instant::now();
                let stamp = modified(&self.path);
                let changed = stamp != checked.1;
                checked.1 = stamp;
                changed
            }
        };
        if changed && let Err(e) = self.reload() {
            tracing::error!("{e}; the grants in use stay");
        }
        self.current.read().clone()
    }

    fn reload(&self) -> Result<(), String> {
        let access = Access::load(&self.path)?;
        tracing::info!(
            clients = access.len(),
            "read access file {}",
            self.path.display()
        );
        *self.current.write() = Arc::new(access);
        Ok(())
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// Authenticates the requests of a node that requires it.
pub struct Authenticator {
    file: Option<AccessFile>,
    /// Without an access file: the certificate clients seen, each with every permission.
    cert_clients: Mutex<HashMap<String, Arc<Client>>>,
}

impl Authenticator {
    /// Authenticates by the access file at `path` (read now: an error says what is wrong with
    /// it), or, with `None`, by client certificates alone, each with every permission.
    pub fn new(path: Option<&Path>) -> Result<Authenticator, String> {
        let file = match path {
            Some(path) => {
                let stamp = modified(path);
                let access = Access::load(path)?;
                Some(AccessFile {
                    path: path.to_path_buf(),
                    current: RwLock::new(Arc::new(access)),
                    checked: Mutex::new((Instant::now(), stamp)),
                })
            }
            None => None,
        };
        Ok(Authenticator {
            file,
            cert_clients: Mutex::new(HashMap::new()),
        })
    }

    /// Reads the access file again now; on an error the grants in use stay.
    pub fn reload(&self) -> Result<(), String> {
        match &self.file {
            Some(file) => file.reload(),
            None => Ok(()),
        }
    }

    /// The client a certificate (or a member vouching for one) names.
    fn named(&self, access: Option<&Access>, name: &str) -> Result<Identity, Response> {
        let Some(access) = access else {
            let mut known = self.cert_clients.lock();
            if let Some(client) = known.get(name) {
                return Ok(Identity::Client(client.clone()));
            }
            if known.len() >= MAX_REMEMBERED_CERT_CLIENTS {
                known.clear();
            }
            let client = known.entry(name.to_string()).or_insert_with(|| {
                let every = [Permission::Write, Permission::Admin]
                    .map(|permission| Grant {
                        permission,
                        prefix: None,
                    })
                    .to_vec();
                Arc::new(Client::new(name.to_string(), every))
            });
            return Ok(Identity::Client(client.clone()));
        };
        match access.client(name) {
            Some(client) => Ok(Identity::Client(client.clone())),
            None => Err(forbidden(&format!(
                "client {name:?} (by its certificate) is not in this node's access file"
            ))),
        }
    }

    /// Who sent the request: a bearer token first, else a certificate (a member's, or a
    /// client's); 401 if neither.
    fn identify(&self, parts: &Incoming) -> Result<Identity, Response> {
        let access = self.file.as_ref().map(AccessFile::current);
        if let Some(value) = parts.headers.get(header::AUTHORIZATION)
            && let Some(access) = &access
        {
            let token = bearer(value)?;
            return match access.client_with_token(token) {
                Some(client) => Ok(Identity::Client(client.clone())),
                None => Err(unauthenticated(
                    "the bearer token is not in this node's access file (revoked, or of \
                     another cluster?)",
                )),
            };
        }
        let holder = parts
            .extensions
            .get::<ClientCert>()
            .and_then(|ClientCert(holder)| holder.as_ref());
        match holder {
            Some(&Holder::Node(id)) => {
                if let Some(name) = parts.headers.get(FORWARDED_CLIENT_HEADER) {
                    let name = name.to_str().map_err(|_| {
                        error(
                            StatusCode::BAD_REQUEST,
                            "bad_header",
                            "the forwarded client's name is not text",
                        )
                    })?;
                    self.named(access.as_deref(), name)
                } else if let Some(member) = parts.headers.get(FORWARDED_MEMBER_HEADER) {
                    let member = member.to_str().ok().and_then(|m| m.parse().ok());
                    match member {
                        Some(member) => Ok(Identity::Member(member)),
                        None => Err(error(
                            StatusCode::BAD_REQUEST,
                            "bad_header",
                            "the forwarded member's id is not a number",
                        )),
                    }
                } else if parts.headers.contains_key(FORWARDED_HEADER) {
                    Err(unauthenticated(&format!(
                        "member {id} forwarded this request without credentials: this node \
                         needs a bearer token or a client certificate"
                    )))
                } else {
                    Ok(Identity::Member(id))
                }
            }
            Some(Holder::Client(name)) => self.named(access.as_deref(), name),
            None => Err(unauthenticated(
                "this node needs credentials: a bearer token (Authorization: Bearer ...) or a \
                 client certificate of the cluster's CA",
            )),
        }
    }
}

/// The token of an `Authorization: Bearer TOKEN` header.
fn bearer(value: &HeaderValue) -> Result<&str, Response> {
    value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|token| !token.is_empty())
        .ok_or_else(|| unauthenticated("the Authorization header must be \"Bearer TOKEN\""))
}

/// 401: no credentials, or credentials this node does not know.
fn unauthenticated(message: &str) -> Response {
    let mut response = error(StatusCode::UNAUTHORIZED, "unauthenticated", message);
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"keel\""),
    );
    response
}

/// 403: known credentials without the permission asked for.
fn forbidden(message: &str) -> Response {
    error(StatusCode::FORBIDDEN, "forbidden", message)
}

/// What a request needs before its handler runs: a read or write of some key (the handler
/// checks the key itself, with [`allow_key`]), or admin for everything else.
fn needed(method: &Method, path: &str) -> Permission {
    if path == "/v1/kv" {
        // Listing keys; the handler checks the prefix, as for a key.
        Permission::Read
    } else if path.starts_with("/v1/kv/") {
        if *method == Method::GET || *method == Method::HEAD {
            Permission::Read
        } else {
            Permission::Write
        }
    } else {
        Permission::Admin
    }
}

/// The middleware that authenticates every request of a node that requires it, refuses what
/// the client may not do (keys aside: see [`allow_key`]), and hands the handlers its
/// [`Identity`].
pub(crate) async fn authenticate(
    State(api): State<Arc<Api>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(auth) = &api.auth else {
        return next.run(request).await;
    };
    if crate::console::is_asset(request.uri().path()) {
        return next.run(request).await;
    }
    let (mut parts, body) = request.into_parts();
    let identity = match auth.identify(&parts) {
        Ok(identity) => identity,
        Err(response) => return crate::body::refuse(body, response).await,
    };
    let need = needed(&parts.method, parts.uri.path());
    if !identity.allows(need, None) {
        let message = format!("{} may not {} here", identity.describe(), need.name());
        return crate::body::refuse(body, forbidden(&message)).await;
    }
    parts.extensions.insert(identity);
    next.run(Request::from_parts(parts, body)).await
}

/// Refuses a read or write of `key` that the request's client may not do (no identity: the
/// node does not authenticate, and everyone may).
pub(crate) fn allow_key(incoming: &Incoming, need: Permission, key: &[u8]) -> Result<(), Response> {
    match incoming.extensions.get::<Identity>() {
        Some(identity) if !identity.allows(need, Some(key)) => Err(forbidden(&format!(
            "{} may not {} key {:?}",
            identity.describe(),
            need.name(),
            String::from_utf8_lossy(key)
        ))),
        _ => Ok(()),
    }
}

/// The owner of the request's sessions: its client's, or 0 (anonymous) on a node that does not
/// authenticate.
pub(crate) fn owner(incoming: &Incoming) -> u64 {
    incoming
        .extensions
        .get::<Identity>()
        .map_or(0, Identity::owner)
}

/// The header, and its value, in which a follower names the request's client or member to
/// the leader, if the request was authenticated.
pub(crate) fn forwarded_identity(incoming: &Incoming) -> Option<(&'static str, String)> {
    match incoming.extensions.get::<Identity>()? {
        Identity::Client(client) => Some((FORWARDED_CLIENT_HEADER, client.name.clone())),
        Identity::Member(id) => Some((FORWARDED_MEMBER_HEADER, id.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_hashes_spell_and_read_back() {
        let bytes: [u8; 32] = std::array::from_fn(|i| (i * 37 + 5) as u8);
        let text = hex(&bytes);
        assert_eq!(text.len(), 64);
        assert_eq!(unhex(&text), Some(bytes));
        assert_eq!(unhex(&text.to_ascii_uppercase()), Some(bytes));
        assert_eq!(unhex(&text[1..]), None, "63 digits");
        assert_eq!(unhex(&format!("{}g", &text[1..])), None, "not hex");
        assert_eq!(unhex(&format!("{}é", &text[2..])), None, "not ASCII");
        assert_eq!(
            token_hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn grants_parse_and_allow_what_they_say() {
        let write_app = Grant::parse("write:app/").unwrap();
        assert!(write_app.allows(Permission::Write, Some(b"app/x")));
        assert!(
            write_app.allows(Permission::Read, Some(b"app/x")),
            "write implies read"
        );
        assert!(!write_app.allows(Permission::Write, Some(b"other")));
        assert!(!write_app.allows(Permission::Admin, None));
        assert!(write_app.allows(Permission::Write, None), "some key");
        let read = Grant::parse("read").unwrap();
        assert!(read.allows(Permission::Read, Some(b"anything")));
        assert!(!read.allows(Permission::Write, Some(b"anything")));
        let admin = Grant::parse("admin").unwrap();
        assert!(admin.allows(Permission::Admin, None));
        assert!(
            !admin.allows(Permission::Read, Some(b"k")),
            "admin is not data"
        );
        for bad in ["admin:x", "write:", "root", "", "Read"] {
            assert!(Grant::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(write_app.to_string(), "write:app/");
    }

    #[test]
    fn an_access_file_is_checked_and_finds_clients_by_token_and_name() {
        let token = new_token();
        assert!(token.starts_with("keel_") && token.len() == 69);
        let text = format!(
            "[[client]]\nname = \"app\"\ntoken_sha256 = \"{}\"\ngrants = [\"write:app/\"]\n\n\
             [[client]]\nname = \"ops\"\ngrants = [\"admin\", \"read\"]\n",
            token_hash(&token)
        );
        let access = Access::parse(&text).unwrap();
        assert_eq!(access.len(), 2);
        let app = access.client_with_token(&token).unwrap();
        assert_eq!(app.name, "app");
        assert!(access.client_with_token(&new_token()).is_none());
        assert!(access.client("ops").is_some());
        assert_ne!(app.owner, access.client("ops").unwrap().owner);

        let bad = [
            "[[client]]\nname = \"App\"\n",
            "[[client]]\nname = \"a b\"\n",
            "[[client]]\nname = \"x\"\ntoken_sha256 = \"abc\"\n",
            "[[client]]\nname = \"x\"\ngrants = [\"root\"]\n",
            "[[client]]\nname = \"x\"\n[[client]]\nname = \"x\"\n",
            "[[client]]\nname = \"x\"\nrole = \"admin\"\n",
            "[[clients]]\nname = \"x\"\n",
            "not toml at all = = =",
        ];
        for text in bad {
            assert!(Access::parse(text).is_err(), "{text:?}");
        }
        let same_token = format!(
            "[[client]]\nname = \"a\"\ntoken_sha256 = \"{0}\"\n[[client]]\nname = \"b\"\n\
             token_sha256 = \"{0}\"\n",
            token_hash(&token)
        );
        assert!(Access::parse(&same_token).is_err());
    }

    #[test]
    fn owners_differ_by_name_and_are_never_anonymous() {
        assert_ne!(owner_of("a"), owner_of("b"));
        assert_eq!(owner_of("a"), owner_of("a"));
        assert_ne!(owner_of(""), 0);
        assert_ne!(Identity::Member(1).owner(), Identity::Member(2).owner());
    }
}
