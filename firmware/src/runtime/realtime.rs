//! Real-time scheduling for the audio thread: with SCHED_FIFO it runs before any video or
//! network work the moment its block is due, so a busy CPU costs video frames, never audio.
//! Not permitted without CAP_SYS_NICE or an RLIMIT_RTPRIO (systemd: `LimitRTPRIO=`); then it
//! says so once and the thread keeps normal priority.
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

/// Low in the 1..99 range: above every normal thread, below the kernel's own real-time work.
const AUDIO_PRIORITY: i32 = 10;

static WARNED: AtomicBool = AtomicBool::new(false);

/// Moves the calling thread to SCHED_FIFO; returns whether it got it.
pub fn raise_to_audio_priority(name: &str) -> bool {
    let param = libc::sched_param { sched_priority: AUDIO_PRIORITY };
    // SAFETY: plain syscall wrapper on the calling thread with a valid, initialised parameter.
    let rc = unsafe { libc::pthread_setschedparam(libc::pthread_self(), libc::SCHED_FIFO, &param) };
    if rc == 0 {
        return true;
    }
    if !WARNED.swap(true, Relaxed) {
        let e = std::io::Error::from_raw_os_error(rc);
        crate::log!(
            "{name}: audio thread keeps normal priority (real-time scheduling not permitted: {e}); \
             audio may break up when the CPU is busy. Allow it with CAP_SYS_NICE or LimitRTPRIO={AUDIO_PRIORITY}"
        );
    }
    false
}
