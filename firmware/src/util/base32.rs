//! RFC 4648 base32, lower case, no padding. Chosen for device IDs: case-insensitive, no symbols,
//! survives being read aloud or typed from a display.
const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

pub fn encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(5) * 8);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for &b in data {
        acc = (acc << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(ALPHABET[((acc >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((acc << (5 - bits)) & 31) as usize] as char);
    }
    out
}

/// Decodes into `out`; returns the number of bytes, or the index of the first bad character.
pub fn decode(text: &str, out: &mut [u8]) -> Result<usize, usize> {
    let mut acc: u32 = 0;
    let mut bits = 0;
    let mut n = 0;
    for (i, c) in text.bytes().enumerate() {
        let v = match c {
            b'a'..=b'z' => c - b'a',
            b'A'..=b'Z' => c - b'A',
            b'2'..=b'7' => c - b'2' + 26,
            _ => return Err(i),
        };
        acc = (acc << 5) | u32::from(v);
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            if n >= out.len() {
                return Err(i);
            }
            out[n] = (acc >> bits) as u8;
            n += 1;
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn rfc4648_vectors() {
        assert_eq!(encode(b"foobar"), "mzxw6ytboi");
        assert_eq!(encode(b"f"), "my");
        let mut buf = [0u8; 8];
        let n = decode("MZXW6YTBOI", &mut buf).unwrap();
        assert_eq!(&buf[..n], b"foobar");
        assert_eq!(decode("mz!", &mut buf), Err(2));
    }
}
