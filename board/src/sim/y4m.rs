//! A sim camera that plays a YUV4MPEG2 file (e.g. ffmpeg's `testsrc2`) in a loop, so that a
//! benchmark encodes the same picture another intercom plays from the same file (baresip's
//! avformat module). Frames are read straight into the caller's buffer, one at a time: the file
//! may be longer than memory.
use crate::camera::{Camera, pack_stamp};
use crate::frame::I420Frame;
use crate::{BoardError, stamp};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::Path;

/// Longest header or frame-header line accepted (real ones are under 100 bytes).
const MAX_LINE: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub width: usize,
    pub height: usize,
    /// Frames per second, rounded (`F30000:1001` is 30).
    pub fps: u32,
}

/// Parses a stream header line (without its newline). Only 4:2:0 is accepted: it is what the
/// encoder takes, so nothing is converted.
pub fn parse_header(line: &[u8]) -> Result<Header, String> {
    let text = std::str::from_utf8(line).map_err(|_| "header is not text".to_string())?;
    let mut words = text.split(' ');
    if words.next() != Some("YUV4MPEG2") {
        return Err("not a YUV4MPEG2 file".into());
    }
    let (mut w, mut h, mut fps) = (None, None, 30u32);
    for word in words.filter(|w| !w.is_empty()) {
        // Tags are one ASCII letter; a word may start with anything (found by the fuzz target).
        let mut chars = word.chars();
        let tag = chars.next();
        let val = chars.as_str();
        match tag {
            Some('W') => w = val.parse::<usize>().ok(),
            Some('H') => h = val.parse::<usize>().ok(),
            Some('F') => {
                let (n, d) = val.split_once(':').ok_or(format!("bad frame rate {val}"))?;
                let (n, d) = (n.parse::<u64>().ok(), d.parse::<u64>().ok());
                match (n, d) {
                    (Some(n), Some(d)) if d > 0 && n > 0 && n / d <= 240 => fps = ((n + d / 2) / d).max(1) as u32,
                    _ => return Err(format!("bad frame rate {val}")),
                }
            }
            Some('C') if !val.starts_with("420") => return Err(format!("colour space C{val}: only 4:2:0 is played")),
            Some('I') if val != "p" && val != "?" => {
                return Err(format!("interlaced (I{val}): only progressive is played"));
            }
            _ => {}
        }
    }
    match (w, h) {
        (Some(w), Some(h)) if w > 0 && h > 0 && w % 2 == 0 && h % 2 == 0 && w <= 4096 && h <= 4096 => {
            Ok(Header { width: w, height: h, fps })
        }
        _ => Err("missing or bad size (W and H: even, 2..4096)".into()),
    }
}

/// Reads one line of at most `MAX_LINE` bytes; None at a clean end of file.
fn read_line<R: BufRead>(r: &mut R, buf: &mut Vec<u8>) -> Result<Option<()>, String> {
    buf.clear();
    let n = r.take(MAX_LINE as u64 + 1).read_until(b'\n', buf).map_err(|e| e.to_string())?;
    if n == 0 {
        return Ok(None);
    }
    if buf.pop() != Some(b'\n') {
        return Err("line too long or cut off".into());
    }
    Ok(Some(()))
}

/// The frames of a YUV4MPEG2 stream, from any reader that can go back to the start.
pub struct Y4mReader<R> {
    r: R,
    header: Header,
    /// Where the first frame starts, to loop back to.
    data_at: u64,
    line: Vec<u8>,
}

impl<R: BufRead + Seek> Y4mReader<R> {
    pub fn new(mut r: R) -> Result<Self, String> {
        let mut line = Vec::with_capacity(128);
        read_line(&mut r, &mut line)?.ok_or("empty file")?;
        let header = parse_header(&line)?;
        let data_at = r.stream_position().map_err(|e| e.to_string())?;
        Ok(Y4mReader { r, header, data_at, line })
    }

    pub fn header(&self) -> Header {
        self.header
    }

    /// Reads the next frame into `f` (which must be the stream's size), starting over at the end.
    pub fn next_frame(&mut self, f: &mut I420Frame) -> Result<(), String> {
        let (w, h) = (self.header.width, self.header.height);
        if (f.width, f.height) != (w, h) {
            return Err(format!("frame buffer is {}x{}, file is {w}x{h}", f.width, f.height));
        }
        for attempt in 0..2 {
            if read_line(&mut self.r, &mut self.line)?.is_some() {
                break;
            }
            if attempt == 1 {
                return Err("no frames".into());
            }
            self.r.seek(SeekFrom::Start(self.data_at)).map_err(|e| e.to_string())?;
        }
        if !self.line.starts_with(b"FRAME") {
            return Err("expected FRAME".into());
        }
        for plane in [&mut f.y, &mut f.u, &mut f.v] {
            self.r.read_exact(plane).map_err(|e| format!("frame cut off: {e}"))?;
        }
        Ok(())
    }
}

