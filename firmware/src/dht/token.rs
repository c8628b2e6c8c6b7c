//! Address tokens (BEP 5): a keyed hash of the requester's address under a secret that rotates.
//! Holding one proves the holder receives datagrams at that address, so a reply larger than its
//! request, or a store, is never sent on behalf of a spoofed source.
use super::message::Token;
use blake2::Blake2sMac;
use blake2::digest::Mac;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

pub struct Tokens {
    secrets: [[u8; 32]; 2],
    rotated: Instant,
    every: Duration,
}

impl Tokens {
    pub fn new(rng: &mut crate::util::rng::Rng, now: Instant, every: Duration) -> Self {
        Tokens { secrets: [secret(rng), secret(rng)], rotated: now, every }
    }

    /// Rotates when due: a token stays valid for one to two periods.
    pub fn tick(&mut self, now: Instant, rng: &mut crate::util::rng::Rng) {
        if now.saturating_duration_since(self.rotated) >= self.every {
            self.secrets[1] = self.secrets[0];
            self.secrets[0] = secret(rng);
            self.rotated = now;
        }
    }

    pub fn next_rotation(&self) -> Instant {
        self.rotated + self.every
    }

    pub fn mint(&self, addr: &SocketAddr) -> Token {
        mac(&self.secrets[0], addr)
    }

    pub fn valid(&self, addr: &SocketAddr, token: &Token) -> bool {
        // Not constant-time: a token guards against spoofing, not against a timing oracle on our
        // own secret, and the secret rotates.
        self.secrets.iter().any(|s| mac(s, addr) == *token)
    }
}

fn secret(rng: &mut crate::util::rng::Rng) -> [u8; 32] {
    let mut s = [0u8; 32];
    for c in s.chunks_mut(8) {
        c.copy_from_slice(&rng.next_u64().to_le_bytes());
    }
    s
}

fn mac(secret: &[u8; 32], addr: &SocketAddr) -> Token {
    let Ok(mut m) = <Blake2sMac<blake2::digest::consts::U8> as Mac>::new_from_slice(secret) else { return [0; 8] };
    match addr.ip() {
        std::net::IpAddr::V4(ip) => m.update(&ip.octets()),
        std::net::IpAddr::V6(ip) => m.update(&ip.octets()),
    }
    m.update(&addr.port().to_le_bytes());
    m.finalize().into_bytes().into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::rng::Rng;

    #[test]
    fn valid_for_its_address_through_one_rotation() {
        let mut rng = Rng::seeded(1);
        let t0 = Instant::now();
        let every = Duration::from_secs(600);
        let mut t = Tokens::new(&mut rng, t0, every);
        let a: SocketAddr = "198.51.100.1:7600".parse().unwrap();
        let b: SocketAddr = "198.51.100.2:7600".parse().unwrap();
        let tok = t.mint(&a);
        assert!(t.valid(&a, &tok));
        assert!(!t.valid(&b, &tok));
        t.tick(t0 + every, &mut rng);
        assert!(t.valid(&a, &tok), "previous secret still accepted");
        t.tick(t0 + 2 * every, &mut rng);
        assert!(!t.valid(&a, &tok), "two rotations later it has expired");
    }
}
