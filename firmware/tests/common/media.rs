//! A two-device call with real codecs over the device cores in virtual time (no sockets, no
//! threads): the harness behind the media allocation, quality and recovery tests.
#![allow(dead_code)]
use peercom::call::Phase;
use peercom::config::CallSettings;
use peercom::device::{Command, Device, Input};
use peercom::media::assembler::{FrameInfo, MAX_FRAME};
use peercom::media::codec::h264::{VideoDecoder, VideoEncoder, VideoEncoderConfig};
use peercom::media::codec::opus::{AudioDecoder, AudioEncoder};
use peercom::media::jitter::{JitterBuffer, JitterConfig, Playout};
use peercom::media::packet::FLAG_RETRANSMIT;
use peercom::session::EndpointConfig;
use peercom::sim::{key, sim_addr, sim_config};
use peercom::util::rng::Rng;
use peercom::wire::MAX_DATAGRAM;
use peercom_board::audio::block_len;
use peercom_board::camera::Camera;
use peercom_board::frame::I420Frame;
use peercom_board::sim::{SimCamera, SimMic};
use std::time::{Duration, Instant};

/// One device's media ends: camera, mic, codecs and jitter buffer, all buffers pre-sized.
pub struct Ends {
    pub cam: SimCamera,
    pub frame: I420Frame,
    pub enc: VideoEncoder,
    pub dec: VideoDecoder,
    pub shown: I420Frame,
    pub au: Vec<u8>,
    pub rx: Vec<u8>,
    pub pcm: Vec<i16>,
    pub out: Vec<i16>,
    pub aenc: AudioEncoder,
    pub adec: AudioDecoder,
    pub apkt: [u8; 1200],
    pub jb: JitterBuffer,
    pub decoded: u64,
    pub played: u64,
}

impl Ends {
    pub fn new() -> Ends {
        let cfg = VideoEncoderConfig { width: 640, height: 480, fps: 30, bitrate_kbps: 1000, ..Default::default() };
        Ends {
            cam: SimCamera::new(640, 480, 30),
            frame: I420Frame::new(640, 480),
            enc: VideoEncoder::new(&cfg).unwrap(),
            dec: VideoDecoder::new().unwrap(),
            shown: I420Frame::new(640, 480),
            au: vec![0; MAX_FRAME],
            rx: vec![0; MAX_FRAME],
            pcm: vec![0; block_len(20)],
            out: vec![0; block_len(20)],
            aenc: AudioEncoder::new(20, 32, 5).unwrap(),
            adec: AudioDecoder::new(20).unwrap(),
            apkt: [0; 1200],
            jb: JitterBuffer::new(JitterConfig::for_frame_ms(20)),
            decoded: 0,
            played: 0,
        }
    }
}

/// Sees every frame handed to a decoder: (side, info, access unit, decoded picture if any).
pub type OnFrame<'a> = dyn FnMut(usize, &FrameInfo, &[u8], Option<&I420Frame>) + 'a;

pub struct MediaCall {
    pub t0: Instant,
    pub now: Instant,
    pub devs: [Device; 2],
    pub ends: [Ends; 2],
    buf: [u8; MAX_DATAGRAM],
    rng: Rng,
    /// Datagrams are lost with this probability (parts per million) …
    pub loss_ppm: u32,
    /// … and all of them while this is true.
    pub blackout: bool,
    pub sent: u64,
    pub lost: u64,
}

impl MediaCall {
    /// A connected call between devices 1 and 2.
    pub fn new(seed: u64) -> MediaCall {
        let call = CallSettings::default();
        let t0 = Instant::now();
        let cfg = |n, name, peer| sim_config(n, name, &[(peer, Some(1), &[3 - n])], call);
        let devs = [
            Device::with_clock(&cfg(1, "A", "B"), key(1), EndpointConfig::default(), Rng::seeded(seed), t0),
            Device::with_clock(&cfg(2, "B", "A"), key(2), EndpointConfig::default(), Rng::seeded(seed + 1), t0),
        ];
        let mut c = MediaCall {
            t0,
            now: t0,
            devs,
            ends: [Ends::new(), Ends::new()],
            buf: [0; MAX_DATAGRAM],
            rng: Rng::seeded(seed + 2),
            loss_ppm: 0,
            blackout: false,
            sent: 0,
            lost: 0,
        };
        c.devs[0].handle_input(t0, Input::Command(Command::Press(1))).unwrap();
        c.shuttle();
        c.devs[1].handle_input(t0, Input::Command(Command::Answer)).unwrap();
        c.shuttle();
        assert_eq!((c.devs[0].phase(), c.devs[1].phase()), (Phase::InCall, Phase::InCall));
        c
    }

