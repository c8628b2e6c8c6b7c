//! The state file of `peercom node`: its node ID and routing table, so a restarted node comes
//! back under the same ID (other nodes' tables stay right) and rejoins without a bootstrap node.
//! Plain text, one entry per line; a damaged line is skipped and reported, never fatal.
use crate::dht::id::NodeId;
use std::net::SocketAddr;
use std::path::Path;

const HEADER: &str = "# peercom node state v1: node ID and routing table (safe to delete)";

#[derive(Debug, Default, PartialEq, Eq)]
pub struct NodeState {
    pub id: Option<NodeId>,
    pub nodes: Vec<(NodeId, SocketAddr)>,
    /// `file:line: reason` for each line that was skipped.
    pub skipped: Vec<String>,
}

fn hex(id: &NodeId) -> String {
    id.0.iter().map(|b| format!("{b:02x}")).collect()
}

fn parse_id(s: &str) -> Option<NodeId> {
    if s.len() != 64 || !s.is_ascii() {
        return None;
    }
    let mut id = [0u8; 32];
    for (i, b) in id.iter_mut().enumerate() {
        *b = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(NodeId(id))
}

pub fn parse(path: &Path, text: &str) -> NodeState {
    let mut st = NodeState::default();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut f = line.split_whitespace();
        let ok = match (f.next(), f.next(), f.next(), f.next()) {
            (Some("id"), Some(id), None, None) => parse_id(id).map(|id| st.id = Some(id)).is_some(),
            (Some("node"), Some(id), Some(addr), None) => match (parse_id(id), addr.parse::<SocketAddr>()) {
                (Some(id), Ok(addr)) => {
                    st.nodes.push((id, addr));
                    true
                }
                _ => false,
            },
            _ => false,
        };
        if !ok {
            st.skipped.push(format!("{}:{}: not \"id HEX\" or \"node HEX IP:PORT\"", path.display(), n + 1));
        }
    }
    st
}

/// Reads the state file; a missing file is an empty state.
pub fn load(path: &Path) -> std::io::Result<NodeState> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(parse(path, &text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(NodeState::default()),
        Err(e) => Err(e),
    }
}

/// Writes the state atomically (temp file, fsync, rename).
pub fn save(path: &Path, id: &NodeId, nodes: &[(NodeId, SocketAddr)]) -> std::io::Result<()> {
    let mut text = format!("{HEADER}\nid {}\n", hex(id));
    for (id, addr) in nodes {
        text.push_str(&format!("node {} {addr}\n", hex(id)));
    }
    crate::util::atomic_write::write_atomic(path, text.as_bytes(), 0o644, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_damaged_lines_are_skipped() {
        let dir = std::env::temp_dir().join(format!("peercom-node-state-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("node.state");
        let id = NodeId([0xab; 32]);
        let nodes = vec![
            (NodeId([1; 32]), "198.51.100.1:7600".parse().unwrap()),
            (NodeId([2; 32]), "[2001:db8::1]:7600".parse().unwrap()),
        ];
        save(&path, &id, &nodes).unwrap();
        let st = load(&path).unwrap();
        assert_eq!(st.id, Some(id));
        assert_eq!(st.nodes, nodes);
        assert!(st.skipped.is_empty());
        let text = std::fs::read_to_string(&path).unwrap() + "node zz 1.2.3.4:5\ngarbage\nnode 0101 1.2.3.4:5\n";
        let st = parse(&path, &text);
        assert_eq!(st.nodes.len(), 2);
        assert_eq!(st.skipped.len(), 3);
        assert!(st.skipped[0].ends_with("node.state:5: not \"id HEX\" or \"node HEX IP:PORT\""), "{:?}", st.skipped);
        assert_eq!(load(&dir.join("missing")).unwrap(), NodeState::default());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
