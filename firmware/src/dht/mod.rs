//! Finding devices without a server: a Kademlia DHT of peercom devices (docs/research/dht-plan.md).
pub mod blind;