    fn shuttle(&mut self) {
        loop {
            let mut any = false;
            for i in 0..2 {
                while let Some(t) = self.devs[i].poll_transmit(&mut self.buf) {
                    let n = t.len;
                    any = true;
                    self.sent += 1;
                    let drop = self.blackout || (self.loss_ppm > 0 && self.rng.next_u32() % 1_000_000 < self.loss_ppm);
                    if drop {
                        self.lost += 1;
                        continue;
                    }
                    let from = sim_addr(i as u8 + 1);
                    self.devs[1 - i].handle_input(self.now, Input::Datagram { from, bytes: &self.buf[..n] }).ok();
                }
                while self.devs[i].poll_event().is_some() {}
            }
            if !any {
                return;
            }
        }
    }

    /// One millisecond of the call at `ms`: capture and encode (video every 33 ms, audio every
    /// 20 ms, both ways), timers, delivery, decoding and playout. `on_frame(side, info, access
    /// unit, decoded picture or None)` sees every frame handed to a decoder.
    pub fn tick(&mut self, ms: u64, on_frame: &mut OnFrame<'_>) {
        self.now = self.t0 + Duration::from_millis(ms);
        let now = self.now;
        for (d, e) in self.devs.iter_mut().zip(self.ends.iter_mut()) {
            let Some(m) = d.media() else { panic!("call dropped") };
            let us = m.micros(now);
            if ms % 33 == 0 && !m.congested() {
                e.cam.capture(us, &mut e.frame).unwrap();
                if m.take_keyframe_request(now) {
                    e.enc.force_keyframe();
                }
                let target = (m.target_bps() / 1000) as u32;
                e.enc.set_bitrate(target).unwrap();
                let r = e.enc.encode(&e.frame, &mut e.au).unwrap();
                if r.len > 0 {
                    m.push_video(now, us, r.keyframe, &e.au[..r.len]);
                }
            }
            if ms % 20 == 0 {
                SimMic::render(us.saturating_sub(20_000), &mut e.pcm);
                let n = e.aenc.encode(&e.pcm, &mut e.apkt).unwrap();
                m.push_audio(us.saturating_sub(20_000), &e.apkt[..n]);
            }
        }
        for d in self.devs.iter_mut() {
            if d.poll_timeout().is_some_and(|t| t <= now) {
                d.handle_input(now, Input::Timeout).ok();
            }
        }
        self.shuttle();
        for (side, (d, e)) in self.devs.iter_mut().zip(self.ends.iter_mut()).enumerate() {
            let m = d.media().unwrap();
            let us = m.micros(now);
            while let Some(f) = m.poll_video_frame(now, &mut e.rx) {
                let ok = e.dec.decode(&e.rx[..f.len], &mut e.shown).unwrap_or(false);
                e.decoded += u64::from(ok);
                on_frame(side, &f, &e.rx[..f.len], ok.then_some(&e.shown));
            }
            while let Some((h, n)) = m.poll_audio(&mut e.apkt) {
                e.jb.push(us, h.seq, h.capture_us, h.flags & FLAG_RETRANSMIT != 0, &e.apkt[..n]);
            }
            if ms % 20 == 0 {
                let r = match e.jb.pop(us) {
                    Playout::Packet(p) => e.adec.decode(p, &mut e.out),
                    Playout::Fec(p) => e.adec.decode_fec(p, &mut e.out),
                    Playout::Conceal | Playout::Stretch => e.adec.conceal(&mut e.out),
                    Playout::Silence => Ok(0),
                };
                e.played += u64::from(r.unwrap_or(0) > 0);
            }
        }
    }
}
