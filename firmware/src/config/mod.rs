//! The device configuration (one TOML file, see config/peercom.toml). Parsing keeps source spans
//! so every error, syntactic or semantic, is reported as `file:line:col: reason`.
mod error;
mod schema;

pub use error::ConfigError;
pub use schema::*;

use crate::identity::DeviceId;
use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::time::Duration;
use toml::Spanned;

/// Where LAN discovery beacons go unless the config says otherwise (site-local multicast).
pub const DEFAULT_LAN_GROUP: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(239, 255, 77, 77), 7601);

/// A validated configuration, ready for the runtime.
#[derive(Debug, Clone)]
pub struct Config {
    pub path: PathBuf,
    pub name: String,
    pub key_path: PathBuf,
    pub listen: SocketAddr,
    pub control: PathBuf,
    pub contacts: Vec<Contact>,
    pub answer_button: Option<u8>,
    pub reject_button: Option<u8>,
    pub bootstrap: Vec<String>,
    /// STUN servers (`host:port`) asked for our public address; none needed (DHT nodes tell us).
    pub stun: Vec<String>,
    /// The multicast group for LAN discovery beacons; None when LAN discovery is off.
    pub lan_group: Option<SocketAddrV4>,
    /// Join the DHT (find contacts and be found over the internet). On by default.
    pub dht: bool,
    /// Ask the home router (UPnP-IGD, NAT-PMP, PCP) to forward our UDP port. On by default.
    pub port_mapping: bool,
    pub call: CallSettings,
    pub media: MediaSettings,
    /// The sim board's camera plays this YUV4MPEG2 file (relative to the config file).
    pub camera_file: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Contact {
    pub name: String,
    pub button: Option<u8>,
    pub devices: Vec<ContactDevice>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ContactDevice {
    pub id: DeviceId,
    pub addr: Option<SocketAddr>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CallSettings {
    pub no_answer_timeout: Duration,
    pub peer_timeout: Duration,
    pub auto_answer: bool,
}

impl Default for CallSettings {
    fn default() -> Self {
        CallSettings {
            no_answer_timeout: Duration::from_secs(30),
            peer_timeout: Duration::from_secs(10),
            auto_answer: false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MediaSettings {
    pub width: u16,
    pub height: u16,
    pub fps: u8,
    pub video_kbps_min: u32,
    pub video_kbps_max: u32,
    /// Where rate control starts a call (it then adapts between min and max).
    pub video_kbps_start: u32,
    pub audio_frame_ms: u8,
    pub audio_kbps: u32,
    /// Opus encoder complexity, 0 (cheapest) to 10.
    pub audio_complexity: u8,
}

impl Default for MediaSettings {
    fn default() -> Self {
        MediaSettings {
            width: 640,
            height: 480,
            fps: 30,
            video_kbps_min: 150,
            video_kbps_max: 1500,
            video_kbps_start: 1000,
            audio_frame_ms: 20,
            audio_kbps: 32,
            audio_complexity: 5,
        }
    }
}

impl Config {
    /// Reads, parses and validates `path` (including that the key file exists).
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::io(path, e))?;
        Self::parse(path, &text, true)
    }

    /// Parses `text` as if read from `path`; `check_key` also requires the key file to exist.
    pub fn parse(path: &Path, text: &str, check_key: bool) -> Result<Config, ConfigError> {
        let at = |span: std::ops::Range<usize>, msg: String| ConfigError::at(path, text, span.start, msg);
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let start = e.span().map(|s| s.start).unwrap_or(0);
            ConfigError::at(path, text, start, e.message().trim().to_string())
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        let d = &raw.device;

        let name = d.name.get_ref().trim().to_string();
        if name.is_empty() || name.len() > 64 {
            return Err(at(d.name.span(), "device name must be 1 to 64 characters".into()));
        }
        let key_path = base.join(d.key.get_ref());
        if check_key && !key_path.exists() {
            return Err(at(
                d.key.span(),
                format!(
                    "key file {} does not exist (create it with `peercom keygen --out {}`)",
                    key_path.display(),
                    key_path.display()
                ),
            ));
        }
        let listen = parse_addr(&d.listen).map_err(|m| at(d.listen.span(), m))?;
        let control = match &d.control {
            Some(c) => base.join(c.get_ref()),
            None => PathBuf::from("/run/peercom/control.sock"),
        };

        let mut contacts = Vec::with_capacity(raw.contact.len());
        let mut buttons: HashMap<u8, String> = HashMap::new();
        let mut keys: HashMap<DeviceId, String> = HashMap::new();
        let mut names: HashMap<String, ()> = HashMap::new();
        for c in &raw.contact {
            let cname = c.name.get_ref().trim().to_string();
            if cname.is_empty() || cname.len() > 64 {
                return Err(at(c.name.span(), "contact name must be 1 to 64 characters".into()));
            }
            if names.insert(cname.to_lowercase(), ()).is_some() {
                return Err(at(c.name.span(), format!("duplicate contact name \"{cname}\"")));
            }
            let button = match &c.button {
                Some(b) => {
                    let n = button_number(b).map_err(|m| at(b.span(), m))?;
                    if let Some(other) = buttons.insert(n, cname.clone()) {
                        return Err(at(b.span(), format!("button {n} is already used by contact \"{other}\"")));
                    }
                    Some(n)
                }
                None => None,
            };
            if c.device.is_empty() {
                return Err(at(c.name.span(), format!("contact \"{cname}\" has no [[contact.device]] with a key")));
            }
            if c.device.len() > crate::call::MAX_TARGETS {
                return Err(at(
                    c.device[crate::call::MAX_TARGETS].key.span(),
                    format!("contact \"{cname}\" has more than {} devices", crate::call::MAX_TARGETS),
                ));
            }
            let mut devices = Vec::with_capacity(c.device.len());
            for dev in &c.device {
                let id = DeviceId::parse(dev.key.get_ref())
                    .map_err(|e| at(dev.key.span(), format!("bad device key: {e}")))?;
                if let Some(other) = keys.insert(id, cname.clone()) {
                    return Err(at(dev.key.span(), format!("this key is already listed for contact \"{other}\"")));
                }
                let addr = match &dev.addr {
                    Some(a) => Some(parse_addr(a).map_err(|m| at(a.span(), m))?),
                    None => None,
                };
                devices.push(ContactDevice { id, addr });
            }
            contacts.push(Contact { name: cname, button, devices });
        }

        let mut answer_button = None;
        let mut reject_button = None;
        if let Some(b) = &raw.buttons {
            for (slot, value, what) in
                [(&mut answer_button, &b.answer, "answer"), (&mut reject_button, &b.reject, "reject")]
            {
                if let Some(v) = value {
                    let n = button_number(v).map_err(|m| at(v.span(), m))?;
                    if let Some(other) = buttons.insert(n, format!("the {what} function")) {
                        return Err(at(v.span(), format!("button {n} is already used by {other}")));
                    }
                    *slot = Some(n);
                }
            }
        }

        let mut call = CallSettings::default();
        if let Some(c) = &raw.call {
            if let Some(v) = &c.no_answer_timeout_s {
                call.no_answer_timeout = seconds(v, 1, 600).map_err(|m| at(v.span(), m))?;
            }
            if let Some(v) = &c.peer_timeout_s {
                call.peer_timeout = seconds(v, 1, 300).map_err(|m| at(v.span(), m))?;
            }
            call.auto_answer = c.auto_answer.unwrap_or(false);
        }

        let mut media = MediaSettings::default();
        if let Some(m) = &raw.media {
            if let Some(v) = &m.width {
                media.width = in_range(v, 160, 1920, "width").map_err(|m| at(v.span(), m))? as u16;
                if media.width % 2 != 0 {
                    return Err(at(v.span(), "width must be even".into()));
                }
            }
            if let Some(v) = &m.height {
                media.height = in_range(v, 120, 1080, "height").map_err(|m| at(v.span(), m))? as u16;
                if media.height % 2 != 0 {
                    return Err(at(v.span(), "height must be even".into()));
                }
            }
            if let Some(v) = &m.fps {
                media.fps = in_range(v, 1, 60, "fps").map_err(|m| at(v.span(), m))? as u8;
            }
            if let Some(v) = &m.video_kbps_min {
                media.video_kbps_min = in_range(v, 50, 20_000, "video_kbps_min").map_err(|m| at(v.span(), m))? as u32;
            }
            if let Some(v) = &m.video_kbps_max {
                media.video_kbps_max = in_range(v, 50, 20_000, "video_kbps_max").map_err(|m| at(v.span(), m))? as u32;
                if media.video_kbps_max < media.video_kbps_min {
                    return Err(at(v.span(), "video_kbps_max is below video_kbps_min".into()));
                }
            }
            if let Some(v) = &m.audio_frame_ms {
                if *v.get_ref() != 10 && *v.get_ref() != 20 {
                    return Err(at(v.span(), "audio_frame_ms must be 10 or 20".into()));
                }
                media.audio_frame_ms = *v.get_ref() as u8;
            }
            media.video_kbps_start = media.video_kbps_start.clamp(media.video_kbps_min, media.video_kbps_max);
            if let Some(v) = &m.video_kbps_start {
                let k = in_range(v, 50, 20_000, "video_kbps_start").map_err(|m| at(v.span(), m))? as u32;
                if k < media.video_kbps_min || k > media.video_kbps_max {
                    return Err(at(
                        v.span(),
                        "video_kbps_start must be between video_kbps_min and video_kbps_max".into(),
                    ));
                }
                media.video_kbps_start = k;
            }
            if let Some(v) = &m.audio_kbps {
                media.audio_kbps = in_range(v, 6, 128, "audio_kbps").map_err(|m| at(v.span(), m))? as u32;
            }
            if let Some(v) = &m.audio_complexity {
                media.audio_complexity = in_range(v, 0, 10, "audio_complexity").map_err(|m| at(v.span(), m))? as u8;
            }
        }
        let camera_file = match raw.media.as_ref().and_then(|m| m.camera_file.as_ref()) {
            Some(v) => {
                let p = base.join(v.get_ref());
                if !p.is_file() {
                    return Err(at(v.span(), format!("camera_file {}: no such file", p.display())));
                }
                Some(p)
            }
            None => None,
        };

        let mut bootstrap = Vec::new();
        let mut stun = Vec::new();
        let mut lan_group = Some(DEFAULT_LAN_GROUP);
        let dht = raw.network.as_ref().and_then(|n| n.dht).unwrap_or(true);
        let port_mapping = raw.network.as_ref().and_then(|n| n.port_mapping).unwrap_or(true);
        if let Some(n) = &raw.network {
            if let Some(g) = &n.lan_group {
                let a: SocketAddrV4 = g.get_ref().trim().parse().map_err(|_| {
                    at(
                        g.span(),
                        format!(
                            "\"{}\" is not an IPv4 multicast group:port (e.g. \"239.255.77.77:7601\")",
                            g.get_ref()
                        ),
                    )
                })?;
                if !a.ip().is_multicast() || a.port() == 0 {
                    return Err(at(g.span(), "lan_group must be a multicast address (224.0.0.0/4) with a port".into()));
                }
                lan_group = Some(a);
            }
            if n.lan_discovery == Some(false) {
                lan_group = None;
            }
            bootstrap = host_ports(&n.bootstrap, "bootstrap node").map_err(|(span, m)| at(span, m))?;
            stun = host_ports(&n.stun, "STUN server").map_err(|(span, m)| at(span, m))?;
        }

        Ok(Config {
            path: path.to_path_buf(),
            name,
            key_path,
            listen,
            control,
            contacts,
            answer_button,
            reject_button,
            bootstrap,
            stun,
            lan_group,
            dht,
            port_mapping,
            call,
            media,
            camera_file,
        })
    }

    pub fn contact_for_button(&self, button: u8) -> Option<usize> {
        self.contacts.iter().position(|c| c.button == Some(button))
    }

    pub fn contact_by_name(&self, name: &str) -> Option<usize> {
        self.contacts.iter().position(|c| c.name.eq_ignore_ascii_case(name))
    }
}

/// `host:port` entries (names are resolved by the driver, again later if they fail); else the
/// bad entry's span and why.
fn host_ports(list: &[Spanned<String>], what: &str) -> Result<Vec<String>, (std::ops::Range<usize>, String)> {
    list.iter()
        .map(|b| {
            let s = b.get_ref().trim();
            match s.rsplit_once(':').map(|(_, p)| p.parse::<u16>()) {
                Some(Ok(_)) => Ok(s.to_string()),
                _ => Err((b.span(), format!("{what} must be host:port"))),
            }
        })
        .collect()
}

fn parse_addr(v: &Spanned<String>) -> Result<SocketAddr, String> {
    v.get_ref()
        .trim()
        .parse()
        .map_err(|_| format!("\"{}\" is not an IP:port address (e.g. \"192.168.1.20:7600\")", v.get_ref()))
}

fn button_number(v: &Spanned<i64>) -> Result<u8, String> {
    let n = *v.get_ref();
    if !(0..=63).contains(&n) {
        return Err(format!("button must be a number from 0 to 63, not {n}"));
    }
    Ok(n as u8)
}

fn in_range(v: &Spanned<i64>, lo: i64, hi: i64, what: &str) -> Result<i64, String> {
    let x = *v.get_ref();
    if x < lo || x > hi {
        return Err(format!("{what} must be between {lo} and {hi}"));
    }
    Ok(x)
}

fn seconds(v: &Spanned<i64>, lo: i64, hi: i64) -> Result<Duration, String> {
    let n = *v.get_ref();
    if n < lo || n > hi {
        return Err(format!("must be between {lo} and {hi} seconds"));
    }
    Ok(Duration::from_secs(n as u64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::DeviceKey;

    fn id(n: u8) -> String {
        DeviceKey::from_seed([n; 32]).id().to_string()
    }

    fn base() -> String {
        format!(
            "[device]\nname = \"Kitchen\"\nkey = \"k.key\"\nlisten = \"0.0.0.0:7600\"\n\n\
             [[contact]]\nname = \"Kids\"\nbutton = 1\n  [[contact.device]]\n  key = \"{}\"\n  addr = \"192.0.2.1:7600\"\n  [[contact.device]]\n  key = \"{}\"\n",
            id(1),
            id(2)
        )
    }

    fn err(text: &str) -> String {
        Config::parse(Path::new("/x/peercom.toml"), text, false).unwrap_err().to_string()
    }

    #[test]
    fn valid_config_parses_with_defaults() {
        let c = Config::parse(Path::new("/etc/p/peercom.toml"), &base(), false).unwrap();
        assert_eq!(c.name, "Kitchen");
        assert_eq!(c.key_path, PathBuf::from("/etc/p/k.key"));
        assert_eq!(c.contacts.len(), 1);
        assert_eq!(c.contacts[0].devices.len(), 2);
        assert_eq!(c.contacts[0].devices[1].addr, None);
        assert_eq!(c.call.no_answer_timeout, Duration::from_secs(30));
        assert_eq!(c.contact_for_button(1), Some(0));
        assert_eq!(c.media.width, 640);
    }

    #[test]
    fn bootstrap_and_stun_servers_are_host_port_lists() {
        let b = format!(
            "{}\n[network]\nbootstrap = [\"boot.example:7600\"]\nstun = [\"stun.example:3478\", \"[2001:db8::1]:3478\"]\n",
            base()
        );
        let c = Config::parse(Path::new("/x/peercom.toml"), &b, false).unwrap();
        assert_eq!(c.bootstrap, ["boot.example:7600"]);
        assert_eq!(c.stun, ["stun.example:3478", "[2001:db8::1]:3478"]);
        let bad = b.replace("stun.example:3478", "stun.example");
        assert!(err(&bad).ends_with(":17:9: STUN server must be host:port"), "{}", err(&bad));
        assert!(Config::parse(Path::new("/x/p.toml"), &base(), false).unwrap().stun.is_empty(), "none needed");
    }

    #[test]
    fn port_mapping_is_on_unless_turned_off() {
        let parse = |t: &str| Config::parse(Path::new("/x/peercom.toml"), t, false);
        assert!(parse(&base()).unwrap().port_mapping, "on by default");
        let on = format!("{}\n[network]\ndht = false\n", base());
        assert!(parse(&on).unwrap().port_mapping, "on when [network] does not mention it");
        let off = format!("{}\n[network]\nport_mapping = false\n", base());
        assert!(!parse(&off).unwrap().port_mapping);
        let bad = format!("{}\n[network]\nport_mapping = \"no\"\n", base());
        assert!(err(&bad).ends_with(":16:16: invalid type: string \"no\", expected a boolean"), "{}", err(&bad));
        let typo = format!("{}\n[network]\nportmapping = false\n", base());
        assert!(err(&typo).contains("unknown field `portmapping`"), "{}", err(&typo));
    }

    #[test]
    fn example_config_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/peercom.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        let c = Config::parse(&path, &text, false).unwrap();
        assert!(!c.contacts.is_empty());
        assert!(c.port_mapping);
    }

    #[test]
    fn errors_point_at_the_problem() {
        let b = base();
        // Unknown field.
        assert_eq!(
            err(&b.replace("listen =", "lisen =")),
            "/x/peercom.toml:4:1: unknown field `lisen`, expected one of `name`, `key`, `listen`, `control`"
        );
        // Bad checksum: change one character of the second key.
        let bad = b.replace(&id(2)[10..14], "aaaa");
        assert_eq!(err(&bad), "/x/peercom.toml:13:9: bad device key: device ID checksum does not match (typo?)");
        // A small-order key, correctly spelt: every DH with it is zero, so anyone could call as it.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        let weak = b.replace(&id(2), &DeviceId::from_bytes(identity).to_string());
        assert_eq!(
            err(&weak),
            "/x/peercom.toml:13:9: bad device key: weak key: a small-order point that anyone could claim to be"
        );
        // A camera file that is not there.
        let cam = err(&format!("{b}\n[media]\ncamera_file = \"nope.y4m\"\n"));
        assert!(
            cam.ends_with(":15: camera_file /x/nope.y4m: no such file") && cam.starts_with("/x/peercom.toml:"),
            "{cam}"
        );
        // Wrong type.
        assert_eq!(
            err(&b.replace("button = 1", "button = \"one\"")),
            "/x/peercom.toml:8:10: invalid type: string \"one\", expected i64"
        );
        // Duplicate button.
        let dup =
            format!("{b}\n[[contact]]\nname = \"Gran\"\nbutton = 1\n  [[contact.device]]\n  key = \"{}\"\n", id(3));
        assert_eq!(err(&dup), "/x/peercom.toml:17:10: button 1 is already used by contact \"Kids\"");
        // Same key twice.
        let twice = format!("{b}\n[[contact]]\nname = \"Gran\"\n  [[contact.device]]\n  key = \"{}\"\n", id(1));
        assert!(err(&twice).starts_with("/x/peercom.toml:18:9: this key is already listed for contact \"Kids\""));
        // Bad address.
        assert_eq!(
            err(&b.replace("192.0.2.1:7600", "192.0.2.1")),
            "/x/peercom.toml:11:10: \"192.0.2.1\" is not an IP:port address (e.g. \"192.168.1.20:7600\")"
        );
        // Syntax error.
        assert!(err(&b.replace("name = \"Kitchen\"", "name = Kitchen")).starts_with("/x/peercom.toml:2:8: "));
        // Missing table.
        assert!(err("[[contact]]\nname = \"x\"\n").contains("missing field `device`"));
        // A contact without devices.
        assert_eq!(
            err(&format!("{b}\n[[contact]]\nname = \"Solo\"\n")),
            "/x/peercom.toml:16:8: contact \"Solo\" has no [[contact.device]] with a key"
        );
        // Too many devices for one contact (we ring at most 8 at once).
        let mut many =
            String::from("[device]\nname = \"A\"\nkey = \"k\"\nlisten = \"0.0.0.0:1\"\n[[contact]]\nname = \"Big\"\n");
        for n in 10..19 {
            many.push_str(&format!("[[contact.device]]\nkey = \"{}\"\n", id(n)));
        }
        assert_eq!(err(&many), "/x/peercom.toml:24:7: contact \"Big\" has more than 8 devices");
        // Out of range.
        assert_eq!(
            err(&format!("{b}\n[call]\nno_answer_timeout_s = 0\n")),
            "/x/peercom.toml:16:23: must be between 1 and 600 seconds"
        );
    }

    #[test]
    fn missing_key_file_is_reported_at_the_key_line() {
        let e = Config::parse(Path::new("/nonexistent/peercom.toml"), &base(), true).unwrap_err().to_string();
        assert!(e.starts_with("/nonexistent/peercom.toml:3:7: key file /nonexistent/k.key does not exist"), "{e}");
    }

    #[test]
    fn garbage_never_panics() {
        let b = base();
        let mut rng = crate::util::rng::Rng::seeded(9);
        for _ in 0..2000 {
            let mut t = b.clone().into_bytes();
            for _ in 0..3 {
                let i = (rng.next_u32() as usize) % t.len();
                t[i] = (rng.next_u32() % 128) as u8;
            }
            let text = String::from_utf8_lossy(&t);
            if let Err(e) = Config::parse(Path::new("f.toml"), &text, false) {
                assert!(e.line >= 1 && e.col >= 1, "{e}");
            }
        }
    }
}
