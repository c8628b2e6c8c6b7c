//! `peercom node`: a headless DHT node for a small server (no camera, audio or display). It
//! serves lookups and stores records for devices, and keeps its routing table in a state file
//! so that after a restart it rejoins from its old neighbours even if no bootstrap node is up.
use super::node_state;
use crate::dht::id::NodeId;
use crate::dht::message::PACKET_TYPE as DHT_PACKET;
use crate::dht::node::{DhtEvent, Node, NodeConfig};
use crate::dht::relay::RelayConfig;
use crate::log;
use crate::util::rng::Rng;
use crate::wire::MAX_DATAGRAM;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;

pub struct NodeOptions {
    pub listen: SocketAddr,
    pub bootstrap: Vec<String>,
    pub state: Option<PathBuf>,
    pub relay: Option<RelayConfig>,
}

const SAVE_EVERY: Duration = Duration::from_secs(300);
const REPORT_EVERY: Duration = Duration::from_secs(600);

fn os_node_id() -> NodeId {
    NodeId::random(&mut Rng::from_os())
}

/// Runs until SIGINT or SIGTERM; saves the state file on the way out.
pub async fn run(o: NodeOptions) -> std::io::Result<()> {
    let socket = UdpSocket::bind(o.listen).await?;
    let local = socket.local_addr()?;
    let state = match &o.state {
        Some(p) => {
            let st = node_state::load(p).map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", p.display())))?;
            for s in &st.skipped {
                log!("node: skipped a damaged line in the state file: {s}");
            }
            st
        }
        None => node_state::NodeState::default(),
    };
    let id = state.id.unwrap_or_else(os_node_id);
    let unix = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let now = Instant::now();
    let cfg = NodeConfig { relay: o.relay, ..NodeConfig::default() };
    let mut node = Node::new(id, cfg, Rng::from_os(), now, unix);
    node.seed(now, &state.nodes);
    let boot = super::driver::resolve_bootstrap("node", &o.bootstrap).await;
    node.bootstrap(now, &boot);
    log!(
        "node: ready as {id:?} on {local} ({} known nodes from the state file, {} bootstrap addresses)",
        state.nodes.len(),
        boot.len()
    );
    if let Some(r) = o.relay {
        log!(
            "node: relaying for devices registered here: up to {} calls, {} kbit/s and {} min each",
            r.max_pairs,
            r.rate / 125,
            r.lifetime.as_secs() / 60
        );
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut save = tokio::time::interval(SAVE_EVERY);
    save.tick().await;
    let mut report = tokio::time::interval(REPORT_EVERY);
    report.tick().await;
    let mut rebootstrap = tokio::time::interval(Duration::from_secs(60));
    rebootstrap.tick().await;
    let mut buf = [0u8; 2048];
    let mut out = [0u8; MAX_DATAGRAM];
    // Joining = a lookup of our own ID once someone answered; logged when it ends.
    let mut join: Option<Option<u32>> = None;
    loop {
        if join.is_none() && !node.table().is_empty() {
            join = Some(node.find_nodes(Instant::now(), node.id()));
        }
        while let Some((dst, n)) = node.poll_transmit(&mut out) {
            // A send error (e.g. an unreachable address) concerns one peer, not the node.
            let _ = socket.send_to(&out[..n], dst).await;
        }
        // Other events are for devices; a bare node only serves.
        while let Some(ev) = node.poll_event() {
            if let DhtEvent::Closest { lookup, found, .. } = ev
                && join == Some(Some(lookup))
            {
                log!("node: joined the DHT ({found} nodes answered; {} in the routing table)", node.table().len());
            }
        }
        let deadline = node.poll_timeout();
        let sleep = async {
            match deadline {
                Some(t) => tokio::time::sleep_until(tokio::time::Instant::from_std(t)).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = socket.recv_from(&mut buf) => {
                if let Ok((n, from)) = r {
                    let (now, bytes) = (Instant::now(), &buf[..n]);
                    // Session packets are for the relay; anything else the node counts and drops.
                    if bytes.first() == Some(&DHT_PACKET) || !node.relay_datagram(now, from, bytes) {
                        node.handle_datagram(now, from, bytes);
                    }
                }
            }
            _ = sleep => node.handle_timeout(Instant::now()),
            _ = save.tick() => save_state(&o.state, &node),
            _ = report.tick() => {
                let c = node.counters();
                log!(
                    "node: {} nodes in the routing table, {} records held; rx {} tx {} datagrams, {} dropped (rate), {} malformed",
                    node.table().len(), node.stored_records(), c.rx, c.tx, c.dropped_rate, c.dropped_malformed
                );
                if o.relay.is_some() {
                    let r = c.relay;
                    log!(
                        "node: relay: {} calls now, {} paired in all, {} refused; {} packets ({} bytes) relayed, {} over the rate",
                        node.relaying(Instant::now()), r.pairs_made, r.pairs_refused, r.relayed_packets, r.relayed_bytes, r.dropped_rate
                    );
                }
            }
            _ = rebootstrap.tick(), if node.table().is_empty() && !o.bootstrap.is_empty() => {
                let boot = super::driver::resolve_bootstrap("node", &o.bootstrap).await;
                node.bootstrap(Instant::now(), &boot);
            }
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
        }
    }
    save_state(&o.state, &node);
    log!("node: stopped ({} nodes saved)", node.table().len());
    Ok(())
}

fn save_state(path: &Option<PathBuf>, node: &Node) {
    let Some(path) = path else { return };
    let mut nodes = Vec::new();
    node.snapshot(&mut nodes);
    if let Err(e) = node_state::save(path, &node.id(), &nodes) {
        log!("node: cannot save the state file {}: {e}", path.display());
    }
}
