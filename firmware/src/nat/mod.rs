//! NAT groundwork: our reflexive address from STUN servers, and the kind of NAT the call socket is behind.
pub mod classify;
pub mod portmap;
pub mod stun;
pub mod stun_client;

pub use classify::{NatClass, NatClassifier};
pub use stun_client::{StunClient, StunConfig, StunCounters, StunEvent};
