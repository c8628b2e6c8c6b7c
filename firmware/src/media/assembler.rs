//! Video frame assembly: fragments into whole access units, delivered strictly in order.
//! A frame still incomplete at its deadline is given up; from then on only a keyframe can be
//! decoded, so P-frames are skipped and a keyframe is requested. A complete keyframe makes any
//! older incomplete frame pointless, so delivery jumps to it at once.
use super::packet::{FLAG_KEYFRAME, MAX_FRAGMENTS, MAX_VIDEO_PAYLOAD, SeqUnwrapper, VideoHeader};
use serde::Serialize;
use std::time::{Duration, Instant};

/// The largest access unit the assembler can hold.
pub const MAX_FRAME: usize = MAX_FRAGMENTS * MAX_VIDEO_PAYLOAD;

struct Slot {
    frame: u64,
    count: u8,
    received: u8,
    got: [u64; 4],
    lens: [u16; MAX_FRAGMENTS],
    keyframe: bool,
    capture_us: u64,
    first_at: Instant,
    buf: Vec<u8>,
}

impl Slot {
    fn complete(&self) -> bool {
        self.frame != EMPTY && self.received == self.count
    }
}

const EMPTY: u64 = u64::MAX;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameInfo {
    pub len: usize,
    pub frame: u64,
    pub keyframe: bool,
    pub capture_us: u64,
}

#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct AssemblerStats {
    pub frames_delivered: u64,
    /// Frames never delivered: incomplete at their deadline, or skipped while waiting for a keyframe.
    pub frames_lost: u64,
    pub late_packets: u64,
    pub malformed: u64,
}

pub struct Assembler {
    slots: Vec<Slot>,
    unwrap: SeqUnwrapper,
    next: Option<u64>,
    waiting_key: bool,
    need_keyframe: bool,
    stats: AssemblerStats,
}

impl Assembler {
    /// `frames` frames can be in flight at once.
    pub fn new(frames: usize) -> Self {
        let t = Instant::now();
        let slots = (0..frames.max(2))
            .map(|_| Slot {
                frame: EMPTY,
                count: 0,
                received: 0,
                got: [0; 4],
                lens: [0; MAX_FRAGMENTS],
                keyframe: false,
                capture_us: 0,
                first_at: t,
                buf: vec![0; MAX_FRAME],
            })
            .collect();
        Assembler {
            slots,
            unwrap: SeqUnwrapper::default(),
            next: None,
            waiting_key: false,
            need_keyframe: false,
            stats: AssemblerStats::default(),
        }
    }

    pub fn reset(&mut self) {
        for s in &mut self.slots {
            s.frame = EMPTY;
        }
        self.unwrap.reset();
        self.next = None;
        self.waiting_key = false;
        self.need_keyframe = false;
        self.stats = AssemblerStats::default();
    }

    pub fn stats(&self) -> AssemblerStats {
        self.stats
    }

    /// Whether a keyframe is needed (set when a frame is given up; cleared by a keyframe).
    pub fn wants_keyframe(&self) -> bool {
        self.need_keyframe
    }

    fn index(&self, frame: u64) -> usize {
        (frame % self.slots.len() as u64) as usize
    }

    fn give_up(&mut self, n: u64) {
        self.stats.frames_lost += 1;
        self.next = Some(n + 1);
        self.waiting_key = true;
        self.need_keyframe = true;
        let i = self.index(n);
        if self.slots[i].frame == n {
            self.slots[i].frame = EMPTY;
        }
    }

    pub fn on_packet(&mut self, now: Instant, h: &VideoHeader, payload: &[u8]) {
        let f = self.unwrap.unwrap(h.frame);
        let keyframe = h.flags & FLAG_KEYFRAME != 0;
        let next = match self.next {
            Some(n) => n,
            None => {
                // The first packet heard: decoding can only start at a keyframe.
                self.next = Some(f);
                self.waiting_key = !keyframe;
                f
            }
        };
        let window = self.slots.len() as u64;
        if f < next && self.stats.frames_delivered == 0 && next - f < window {
            // Reordered at the very start: an earlier frame (perhaps the keyframe) arrived late.
            self.next = Some(f);
            self.waiting_key = !keyframe;
            return self.on_packet(now, h, payload);
        }
        if f < next {
            self.stats.late_packets += 1;
            return;
        }
        if f >= next + 16 * window {
            // Far ahead (the sender restarted or we were cut off): start over from here.
            for s in &mut self.slots {
                s.frame = EMPTY;
            }
            self.stats.frames_lost += 1;
            self.next = Some(f + 1 - window);
            self.waiting_key = true;
            self.need_keyframe = true;
        }
        while let Some(n) = self.next.filter(|&n| f >= n + window) {
            self.give_up(n);
        }
        let i = self.index(f);
        let slot = &mut self.slots[i];
        if slot.frame != f {
            slot.frame = f;
            slot.count = h.count;
            slot.received = 0;
            slot.got = [0; 4];
            slot.keyframe = keyframe;
            slot.capture_us = h.capture_us;
            slot.first_at = now;
        }
        let idx = usize::from(h.index);
        let off = idx * MAX_VIDEO_PAYLOAD;
        if slot.count != h.count || payload.len() > MAX_VIDEO_PAYLOAD || off + payload.len() > slot.buf.len() {
            self.stats.malformed += 1;
            return;
        }
        let bit = 1u64 << (idx % 64);
        if slot.got[idx / 64] & bit != 0 {
            return;
        }
        slot.got[idx / 64] |= bit;
        slot.received += 1;
        slot.lens[idx] = payload.len() as u16;
        slot.buf[off..off + payload.len()].copy_from_slice(payload);
    }

