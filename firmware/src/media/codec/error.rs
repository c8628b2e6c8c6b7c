use std::fmt;

/// Errors of the codec glue. Building one never allocates, so error paths stay allocation-free too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodecError {
    /// A setting out of range (ours or the codec library's).
    Config(&'static str),
    /// A video frame whose dimensions or plane lengths do not match the codec's.
    FrameSize { expected: (usize, usize), got: (usize, usize) },
    /// A PCM block that is not exactly one frame long (samples).
    PcmLen { expected: usize, got: usize },
    /// The caller's output buffer is too small; `needed` is a size that suffices (bytes or samples).
    BufferTooSmall { needed: usize, available: usize },
    /// Input the codec cannot take at all (empty, oversized).
    Malformed,
    /// OpenH264 failed; the code is its return value or decoding-state flags.
    H264(i64),
    /// libopus failed.
    Opus(::opus::ErrorCode),
}

impl fmt::Display for CodecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CodecError::Config(what) => write!(f, "codec configuration: {what}"),
            CodecError::FrameSize { expected, got } => {
                write!(f, "frame is {}x{}, codec expects {}x{}", got.0, got.1, expected.0, expected.1)
            }
            CodecError::PcmLen { expected, got } => write!(f, "PCM block has {got} samples, frame is {expected}"),
            CodecError::BufferTooSmall { needed, available } => {
                write!(f, "output buffer too small: {available} available, {needed} needed")
            }
            CodecError::Malformed => f.write_str("malformed codec input"),
            CodecError::H264(code) => write!(f, "OpenH264 error (code {code:#x})"),
            CodecError::Opus(code) => write!(f, "libopus error: {}", code.description()),
        }
    }
}

impl std::error::Error for CodecError {}

impl From<::opus::Error> for CodecError {
    fn from(e: ::opus::Error) -> Self {
        CodecError::Opus(e.code())
    }
}

impl From<openh264::Error> for CodecError {
    fn from(e: openh264::Error) -> Self {
        CodecError::H264(e.native_code())
    }
}
