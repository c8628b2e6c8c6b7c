//! The local control protocol (docs/CONTROL.md): one JSON object per line over a Unix socket.
//! Each request gets one JSON reply line, except `events`, which streams event lines.
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Request {
    Press {
        button: u8,
    },
    Call {
        contact: String,
    },
    Answer,
    Reject,
    Hangup,
    Status,
    /// Waits until the call state is `state` (idle, dialing, ringing, incoming, in-call).
    Wait {
        state: String,
        timeout_ms: u64,
    },
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