    fn complete_keyframe_after(&self, n: u64) -> Option<u64> {
        self.slots
            .iter()
            .filter(|s| s.frame != EMPTY && s.frame > n && s.keyframe && s.complete())
            .map(|s| s.frame)
            .min()
    }

    /// When the frame being waited for was first heard of (its own first packet, or failing that
    /// the first packet of any later frame).
    fn waiting_since(&self, n: u64) -> Option<Instant> {
        let s = &self.slots[self.index(n)];
        if s.frame == n {
            return Some(s.first_at);
        }
        self.slots.iter().filter(|s| s.frame != EMPTY && s.frame > n).map(|s| s.first_at).min()
    }

    /// Gives up frames that missed `deadline` (or are useless while waiting for a keyframe) and
    /// returns the slot of the next frame ready to deliver, if any.
    fn advance(&mut self, now: Instant, deadline: Duration) -> Option<usize> {
        loop {
            let n = self.next?;
            let i = self.index(n);
            let here = self.slots[i].frame == n;
            if here && self.slots[i].complete() && (!self.waiting_key || self.slots[i].keyframe) {
                return Some(i);
            }
            if let Some(k) = self.complete_keyframe_after(n) {
                for skipped in n..k {
                    let j = self.index(skipped);
                    if self.slots[j].frame == skipped {
                        self.slots[j].frame = EMPTY;
                    }
                }
                self.stats.frames_lost += k - n;
                self.next = Some(k);
                self.waiting_key = true;
                continue;
            }
            // Waiting for a keyframe after a loss: a frame known not to be one is of no use. (At
            // the start of a call the keyframe may just be late, so the deadline applies.)
            let useless = self.waiting_key
                && self.stats.frames_delivered > 0
                && (!here || !self.slots[i].keyframe)
                && self.waiting_since(n).is_some();
            match self.waiting_since(n) {
                Some(t) if useless || now >= t + deadline => self.give_up(n),
                _ => return None,
            }
        }
    }

    /// Applies deadlines without delivering anything (on a timer).
    pub fn expire(&mut self, now: Instant, deadline: Duration) {
        self.advance(now, deadline);
    }

    /// The next frame in order, copied into `out` (at least `MAX_FRAME` bytes); frames that
    /// missed `deadline` are given up on the way.
    pub fn poll_frame(&mut self, now: Instant, deadline: Duration, out: &mut [u8]) -> Option<FrameInfo> {
        let i = self.advance(now, deadline)?;
        let s = &mut self.slots[i];
        let mut len = 0;
        for k in 0..usize::from(s.count) {
            let l = usize::from(s.lens[k]);
            let off = k * MAX_VIDEO_PAYLOAD;
            out.get_mut(len..len + l)?.copy_from_slice(&s.buf[off..off + l]);
            len += l;
        }
        let info = FrameInfo { len, frame: s.frame, keyframe: s.keyframe, capture_us: s.capture_us };
        s.frame = EMPTY;
        self.next = Some(info.frame + 1);
        if info.keyframe {
            self.waiting_key = false;
            self.need_keyframe = false;
        }
        self.stats.frames_delivered += 1;
        Some(info)
    }

