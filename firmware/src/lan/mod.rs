//! LAN discovery: contacts on the same LAN find each other with no internet and no bootstrap
//! node. Each device multicasts small beacons whose tags only its contacts can recognise
//! (`beacon`); `discovery` is the sans-IO state machine, `runtime::lan_socket` the socket.
pub mod beacon;
pub mod discovery;

pub use discovery::{DEFAULT_GROUP, LanConfig, LanCounters, LanDiscovery, LanEvent};
