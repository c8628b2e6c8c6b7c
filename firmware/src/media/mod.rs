//! Media: codec glue, and the sans-IO media transport (packetizer, frame assembly, jitter buffer,
//! retransmission, receiver reports, rate control).
pub mod assembler;
pub mod codec;
pub mod delay;
pub mod history;
pub mod jitter;
pub mod loss;
pub mod packet;
pub mod rate;
pub mod sender;
pub mod session;
pub mod sync;
