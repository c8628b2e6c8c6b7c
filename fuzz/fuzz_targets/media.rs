//! Media plaintexts from a peer (after decryption, so an authenticated but hostile or buggy
//! peer): the decoder, the media session (frame assembly, NACK bookkeeping, feedback) and the
//! audio jitter buffer must take anything without panicking and stay within their memory.
#![no_main]
use libfuzzer_sys::fuzz_target;
use peercom::config::MediaSettings;
use peercom::media::assembler::MAX_FRAME;
use peercom::media::jitter::{JitterBuffer, JitterConfig};
use peercom::media::packet::MediaPacket;
use peercom::media::session::{MediaConfig, MediaSession};
use std::time::{Duration, Instant};

fuzz_target!(|data: &[u8]| {
    let t0 = Instant::now();
    let mut s = MediaSession::new(MediaConfig::from_settings(&MediaSettings::default()), t0);
    s.reset(t0);
    let mut jb = JitterBuffer::new(JitterConfig::for_frame_ms(20));
    let mut frame = vec![0u8; MAX_FRAME];
    let mut out = [0u8; 1200];
    // Input: records of [len u8][advance ms u8][bytes].
    let mut now = t0;
    let mut rest = data;
    while rest.len() >= 2 {
        let (len, adv) = (usize::from(rest[0]), u64::from(rest[1]));
        rest = &rest[2..];
        let pkt = &rest[..len.min(rest.len())];
        rest = &rest[pkt.len()..];
        now += Duration::from_millis(adv);
        if let Some(MediaPacket::Audio(h, p)) = MediaPacket::decode(pkt) {
            jb.push(s.micros(now), h.seq, h.capture_us, false, p);
        }
        s.handle_packet(now, pkt);
        s.handle_timeout(now);
        while let Some(f) = s.poll_video_frame(now, &mut frame) {
            assert!(f.len <= MAX_FRAME);
        }
        while s.poll_audio(&mut out).is_some() {}
        let mut sent = 0;
        while let Some(n) = s.poll_transmit(now, &mut out) {
            assert!(n <= out.len());
            sent += 1;
            assert!(sent < 10_000, "the sender must not loop");
        }
        let _ = jb.pop(s.micros(now));
        let _ = s.poll_timeout();
    }
});
