//! DHT messages: `type=4 | ver | postcard(Msg)`. Not encrypted: records are signed and node
//! contacts are public anyway. Node lists are compact byte strings (38 bytes per IPv4 node, 50
//! per IPv6) borrowed from the datagram, so decoding allocates nothing.
use super::id::NodeId;
use crate::wire::MAX_DATAGRAM;
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

pub const PACKET_TYPE: u8 = 4;
pub const VERSION: u8 = 1;
/// Set in the version byte by a node that cannot take unsolicited datagrams (behind a NAT that
/// does not map consistently to one address: BEP 43's read-only node): others answer it but never
/// put it in their routing tables, so lookups do not wait on an address nobody else can reach.
pub const CLIENT_FLAG: u8 = 0x80;
/// Proof that the holder receives datagrams at its source address (BEP 5's token).
pub type Token = [u8; 8];
pub const NODE4_LEN: usize = 32 + 4 + 2;
pub const NODE6_LEN: usize = 32 + 16 + 2;
/// Nodes per reply: a full bucket.
pub const MAX_NODES: usize = 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Msg<'a> {
    pub txid: u32,
    pub sender: NodeId,
    #[serde(borrow)]
    pub body: Body<'a>,
}

/// Requests carry the token the receiver gave us earlier, if any; without one the reply may not
/// be larger than the request, so the requester pads (`pad`) to leave room for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Body<'a> {
    Ping {
        token: Option<Token>,
        pad: &'a [u8],
    },
    FindNode {
        target: NodeId,
        token: Option<Token>,
        pad: &'a [u8],
    },
    FindValue {
        key: [u8; 32],
        token: Option<Token>,
        pad: &'a [u8],
    },
    Store {
        token: Token,
        record: &'a [u8],
    },
    Pong {
        token: Token,
        your_addr: SocketAddr,
    },
    Nodes {
        token: Token,
        nodes4: &'a [u8],
        nodes6: &'a [u8],
    },
    Value {
        token: Token,
        record: &'a [u8],
        nodes4: &'a [u8],
        nodes6: &'a [u8],
    },
    Stored {
        ok: bool,
    },
    /// Keeps our registration for `key` at a node storing our record: forwarded handshakes
    /// reach us there over a NAT mapping this keeps open. `sig` (64 bytes) is the record's
    /// blinded key over `hold_message`, so only the record's owner can register.
    Hold {
        key: [u8; 32],
        token: Token,
        sig: &'a [u8],
    },
    /// `your_addr` as in `Pong`: our rendezvous nodes keep telling us how our NAT maps us.
    Held {
        ok: bool,
        token: Token,
        your_addr: SocketAddr,
    },
    /// To a node holding `key`'s record: pass `payload` to the device registered for it.
    Forward {
        key: [u8; 32],
        payload: &'a [u8],
    },
    /// From a rendezvous node: `from` sent `payload` for us.
    Forwarded {
        from: SocketAddr,
        payload: &'a [u8],
    },
    /// From a registered device to its rendezvous node: pass `payload` back to `to`, whose
    /// `Forward` reached us.
    Reply {
        to: SocketAddr,
        payload: &'a [u8],
    },
    /// From a rendezvous node: the device registered at `from` answered our `Forward`.
    Replied {
        from: SocketAddr,
        payload: &'a [u8],
    },
    /// The token of a query was not valid for its source (we moved, or the node restarted):
    /// ask again with this one. Smaller than any query, so it is sent whatever the budget.
    Retry {
        token: Token,
    },
    /// To a relay node holding `key`'s registration: pair us with that device under `ticket`
    /// (derived from our handshake with it; `relay.rs`). `token` proves we receive at our
    /// source address; without a valid one the relay answers `Retry` and takes no slot.
    Allocate {
        key: [u8; 32],
        ticket: [u8; 16],
        token: Option<Token>,
    },
    /// From our rendezvous node, which relays: a caller asked for a pair under `ticket`.
    Invite {
        ticket: [u8; 16],
    },
    /// To the relay that invited us: we are the other half of `ticket`.
    Join {
        ticket: [u8; 16],
    },
    /// From a relay, to both halves: the pair is made (`secs`: its lifetime), or refused.
    Relaying {
        ticket: [u8; 16],
        ok: bool,
        secs: u32,
    },
}

