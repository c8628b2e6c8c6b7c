//! Media: codec glue, and the sans-IO media transport (packetizer, frame assembly, jitter buffer,
//! retransmission, receiver reports, rate control).
pub mod codec;
