//! Benchmarks (`peercom bench …`): each prints one JSON object.
pub mod handshake;
pub mod pair;
pub mod stats;
