//! The local control protocol (docs/CONTROL.md): one JSON object per line over a Unix socket.
//! Each request gets one JSON reply line, except `events`, which streams event lines.
use serde::{Deserialize, Serialize};

/// Also the `peercom ctl` subcommands, so the CLI and the protocol cannot drift apart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, clap::Subcommand)]
#[serde(tag = "cmd", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Request {
    /// Press button N (on the sim board; same effect as a GPIO button).
    Press { button: u8 },
    /// Call a contact by name.
    Call { contact: String },
    /// Answer the incoming call.
    Answer,
    /// Decline the incoming call.
    Reject,
    /// End or cancel the current call.
    Hangup,
    /// Stop sending sound from the microphone in the current call (the other side hears silence).
    Mute,
    /// Send sound again.
    Unmute,
    /// Print the device status as JSON.
    Status,
    /// Wait until the call state is STATE (idle, dialing, ringing, incoming, in-call).
    Wait {
        state: String,
        #[arg(long, default_value_t = 10_000)]
        timeout_ms: u64,
    },
    /// Print events as JSON lines until interrupted.
    Events,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Reply {
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<serde_json::Value>,
}

impl Reply {
    pub fn ok() -> Self {
        Reply { ok: true, error: None, status: None }
    }
    pub fn err(e: impl ToString) -> Self {
        Reply { ok: false, error: Some(e.to_string()), status: None }
    }
}
