//! The sim camera's YUV4MPEG2 reader on arbitrary bytes: errors, never a panic, and a frame
//! read only when the whole of it was there.
#![no_main]
use libfuzzer_sys::fuzz_target;
use peercom_board::frame::I420Frame;
use peercom_board::sim::y4m::Y4mReader;
use std::io::Cursor;

fuzz_target!(|data: &[u8]| {
    let Ok(mut r) = Y4mReader::new(Cursor::new(data)) else { return };
    let h = r.header();
    // Large sizes parse, but allocating their frames would only slow the fuzzer down.
    if h.width * h.height > 1 << 16 {
        return;
    }
    let mut f = I420Frame::new(h.width, h.height);
    for _ in 0..4 {
        if r.next_frame(&mut f).is_err() {
            break;
        }
        assert!(data.len() >= h.width * h.height * 3 / 2);
    }
});
