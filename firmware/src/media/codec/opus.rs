//! Opus voice: 48 kHz mono, VoIP tuning, in-band FEC so a lost packet can be rebuilt from the next.
use super::CodecError;
use ::opus::{Application, Bitrate, Channels, Decoder, Encoder, ErrorCode};

pub const SAMPLE_RATE: u32 = 48_000;
/// Largest packet libopus writes for one frame; an output buffer this big never fails.
pub const MAX_PACKET: usize = 1275;
/// Longest duration one Opus packet can carry (120 ms).
const MAX_PACKET_SAMPLES: usize = 5760;
/// Loss the encoder plans FEC for until the transport reports the real figure.
pub const DEFAULT_EXPECTED_LOSS: u8 = 10;

/// Samples per channel in one frame of `frame_ms`; only 10 and 20 ms frames are used.
fn frame_len(frame_ms: u32) -> Result<usize, CodecError> {
    match frame_ms {
        10 | 20 => Ok((SAMPLE_RATE / 1000 * frame_ms) as usize),
        _ => Err(CodecError::Config("audio frame must be 10 or 20 ms")),
    }
}

fn bitrate_bps(kbps: u32) -> i32 {
    // libopus's range is 6..=510 kbit/s.
    (kbps.clamp(6, 510) * 1000) as i32
}

pub struct AudioEncoder {
    enc: Encoder,
    frame_len: usize,
}

impl AudioEncoder {
    /// `kbps` is clamped to Opus's 6..=510; `complexity` must be 0..=10.
    pub fn new(frame_ms: u32, kbps: u32, complexity: u8) -> Result<Self, CodecError> {
        let frame_len = frame_len(frame_ms)?;
        if complexity > 10 {
            return Err(CodecError::Config("Opus complexity must be 0..=10"));
        }
        let mut enc = Encoder::new(SAMPLE_RATE, Channels::Mono, Application::Voip)?;
        enc.set_bitrate(Bitrate::Bits(bitrate_bps(kbps)))?;
        enc.set_complexity(i32::from(complexity))?;
        enc.set_inband_fec(true)?;
        // FEC is only spent when the encoder expects loss.
        enc.set_packet_loss_perc(i32::from(DEFAULT_EXPECTED_LOSS))?;
        Ok(AudioEncoder { enc, frame_len })
    }

    /// Samples in one frame; `encode` takes exactly this many.
    pub fn frame_len(&self) -> usize {
        self.frame_len
    }

    /// Loss the FEC should cover, in percent (clamped to 0..=100); from the receiver's reports.
    pub fn set_expected_loss(&mut self, pct: u8) {
        // A value in 0..=100 is always accepted by libopus, so there is no error to report.
        let _ = self.enc.set_packet_loss_perc(i32::from(pct.min(100)));
    }

    /// Target bitrate, clamped to 6..=510 kbit/s.
    pub fn set_bitrate(&mut self, kbps: u32) {
        // Always in range after clamping, so libopus cannot refuse it.
        let _ = self.enc.set_bitrate(Bitrate::Bits(bitrate_bps(kbps)));
    }

    /// Encodes one frame of PCM into `out`; returns the packet length. An `out` of [`MAX_PACKET`]
    /// bytes always suffices; a smaller one makes libopus fit the packet into it.
    pub fn encode(&mut self, pcm: &[i16], out: &mut [u8]) -> Result<usize, CodecError> {
        if pcm.len() != self.frame_len {
            return Err(CodecError::PcmLen { expected: self.frame_len, got: pcm.len() });
        }
        if out.is_empty() {
            return Err(CodecError::BufferTooSmall { needed: MAX_PACKET, available: 0 });
        }
        let n = out.len().min(MAX_PACKET);
        self.enc.encode(pcm, &mut out[..n]).map_err(|e| match e.code() {
            ErrorCode::BufferTooSmall => CodecError::BufferTooSmall { needed: MAX_PACKET, available: out.len() },
            code => CodecError::Opus(code),
        })
    }
}

pub struct AudioDecoder {
    dec: Decoder,
    frame_len: usize,
}

impl AudioDecoder {
    pub fn new(frame_ms: u32) -> Result<Self, CodecError> {
        Ok(AudioDecoder { dec: Decoder::new(SAMPLE_RATE, Channels::Mono)?, frame_len: frame_len(frame_ms)? })
    }

    pub fn frame_len(&self) -> usize {
        self.frame_len
    }

    /// Decodes one packet into `out` (at least one frame long); returns the samples written.
    pub fn decode(&mut self, packet: &[u8], out: &mut [i16]) -> Result<usize, CodecError> {
        // An empty packet would mean "lost" to libopus; loss goes through `conceal`/`decode_fec`.
        if packet.is_empty() || packet.len() > MAX_PACKET * 48 {
            return Err(CodecError::Malformed);
        }
        self.check_out(out)?;
        let n = out.len().min(MAX_PACKET_SAMPLES);
        self.dec.decode(packet, &mut out[..n], false).map_err(|e| match e.code() {
            ErrorCode::BufferTooSmall => {
                CodecError::BufferTooSmall { needed: MAX_PACKET_SAMPLES, available: out.len() }
            }
            code => CodecError::Opus(code),
        })
    }

    /// Packet N was lost but N+1 (`next`) arrived: rebuilds N from N+1's in-band FEC (or, if N+1
    /// carries none, conceals it). Returns one frame; decode `next` itself afterwards as usual.
    pub fn decode_fec(&mut self, next: &[u8], out: &mut [i16]) -> Result<usize, CodecError> {
        if next.is_empty() || next.len() > MAX_PACKET * 48 {
            return Err(CodecError::Malformed);
        }
        self.check_out(out)?;
        // The output length tells libopus how much audio was lost: exactly one frame.
        Ok(self.dec.decode(next, &mut out[..self.frame_len], true)?)
    }

    /// Packet loss concealment: one frame extrapolated from what came before.
    pub fn conceal(&mut self, out: &mut [i16]) -> Result<usize, CodecError> {
        self.check_out(out)?;
        Ok(self.dec.decode(&[], &mut out[..self.frame_len], false)?)
    }

    fn check_out(&self, out: &[i16]) -> Result<(), CodecError> {
        if out.len() < self.frame_len {
            return Err(CodecError::BufferTooSmall { needed: self.frame_len, available: out.len() });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_lengths_and_clamps() {
        assert_eq!(frame_len(20), Ok(960));
        assert_eq!(frame_len(10), Ok(480));
        assert!(frame_len(0).is_err() && frame_len(60).is_err());
        assert_eq!(bitrate_bps(0), 6000);
        assert_eq!(bitrate_bps(32), 32_000);
        assert_eq!(bitrate_bps(u32::MAX), 510_000);
    }

    #[test]
    fn silence_codes_small_and_decodes_to_one_frame() {
        let mut enc = AudioEncoder::new(20, 32, 5).unwrap();
        let mut dec = AudioDecoder::new(20).unwrap();
        let mut pkt = [0u8; MAX_PACKET];
        let mut pcm = [0i16; 960];
        let len = enc.encode(&[0i16; 960], &mut pkt).unwrap();
        assert!(len > 0 && len < 100, "{len} bytes of silence");
        // An output longer than a frame is fine; exactly one frame comes back.
        let mut long = [0i16; 2000];
        assert_eq!(dec.decode(&pkt[..len], &mut long).unwrap(), 960);
        assert_eq!(dec.conceal(&mut pcm).unwrap(), 960);
        assert_eq!(dec.frame_len(), 960);
    }
}
