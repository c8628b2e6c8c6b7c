//! The media transport between two device cores over the deterministic simulator, in virtual
//! time: synthetic "encoded" frames (sizes follow the rate controller, keyframes on request),
//! real encryption, loss, bursts. A stand-in decoder checks that every frame handed out can be
//! decoded (a keyframe, or the frame right after a decodable one).
use peercom::call::Phase;
use peercom::config::CallSettings;
use peercom::device::Command;
use peercom::media::assembler::MAX_FRAME;
use peercom::media::jitter::{JitterBuffer, JitterConfig, Playout};
use peercom::sim::{SimNet, sim_config};
use std::time::Duration;

const FPS: u64 = 30;

struct Side {
    node: usize,
    frame_no: u64,
    /// Frame number of the last decodable frame shown, and when.
    last_good: Option<u64>,
    shown: u64,
    broken: u64,
    shown_at: Vec<Duration>,
    jb: JitterBuffer,
}

struct Call {
    net: SimNet,
    sides: [Side; 2],
    buf: Vec<u8>,
}

impl Call {
    fn new(seed: u64, loss_pct: u32) -> Call {
        let mut net = SimNet::new(seed);
        net.record = false;
        let call = CallSettings { auto_answer: true, ..Default::default() };
        let a = net.add(1, &sim_config(1, "A", &[("B", Some(1), &[2])], call));
        let b = net.add(2, &sim_config(2, "B", &[("A", Some(1), &[1])], call));
        net.command(a, Command::Press(1)).unwrap();
        net.run_for(Duration::from_millis(100));
        assert_eq!(net.nodes[a].device.phase(), Phase::InCall);
        assert_eq!(net.nodes[b].device.phase(), Phase::InCall);
        net.loss_ppm = loss_pct * 10_000;
        let side = |node| Side {
            node,
            frame_no: 0,
            last_good: None,
            shown: 0,
            broken: 0,
            shown_at: Vec::new(),
            jb: JitterBuffer::new(JitterConfig::for_frame_ms(20)),
        };
        Call { net, sides: [side(a), side(b)], buf: vec![0; MAX_FRAME] }
    }

    /// Runs the call for `d` of virtual time in 1 ms steps.
    fn run(&mut self, d: Duration) {
        let end = self.net.elapsed() + d;
        while self.net.elapsed() < end {
            let ms = self.net.elapsed().as_millis() as u64;
            let now = self.net.now;
            for s in &mut self.sides {
                let dev = &mut self.net.nodes[s.node].device;
                let Some(m) = dev.media() else { continue };
                let us = m.micros(now);
                if ms % 33 == 0 && !m.congested() {
                    // Frame content: its number, so the receiver can check it came whole.
                    let key = m.take_keyframe_request(now);
                    let size = (m.target_bps() / 8 / FPS) as usize * if key { 4 } else { 1 };
                    let data = vec![s.frame_no as u8; size.max(1)];
                    m.push_video(now, us, key, &data);
                    s.frame_no += 1;
                }
                if ms % 20 == 0 {
                    m.push_audio(us, &[7u8; 90]);
                }
            }
            // The runtime sends after every input; so does this harness.
            for i in 0..2 {
                self.net.flush(self.sides[i].node);
            }
            for i in 0..2 {
                self.net.run_for(Duration::ZERO);
                let node = self.sides[i].node;
                let now = self.net.now;
                let at = self.net.elapsed();
                let Some(m) = self.net.nodes[node].device.media() else { continue };
                let us = m.micros(now);
                let s = &mut self.sides[i];
                while let Some(f) = m.poll_video_frame(now, &mut self.buf) {
                    let ok = f.keyframe || s.last_good.is_some_and(|g| g + 1 == f.frame);
                    assert!(self.buf[..f.len].iter().all(|&b| b == self.buf[0]), "frame content intact");
                    if ok {
                        s.last_good = Some(f.frame);
                        s.shown += 1;
                        s.shown_at.push(at);
                    } else {
                        s.broken += 1;
                    }
                }
                let mut pkt = [0u8; 1200];
                while let Some((h, n)) = m.poll_audio(&mut pkt) {
                    let rtx = h.flags & peercom::media::packet::FLAG_RETRANSMIT != 0;
                    s.jb.push(us, h.seq, h.capture_us, rtx, &pkt[..n]);
                }
                if ms % 20 == 0 {
                    let _ = matches!(s.jb.pop(us), Playout::Packet(_));
                }
            }
            self.net.run_for(Duration::from_millis(1));
        }
    }

    fn stats(&mut self, i: usize) -> peercom::media::session::MediaStats {
        self.net.nodes[self.sides[i].node].device.media().unwrap().stats()
    }
}

#[test]
fn clean_link_delivers_every_frame_and_ramps_up() {
    let mut c = Call::new(1, 0);
    c.run(Duration::from_secs(6));
    for i in 0..2 {
        let st = c.stats(i);
        let s = &c.sides[i];
        assert!(s.shown >= 175 && s.broken == 0, "side {i}: shown {} broken {}", s.shown, s.broken);
        assert_eq!(st.received.frames_lost, 0);
        assert_eq!(st.target_kbps, 1500, "rate control reaches the max on a clean link");
        assert!(st.rtt_ms > 9.0 && st.rtt_ms < 12.0, "rtt {}", st.rtt_ms);
        let j = s.jb.stats();
        assert_eq!((j.concealed, j.fec), (0, 0), "{j:?}");
    }
}

#[test]
fn five_percent_loss_is_repaired() {
    for seed in 1..4 {
        let mut c = Call::new(seed, 5);
        c.run(Duration::from_secs(6));
        for i in 0..2 {
            let st = c.stats(i);
            let s = &c.sides[i];
            // 6 s at 30 fps = 180 frames; NACKs repair nearly all of them.
            assert!(s.shown >= 165, "seed {seed} side {i}: shown {} {st:?}", s.shown);
            assert!(st.nacks_sent > 0 && st.sent.retransmits > 0);
            let j = s.jb.stats();
            assert!(j.longest_gap <= 2, "no audio gap over 40 ms: {j:?}");
        }
    }
}

#[test]
fn twenty_percent_loss_keeps_the_call_up_and_backs_off() {
    let mut c = Call::new(7, 20);
    c.run(Duration::from_secs(10));
    for i in 0..2 {
        assert_eq!(c.net.nodes[c.sides[i].node].device.phase(), Phase::InCall);
        let st = c.stats(i);
        assert!(st.target_kbps < 600, "backed off: {st:?}");
        let s = &c.sides[i];
        assert!(s.shown > 100, "video keeps going: {}", s.shown);
        let j = s.jb.stats();
        let total = j.played + j.fec + j.concealed;
        assert!(j.concealed * 100 / total < 25, "{j:?}");
    }
}

#[test]
fn picture_recovers_within_500_ms_of_a_burst() {
    let mut c = Call::new(3, 0);
    c.run(Duration::from_secs(2));
    let start = c.net.elapsed();
    let end = start + Duration::from_millis(400);
    c.net.blackout = Some((start, end));
    c.run(Duration::from_secs(2));
    for s in &c.sides {
        let first_after = s.shown_at.iter().find(|&&t| t > end).copied().unwrap();
        assert!(first_after - end < Duration::from_millis(500), "recovered after {:?}", first_after - end);
        // And the picture keeps going afterwards.
        let after = s.shown_at.iter().filter(|&&t| t > end).count();
        assert!(after >= 40, "{after}");
    }
}
