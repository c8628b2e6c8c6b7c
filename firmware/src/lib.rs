//! peercom: a peer-to-peer video intercom. Protocol logic lives in sans-IO state machines
//! (`session`, `call`, `device`); `runtime` drives them with real sockets and clocks.
pub mod bench;
pub mod call;
pub mod cli;
pub mod config;
pub mod device;
pub mod dht;
pub mod identity;
pub mod lan;
pub mod media;
pub mod nat;
pub mod runtime;
pub mod session;
pub mod sim;
pub mod ui;
pub mod util;
pub mod wire;
