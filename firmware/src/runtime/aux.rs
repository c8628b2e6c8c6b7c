//! The device's extra ("aux") UDP sockets: a birthday punch asks for up to `MAX_AUX` of them
//! (`Device::poll_aux`), then keeps at most one, which carries the call when the punch found a
//! path. All are read from the device loop itself: `recv` polls every open socket in one future
//! (no task, channel or allocation per packet).
use crate::device::{Aux, MAX_AUX};
use crate::log;
use crate::session::Sock;
use std::future::poll_fn;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::task::Poll;
use tokio::io::ReadBuf;
use tokio::net::UdpSocket;

pub struct AuxSockets {
    /// Aux sockets bind to the main socket's IP (unspecified: every interface), any port.
    ip: IpAddr,
    /// Socket n at index n - 1.
    socks: Vec<Option<UdpSocket>>,
}

impl AuxSockets {
    pub fn new(main: SocketAddr) -> Self {
        let ip = match main.ip() {
            ip if !ip.is_unspecified() => ip,
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        };
        AuxSockets { ip, socks: (0..MAX_AUX).map(|_| None).collect() }
    }

    /// Opens or closes a socket as the device asked. A socket that cannot be opened is logged
    /// and left out: the punch has one mapping fewer.
    pub fn apply(&mut self, name: &str, change: Aux) {
        let (n, open) = match change {
            Aux::Open(n) => (n, true),
            Aux::Close(n) => (n, false),
        };
        let Some(slot) = usize::from(n).checked_sub(1).and_then(|i| self.socks.get_mut(i)) else { return };
        if !open {
            *slot = None;
            return;
        }
        if slot.is_none() {
            let bound = std::net::UdpSocket::bind(SocketAddr::new(self.ip, 0))
                .and_then(|s| s.set_nonblocking(true).map(|_| s))
                .and_then(UdpSocket::from_std);
            match bound {
                Ok(s) => *slot = Some(s),
                Err(e) => log!("{name}: cannot open aux socket {n}: {e}"),
            }
        }
    }

    /// Where socket `sock` is bound, while it is open.
    #[cfg(test)]
    pub fn local_addr(&self, sock: Sock) -> Option<SocketAddr> {
        self.get(sock)?.local_addr().ok()
    }

    fn get(&self, sock: Sock) -> Option<&UdpSocket> {
        usize::from(sock).checked_sub(1).and_then(|i| self.socks.get(i)).and_then(Option::as_ref)
    }

    pub async fn send_to(&self, sock: Sock, bytes: &[u8], dst: SocketAddr) -> io::Result<usize> {
        match self.get(sock) {
            Some(s) => s.send_to(bytes, dst).await,
            None => Err(io::ErrorKind::NotConnected.into()),
        }
    }

    /// The next datagram on any open aux socket: (its socket number, length, source). Pending
    /// forever while none is open.
    pub async fn recv(&self, buf: &mut [u8]) -> (Sock, io::Result<(usize, SocketAddr)>) {
        poll_fn(|cx| {
            for (i, s) in self.socks.iter().enumerate() {
                let Some(s) = s else { continue };
                let mut rb = ReadBuf::new(&mut *buf);
                if let Poll::Ready(r) = s.poll_recv_from(cx, &mut rb) {
                    let n = rb.filled().len();
                    return Poll::Ready(((i + 1) as Sock, r.map(|from| (n, from))));
                }
            }
            Poll::Pending
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn opens_receives_on_sends_from_and_closes_aux_sockets() {
        let mut aux = AuxSockets::new("127.0.0.1:0".parse().unwrap());
        for n in [1, 2, MAX_AUX as Sock] {
            aux.apply("test", Aux::Open(n));
        }
        aux.apply("test", Aux::Open(0));
        aux.apply("test", Aux::Open(MAX_AUX as Sock + 1));
        let peer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let mut buf = [0u8; 64];
        for n in [2, MAX_AUX as Sock, 1] {
            let at = aux.local_addr(n).expect("open");
            assert_eq!(at.ip(), IpAddr::V4(Ipv4Addr::LOCALHOST));
            peer.send_to(&[n as u8], at).await.unwrap();
            let (sock, r) = aux.recv(&mut buf).await;
            let (len, from) = r.unwrap();
            assert_eq!((sock, &buf[..len], from), (n, &[n as u8][..], peer.local_addr().unwrap()));
            // And back, from that socket.
            aux.send_to(n, b"hi", peer.local_addr().unwrap()).await.unwrap();
            let (len, from) = peer.recv_from(&mut buf).await.unwrap();
            assert_eq!((&buf[..len], from), (&b"hi"[..], at));
        }
        let at = aux.local_addr(2).unwrap();
        aux.apply("test", Aux::Close(2));
        assert!(aux.local_addr(2).is_none() && aux.send_to(2, b"x", at).await.is_err());
        for n in [1, MAX_AUX as Sock] {
            aux.apply("test", Aux::Close(n));
        }
        // Nothing open: nothing to receive, ever.
        let idle = tokio::time::timeout(Duration::from_millis(50), aux.recv(&mut buf)).await;
        assert!(idle.is_err());
    }
}
