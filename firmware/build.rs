//! openh264-sys2 silently builds its C-only encoder when `nasm` is missing on x86, which costs
//! about twice the CPU per frame. Say so loudly, and refuse unless that is what was asked for.
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=PEERCOM_ALLOW_NO_NASM");
    println!("cargo:rerun-if-env-changed=OPENH264_NO_ASM");
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    if arch != "x86_64" && arch != "x86" {
        return; // aarch64 uses NEON intrinsics from C, no assembler needed
    }
    if std::env::var_os("OPENH264_NO_ASM").is_some() {
        println!("cargo:warning=OPENH264_NO_ASM is set: H.264 encoding without assembly takes about 2x the CPU");
        return;
    }
    // The same lookup nasm-rs does for openh264: `nasm` on PATH.
    if Command::new("nasm").arg("-v").output().is_ok_and(|o| o.status.success()) {
        return;
    }
    let msg = "nasm not found: openh264 would build without its assembly, and H.264 encoding \
               would take about 2x the CPU. Install it (apt-get install nasm; `make` does), or set \
               PEERCOM_ALLOW_NO_NASM=1 to build the slow encoder anyway";
    if std::env::var_os("PEERCOM_ALLOW_NO_NASM").is_some() {
        println!("cargo:warning={msg}");
    } else {
        eprintln!("error: {msg}");
        std::process::exit(1);
    }
}
