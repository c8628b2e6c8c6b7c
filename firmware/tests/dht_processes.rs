//! Finding contacts with real sockets: 20 `peercom node` processes form a DHT on 127.0.7.x and
//! two sim devices that know only each other's keys find and call each other through it; two
//! devices with no bootstrap node and no addresses find each other by LAN beacons; a node
//! restarted from its state file rejoins with no bootstrap node.
mod common;
use common::*;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

struct NodeProc {
    child: Option<Child>,
    logs: Arc<Logs>,
}

impl NodeProc {
    fn start(listen: &str, bootstrap: &[&str], state: &std::path::Path) -> NodeProc {
        let mut args = vec!["node", "--listen", listen, "--state", state.to_str().unwrap()];
        for b in bootstrap {
            args.extend_from_slice(&["--bootstrap", b]);
        }
        let mut child =
            Command::new(bin()).args(&args).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().expect("spawn node");
        let logs = Arc::new(Logs::default());
        let l2 = logs.clone();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || l2.collect(stderr));
        let n = NodeProc { child: Some(child), logs };
        assert!(n.logs.wait_for("node: ready", Duration::from_secs(10)).is_some(), "{}", n.logs.all());
        n
    }

    /// SIGTERM, then the line the node logs as it stops.
    fn stop(&mut self) -> String {
        let mut c = self.child.take().unwrap();
        let _ = Command::new("kill").args(["-TERM", &c.id().to_string()]).status();
        let line = self.logs.wait_for("node: stopped", Duration::from_secs(10));
        let _ = c.wait();
        line.unwrap_or_else(|| panic!("no stop line: {}", self.logs.all()))
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn saved(line: &str) -> usize {
    line.split('(').nth(1).and_then(|s| s.split_whitespace().next()).and_then(|n| n.parse().ok()).unwrap_or(0)
}

#[test]
fn two_devices_find_and_call_each_other_through_twenty_dht_nodes() {
    let dir = tempdir("dht-20");
    let addrs: Vec<String> = (0..20).map(|i| format!("127.0.7.{}:7600", 10 + i)).collect();
    let mut nodes = Vec::new();
    for (i, a) in addrs.iter().enumerate() {
        // Each joins through one of the nodes already up (the first through nobody).
        let boot: Vec<&str> = if i == 0 { vec![] } else { vec![addrs[i / 2].as_str()] };
        nodes.push(NodeProc::start(a, &boot, &dir.join(format!("node{i}.state"))));
    }
    let ida = make_key(&dir, "A");
    let idb = make_key(&dir, "B");
    // Keys only: no addresses, and LAN discovery off, so the DHT is the only way to meet.
    let net = "[network]\nbootstrap = [\"127.0.7.10:7600\", \"127.0.7.20:7600\"]\nlan_discovery = false\n";
    let a = Dev::start(
        &dir,
        &DevSpec {
            name: "A",
            addr: "127.0.7.40:7600",
            contacts: vec![("B", Some(1), vec![(idb.clone(), None)])],
            extra: net,
        },
        &ida,
    );
    let b = Dev::start(
        &dir,
        &DevSpec {
            name: "B",
            addr: "127.0.7.41:7600",
            contacts: vec![("A", Some(1), vec![(ida.clone(), None)])],
            extra: net,
        },
        &idb,
    );
    for d in [&a, &b] {
        let line = d.logs.wait_for("announced where this device is", Duration::from_secs(15));
        assert!(line.is_some(), "{} did not announce: {}", d.name, d.logs.all());
    }
    a.ok(&["call", "B"]);
    b.wait("incoming");
    b.ok(&["answer"]);
    a.wait("in-call");
    b.wait("in-call");
    let located = a.logs.wait_for("located B", Duration::from_secs(1)).unwrap();
    assert!(located.contains("via DHT at 127.0.7.41:7600"), "{located}");
    let st = a.status();
    assert_eq!(st["peer"].as_str(), Some(idb.as_str()));
    assert!(st["network"]["dht_nodes"].as_u64().unwrap() >= 10, "{st}");
    a.ok(&["hangup"]);
    b.wait("idle");
    // The nodes hold the devices' records (each device's record went to the nodes nearest it).
    let mut total = 0;
    for n in &mut nodes {
        total += saved(&n.stop());
    }
    assert!(total >= 20 * 10, "routing tables were sparse: {total} entries saved in all");
}

#[test]
fn lan_discovery_works_with_no_bootstrap_and_no_addresses() {
    let dir = tempdir("lan");
    let ida = make_key(&dir, "C");
    let idb = make_key(&dir, "D");
    // A group and port of this test's own, so parallel tests and real devices stay apart.
    let port = 20_000 + (std::process::id() % 20_000) as u16;
    let net = format!("[network]\nlan_group = \"239.255.77.80:{port}\"\n");
    let c = Dev::start(
        &dir,
        &DevSpec {
            name: "C",
            addr: "127.0.8.1:7600",
            contacts: vec![("D", Some(1), vec![(idb.clone(), None)])],
            extra: &net,
        },
        &ida,
    );
    let d = Dev::start(
        &dir,
        &DevSpec {
            name: "D",
            addr: "127.0.8.2:7600",
            contacts: vec![("C", Some(1), vec![(ida.clone(), None)])],
            extra: &net,
        },
        &idb,
    );
    let seen = c.logs.wait_for("located D", Duration::from_secs(10));
    assert!(seen.as_deref().is_some_and(|l| l.contains("via LAN at 127.0.8.2:7600")), "{}", c.logs.all());
    c.ok(&["call", "D"]);
    d.wait("incoming");
    d.ok(&["answer"]);
    c.wait("in-call");
    assert_eq!(c.status()["network"]["dht_nodes"].as_u64(), Some(0), "no DHT was involved");
    c.ok(&["hangup"]);
}

#[test]
fn a_node_restarted_from_its_state_file_rejoins_without_bootstrap() {
    let dir = tempdir("node-state");
    let addrs: Vec<String> = (0..8).map(|i| format!("127.0.9.{}:7600", 10 + i)).collect();
    let mut nodes: Vec<NodeProc> = Vec::new();
    for (i, a) in addrs.iter().enumerate() {
        let boot: Vec<&str> = if i == 0 { vec![] } else { vec![addrs[0].as_str()] };
        nodes.push(NodeProc::start(a, &boot, &dir.join(format!("n{i}.state"))));
    }
    let state = dir.join("n7.state");
    assert!(
        nodes[7].logs.wait_for("node: joined the DHT", Duration::from_secs(5)).is_some(),
        "{}",
        nodes[7].logs.all()
    );
    let first = saved(&nodes[7].stop());
    assert!(first >= 5, "node 7 knew {first} nodes");
    let text = std::fs::read_to_string(&state).unwrap();
    assert!(text.lines().any(|l| l.starts_with("id ")), "{text}");
    // Back with no --bootstrap: only its saved neighbours.
    let mut again = NodeProc::start(&addrs[7], &[], &state);
    let ready = again.logs.wait_for("node: ready", Duration::from_secs(1)).unwrap();
    assert!(ready.contains(&format!("{first} known nodes from the state file")), "{ready}");
    let id_line = text.lines().find(|l| l.starts_with("id ")).unwrap().to_string();
    assert!(again.logs.wait_for("node: joined the DHT", Duration::from_secs(5)).is_some(), "{}", again.logs.all());
    let second = saved(&again.stop());
    assert!(second >= 5, "rejoined with {second} nodes");
    let text2 = std::fs::read_to_string(&state).unwrap();
    assert!(text2.contains(&id_line), "same node ID after the restart");
}
