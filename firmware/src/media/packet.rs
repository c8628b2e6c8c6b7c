//! Media plaintexts, carried inside encrypted data packets after the kind byte (`PlainKind`).
//!
//! ```text
//! Video:    kind=1 | seq u16le | frame u16le | index u8 | count u8 | flags u8 | capture_us u64le | fragment
//! Audio:    kind=2 | seq u16le | flags u8 | capture_us u64le | Opus packet
//! Feedback: kind=3 | postcard(Feedback)
//! ```
//! Data headers are fixed binary: they are parsed for every packet and must cost nothing.
//! `seq` counts packets per stream (loss detection, NACK); `frame` numbers video frames;
//! `capture_us` is the sender's capture clock, shared by both streams (jitter, A/V sync).
use crate::session::MAX_PLAINTEXT;
use crate::wire::PlainKind;
use serde::{Deserialize, Serialize};

pub const VIDEO_HEADER_LEN: usize = 16;
pub const AUDIO_HEADER_LEN: usize = 12;
pub const MAX_VIDEO_PAYLOAD: usize = MAX_PLAINTEXT - VIDEO_HEADER_LEN;
pub const MAX_AUDIO_PAYLOAD: usize = MAX_PLAINTEXT - AUDIO_HEADER_LEN;
/// A frame has at most this many fragments (about 290 kB: far above any frame we send).
pub const MAX_FRAGMENTS: usize = 255;

