//! On-the-wire formats. Every datagram is at most `MAX_DATAGRAM` bytes and starts with a packet
//! type byte and a version byte. Decoders are total: malformed input is an `Err`, never a panic.
mod message;
mod packet;

pub use message::{CallId, EndReason, Message, PlainKind};
pub use packet::{
    DATA_HEADER_LEN, DecodeError, INIT_LEN, INIT_NOISE_LEN, MAX_DATAGRAM, Packet, PacketType, RESP_NOISE_LEN, VERSION,
};
