//! H.264 through OpenH264: Constrained Baseline, one picture in, one Annex-B access unit out, every NAL
//! unit small enough for one datagram. Encode and decode work in caller-owned buffers.
use super::CodecError;
use openh264::decoder::Decoder;
use openh264::encoder::{
    BitRate, Complexity as OhComplexity, Encoder, EncoderConfig, FrameRate, FrameType, IntraFramePeriod, Profile,
    RateControlMode, UsageType,
};
use openh264::formats::{YUVSlices, YUVSource};
use openh264::{OpenH264API, Timestamp};
use openh264_sys2::{
    ENCODER_OPTION_BITRATE, ENCODER_OPTION_MAX_BITRATE, ENCODER_OPTION_TRACE_LEVEL, SBitrateInfo, SPATIAL_LAYER_0,
    SPATIAL_LAYER_ALL, WELS_LOG_QUIET,
};
use peercom_board::frame::I420Frame;

/// OpenH264 rejects slices that could not hold one worst-case macroblock (400 bytes + 20 of NAL overhead).
pub const MIN_NAL_LEN: usize = 421;
/// OpenH264's limit (level 5.2).
const MAX_DIM: (usize, usize) = (3840, 2160);
/// Largest access unit handed to the decoder; far above any picture we encode, well inside `i32`.
const MAX_ACCESS_UNIT: usize = 16 << 20;

/// Encoder effort: more motion search and mode decisions for a better picture at the same bitrate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Complexity {
    Low,
    #[default]
    Medium,
    High,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VideoEncoderConfig {
    /// Picture size; even, at most 3840x2160.
    pub width: usize,
    pub height: usize,
    pub fps: u32,
    pub bitrate_kbps: u32,
    /// Largest NAL unit (without start code): slices are cut so that each fits one packet.
    pub max_nal_len: usize,
    pub complexity: Complexity,
}

impl Default for VideoEncoderConfig {
    fn default() -> Self {
        VideoEncoderConfig {
            width: 640,
            height: 480,
            fps: 30,
            bitrate_kbps: 1000,
            max_nal_len: 1100,
            complexity: Complexity::Medium,
        }
    }
}

impl VideoEncoderConfig {
    fn validate(&self) -> Result<(), CodecError> {
        let (w, h) = (self.width, self.height);
        if w == 0 || h == 0 || w % 2 != 0 || h % 2 != 0 {
            return Err(CodecError::Config("width and height must be even and non-zero"));
        }
        if w.max(h) > MAX_DIM.0 || w.min(h) > MAX_DIM.1 {
            return Err(CodecError::Config("picture larger than 3840x2160"));
        }
        if !(1..=120).contains(&self.fps) {
            return Err(CodecError::Config("fps must be 1..=120"));
        }
        if !(MIN_NAL_LEN..=65_535).contains(&self.max_nal_len) {
            return Err(CodecError::Config("max_nal_len must be 421..=65535"));
        }
        bitrate_bps(self.bitrate_kbps, self.fps).map(|_| ())
    }

    fn openh264(&self) -> Result<EncoderConfig, CodecError> {
        Ok(EncoderConfig::new()
            .usage_type(UsageType::CameraVideoRealTime)
            .profile(Profile::Baseline)
            .rate_control_mode(RateControlMode::Bitrate)
            .bitrate(BitRate::from_bps(bitrate_bps(self.bitrate_kbps, self.fps)?))
            .max_frame_rate(FrameRate::from_hz(self.fps as f32))
            // Frame skipping on: the only way OpenH264 holds a lowered bitrate (it overshoots by ~70%
            // without), and a frame skipped before encoding keeps the reference chain intact, whereas a
            // frame the transport drops after encoding costs a keyframe.
            .skip_frames(true)
            // The transport asks for IDRs when the receiver lost something; periodic ones only cost bits.
            .intra_frame_period(IntraFramePeriod::from_num_frames(0))
            .max_slice_len(self.max_nal_len as u32)
            .complexity(match self.complexity {
                Complexity::Low => OhComplexity::Low,
                Complexity::Medium => OhComplexity::Medium,
                Complexity::High => OhComplexity::High,
            })
            // IDRs only when asked: an unrequested one is a burst the transport did not plan for.
            .scene_change_detect(false)
            // Threads would not lower the CPU cost, only spread it; the design gives encoding one thread.
            .num_threads(1))
    }
}

