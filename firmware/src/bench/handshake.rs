//! `peercom bench handshake`: call set-up time over real UDP on loopback, from the button press
//! on A to both devices in call (B auto-answers). "Cold" calls start from fresh devices, so they
//! include the Noise handshake; "warm" calls reuse the session of the previous call. Each pair
//! is up and settled before the press, as a user's devices are.
use super::pair::{Pair, temp_dir};
use super::stats::percentiles;
use crate::call::Phase;
use crate::device::Command;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(5);
/// After both devices run, time for their start-up LAN and DHT exchanges (a few ms of
/// signatures on loopback) to finish: a user presses a button on a device that is up, and the
/// press should not queue behind its boot. Only the start of the measurement waits for this.
const SETTLE: Duration = Duration::from_millis(200);

pub fn run(calls: usize, json: bool) -> i32 {
    let rt = match crate::cli::runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("peercom bench: {e}");
            return 1;
        }
    };
    crate::util::log::set_quiet(true);
    let dir = temp_dir("bench");
    let result = rt.block_on(measure(&dir, calls.max(1)));
    let _ = std::fs::remove_dir_all(&dir);
    let (mut cold, mut warm, failures) = match result {
        Ok(r) => r,
        Err(e) => {
            eprintln!("peercom bench handshake: {e}");
            return 1;
        }
    };
    let c = percentiles(&mut cold);
    let w = percentiles(&mut warm);
    if json {
        let v = serde_json::json!({
            "bench": "handshake",
            "transport": "udp-loopback",
            "calls": cold.len() + warm.len(),
            "failures": failures,
            "setup_ms": c,
            "warm_setup_ms": w,
            "target_setup_p50_ms": 1.0,
        });
        println!("{v}");
    } else {
        println!(
            "call set-up, button press to both in call, {} cold + {} warm calls on loopback:",
            cold.len(),
            warm.len()
        );
        println!("  cold (with Noise handshake): p50 {:.3} ms  p95 {:.3} ms  max {:.3} ms", c.p50, c.p95, c.max);
        println!("  warm (session reused):       p50 {:.3} ms  p95 {:.3} ms  max {:.3} ms", w.p50, w.p95, w.max);
        if failures > 0 {
            println!("  {failures} calls failed to connect");
        }
    }
    i32::from(failures > 0)
}

async fn one_call(p: &Pair) -> Option<f64> {
    let t0 = Instant::now();
    p.a.command(Command::Press(1)).await.ok()?;
    let ta = p.a.wait_phase(Phase::InCall, WAIT).await?;
    let tb = p.b.wait_phase(Phase::InCall, WAIT).await?;
    let ms = ta.max(tb).duration_since(t0).as_secs_f64() * 1000.0;
    p.a.command(Command::Press(1)).await.ok()?;
    p.a.wait_phase(Phase::Idle, WAIT).await?;
    p.b.wait_phase(Phase::Idle, WAIT).await?;
    Some(ms)
}

async fn measure(dir: &std::path::Path, calls: usize) -> Result<(Vec<f64>, Vec<f64>, usize), String> {
    let mut cold = Vec::with_capacity(calls);
    let mut warm = Vec::with_capacity(calls);
    let mut failures = 0;
    for i in 0..calls {
        let p = Pair::start(&dir.join(format!("{i}")), true).await?;
        if !(p.a.wait_ready(WAIT).await && p.b.wait_ready(WAIT).await) {
            return Err("a device did not start".into());
        }
        tokio::time::sleep(SETTLE).await;
        match one_call(&p).await {
            Some(ms) => cold.push(ms),
            None => failures += 1,
        }
        match one_call(&p).await {
            Some(ms) => warm.push(ms),
            None => failures += 1,
        }
        p.stop().await;
    }
    Ok((cold, warm, failures))
}
