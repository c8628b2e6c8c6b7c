//! The file's shape as serde sees it. Every table denies unknown fields, so a misspelt setting
//! is an error rather than silently ignored.
use serde::Deserialize;
use toml::Spanned;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub device: RawDevice,
    #[serde(default)]
    pub contact: Vec<RawContact>,
    pub buttons: Option<RawButtons>,
    pub call: Option<RawCall>,
    pub media: Option<RawMedia>,
    pub network: Option<RawNetwork>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDevice {
    pub name: Spanned<String>,
    pub key: Spanned<String>,
    pub listen: Spanned<String>,
    pub control: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawContact {
    pub name: Spanned<String>,
    pub button: Option<Spanned<i64>>,
    #[serde(default)]
    pub device: Vec<RawContactDevice>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawContactDevice {
    pub key: Spanned<String>,
    pub addr: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawButtons {
    pub answer: Option<Spanned<i64>>,
    pub reject: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCall {
    pub no_answer_timeout_s: Option<Spanned<i64>>,
    pub peer_timeout_s: Option<Spanned<i64>>,
    pub auto_answer: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMedia {
    pub width: Option<Spanned<i64>>,
    pub height: Option<Spanned<i64>>,
    pub fps: Option<Spanned<i64>>,
    pub video_kbps_min: Option<Spanned<i64>>,
    pub video_kbps_max: Option<Spanned<i64>>,
    pub video_kbps_start: Option<Spanned<i64>>,
    pub audio_frame_ms: Option<Spanned<i64>>,
    pub audio_kbps: Option<Spanned<i64>>,
    pub audio_complexity: Option<Spanned<i64>>,
    pub camera_file: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNetwork {
    #[serde(default)]
    pub bootstrap: Vec<Spanned<String>>,
    #[serde(default)]
    pub stun: Vec<Spanned<String>>,
    pub lan_discovery: Option<bool>,
    pub dht: Option<bool>,
    pub lan_group: Option<Spanned<String>>,
    pub port_mapping: Option<bool>,
}
