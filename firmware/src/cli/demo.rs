//! `peercom demo`: two simulated devices on this machine, over real UDP on 127.0.0.1. A presses
//! its call button, B answers, they stay in the call for a while, A hangs up. Every state change
//! is printed by the devices themselves.
use crate::bench::pair::{Pair, temp_dir};
use crate::call::Phase;
use crate::device::Command;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(5);

pub fn demo(seconds: u64) -> i32 {
    let rt = match super::runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("peercom demo: {e}");
            return 1;
        }
    };
    let dir = temp_dir("demo");
    let r = rt.block_on(run(&dir, seconds));
    let _ = std::fs::remove_dir_all(&dir);
    match r {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("peercom demo: {e}");
            1
        }
    }
}

async fn step(what: &str, ok: Option<Instant>) -> Result<Instant, String> {
    ok.ok_or_else(|| format!("timed out waiting for {what}"))
}

async fn run(dir: &std::path::Path, seconds: u64) -> Result<(), String> {
    println!("== peercom demo: two sim devices, A and B, keys and configs in {}", dir.display());
    let p = Pair::start(dir, false).await?;
    println!("== A presses button 1 (calls B)");
    let t0 = Instant::now();
    p.a.command(Command::Press(1)).await?;
    step("B to ring", p.b.wait_phase(Phase::Incoming, WAIT).await).await?;
    println!("== B presses button 0 (answer)");
    p.b.command(Command::Press(0)).await?;
    let ta = step("A in call", p.a.wait_phase(Phase::InCall, WAIT).await).await?;
    let tb = step("B in call", p.b.wait_phase(Phase::InCall, WAIT).await).await?;
    println!(
        "== both in call; press-to-connected {:.2} ms (includes B's answer)",
        ta.max(tb).duration_since(t0).as_secs_f64() * 1000.0
    );
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    if let Some((s, _)) = p.a.status().await {
        println!(
            "== A: {} packets sent, {} received, {} dropped",
            s.counters.tx_packets,
            s.counters.rx_packets,
            s.counters.dropped_auth + s.counters.dropped_replay + s.counters.dropped_malformed
        );
    }
    println!("== A presses button 1 again (hang up)");
    p.a.command(Command::Press(1)).await?;
    step("A idle", p.a.wait_phase(Phase::Idle, WAIT).await).await?;
    step("B idle", p.b.wait_phase(Phase::Idle, WAIT).await).await?;
    println!("== both ready again");
    p.stop().await;
    Ok(())
}
