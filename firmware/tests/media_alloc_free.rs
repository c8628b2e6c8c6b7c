//! Fixed memory on the media path: after warm-up, a two-way call moving real H.264 and Opus
//! (camera → encode → packetize → encrypt → decrypt → reassemble → decode, and mic → encode → …
//! → jitter buffer → decode) makes no Rust heap allocation per frame. A counting global
//! allocator (this thread only) proves it; the codecs' own C allocations are not counted.
#[path = "common/media.rs"]
mod media_call;
use media_call::MediaCall;
use peercom::media::assembler::FrameInfo;
use peercom_board::frame::I420Frame;

#[path = "common/counting_alloc.rs"]
mod counting_alloc;
use counting_alloc::allocs;

#[global_allocator]
static GLOBAL: counting_alloc::Counting = counting_alloc::Counting;

#[test]
fn media_path_allocates_nothing_per_frame() {
    let mut c = MediaCall::new(1);
    let mut ignore = |_: usize, _: &FrameInfo, _: &[u8], _: Option<&I420Frame>| {};
    // Warm-up: 2 s (codecs settle, rate control ramps, every pool and queue is touched).
    for ms in 0..2_000 {
        c.tick(ms, &mut ignore);
    }
    let before = allocs();
    let decoded_before = c.ends[0].decoded + c.ends[1].decoded;
    for ms in 2_000..12_000 {
        c.tick(ms, &mut ignore);
    }
    let n = allocs() - before;
    let decoded = c.ends[0].decoded + c.ends[1].decoded - decoded_before;
    assert!(decoded >= 600, "{decoded} frames decoded (300 per direction)");
    assert!(c.ends[0].played > 400 && c.ends[1].played > 400);
    assert_eq!(n, 0, "{n} allocations over {decoded} decoded frames");
}
