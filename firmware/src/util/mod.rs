//! Small helpers shared by several concerns.
pub mod atomic_write;
pub mod base32;
pub mod log;
pub mod rng;

/// A fresh, empty directory for a test (unique per process and name).
#[cfg(test)]
pub fn testdir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("peercom-test-{}-{}", std::process::id(), name));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("create test dir");
    d
}
