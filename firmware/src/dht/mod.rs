//! Finding devices without a server: a Kademlia DHT of peercom devices (docs/research/dht-plan.md).
pub mod announce;
pub mod blind;
pub mod hold;
pub mod id;
pub mod lookup;
pub mod message;
pub mod node;
pub mod ratelimit;
pub mod record;
pub mod relay;
pub mod rendezvous;
pub mod routing;
pub mod sim;
pub mod store;
pub mod token;