fn bitrate_bps(kbps: u32, fps: u32) -> Result<u32, CodecError> {
    // OpenH264 wants at least one bit per frame; sanity caps far above any link we use.
    match kbps.checked_mul(1000) {
        Some(bps) if (1..=100_000_000).contains(&bps) && bps >= fps => Ok(bps),
        _ => Err(CodecError::Config("bitrate must be 1..=100000 kbit/s")),
    }
}

/// What [`VideoEncoder::encode`] produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Encoded {
    /// Bytes written to the front of `out`; 0 when the rate control skipped the frame.
    pub len: usize,
    /// The access unit is an IDR with SPS and PPS: a decoder can start here.
    pub keyframe: bool,
}

impl Encoded {
    /// The rate control dropped this picture before encoding: nothing to send, nothing lost.
    pub fn skipped(&self) -> bool {
        self.len == 0
    }
}

pub struct VideoEncoder {
    enc: Encoder,
    cfg: VideoEncoderConfig,
    /// OpenH264 initialises on the first frame; run-time options are refused before that.
    started: bool,
}

impl VideoEncoder {
    pub fn new(cfg: &VideoEncoderConfig) -> Result<Self, CodecError> {
        cfg.validate()?;
        Ok(VideoEncoder { enc: new_encoder(cfg)?, cfg: *cfg, started: false })
    }

    pub fn config(&self) -> &VideoEncoderConfig {
        &self.cfg
    }

    /// Changes the target bitrate from the next frame on.
    pub fn set_bitrate(&mut self, kbps: u32) -> Result<(), CodecError> {
        let bps = bitrate_bps(kbps, self.cfg.fps)?;
        if kbps == self.cfg.bitrate_kbps {
            return Ok(());
        }
        if !self.started {
            // Nothing encoded yet: a fresh encoder with the new target is the simplest exact change.
            let cfg = VideoEncoderConfig { bitrate_kbps: kbps, ..self.cfg };
            self.enc = new_encoder(&cfg)?;
            self.cfg = cfg;
            return Ok(());
        }
        // OpenH264 refuses a target above the layer's maximum (which the crate sets equal to the start
        // target), so raise the maximum first when going up and lower it last when going down. The
        // maximum is per layer: through SPATIAL_LAYER_ALL it would only set an unused total.
        let target = (ENCODER_OPTION_BITRATE, SPATIAL_LAYER_ALL);
        let max = (ENCODER_OPTION_MAX_BITRATE, SPATIAL_LAYER_0);
        let order = if kbps > self.cfg.bitrate_kbps { [max, target] } else { [target, max] };
        for (option, layer) in order {
            let mut info = SBitrateInfo { iLayer: layer, iBitrate: bps as i32 };
            // SAFETY: the encoder is initialised (`started`); `info` is the SBitrateInfo both options
            // read, and outlives the call. The crate has no safe setter for the run-time bitrate.
            let rc = unsafe { self.enc.raw_api().set_option(option, (&raw mut info).cast()) };
            if rc != 0 {
                return Err(CodecError::H264(i64::from(rc)));
            }
        }
        self.cfg.bitrate_kbps = kbps;
        Ok(())
    }

    /// The next encoded frame will be an IDR (never skipped by the rate control).
    pub fn force_keyframe(&mut self) {
        // Before the first frame this is a no-op in OpenH264, and the first frame is an IDR anyway.
        self.enc.force_intra_frame();
    }

