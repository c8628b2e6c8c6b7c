//! Both wire decoders on the same bytes: they must never panic, and what they accept must
//! re-encode to what was read.
#![no_main]
use libfuzzer_sys::fuzz_target;
use peercom::wire::{DATA_HEADER_LEN, MAX_DATAGRAM, Message, Packet};

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = Packet::decode(data) {
        assert!(data.len() <= MAX_DATAGRAM);
        let mut h = [0u8; DATA_HEADER_LEN];
        let n = match p {
            Packet::HandshakeInit { sender, .. } => Packet::write_init_header(&mut h, sender),
            Packet::HandshakeResp { sender, receiver, .. } => Packet::write_resp_header(&mut h, sender, receiver),
            Packet::CookieReply { receiver, nonce, sealed } => {
                assert_eq!(6 + nonce.len() + sealed.len(), data.len());
                Packet::write_cookie_header(&mut h, receiver)
            }
            Packet::Data { receiver, epoch, counter, header, ciphertext } => {
                assert_eq!(header.len() + ciphertext.len(), data.len());
                Packet::write_data_header(&mut h, receiver, epoch, counter)
            }
        };
        assert_eq!(&h[..n], &data[..n], "header does not round-trip");
    }
    if let Some(m) = Message::decode(data) {
        let mut b = [0u8; 64];
        let n = m.encode(&mut b).expect("a decoded message must encode");
        assert_eq!(Message::decode(&b[..n]), Some(m));
    }
});
