//! Thin tokio drivers around the sans-IO device core: a UDP socket, timers, the board, and the
//! local control socket.
mod aux;
pub mod control;
mod driver;
mod indicators;
pub mod lan_socket;
pub mod media;
pub mod node;
pub mod node_state;
pub mod portmap;
pub mod protocol;
mod realtime;

pub use driver::{DeviceHandle, Notice, resolve_bootstrap, start};