pub const FLAG_KEYFRAME: u8 = 1;
pub const FLAG_RETRANSMIT: u8 = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VideoHeader {
    pub seq: u16,
    pub frame: u16,
    pub index: u8,
    pub count: u8,
    pub flags: u8,
    pub capture_us: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AudioHeader {
    pub seq: u16,
    pub flags: u8,
    pub capture_us: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Stream {
    Video,
    Audio,
}

/// What a receiver tells the sender about one stream. Counts are cumulative, so a lost report
/// loses nothing: the sender works from the difference between two reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamReport {
    pub expected: u32,
    pub received: u32,
    /// Interarrival jitter (RFC 3550 estimator) in µs.
    pub jitter_us: u32,
    /// One-way delay above the lowest seen recently: the queue building up on the path, in µs.
    pub queue_us: u32,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// The reporter's clock when it sent this; echoed back for round-trip time.
    pub sent_us: u64,
    /// The `sent_us` of the last report received from the other side (0: none yet).
    pub echo_us: u64,
    /// How long the reporter held that report before this one.
    pub held_us: u32,
    pub video: StreamReport,
    pub audio: StreamReport,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Feedback {
    Report(Report),
    /// Packets `base` and `base + 1 + i` for each bit `i` set in `mask` are missing.
    Nack {
        stream: Stream,
        base: u16,
        mask: u64,
    },
    /// The receiver cannot decode on: send a keyframe.
    KeyframeRequest,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaPacket<'a> {
    Video(VideoHeader, &'a [u8]),
    Audio(AudioHeader, &'a [u8]),
    Feedback(Feedback),
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

impl<'a> MediaPacket<'a> {
    /// Parses a media plaintext (kind byte included). None for anything malformed.
    pub fn decode(b: &'a [u8]) -> Option<MediaPacket<'a>> {
        if b.len() > MAX_PLAINTEXT {
            return None;
        }
        match PlainKind::of(b)? {
            PlainKind::Video => {
                let h = VideoHeader {
                    seq: u16_at(b, 1)?,
                    frame: u16_at(b, 3)?,
                    index: *b.get(5)?,
                    count: *b.get(6)?,
                    flags: *b.get(7)?,
                    capture_us: u64_at(b, 8)?,
                };
                let payload = b.get(VIDEO_HEADER_LEN..)?;
                if h.count == 0 || h.index >= h.count || payload.is_empty() {
                    return None;
                }
                Some(MediaPacket::Video(h, payload))
            }
            PlainKind::Audio => {
                let h = AudioHeader { seq: u16_at(b, 1)?, flags: *b.get(3)?, capture_us: u64_at(b, 4)? };
                let payload = b.get(AUDIO_HEADER_LEN..)?;
                if payload.is_empty() {
                    return None;
                }
                Some(MediaPacket::Audio(h, payload))
            }
            PlainKind::Feedback => match postcard::take_from_bytes::<Feedback>(b.get(1..)?) {
                Ok((f, [])) => Some(MediaPacket::Feedback(f)),
                _ => None,
            },
            PlainKind::Signal => None,
        }
    }
}

/// Writes a video header into `out[..VIDEO_HEADER_LEN]`; the caller appends the fragment.
pub fn write_video_header(out: &mut [u8], h: &VideoHeader) {
    out[0] = PlainKind::Video as u8;
    out[1..3].copy_from_slice(&h.seq.to_le_bytes());
    out[3..5].copy_from_slice(&h.frame.to_le_bytes());
    out[5] = h.index;
    out[6] = h.count;
    out[7] = h.flags;
    out[8..16].copy_from_slice(&h.capture_us.to_le_bytes());
}

/// Writes an audio plaintext into `out`; None if the payload is empty or does not fit.
pub fn write_audio(out: &mut [u8], h: &AudioHeader, payload: &[u8]) -> Option<usize> {
    let n = AUDIO_HEADER_LEN + payload.len();
    if payload.is_empty() || n > MAX_PLAINTEXT || out.len() < n {
        return None;
    }
    out[0] = PlainKind::Audio as u8;
    out[1..3].copy_from_slice(&h.seq.to_le_bytes());
    out[3] = h.flags;
    out[4..12].copy_from_slice(&h.capture_us.to_le_bytes());
    out[AUDIO_HEADER_LEN..n].copy_from_slice(payload);
    Some(n)
}

pub fn write_feedback(out: &mut [u8], f: &Feedback) -> Option<usize> {
    let (kind, body) = out.split_first_mut()?;
    *kind = PlainKind::Feedback as u8;
    postcard::to_slice(f, body).ok().map(|s| s.len() + 1)
}

/// Extends wrapping 16-bit sequence numbers to 64 bits, relative to the highest seen so far.
#[derive(Debug, Clone, Copy, Default)]
pub struct SeqUnwrapper {
    last: Option<u64>,
}

impl SeqUnwrapper {
    pub fn unwrap(&mut self, seq: u16) -> u64 {
        let Some(last) = self.last else {
            // Start well above zero so packets from just before the first one stay representable.
            let v = (1u64 << 16) + u64::from(seq);
            self.last = Some(v);
            return v;
        };
        let diff = seq.wrapping_sub(last as u16) as i16;
        let v = last.wrapping_add_signed(i64::from(diff));
        if v > last {
            self.last = Some(v);
        }
        v
    }

    pub fn reset(&mut self) {
        self.last = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn video_round_trip() {
        let h = VideoHeader { seq: 65535, frame: 7, index: 2, count: 3, flags: FLAG_KEYFRAME, capture_us: 1 << 40 };
        let mut b = [0u8; 64];
        write_video_header(&mut b, &h);
        b[VIDEO_HEADER_LEN..VIDEO_HEADER_LEN + 4].copy_from_slice(b"abcd");
        assert_eq!(MediaPacket::decode(&b[..VIDEO_HEADER_LEN + 4]), Some(MediaPacket::Video(h, b"abcd")));
        // Empty fragment, index out of range, zero count, truncated header: all rejected.
        assert_eq!(MediaPacket::decode(&b[..VIDEO_HEADER_LEN]), None);
        assert_eq!(MediaPacket::decode(&b[..9]), None);
        b[5] = 3;
        assert_eq!(MediaPacket::decode(&b[..20]), None);
        b[5] = 0;
        b[6] = 0;
        assert_eq!(MediaPacket::decode(&b[..20]), None);
    }

    #[test]
    fn audio_and_feedback_round_trip() {
        let mut b = [0u8; 128];
        let h = AudioHeader { seq: 9, flags: 0, capture_us: 123 };
        let n = write_audio(&mut b, &h, &[1, 2, 3]).unwrap();
        assert_eq!(MediaPacket::decode(&b[..n]), Some(MediaPacket::Audio(h, &[1, 2, 3])));
        assert_eq!(write_audio(&mut b, &h, &[]), None);
        assert_eq!(write_audio(&mut b, &h, &[0; MAX_AUDIO_PAYLOAD + 1]), None);
        let r = Report { sent_us: 5, echo_us: 3, held_us: 1, ..Default::default() };
        for f in
            [Feedback::Report(r), Feedback::Nack { stream: Stream::Audio, base: 3, mask: 5 }, Feedback::KeyframeRequest]
        {
            let n = write_feedback(&mut b, &f).unwrap();
            assert_eq!(MediaPacket::decode(&b[..n]), Some(MediaPacket::Feedback(f)));
            assert_eq!(MediaPacket::decode(&b[..n - 1]).filter(|_| n > 2), None);
        }
        assert_eq!(MediaPacket::decode(&[]), None);
        assert_eq!(MediaPacket::decode(&[0, 1]), None, "signalling is not media");
        assert_eq!(MediaPacket::decode(&[9, 1]), None);
    }

    #[test]
    fn seq_unwrap() {
        let mut u = SeqUnwrapper::default();
        let a = u.unwrap(65534);
        assert_eq!(u.unwrap(65535), a + 1);
        assert_eq!(u.unwrap(0), a + 2);
        assert_eq!(u.unwrap(65533), a - 1, "late packet from before the wrap");
        assert_eq!(u.unwrap(1), a + 3);
    }
}