pub struct Y4mCamera {
    frames: Y4mReader<BufReader<std::fs::File>>,
    fps: u32,
    seq: u64,
}

impl Y4mCamera {
    /// Opens `path`; its size must be `width`x`height` (the configured video size).
    pub fn open(path: &Path, width: usize, height: usize, fps: u32) -> Result<Self, BoardError> {
        let file = std::fs::File::open(path).map_err(|e| BoardError(format!("{}: {e}", path.display())))?;
        let frames = Y4mReader::new(BufReader::with_capacity(1 << 16, file))
            .map_err(|e| BoardError(format!("{}: {e}", path.display())))?;
        let hd = frames.header();
        if (hd.width, hd.height) != (width, height) {
            return Err(BoardError(format!(
                "{}: the file is {}x{}, the video is configured {width}x{height}",
                path.display(),
                hd.width,
                hd.height
            )));
        }
        Ok(Y4mCamera { frames, fps: fps.max(1), seq: 0 })
    }
}

impl Camera for Y4mCamera {
    fn size(&self) -> (usize, usize) {
        (self.frames.header.width, self.frames.header.height)
    }

    fn fps(&self) -> u32 {
        self.fps
    }

    fn capture(&mut self, now_us: u64, f: &mut I420Frame) -> Result<(), BoardError> {
        self.frames.next_frame(f).map_err(BoardError)?;
        f.seq = self.seq;
        f.captured_us = now_us;
        // The stamp glass-to-glass is measured by, over the corner of the picture.
        stamp::write(f, pack_stamp(self.seq, now_us));
        self.seq += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn file(w: usize, h: usize, frames: u8) -> Vec<u8> {
        let mut v = format!("YUV4MPEG2 W{w} H{h} F30000:1001 Ip A1:1 C420jpeg XYSCSS=420JPEG\n").into_bytes();
        for k in 0..frames {
            v.extend_from_slice(b"FRAME\n");
            v.extend(std::iter::repeat_n(k, w * h * 3 / 2));
        }
        v
    }

    #[test]
    fn frames_play_in_order_and_loop() {
        let mut r = Y4mReader::new(Cursor::new(file(4, 2, 3))).unwrap();
        assert_eq!(r.header(), Header { width: 4, height: 2, fps: 30 });
        let mut f = I420Frame::new(4, 2);
        let firsts: Vec<u8> = (0..7)
            .map(|_| {
                r.next_frame(&mut f).unwrap();
                f.y[0]
            })
            .collect();
        assert_eq!(firsts, [0, 1, 2, 0, 1, 2, 0]);
    }

    #[test]
    fn bad_files_are_errors_with_a_reason() {
        for (text, why) in [
            (&b"YUV4MPEG2 W640 H480 C444\n"[..], "4:2:0"),
            (b"YUV4MPEG2 W641 H480\n", "size"),
            (b"YUV4MPEG2 H480\n", "size"),
            (b"YUV4MPEG2 W640 H480 F30:0\n", "frame rate"),
            (b"YUV4MPEG2 W640 H480 It\n", "progressive"),
            (b"RIFF", "line"),
            (b"", "empty"),
        ] {
            let e = Y4mReader::new(Cursor::new(text.to_vec())).err().unwrap_or_default();
            assert!(e.contains(why), "{:?}: {e}", String::from_utf8_lossy(text));
        }
        // Unknown tags are skipped, whatever letter they start with (the fuzz target's find).
        assert_eq!(parse_header("YUV4MPEG2 W4 H2 \u{5f9}-:(0:1".as_bytes()).map(|h| h.width), Ok(4));
        // A header with no frames, and a frame cut off.
        let mut r = Y4mReader::new(Cursor::new(b"YUV4MPEG2 W2 H2\n".to_vec())).unwrap();
        assert!(r.next_frame(&mut I420Frame::new(2, 2)).unwrap_err().contains("no frames"));
        let mut cut = file(2, 2, 1);
        cut.pop();
        let mut r = Y4mReader::new(Cursor::new(cut)).unwrap();
        assert!(r.next_frame(&mut I420Frame::new(2, 2)).unwrap_err().contains("cut off"));
        let mut r = Y4mReader::new(Cursor::new(file(2, 2, 1))).unwrap();
        assert!(r.next_frame(&mut I420Frame::new(4, 2)).is_err());
    }
}
