//! Peer authentication: a secret every member of a cluster holds, and the proofs of it that
//! both sides of a handshake exchange.
//!
//! Without a secret, a node accepts any dialer that names the right cluster and a configured
//! peer id, and both are easy to learn. With one, each side proves it holds the secret without
//! sending it: the dialer and the acceptor each contribute a fresh random nonce, and each sends
//! an HMAC-SHA256, under the secret, of both nonces, the cluster, both node ids and its own role.
//! A proof is good for one connection only (the other side's nonce is in it), cannot be turned
//! around (the role is in it), and is checked in constant time.
//!
//! This keeps out anyone who can reach the peer port but does not hold the secret: a stray node
//! of another cluster with a copied config, a scanner, an attacker on the network who is not on
//! the path between two members. It does not encrypt or sign the frames that follow, so it
//! does not protect against one who can read and rewrite the traffic between members; for
//! that, carry peer traffic over a private network or an encrypted tunnel (WireGuard, IPsec).

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use hmac::{Hmac, KeyInit, Mac};
use keel::NodeId;
use sha2::Sha256;

use crate::config::ConfigError;

/// Bytes of a handshake nonce.
pub const NONCE_BYTES: usize = 32;

/// Bytes of a proof (an HMAC-SHA256).
pub const PROOF_BYTES: usize = 32;

/// A handshake nonce.
pub type Nonce = [u8; NONCE_BYTES];

/// A proof that its sender holds the peer secret.
pub type Proof = [u8; PROOF_BYTES];

/// The secret the members of a cluster share to prove to each other that they are members.
///
/// Its bytes never appear in `Debug` output or logs.
#[derive(Clone)]
pub struct PeerSecret(Arc<[u8]>);

impl PeerSecret {
    /// Fewest bytes a secret may have: 16 bytes (128 bits) when random; a passphrase should be
    /// much longer.
    pub const MIN_BYTES: usize = 16;
    /// Most bytes a secret may have.
    pub const MAX_BYTES: usize = 4096;

    /// A secret of these bytes.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Result<PeerSecret, ConfigError> {
        let bytes: Vec<u8> = bytes.into();
        if !(Self::MIN_BYTES..=Self::MAX_BYTES).contains(&bytes.len()) {
            return Err(ConfigError(format!(
                "a peer secret must be {} to {} bytes long, this one is {}",
                Self::MIN_BYTES,
                Self::MAX_BYTES,
                bytes.len()
            )));
        }
        Ok(PeerSecret(bytes.into()))
    }

    /// Reads a secret from a file: its contents without trailing whitespace (so a line written
    /// by `echo` or an editor is the same secret as without its newline).
    pub fn from_file(path: &Path) -> Result<PeerSecret, ConfigError> {
        let metadata = std::fs::metadata(path)
            .map_err(|e| ConfigError(format!("cannot read peer secret {}: {e}", path.display())))?;
        if metadata.len() > 2 * Self::MAX_BYTES as u64 {
            return Err(ConfigError(format!(
                "peer secret {} is {} bytes long, the most is {}",
                path.display(),
                metadata.len(),
                Self::MAX_BYTES
            )));
        }
        let mut bytes = std::fs::read(path)
            .map_err(|e| ConfigError(format!("cannot read peer secret {}: {e}", path.display())))?;
        let len = bytes.trim_ascii_end().len();
        bytes.truncate(len);
        PeerSecret::new(bytes)
            .map_err(|ConfigError(e)| ConfigError(format!("{}: {e}", path.display())))
    }

    /// A new random secret of 32 bytes, written as 64 hex digits (so it can be kept in a text
    /// file and copied to the other members).
    pub fn generate() -> std::io::Result<String> {
        Ok(nonce()?.iter().map(|b| format!("{b:02x}")).collect())
    }

    /// The proof that `role`'s side of the handshake `transcript` describes holds the secret.
    pub(crate) fn proof(&self, role: Role, transcript: &Transcript) -> Proof {
        self.mac(role, transcript).finalize().into_bytes().into()
    }

    /// Whether `proof` is `role`'s proof for `transcript` (in constant time).
    pub(crate) fn verify(&self, role: Role, transcript: &Transcript, proof: &[u8]) -> bool {
        self.mac(role, transcript).verify_slice(proof).is_ok()
    }

    fn mac(&self, role: Role, t: &Transcript) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes keys of any size");
        mac.update(match role {
            Role::Dialer => b"keel peer proof v1: dialer".as_slice(),
            Role::Acceptor => b"keel peer proof v1: acceptor",
        });
        mac.update(&t.cluster_id.to_le_bytes());
        mac.update(&t.dialer.to_le_bytes());
        mac.update(&t.acceptor.to_le_bytes());
        mac.update(&t.dialer_nonce);
        mac.update(&t.acceptor_nonce);
        mac
    }
}

