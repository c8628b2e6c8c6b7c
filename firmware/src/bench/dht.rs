//! `peercom bench dht`: the DHT in the deterministic simulator. N nodes join through 8 bootstrap
//! nodes; some publish records; F of the nodes are replaced (churn); then random nodes look up
//! random records and random node IDs. Idle traffic is measured over an hour with no lookups.
use crate::dht::blind::period_of;
use crate::dht::id::NodeId;
use crate::dht::node::{DhtEvent, NodeConfig};
use crate::dht::record::{self, RecordBuf};
use crate::dht::sim::{DhtSim, SimConfig};
use crate::identity::DeviceKey;
use serde::Serialize;
use std::collections::HashMap;
use std::time::Duration;

#[derive(Debug, Clone, Copy)]
pub struct Options {
    pub nodes: usize,
    pub churn: f64,
    pub loss: f64,
    pub seed: u64,
    pub lookups: usize,
    pub publishers: usize,
}

#[derive(Debug, Serialize)]
pub struct Rounds {
    pub p50: f64,
    pub p95: f64,
    pub max: f64,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub nodes: usize,
    pub churn: f64,
    pub loss: f64,
    pub seed: u64,
    /// Record lookups plus node lookups.
    pub lookups: usize,
    /// Node lookups whose nearest answer was the nearest live node there is.
    pub success_rate: f64,
    pub rounds: Rounds,
    pub msgs_per_lookup: f64,
    /// Record lookups that returned the record as published.
    pub record_found_rate: f64,
    /// Routing upkeep (liveness checks, bucket refreshes, tokens) measured over an idle hour,
    /// plus every node republishing its own record every 30 minutes.
    pub idle_bytes_per_s_per_node: f64,
    pub idle_upkeep_bytes_per_s_per_node: f64,
    pub publish_bytes: f64,
    pub routing_table_mean: f64,
    pub wall_seconds: f64,
}

const REPUBLISH_SECS: f64 = 30.0 * 60.0;
const BOOTSTRAP_NODES: usize = 8;

