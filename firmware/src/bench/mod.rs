//! Benchmarks (`peercom bench …`): each prints one JSON object.
pub mod dht;
pub mod flood;
pub mod handshake;
pub mod media;
pub mod pair;
pub mod relay;
pub mod stats;