    /// Encodes one I420 picture into `out` as one Annex-B access unit (start codes included).
    /// If `out` is too small the picture is lost: the error says how much was needed, and the next
    /// frame is an IDR so that the receiver, which never saw this one, can follow again.
    pub fn encode(&mut self, frame: &I420Frame, out: &mut [u8]) -> Result<Encoded, CodecError> {
        let (w, h) = (self.cfg.width, self.cfg.height);
        let chroma = (w / 2) * (h / 2);
        if frame.width != w
            || frame.height != h
            || frame.y.len() != w * h
            || frame.u.len() != chroma
            || frame.v.len() != chroma
        {
            return Err(CodecError::FrameSize { expected: (w, h), got: (frame.width, frame.height) });
        }
        let source = YUVSlices::new((&frame.y, &frame.u, &frame.v), (w, h), (w, w / 2, w / 2));
        // Real capture times let the rate control see the actual frame rate (OpenH264 substitutes
        // 1/fps steps when a timestamp is zero or does not increase).
        let stream = self.enc.encode_at(&source, Timestamp::from_millis(frame.captured_us / 1000))?;
        self.started = true;
        let keyframe = stream.frame_type() == FrameType::IDR;
        let mut needed = 0;
        for l in 0..stream.num_layers() {
            if let Some(layer) = stream.layer(l) {
                needed += (0..layer.nal_count()).filter_map(|n| layer.nal_unit(n)).map(<[u8]>::len).sum::<usize>();
            }
        }
        if needed > out.len() {
            self.enc.force_intra_frame();
            return Err(CodecError::BufferTooSmall { needed, available: out.len() });
        }
        let mut len = 0;
        for l in 0..stream.num_layers() {
            let Some(layer) = stream.layer(l) else { continue };
            for nal in (0..layer.nal_count()).filter_map(|n| layer.nal_unit(n)) {
                out.get_mut(len..len + nal.len()).ok_or(CodecError::Malformed)?.copy_from_slice(nal);
                len += nal.len();
            }
        }
        Ok(Encoded { len, keyframe: keyframe && len > 0 })
    }
}

fn new_encoder(cfg: &VideoEncoderConfig) -> Result<Encoder, CodecError> {
    let mut enc = Encoder::with_api_config(OpenH264API::from_source(), cfg.openh264()?)?;
    let mut level = WELS_LOG_QUIET;
    // SAFETY: the trace level is the one option OpenH264 accepts before initialisation; `level` is the
    // int it reads. Set now, it silences the warnings the first frame's initialisation would print
    // (the crate sets it only after).
    unsafe {
        enc.raw_api().set_option(ENCODER_OPTION_TRACE_LEVEL, (&raw mut level).cast());
    }
    Ok(enc)
}

pub struct VideoDecoder {
    dec: Decoder,
}

impl VideoDecoder {
    /// OpenH264's error concealment stays off: a picture with missing references is an error, and the
    /// transport answers it with a keyframe request instead of showing smeared garbage.
    pub fn new() -> Result<Self, CodecError> {
        Ok(VideoDecoder { dec: Decoder::new()? })
    }

    /// Decodes one complete Annex-B access unit. When a picture comes out it is copied into `out`
    /// (whose buffers are resized only if the picture size changed) and `Ok(true)` is returned;
    /// `Ok(false)` means the input held no picture (e.g. only parameter sets). `out.seq` and
    /// `out.captured_us` are left to the caller.
    pub fn decode(&mut self, access_unit: &[u8], out: &mut I420Frame) -> Result<bool, CodecError> {
        if access_unit.is_empty() || access_unit.len() > MAX_ACCESS_UNIT {
            return Err(CodecError::Malformed);
        }
        let Some(pic) = self.dec.decode(access_unit)? else { return Ok(false) };
        copy_picture(&pic, out)?;
        Ok(true)
    }
}

fn copy_picture(pic: &impl YUVSource, out: &mut I420Frame) -> Result<(), CodecError> {
    let (dw, dh) = pic.dimensions();
    // I420Frame is even-sized; an odd (cropped) edge column or row is dropped.
    let (w, h) = (dw & !1, dh & !1);
    if w == 0 || h == 0 {
        return Err(CodecError::Malformed);
    }
    let chroma = (w / 2) * (h / 2);
    if out.width != w || out.height != h || out.y.len() != w * h || out.u.len() != chroma || out.v.len() != chroma {
        out.width = w;
        out.height = h;
        out.y.resize(w * h, 0);
        out.u.resize(chroma, 128);
        out.v.resize(chroma, 128);
    }
    let (sy, su, sv) = pic.strides();
    copy_plane(pic.y(), sy, &mut out.y, w, h)?;
    copy_plane(pic.u(), su, &mut out.u, w / 2, h / 2)?;
    copy_plane(pic.v(), sv, &mut out.v, w / 2, h / 2)
}