pub fn run(o: Options) -> Report {
    let started = std::time::Instant::now();
    // Ten thousand nodes in one process: queues sized for what one input can produce (the
    // simulator drains them after every input), and room for about four times the records a
    // node holds on average (each record is stored at K = 20 nodes).
    let max_records = (o.publishers * 20 * 4 / o.nodes.max(1)).clamp(16, 2048);
    let node = NodeConfig {
        max_lookups: 8,
        max_pending: 64,
        tx_queue: 32,
        tx_bytes: 16 * 1024,
        events: 8,
        max_records,
        rate_slots: 256,
        ..Default::default()
    };
    let mut sim = DhtSim::new(SimConfig { seed: o.seed, loss: o.loss, node, ..Default::default() });
    let mut boot = Vec::new();
    for _ in 0..BOOTSTRAP_NODES.min(o.nodes) {
        let b = boot.clone();
        boot.push(sim.add_node(&b));
    }
    // Joins spread over time, 50 a second, as devices come online.
    let mut joined = boot.len();
    while joined < o.nodes {
        for _ in 0..5.min(o.nodes - joined) {
            sim.add_node(&boot);
            joined += 1;
        }
        sim.run_for(Duration::from_millis(100));
    }
    sim.run_for(Duration::from_secs(600));
    sim.take_events();

    // Publish.
    let publishers: Vec<usize> = pick(&mut sim, o.publishers.min(o.nodes), &boot);
    let unix = sim.unix_now();
    let mut records: Vec<(usize, [u8; 32], u64)> = Vec::new();
    let bytes_before: u64 = sim.sent_bytes.iter().sum();
    for (n, &p) in publishers.iter().enumerate() {
        let key = DeviceKey::from_seed(seed32(o.seed, n as u64));
        let mut out = [0u8; record::MAX_RECORD];
        let addr = sim.addr(p);
        let seq = 1000 + n as u64;
        let Ok(len) = record::seal(&key, period_of(unix), seq, (unix + 7200) as u32, &[addr], [n as u8; 12], &mut out)
        else {
            continue;
        };
        let Some(rec) = RecordBuf::from_slice(&out[..len]) else { continue };
        let Ok(view) = record::parse(rec.as_bytes()) else { continue };
        records.push((p, view.key(), seq));
        sim.with_node(p, |node, now| node.publish(now, &rec));
    }
    sim.run_for(Duration::from_secs(20));
    let publish_bytes = (sim.sent_bytes.iter().sum::<u64>() - bytes_before) as f64 / records.len().max(1) as f64;
    sim.take_events();

    // Idle hour: routing upkeep only.
    let before: u64 = sim.sent_bytes.iter().sum();
    let idle = Duration::from_secs(3600);
    sim.run_for(idle);
    let live = (0..sim.len()).filter(|&i| sim.alive(i)).count().max(1);
    let upkeep = (sim.sent_bytes.iter().sum::<u64>() - before) as f64 / live as f64 / idle.as_secs_f64();
    sim.take_events();

    // Churn: replace a share of the non-bootstrap nodes with newcomers.
    let replace = (o.churn * o.nodes as f64).round() as usize;
    let victims = pick(&mut sim, replace, &boot);
    for &v in &victims {
        sim.kill(v);
    }
    for i in 0..replace {
        sim.add_node(&boot);
        if i % 5 == 4 {
            sim.run_for(Duration::from_millis(100));
        }
    }
    sim.run_for(Duration::from_secs(120));
    sim.take_events();

    // Lookups: records and node IDs, from random live nodes, all at once.
    let mut pending: HashMap<(usize, u32), Want> = HashMap::new();
    let n_lookups = o.lookups.min(records.len().max(1) * 50);
    for _ in 0..n_lookups {
        let from = loop {
            let len = sim.len();
            let i = sim.rng().below(len);
            if sim.alive(i) {
                break i;
            }
        };
        let r = sim.rng().below(records.len());
        let (_, key, seq) = records[r];
        if let Some(Some(id)) = sim.with_node(from, |n, now| n.find_record(now, key)) {
            pending.insert((from, id), Want::Record(seq));
        }
        let target = NodeId::random(sim.rng());
        if let Some(Some(id)) = sim.with_node(from, |n, now| n.find_nodes(now, target)) {
            pending.insert((from, id), Want::Nearest(target));
        }
    }
    sim.run_for(Duration::from_secs(60));
    let (mut found, mut rec_total, mut ok_nodes, mut node_total) = (0usize, 0usize, 0usize, 0usize);
    let mut rounds = Vec::new();
    let mut msgs = 0u64;
    // The nearest live node other than the one asking: a lookup reports the nodes that answered.
    let truth = |sim: &DhtSim, from: usize, target: &NodeId| {
        (0..sim.len())
            .filter(|&i| i != from)
            .filter_map(|i| sim.node(i))
            .map(|n| n.id())
            .min_by_key(|id| id.distance(target))
    };
    for (node, ev) in sim.take_events() {
        let (lid, stats) = match &ev {
            DhtEvent::Found { lookup, stats, .. }
            | DhtEvent::NotFound { lookup, stats, .. }
            | DhtEvent::Closest { lookup, stats, .. } => (*lookup, *stats),
            _ => continue,
        };
        let Some(want) = pending.remove(&(node, lid)) else { continue };
        rounds.push(f64::from(stats.rounds));
        msgs += u64::from(stats.msgs);
        match (want, ev) {
            (Want::Record(seq), DhtEvent::Found { record, .. }) => {
                rec_total += 1;
                if record::parse(record.as_bytes()).is_ok_and(|v| v.seq == seq) {
                    found += 1;
                }
            }
            (Want::Record(_), _) => rec_total += 1,
            (Want::Nearest(target), DhtEvent::Closest { nearest, .. }) => {
                node_total += 1;
                if nearest.is_some() && nearest == truth(&sim, node, &target) {
                    ok_nodes += 1;
                }
            }
            (Want::Nearest(_), _) => node_total += 1,
        }
    }
    // Lookups that never ended count as failures.
    for w in pending.values() {
        match w {
            Want::Record(_) => rec_total += 1,
            Want::Nearest(_) => node_total += 1,
        }
    }
    let p = crate::bench::stats::percentiles(&mut rounds);
    let tables: usize = (0..sim.len()).filter_map(|i| sim.node(i)).map(|n| n.table().len()).sum();
    let done = rounds.len().max(1) as f64;
    Report {
        nodes: o.nodes,
        churn: o.churn,
        loss: o.loss,
        seed: o.seed,
        lookups: rec_total + node_total,
        success_rate: ratio(ok_nodes, node_total),
        rounds: Rounds { p50: p.p50, p95: p.p95, max: p.max },
        msgs_per_lookup: (msgs as f64 / done * 10.0).round() / 10.0,
        record_found_rate: ratio(found, rec_total),
        idle_bytes_per_s_per_node: round1(upkeep + publish_bytes / REPUBLISH_SECS),
        idle_upkeep_bytes_per_s_per_node: round1(upkeep),
        publish_bytes: publish_bytes.round(),
        routing_table_mean: round1(tables as f64 / live as f64),
        wall_seconds: round1(started.elapsed().as_secs_f64()),
    }
}

#[derive(Clone, Copy)]
enum Want {
    Record(u64),
    Nearest(NodeId),
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 { 0.0 } else { (a as f64 / b as f64 * 10_000.0).round() / 10_000.0 }
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn seed32(seed: u64, n: u64) -> [u8; 32] {
    let mut r = crate::util::rng::Rng::seeded(seed ^ n.wrapping_mul(0x9E37_79B9));
    let mut s = [0u8; 32];
    for c in s.chunks_mut(8) {
        c.copy_from_slice(&r.next_u64().to_le_bytes());
    }
    s
}

/// `n` distinct live nodes that are not bootstrap nodes.
fn pick(sim: &mut DhtSim, n: usize, boot: &[usize]) -> Vec<usize> {
    let mut live: Vec<usize> = (0..sim.len()).filter(|&i| sim.alive(i) && !boot.contains(&i)).collect();
    let mut out = Vec::with_capacity(n);
    while out.len() < n && !live.is_empty() {
        let k = sim.rng().below(live.len());
        out.push(live.swap_remove(k));
    }
    out
}

pub fn print(r: &Report, json: bool) {
    if json {
        println!("{}", serde_json::to_string(r).unwrap_or_default());
    } else {
        println!(
            "{} nodes, churn {:.0}%, loss {:.0}%: {} lookups, success {:.2}%, records found {:.2}%, rounds p50 {} p95 {}, {} msgs/lookup, idle {} B/s/node ({:.1} s)",
            r.nodes,
            r.churn * 100.0,
            r.loss * 100.0,
            r.lookups,
            r.success_rate * 100.0,
            r.record_found_rate * 100.0,
            r.rounds.p50,
            r.rounds.p95,
            r.msgs_per_lookup,
            r.idle_bytes_per_s_per_node,
            r.wall_seconds
        );
    }
}
