//! RGB888 images as PNG files: screenshots of the display and the UI's golden test images.
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

fn invalid(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
}

/// Writes a `w`×`h` RGB888 image atomically: a temp file in the same directory, fsync, rename,
/// so a reader (or a power cut) sees the old file or the new one, never half of one.
pub fn write_rgb(path: impl AsRef<Path>, w: usize, h: usize, rgb: &[u8]) -> io::Result<()> {
    let path = path.as_ref();
    let (Ok(w32), Ok(h32)) = (u32::try_from(w), u32::try_from(h)) else {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "image too large"));
    };
    if w == 0 || h == 0 || w.checked_mul(h).and_then(|n| n.checked_mul(3)) != Some(rgb.len()) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} bytes is not a {w}x{h} RGB image", rgb.len()),
        ));
    }
    let mut data = Vec::new();
    {
        let mut enc = ::png::Encoder::new(&mut data, w32, h32);
        enc.set_color(::png::ColorType::Rgb);
        enc.set_depth(::png::BitDepth::Eight);
        // Screens are mostly flat colour: the better compression keeps golden files at a few kB.
        enc.set_compression(::png::Compression::High);
        let mut writer = enc.write_header().map_err(io::Error::other)?;
        writer.write_image_data(rgb).map_err(io::Error::other)?;
        writer.finish().map_err(io::Error::other)?;
    }

    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let name = path.file_name().ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?;
    // pid + counter: threads of one process (parallel tests) never share a temp file.
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let tmp = dir.join(format!(
        ".{}.tmp{}-{}",
        name.to_string_lossy(),
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| {
        let mut f = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
        f.write_all(&data)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Reads an 8-bit RGB PNG as (width, height, pixels); any other format is an error.
pub fn read_rgb(path: impl AsRef<Path>) -> io::Result<(usize, usize, Vec<u8>)> {
    let file = BufReader::new(File::open(path)?);
    let mut reader = ::png::Decoder::new(file).read_info().map_err(invalid)?;
    let (color, depth) = reader.output_color_type();
    if color != ::png::ColorType::Rgb || depth != ::png::BitDepth::Eight {
        return Err(invalid(format!("not an 8-bit RGB PNG ({color:?}, {depth:?})")));
    }
    let size = reader.output_buffer_size().ok_or_else(|| invalid("image too large"))?;
    let mut buf = vec![0; size];
    let info = reader.next_frame(&mut buf).map_err(invalid)?;
    let (w, h) = (info.width as usize, info.height as usize);
    buf.truncate(w * h * 3);
    Ok((w, h, buf))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn testdir(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("peercom-board-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn round_trip_and_rejects_other_formats() {
        let dir = testdir("png");
        let p = dir.join("a.png");
        let img: Vec<u8> = (0..5 * 3 * 3).map(|i| (i * 7) as u8).collect();
        write_rgb(&p, 5, 3, &img).unwrap();
        assert_eq!(read_rgb(&p).unwrap(), (5, 3, img.clone()));
        // Overwrite in place; no temp files left behind.
        write_rgb(&p, 1, 1, &[1, 2, 3]).unwrap();
        assert_eq!(read_rgb(&p).unwrap(), (1, 1, vec![1, 2, 3]));
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 1);
        // Wrong sizes are refused.
        assert!(write_rgb(&p, 2, 2, &[0; 11]).is_err());
        assert!(write_rgb(&p, 0, 0, &[]).is_err());
        // A grey PNG is not RGB.
        let g = dir.join("g.png");
        let mut data = Vec::new();
        let mut enc = ::png::Encoder::new(&mut data, 2, 2);
        enc.set_color(::png::ColorType::Grayscale);
        enc.write_header().unwrap().write_image_data(&[0; 4]).unwrap();
        fs::write(&g, &data).unwrap();
        assert_eq!(read_rgb(&g).unwrap_err().kind(), io::ErrorKind::InvalidData);
        // Garbage is an error, not a panic.
        fs::write(&g, b"\x89PNG\r\n\x1a\nnonsense").unwrap();
        assert!(read_rgb(&g).is_err());
        let _ = fs::remove_dir_all(&dir);
    }
}
