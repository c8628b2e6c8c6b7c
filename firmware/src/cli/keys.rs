use crate::config::Config;
use crate::identity::{generate_key_file, load_key_file, qr};
use std::path::{Path, PathBuf};

pub fn keygen(out: &Path, force: bool) -> i32 {
    match generate_key_file(out, force) {
        Ok(key) => {
            println!("wrote a new device key to {} (mode 0600)", out.display());
            println!("device ID: {}", key.id());
            0
        }
        Err(e) => {
            eprintln!("peercom keygen: {}: {e}", out.display());
            1
        }
    }
}

pub fn id(key: Option<PathBuf>, config: Option<PathBuf>, show_qr: bool) -> i32 {
    let path = match (key, config) {
        (Some(k), _) => k,
        (None, c) => {
            let c = c.unwrap_or_else(|| PathBuf::from(super::DEFAULT_CONFIG));
            match std::fs::read_to_string(&c)
                .map_err(|e| e.to_string())
                .and_then(|t| Config::parse(&c, &t, false).map_err(|e| e.to_string()))
            {
                Ok(cfg) => cfg.key_path,
                Err(e) => {
                    eprintln!("peercom id: {e}");
                    return 2;
                }
            }
        }
    };
    match load_key_file(&path) {
        Ok(k) => {
            let id = k.id().to_string();
            println!("{id}");
            if show_qr {
                match qr::render_terminal(&id) {
                    Some(q) => print!("{q}"),
                    None => eprintln!("peercom id: could not make a QR code"),
                }
            }
            0
        }
        Err(e) => {
            eprintln!("peercom id: {}: {e}", path.display());
            1
        }
    }
}
