//! Key file: two text lines, a header and the 32-byte Ed25519 seed in hex. Mode 0600, written
//! atomically, never overwritten without `force`.
use super::DeviceKey;
use crate::util::atomic_write::write_atomic;
use std::fmt;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

const HEADER: &str = "# peercom device key v1 - secret, keep mode 0600";

#[derive(Debug)]
pub enum KeyFileError {
    Exists,
    Io(io::Error),
    Format(&'static str),
    TooOpen(u32),
}

impl fmt::Display for KeyFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyFileError::Exists => write!(f, "key file exists; use --force to replace it (the old identity is lost)"),
            KeyFileError::Io(e) => write!(f, "{e}"),
            KeyFileError::Format(why) => write!(f, "not a peercom key file: {why}"),
            KeyFileError::TooOpen(m) => write!(f, "key file is readable by others (mode {m:o}); run chmod 600"),
        }
    }
}

impl std::error::Error for KeyFileError {}

pub fn generate_key_file(path: &Path, force: bool) -> Result<DeviceKey, KeyFileError> {
    if !force && path.exists() {
        return Err(KeyFileError::Exists);
    }
    let key = DeviceKey::generate().map_err(KeyFileError::Io)?;
    let mut text = String::with_capacity(HEADER.len() + 66);
    text.push_str(HEADER);
    text.push('\n');
    for b in key.seed() {
        text.push_str(&format!("{b:02x}"));
    }
    text.push('\n');
    write_atomic(path, text.as_bytes(), 0o600, force).map_err(|e| match e.kind() {
        io::ErrorKind::AlreadyExists => KeyFileError::Exists,
        _ => KeyFileError::Io(e),
    })?;
    Ok(key)
}

pub fn load_key_file(path: &Path) -> Result<DeviceKey, KeyFileError> {
    let meta = std::fs::metadata(path).map_err(KeyFileError::Io)?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(KeyFileError::TooOpen(mode));
    }
    let text = std::fs::read_to_string(path).map_err(KeyFileError::Io)?;
    let hex = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .ok_or(KeyFileError::Format("no key line"))?;
    if hex.len() != 64 {
        return Err(KeyFileError::Format("key line must be 64 hex digits"));
    }
    let mut seed = [0u8; 32];
    for (i, b) in seed.iter_mut().enumerate() {
        let pair = hex.get(2 * i..2 * i + 2).ok_or(KeyFileError::Format("key line must be hex"))?;
        *b = u8::from_str_radix(pair, 16).map_err(|_| KeyFileError::Format("key line must be hex"))?;
    }
    Ok(DeviceKey::from_seed(seed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generate_load_and_no_overwrite() {
        let dir = crate::util::testdir("keyfile");
        let p = dir.join("device.key");
        let k = generate_key_file(&p, false).unwrap();
        assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(load_key_file(&p).unwrap().id(), k.id());
        assert!(matches!(generate_key_file(&p, false), Err(KeyFileError::Exists)));
        assert_eq!(load_key_file(&p).unwrap().id(), k.id());
        let k2 = generate_key_file(&p, true).unwrap();
        assert_ne!(k2.id(), k.id());
        assert_eq!(load_key_file(&p).unwrap().id(), k2.id());
    }

    #[test]
    fn rejects_open_mode_and_garbage() {
        let dir = crate::util::testdir("keyfile-bad");
        let p = dir.join("k");
        std::fs::write(&p, "zz").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(load_key_file(&p), Err(KeyFileError::TooOpen(0o644))));
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(matches!(load_key_file(&p), Err(KeyFileError::Format(_))));
        std::fs::write(&p, format!("{}\n", "é".repeat(32))).unwrap();
        assert!(matches!(load_key_file(&p), Err(KeyFileError::Format(_))));
    }
}