const HOLD_CONTEXT: &[u8] = b"peercom hold v1";
pub const SIG_LEN: usize = 64;
pub const HOLD_MSG_LEN: usize = HOLD_CONTEXT.len() + 72;

/// What a `Hold`'s signature covers: it names the node and its token (bound to our address), so
/// it cannot be replayed to another node or from another address.
pub fn hold_message(node: &NodeId, token: &Token, key: &[u8; 32]) -> [u8; HOLD_MSG_LEN] {
    let mut m = [0u8; HOLD_MSG_LEN];
    let (ctx, rest) = m.split_at_mut(HOLD_CONTEXT.len());
    ctx.copy_from_slice(HOLD_CONTEXT);
    rest[..32].copy_from_slice(&node.0);
    rest[32..40].copy_from_slice(token);
    rest[40..].copy_from_slice(key);
    m
}

impl Body<'_> {
    pub fn is_request(&self) -> bool {
        matches!(
            self,
            Body::Ping { .. }
                | Body::FindNode { .. }
                | Body::FindValue { .. }
                | Body::Store { .. }
                | Body::Hold { .. }
                | Body::Forward { .. }
                | Body::Reply { .. }
                | Body::Allocate { .. }
                | Body::Join { .. }
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    NotDht,
    Version(u8),
    Malformed,
}

impl<'a> Msg<'a> {
    pub fn decode(b: &'a [u8]) -> Result<Msg<'a>, DecodeError> {
        if b.len() > MAX_DATAGRAM || b.first() != Some(&PACKET_TYPE) {
            return Err(DecodeError::NotDht);
        }
        match b.get(1).map(|v| v & !CLIENT_FLAG) {
            Some(VERSION) => {}
            Some(v) => return Err(DecodeError::Version(v)),
            None => return Err(DecodeError::Malformed),
        }
        let (msg, rest): (Msg<'a>, _) = postcard::take_from_bytes(&b[2..]).map_err(|_| DecodeError::Malformed)?;
        if !rest.is_empty() {
            return Err(DecodeError::Malformed);
        }
        let lists_ok = match msg.body {
            Body::Nodes { nodes4, nodes6, .. } | Body::Value { nodes4, nodes6, .. } => {
                nodes4.len() % NODE4_LEN == 0 && nodes6.len() % NODE6_LEN == 0
            }
            Body::Hold { sig, .. } => sig.len() == SIG_LEN,
            _ => true,
        };
        if !lists_ok {
            return Err(DecodeError::Malformed);
        }
        Ok(msg)
    }

    /// Encodes into `out`; None if it does not fit.
    pub fn encode(&self, out: &mut [u8]) -> Option<usize> {
        let out = out.get_mut(..MAX_DATAGRAM.min(out.len()))?;
        if out.len() < 2 {
            return None;
        }
        out[0] = PACKET_TYPE;
        out[1] = VERSION;
        let n = postcard::to_slice(self, &mut out[2..]).ok()?.len();
        Some(n + 2)
    }
}

/// Whether the datagram (a DHT message) comes from a client-only node (`CLIENT_FLAG`).
pub fn from_client(b: &[u8]) -> bool {
    b.get(1).is_some_and(|v| v & CLIENT_FLAG != 0)
}

/// Appends one node to a compact list in `buf` (IPv4 and IPv6 lists are separate).
pub fn put_node(buf: &mut [u8], at: usize, id: &NodeId, addr: &SocketAddr) -> Option<usize> {
    let len = match addr.ip() {
        IpAddr::V4(_) => NODE4_LEN,
        IpAddr::V6(_) => NODE6_LEN,
    };
    let dst = buf.get_mut(at..at + len)?;
    dst[..32].copy_from_slice(&id.0);
    match addr.ip() {
        IpAddr::V4(ip) => dst[32..36].copy_from_slice(&ip.octets()),
        IpAddr::V6(ip) => dst[32..48].copy_from_slice(&ip.octets()),
    }
    dst[len - 2..].copy_from_slice(&addr.port().to_be_bytes());
    Some(at + len)
}

/// The nodes of a compact list (its length was checked by `decode`).
pub fn nodes(list: &[u8], v6: bool) -> impl Iterator<Item = (NodeId, SocketAddr)> + '_ {
    let len = if v6 { NODE6_LEN } else { NODE4_LEN };
    list.chunks_exact(len).map(move |c| {
        let mut id = [0u8; 32];
        id.copy_from_slice(&c[..32]);
        let port = u16::from_be_bytes([c[len - 2], c[len - 1]]);
        let ip = if v6 {
            let mut o = [0u8; 16];
            o.copy_from_slice(&c[32..48]);
            IpAddr::V6(Ipv6Addr::from(o))
        } else {
            IpAddr::V4(Ipv4Addr::new(c[32], c[33], c[34], c[35]))
        };
        (NodeId(id), SocketAddr::new(ip, port))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> NodeId {
        NodeId([n; 32])
    }

    #[test]
    fn round_trip_and_full_reply_fits() {
        let mut list = [0u8; MAX_NODES * NODE6_LEN];
        let mut at = 0;
        for i in 0..MAX_NODES as u8 {
            at = put_node(&mut list, at, &id(i), &"203.0.113.9:7600".parse().unwrap()).unwrap();
        }
        let m = Msg { txid: 7, sender: id(1), body: Body::Nodes { token: [9; 8], nodes4: &list[..at], nodes6: &[] } };
        let mut out = [0u8; MAX_DATAGRAM];
        let n = m.encode(&mut out).unwrap();
        assert!(n < 900, "{n}");
        let d = Msg::decode(&out[..n]).unwrap();
        assert_eq!(d, m);
        let Body::Nodes { nodes4, .. } = d.body else { panic!() };
        let v: Vec<_> = nodes(nodes4, false).collect();
        assert_eq!(v.len(), MAX_NODES);
        assert_eq!(v[3], (id(3), "203.0.113.9:7600".parse().unwrap()));
        // Twenty IPv6 nodes fit one datagram too.
        let mut at6 = 0;
        for i in 0..MAX_NODES as u8 {
            at6 = put_node(&mut list, at6, &id(i), &"[2001:db8::1]:7600".parse().unwrap()).unwrap();
        }
        let m = Msg { txid: 7, sender: id(1), body: Body::Nodes { token: [9; 8], nodes4: &[], nodes6: &list[..at6] } };
        assert!(m.encode(&mut out).is_some());
    }

    #[test]
    fn malformed_never_panics() {
        let m =
            Msg { txid: 1, sender: id(2), body: Body::FindNode { target: id(3), token: Some([1; 8]), pad: &[0; 5] } };
        let mut out = [0u8; MAX_DATAGRAM];
        let n = m.encode(&mut out).unwrap();
        assert_eq!(Msg::decode(&out[..n]), Ok(m));
        for cut in 0..n {
            assert!(Msg::decode(&out[..cut]).is_err());
        }
        let mut rng = crate::util::rng::Rng::seeded(5);
        for _ in 0..20_000 {
            let len = rng.below(120);
            let mut b = [0u8; 120];
            for x in b.iter_mut().take(len) {
                *x = rng.next_u32() as u8;
            }
            b[0] = PACKET_TYPE;
            b[1] = VERSION;
            let _ = Msg::decode(&b[..len]);
        }
        assert_eq!(Msg::decode(&[4, 9]), Err(DecodeError::Version(9)));
        assert_eq!(Msg::decode(&[3, 1]), Err(DecodeError::NotDht));
        // A node list whose length is not a whole number of entries is refused.
        let bad = Msg { txid: 1, sender: id(2), body: Body::Nodes { token: [0; 8], nodes4: &[0; 37], nodes6: &[] } };
        let n = bad.encode(&mut out).unwrap();
        assert_eq!(Msg::decode(&out[..n]), Err(DecodeError::Malformed));
    }
}
