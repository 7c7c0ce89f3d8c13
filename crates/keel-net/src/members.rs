//! The address book follows the cluster's configuration.
//!
//! What keel-net needs to reach a member travels in the configuration itself: a service that
//! adds a member attaches [`MemberAddrs`] (encoded) as the member's information
//! (`keel::Membership::info`), so every node learns a new member's addresses when it appends the
//! configuration entry, before any RPC goes to it. [`crate::TcpTransport`] then, on every change
//! Raft reports (`keel::Transport::members_changed`):
//!
//! - dials members at the peer address their information gives (members without information,
//!   the ones a cluster started with, keep the address from [`crate::NetConfig::peers`]);
//! - closes the connections, both ways, of members that are no longer to be reached (removed,
//!   and the removal committed), and refuses their handshakes from then on (a node that was
//!   reached only as the leader, named by no configuration this node held, is not refused);
//! - accepts a dialer of its cluster that it does not know yet (with the peer secret's proof, if
//!   there is one): a node that is joining hears from the leader before it knows the
//!   configuration, and a member that lags hears from a new member before it appends the entry
//!   that added it.

use std::net::SocketAddr;

use bytes::{BufMut, Bytes, BytesMut};

use crate::config::MAX_CLIENT_ADDR_BYTES;

/// Where a member serves Raft traffic and clients; what a service attaches to a member of the
/// configuration for keel-net to reach it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberAddrs {
    /// Where the member listens for its peers.
    pub peer_addr: SocketAddr,
    /// Where it serves clients (for forwarding to the leader); may be empty.
    pub client_addr: String,
}

/// Why bytes are not a [`MemberAddrs`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MemberAddrsError {
    /// Not this encoding, or a newer version of it.
    #[error("not member addresses of a version this build reads")]
    Version,
    /// Cut short, or bytes left over.
    #[error("member addresses of the wrong length")]
    Length,
    /// The peer address is not IP:port.
    #[error("peer address {0:?} is not IP:PORT")]
    PeerAddr(String),
    /// The client address is too long or not printable text.
    #[error("client address is not HOST:PORT of at most {MAX_CLIENT_ADDR_BYTES} bytes")]
    ClientAddr,
}

const VERSION: u8 = 1;

impl MemberAddrs {
    /// The bytes to attach to the member: `version:u8 len:u16 peer len:u16 client` (UTF-8).
    pub fn encode(&self) -> Bytes {
        let peer = self.peer_addr.to_string();
        let mut out = BytesMut::with_capacity(5 + peer.len() + self.client_addr.len());
        out.put_u8(VERSION);
        out.put_u16_le(peer.len() as u16);
        out.put_slice(peer.as_bytes());
        out.put_u16_le(self.client_addr.len() as u16);
        out.put_slice(self.client_addr.as_bytes());
        out.freeze()
    }

    /// Reads what [`MemberAddrs::encode`] wrote; anything else is an error, never a panic.
    pub fn decode(bytes: &[u8]) -> Result<MemberAddrs, MemberAddrsError> {
        let (&version, rest) = bytes.split_first().ok_or(MemberAddrsError::Length)?;
        if version != VERSION {
            return Err(MemberAddrsError::Version);
        }
        let (peer, rest) = text(rest)?;
        let (client, rest) = text(rest)?;
        if !rest.is_empty() {
            return Err(MemberAddrsError::Length);
        }
        let peer_addr = peer
            .parse()
            .map_err(|_| MemberAddrsError::PeerAddr(peer.to_string()))?;
        if !crate::is_client_addr(client) {
            return Err(MemberAddrsError::ClientAddr);
        }
        Ok(MemberAddrs {
            peer_addr,
            client_addr: client.to_string(),
        })
    }
}

/// A `len:u16` and that many bytes of UTF-8, and what follows.
fn text(bytes: &[u8]) -> Result<(&str, &[u8]), MemberAddrsError> {
    if bytes.len() < 2 {
        return Err(MemberAddrsError::Length);
    }
    let len = u16::from_le_bytes([bytes[0], bytes[1]]) as usize;
    let body = bytes.get(2..2 + len).ok_or(MemberAddrsError::Length)?;
    let text = std::str::from_utf8(body).map_err(|_| MemberAddrsError::ClientAddr)?;
    Ok((text, &bytes[2 + len..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_round_trip_and_bad_bytes_are_errors() {
        let addrs = MemberAddrs {
            peer_addr: "10.0.0.4:7081".parse().unwrap(),
            client_addr: "node4.example:8081".into(),
        };
        let bytes = addrs.encode();
        assert_eq!(MemberAddrs::decode(&bytes), Ok(addrs));
        for len in 0..bytes.len() {
            assert!(MemberAddrs::decode(&bytes[..len]).is_err(), "prefix {len}");
        }
        let mut longer = bytes.to_vec();
        longer.push(0);
        assert_eq!(MemberAddrs::decode(&longer), Err(MemberAddrsError::Length));
        assert_eq!(MemberAddrs::decode(&[2]), Err(MemberAddrsError::Version));
        let bad_peer = MemberAddrs::decode(b"\x01\x04\x00nope\x00\x00");
        assert_eq!(bad_peer, Err(MemberAddrsError::PeerAddr("nope".into())));
        let bad_client = MemberAddrs::decode(b"\x01\x0b\x001.2.3.4:567\x03\x00a\nb");
        assert_eq!(bad_client, Err(MemberAddrsError::ClientAddr));
    }
}
