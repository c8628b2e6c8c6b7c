//! Codec glue: H.264 (openh264) and Opus, encoding into and decoding from caller-owned buffers.
mod error;
pub mod h264;
pub mod opus;

pub use self::error::CodecError;
pub use self::h264::{Complexity, Encoded, VideoDecoder, VideoEncoder, VideoEncoderConfig};
pub use self::opus::{AudioDecoder, AudioEncoder};