    /// When the frame being waited for reaches its deadline.
    /// (None while the next frame is complete: it waits for the consumer, not for time.)
    pub fn poll_timeout(&self, deadline: Duration) -> Option<Instant> {
        let n = self.next?;
        let s = &self.slots[self.index(n)];
        if s.frame == n && s.complete() {
            return None;
        }
        self.waiting_since(n).map(|t| t + deadline)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::packet::{MediaPacket, VIDEO_HEADER_LEN, write_video_header};

    struct Src {
        frame: u16,
        seq: u16,
    }

    impl Src {
        /// Fragments of one frame of `len` bytes, each byte = frame number.
        fn frame(&mut self, len: usize, key: bool) -> Vec<Vec<u8>> {
            let count = len.div_ceil(MAX_VIDEO_PAYLOAD);
            let frag = len.div_ceil(count);
            let data = vec![self.frame as u8; len];
            let v = data
                .chunks(frag)
                .enumerate()
                .map(|(i, c)| {
                    let h = VideoHeader {
                        seq: self.seq,
                        frame: self.frame,
                        index: i as u8,
                        count: count as u8,
                        flags: if key { FLAG_KEYFRAME } else { 0 },
                        capture_us: u64::from(self.frame) * 1000,
                    };
                    self.seq = self.seq.wrapping_add(1);
                    let mut b = vec![0u8; VIDEO_HEADER_LEN + c.len()];
                    write_video_header(&mut b, &h);
                    b[VIDEO_HEADER_LEN..].copy_from_slice(c);
                    b
                })
                .collect();
            self.frame = self.frame.wrapping_add(1);
            v
        }
    }

    fn feed(a: &mut Assembler, t: Instant, pkts: &[Vec<u8>]) {
        for p in pkts {
            let Some(MediaPacket::Video(h, payload)) = MediaPacket::decode(p) else { panic!() };
            a.on_packet(t, &h, payload);
        }
    }

    const D: Duration = Duration::from_millis(100);

    #[test]
    fn in_order_reordered_and_lost() {
        let t = Instant::now();
        let mut a = Assembler::new(8);
        let mut src = Src { frame: 65534, seq: 65530 };
        let mut out = vec![0u8; MAX_FRAME];
        let f0 = src.frame(5000, true);
        let f1 = src.frame(3000, false);
        let f2 = src.frame(100, false);
        // f1 arrives first and reversed, then f0: both come out in order, whole.
        let mut rev = f1.clone();
        rev.reverse();
        feed(&mut a, t, &rev);
        assert_eq!(a.poll_frame(t, D, &mut out), None);
        feed(&mut a, t, &f0);
        let i = a.poll_frame(t, D, &mut out).unwrap();
        assert_eq!((i.len, i.keyframe, out[..i.len].iter().all(|&b| b == 254)), (5000, true, true));
        let i = a.poll_frame(t, D, &mut out).unwrap();
        assert_eq!((i.len, i.keyframe, out[0]), (3000, false, 255));
        // f2 loses its only packet, f3 arrives: wait for f2 until the deadline, then skip P-frames
        // and ask for a keyframe.
        let _ = f2;
        let f3 = src.frame(2000, false);
        feed(&mut a, t, &f3);
        assert_eq!(a.poll_frame(t + D / 2, D, &mut out), None);
        assert_eq!(a.poll_timeout(D), Some(t + D));
        assert_eq!(a.poll_frame(t + D, D, &mut out), None, "f3 is a P-frame after a hole");
        assert!(a.wants_keyframe());
        let f4 = src.frame(4000, true);
        feed(&mut a, t + D, &f4);
        let i = a.poll_frame(t + D, D, &mut out).unwrap();
        assert_eq!((i.keyframe, out[0]), (true, 2));
        assert!(!a.wants_keyframe());
        assert_eq!(a.stats().frames_lost, 2, "f2 and f3");
        assert_eq!(a.stats().frames_delivered, 3);
    }

    #[test]
    fn complete_keyframe_skips_the_wait() {
        let t = Instant::now();
        let mut a = Assembler::new(8);
        let mut src = Src { frame: 0, seq: 0 };
        let mut out = vec![0u8; MAX_FRAME];
        feed(&mut a, t, &src.frame(1000, true));
        let first = a.poll_frame(t, D, &mut out).unwrap().frame;
        let f1 = src.frame(3000, false);
        feed(&mut a, t, &f1[..1]); // incomplete
        feed(&mut a, t, &src.frame(3000, true));
        let i = a.poll_frame(t, D, &mut out).unwrap();
        assert_eq!((i.frame - first, i.keyframe), (2, true), "no waiting for the deadline");
        assert_eq!(a.stats().frames_lost, 1);
        // Late fragments of f1 are ignored.
        feed(&mut a, t, &f1[1..]);
        assert_eq!(a.stats().late_packets, 2);
    }

    #[test]
    fn far_ahead_and_garbage() {
        let t = Instant::now();
        let mut a = Assembler::new(4);
        let mut src = Src { frame: 0, seq: 0 };
        let mut out = vec![0u8; MAX_FRAME];
        feed(&mut a, t, &src.frame(10, true));
        assert!(a.poll_frame(t, D, &mut out).is_some(), "frame 0 complete");
        for _ in 0..6 {
            src.frame(10, false); // lost
        }
        feed(&mut a, t, &src.frame(10, false));
        assert_eq!(a.poll_frame(t + D, D, &mut out), None);
        assert!(a.wants_keyframe());
        // A fragment claiming another count than its frame's is dropped.
        let mut bad = src.frame(3000, true);
        bad[1][6] = 9;
        feed(&mut a, t, &bad);
        assert_eq!(a.stats().malformed, 1);
    }
}