impl fmt::Debug for PeerSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PeerSecret(..)")
    }
}

/// Which side of a handshake a proof comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    Dialer,
    Acceptor,
}

/// What both proofs of a handshake cover.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Transcript {
    pub cluster_id: u64,
    pub dialer: NodeId,
    pub acceptor: NodeId,
    pub dialer_nonce: Nonce,
    pub acceptor_nonce: Nonce,
}

/// A fresh random nonce.
pub(crate) fn nonce() -> std::io::Result<Nonce> {
    let mut nonce = [0u8; NONCE_BYTES];
    getrandom::fill(&mut nonce).map_err(std::io::Error::other)?;
    Ok(nonce)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transcript() -> Transcript {
        Transcript {
            cluster_id: 7,
            dialer: 2,
            acceptor: 1,
            dialer_nonce: [1; NONCE_BYTES],
            acceptor_nonce: [2; NONCE_BYTES],
        }
    }

    #[test]
    fn a_proof_verifies_only_for_its_secret_role_and_transcript() {
        let secret = PeerSecret::new(*b"0123456789abcdef").unwrap();
        let t = transcript();
        let proof = secret.proof(Role::Dialer, &t);
        assert!(secret.verify(Role::Dialer, &t, &proof));
        assert!(!secret.verify(Role::Acceptor, &t, &proof), "turned around");
        let other = PeerSecret::new(*b"0123456789abcdeF").unwrap();
        assert!(!other.verify(Role::Dialer, &t, &proof), "another secret");
        for change in [
            |t: &mut Transcript| t.cluster_id += 1,
            |t: &mut Transcript| t.dialer = 3,
            |t: &mut Transcript| t.acceptor = 3,
            |t: &mut Transcript| t.dialer_nonce[31] ^= 1,
            |t: &mut Transcript| t.acceptor_nonce[0] ^= 1,
        ] {
            let mut changed = t;
            change(&mut changed);
            assert!(
                !secret.verify(Role::Dialer, &changed, &proof),
                "{changed:?}"
            );
        }
        assert!(!secret.verify(Role::Dialer, &t, &proof[..31]), "truncated");
    }

    #[test]
    fn secrets_of_the_wrong_size_are_refused_and_never_printed() {
        assert!(PeerSecret::new(*b"short").is_err());
        assert!(PeerSecret::new(vec![b'x'; PeerSecret::MAX_BYTES + 1]).is_err());
        let secret = PeerSecret::new(*b"do not print this").unwrap();
        assert_eq!(format!("{secret:?}"), "PeerSecret(..)");
    }

    #[test]
    fn a_secret_file_is_read_without_its_trailing_newline() {
        let dir = std::env::temp_dir().join(format!("keel-net-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let generated = PeerSecret::generate().unwrap();
        assert_eq!(generated.len(), 64);
        assert!(generated.bytes().all(|b| b.is_ascii_hexdigit()));
        let with_newline = dir.join("a");
        let without = dir.join("b");
        std::fs::write(&with_newline, format!("{generated}\n")).unwrap();
        std::fs::write(&without, &generated).unwrap();
        let (a, b) = (
            PeerSecret::from_file(&with_newline).unwrap(),
            PeerSecret::from_file(&without).unwrap(),
        );
        let t = transcript();
        assert!(b.verify(Role::Acceptor, &t, &a.proof(Role::Acceptor, &t)));
        std::fs::write(&without, "short\n").unwrap();
        let error = PeerSecret::from_file(&without).unwrap_err().to_string();
        assert!(
            error.contains("16 to 4096 bytes long, this one is 5"),
            "{error}"
        );
        let missing = PeerSecret::from_file(&dir.join("missing")).unwrap_err();
        assert!(
            missing.to_string().contains("cannot read peer secret"),
            "{missing}"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
