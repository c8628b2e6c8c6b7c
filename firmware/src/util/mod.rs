//! Small helpers shared by several concerns.
pub mod atomic_write;
pub mod base32;
pub mod log;
pub mod rng;

/// Equal lengths and bytes, in time that does not depend on where they differ (MAC checks).
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A fresh, empty directory for a test (unique per process and name).
#[cfg(test)]
pub fn testdir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("peercom-test-{}-{}", std::process::id(), name));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("create test dir");
    d
}
