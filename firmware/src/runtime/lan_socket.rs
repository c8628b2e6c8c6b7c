//! The multicast socket for LAN beacons (`lan::LanDiscovery` decides what to send).
//!
//! `iface` is the IPv4 address of the interface to beacon on (`0.0.0.0`: the kernel's choice,
//! normally the default route's). Tests use `127.0.0.1`: on Linux that works on plain loopback,
//! with no root, no MULTICAST flag on `lo` and no route; nothing leaves the host.
use socket2::{Domain, Protocol, Socket, Type};
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

/// Opens a UDP socket that receives `group` on `iface` and sends to it (TTL 1: the LAN only).
/// Must be called inside a tokio runtime.
pub fn open(group: SocketAddrV4, iface: Ipv4Addr) -> io::Result<tokio::net::UdpSocket> {
    if !group.ip().is_multicast() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("{} is not a multicast group", group.ip())));
    }
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    // Several devices or processes on one host (tests, a desktop running two) share the port;
    // every one of them gets each multicast datagram.
    s.set_reuse_address(true)?;
    #[cfg(unix)]
    s.set_reuse_port(true)?;
    // On Linux, binding the group address delivers only that group's datagrams, not unicast to
    // the port. Other systems refuse it: bind the wildcard there.
    let bind_ip = if cfg!(target_os = "linux") { *group.ip() } else { Ipv4Addr::UNSPECIFIED };
    s.bind(&SocketAddr::V4(SocketAddrV4::new(bind_ip, group.port())).into())?;
    s.join_multicast_v4(group.ip(), &iface)?;
    s.set_multicast_if_v4(&iface)?;
    // Loop on, so two devices on one host hear each other; discovery drops its own beacons.
    s.set_multicast_loop_v4(true)?;
    s.set_multicast_ttl_v4(1)?;
    s.set_nonblocking(true)?;
    tokio::net::UdpSocket::from_std(s.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::DeviceKey;
    use crate::lan::beacon::MAX_LEN;
    use crate::lan::{LanConfig, LanDiscovery, LanEvent};
    use crate::util::rng::Rng;
    use std::time::{Duration, Instant};

    const LO: Ipv4Addr = Ipv4Addr::LOCALHOST;

    /// A group and port of this test run's own, so parallel runs (and a real device on
    /// 239.255.77.77:7601) don't see each other's datagrams.
    fn test_group(salt: u16) -> SocketAddrV4 {
        let port = 20_000 + (std::process::id() as u16 % 20_000) + salt;
        SocketAddrV4::new(Ipv4Addr::new(239, 255, 77, 78), port)
    }

    async fn recv_token(s: &tokio::net::UdpSocket, token: &[u8]) -> SocketAddr {
        let mut buf = [0u8; 64];
        let wait = async {
            loop {
                let (n, from) = s.recv_from(&mut buf).await.unwrap();
                if buf.get(..n) == Some(token) {
                    return from;
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(2), wait).await.expect("multicast datagram not received")
    }

    /// qemu-user (the aarch64 test run) does not emulate the multicast socket options
    /// (ENOPROTOOPT); there the socket tests are skipped, loudly. Any other error fails.
    fn open_or_skip(group: SocketAddrV4) -> Option<tokio::net::UdpSocket> {
        match open(group, LO) {
            Ok(s) => Some(s),
            Err(e) if e.raw_os_error() == Some(92) => {
                eprintln!("SKIPPED: multicast socket options unavailable here (qemu-user?): {e}");
                None
            }
            Err(e) => panic!("cannot open the LAN socket: {e}"),
        }
    }

    #[tokio::test]
    async fn two_sockets_on_one_host_exchange_multicast() {
        let group = test_group(0);
        let (Some(a), Some(b)) = (open_or_skip(group), open_or_skip(group)) else { return };
        let token = Rng::from_os().next_u64().to_le_bytes();
        a.send_to(&token, group).await.unwrap();
        let from = recv_token(&b, &token).await;
        assert_eq!(from.ip(), LO);
        assert_eq!(recv_token(&a, &token).await, from, "looped back to the sender too");
    }

    #[tokio::test]
    async fn refuses_a_unicast_group() {
        let err = open(SocketAddrV4::new(LO, 7601), LO).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }

    /// Two discovery machines over real sockets: each learns the other's call address.
    #[tokio::test]
    async fn two_devices_discover_each_other_over_loopback() {
        let group = test_group(1);
        let (ka, kb) = (DeviceKey::from_seed([1; 32]), DeviceKey::from_seed([2; 32]));
        let now = Instant::now();
        let (Some(sa), Some(sb)) = (open_or_skip(group), open_or_skip(group)) else { return };
        let mut nodes = [
            (LanDiscovery::new(&ka, &[kb.id()], 4001, LanConfig::default(), Rng::from_os(), now), sa),
            (LanDiscovery::new(&kb, &[ka.id()], 4002, LanConfig::default(), Rng::from_os(), now), sb),
        ];
        let mut found: [Option<LanEvent>; 2] = [None, None];
        let mut buf = [0u8; MAX_LEN];
        let deadline = Instant::now() + Duration::from_secs(3);
        while found.iter().any(Option::is_none) && Instant::now() < deadline {
            for (i, (d, s)) in nodes.iter_mut().enumerate() {
                while let Some(n) = d.poll_beacon(&mut buf) {
                    s.send_to(&buf[..n], group).await.unwrap();
                }
                if let Ok(Ok((n, from))) = tokio::time::timeout(Duration::from_millis(50), s.recv_from(&mut buf)).await
                {
                    d.handle_beacon(Instant::now(), from, &buf[..n]);
                }
                d.handle_timeout(Instant::now());
                if let Some(e) = d.poll_event() {
                    found[i] = Some(e);
                }
            }
        }
        let at = |port| SocketAddr::new(LO.into(), port);
        assert_eq!(found[0], Some(LanEvent::Found { device: kb.id(), addr: at(4002) }));
        assert_eq!(found[1], Some(LanEvent::Found { device: ka.id(), addr: at(4001) }));
    }
}
