//! Secure sessions: Noise IK handshakes (snow) and the ChaCha20-Poly1305 transport with
//! counter nonces, a replay window and a one-way key ratchet. `Endpoint` is the sans-IO core.
pub mod cookie;
mod endpoint;
mod handshake;
mod replay;
mod transport;

pub use endpoint::{
    Counters, Endpoint, EndpointConfig, MAIN_SOCK, PATH_STALE, PathClass, SessionEvent, Sock, Transmit,
};
pub use replay::ReplayWindow;
pub use transport::{EPOCH_PACKETS, MAX_PLAINTEXT, Transport};