fn copy_plane(src: &[u8], stride: usize, dst: &mut [u8], w: usize, h: usize) -> Result<(), CodecError> {
    if stride < w {
        return Err(CodecError::Malformed);
    }
    for (r, row) in dst.chunks_exact_mut(w).take(h).enumerate() {
        let start = r * stride;
        row.copy_from_slice(src.get(start..start + w).ok_or(CodecError::Malformed)?);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A decoded picture as OpenH264 hands it out: padded rows, possibly odd (cropped) size.
    struct Padded {
        dims: (usize, usize),
        strides: (usize, usize, usize),
        y: Vec<u8>,
        u: Vec<u8>,
        v: Vec<u8>,
    }

    impl YUVSource for Padded {
        fn dimensions(&self) -> (usize, usize) {
            self.dims
        }
        fn strides(&self) -> (usize, usize, usize) {
            self.strides
        }
        fn y(&self) -> &[u8] {
            &self.y
        }
        fn u(&self) -> &[u8] {
            &self.u
        }
        fn v(&self) -> &[u8] {
            &self.v
        }
    }

    fn padded(w: usize, h: usize, stride: usize) -> Padded {
        let cs = stride / 2;
        Padded {
            dims: (w, h),
            strides: (stride, cs, cs),
            y: (0..stride * h).map(|i| ((i % stride) + 3 * (i / stride)) as u8).collect(),
            u: (0..cs * h.div_ceil(2)).map(|i| (i % cs) as u8).collect(),
            v: (0..cs * h.div_ceil(2)).map(|i| (i / cs) as u8).collect(),
        }
    }

    #[test]
    fn copies_padded_pictures_and_resizes_only_on_change() {
        let pic = padded(64, 48, 96);
        let mut out = I420Frame::new(64, 48);
        let ptr = out.y.as_ptr();
        copy_picture(&pic, &mut out).unwrap();
        assert_eq!(out.y.as_ptr(), ptr, "same size: buffers reused");
        assert_eq!(out.y[5 * 64 + 7], (7 + 3 * 5) as u8);
        assert_eq!(out.u[4 * 32 + 9], 9);
        assert_eq!(out.v[4 * 32 + 9], 4);
        // A cropped odd size loses its last column and row; the frame is resized once.
        copy_picture(&padded(33, 25, 48), &mut out).unwrap();
        assert_eq!((out.width, out.height, out.y.len(), out.u.len(), out.v.len()), (32, 24, 768, 192, 192));
        assert_eq!(out.y[2 * 32 + 31], (31 + 6) as u8);
    }

    #[test]
    fn inconsistent_pictures_are_errors_not_panics() {
        let mut out = I420Frame::new(64, 48);
        let narrow = Padded { strides: (32, 16, 16), ..padded(64, 48, 64) };
        assert_eq!(copy_picture(&narrow, &mut out), Err(CodecError::Malformed));
        let mut short = padded(64, 48, 64);
        short.v.truncate(100);
        assert_eq!(copy_picture(&short, &mut out), Err(CodecError::Malformed));
        assert_eq!(copy_picture(&padded(1, 1, 16), &mut out), Err(CodecError::Malformed));
    }

    #[test]
    fn config_validation() {
        let ok = VideoEncoderConfig::default();
        assert!(ok.validate().is_ok());
        assert!(VideoEncoderConfig { width: 2160, height: 3840, ..ok }.validate().is_ok());
        assert!(VideoEncoderConfig { width: 3842, height: 2160, ..ok }.validate().is_err());
        assert!(VideoEncoderConfig { max_nal_len: MIN_NAL_LEN - 1, ..ok }.validate().is_err());
        assert!(VideoEncoderConfig { max_nal_len: MIN_NAL_LEN, ..ok }.validate().is_ok());
        assert!(VideoEncoderConfig { fps: 121, ..ok }.validate().is_err());
        assert_eq!(bitrate_bps(1000, 30), Ok(1_000_000));
        assert!(bitrate_bps(u32::MAX, 30).is_err());
        assert!(bitrate_bps(0, 30).is_err());
    }

    #[test]
    fn skipped_means_empty() {
        assert!(Encoded { len: 0, keyframe: false }.skipped());
        assert!(!Encoded { len: 10, keyframe: false }.skipped());
    }

    #[test]
    fn errors_display() {
        let e = CodecError::BufferTooSmall { needed: 2000, available: 1000 };
        assert_eq!(e.to_string(), "output buffer too small: 1000 available, 2000 needed");
        let e = CodecError::FrameSize { expected: (640, 480), got: (320, 240) };
        assert_eq!(e.to_string(), "frame is 320x240, codec expects 640x480");
        assert!(CodecError::Opus(::opus::ErrorCode::InvalidPacket).to_string().starts_with("libopus error: "));
    }
}
