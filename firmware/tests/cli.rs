//! The command line as an owner uses it: keys, IDs, config checking.
mod common;
use common::*;
use std::os::unix::fs::PermissionsExt;

#[test]
fn keygen_refuses_to_overwrite_and_writes_mode_0600() {
    let dir = tempdir("keygen");
    let key = dir.join("device.key");
    let id = keygen(&key);
    assert!(id.starts_with("pc1") && id.len() == 59);
    assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
    let before = std::fs::read(&key).unwrap();
    let out = peercom(&["keygen", "--out", key.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("use --force"));
    assert_eq!(std::fs::read(&key).unwrap(), before, "existing key untouched");
    let out = peercom(&["keygen", "--out", key.to_str().unwrap(), "--force"]);
    assert!(out.status.success());
    assert_ne!(std::fs::read(&key).unwrap(), before);
    // The secret never reaches the terminal.
    let secret = std::fs::read_to_string(&key).unwrap();
    let hex = secret.lines().nth(1).unwrap();
    assert!(!String::from_utf8_lossy(&out.stdout).contains(hex));
    // Only the key file is left in the directory (no temp files).
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
}

#[test]
fn id_prints_the_same_id_and_a_qr_code() {
    let dir = tempdir("id");
    let key = dir.join("k.key");
    let id = keygen(&key);
    let out = peercom(&["id", "--key", key.to_str().unwrap(), "--qr"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.lines().next(), Some(id.as_str()));
    assert!(text.lines().count() > 10 && text.contains('█'));
    // A key file readable by others is refused.
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = peercom(&["id", "--key", key.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("chmod 600"));
}

#[test]
fn check_config_and_run_reject_bad_configs_with_file_line_col() {
    let dir = tempdir("check");
    let id = make_key(&dir, "A");
    let good = format!(
        "[device]\nname = \"A\"\nkey = \"A.key\"\nlisten = \"127.0.0.1:0\"\n\n[[contact]]\nname = \"B\"\nbutton = 1\n  [[contact.device]]\n  key = \"{id}\"\n"
    );
    let path = dir.join("peercom.toml");
    let p = path.to_str().unwrap();
    std::fs::write(&path, &good).unwrap();
    let out = peercom(&["check-config", p]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok (1 contacts, 1 devices)"));

    let cases = [
        (good.replace("name = \"B\"", "name = \"B\"\ncolour = \"red\""), ":8:1: unknown field `colour`"),
        (good.replace(&id[5..9], "zzzz"), ":10:9: bad device key: device ID checksum does not match"),
        (good.replace("button = 1", "button = true"), ":8:10: invalid type: boolean `true`, expected i64"),
        (good.replace("A.key", "missing.key"), ":3:7: key file"),
        (
            format!(
                "{good}\n[[contact]]\nname = \"C\"\nbutton = 1\n  [[contact.device]]\n  key = \"{}\"\n",
                make_key(&dir, "C")
            ),
            ":14:10: button 1 is already used",
        ),
    ];
    for (text, want) in cases {
        std::fs::write(&path, &text).unwrap();
        for cmd in [vec!["check-config", p], vec!["run", "--config", p, "--board", "sim"]] {
            let out = peercom(&cmd);
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{cmd:?}: {err}");
            assert!(err.starts_with(&format!("{p}{want}")), "{cmd:?}: want {want:?}, got {err}");
        }
    }
}

#[test]
fn usage_errors_exit_2() {
    assert_eq!(peercom(&["frobnicate"]).status.code(), Some(2));
    assert_eq!(peercom(&["check-config", "/nonexistent.toml"]).status.code(), Some(2));
    let out = peercom(&["run", "--config", "/nonexistent.toml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent.toml: cannot read"));
}

/// `peercom demo --json`: a real call between two sim devices with video and audio both ways;
/// the numbers come from the media itself (stamps in the pixels, bursts in the sound).
#[test]
fn demo_makes_a_video_call_in_lip_sync_and_saves_both_displays() {
    let dir = tempdir("demo");
    let out = peercom(&["demo", "--seconds", "3", "--json", "--out", dir.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(r["still_in_call"], true);
    assert!(r["frames_decoded"].as_u64().unwrap() > 30, "{r}");
    assert!(r["setup_ms"].as_f64().unwrap() > 0.0, "{r}");
    let (g2g, m2e) = (r["g2g_ms"]["p50"].as_f64().unwrap(), r["m2e_ms"]["p50"].as_f64().unwrap());
    assert!(g2g > 0.0 && m2e > 0.0, "{r}");
    // A/V sync: the sound plays within 80 ms of the picture it belongs to.
    assert!(r["av_skew_ms"].as_f64().unwrap().abs() <= 80.0, "{r}");
    assert_eq!(r["snapshots"].as_array().map(|a| a.len()), Some(2), "{r}");
    for name in ["display-A.png", "display-B.png"] {
        let (w, h, rgb) = peercom_board::png::read_rgb(dir.join(name)).expect(name);
        assert_eq!((w, h), (640, 480));
        assert!(rgb.iter().any(|&b| b > 40), "{name} shows something");
    }
}

/// 10 ms audio frames work end to end (the default is 20 ms).
#[test]
fn bench_media_with_10_ms_audio_frames() {
    let out = peercom(&["bench", "media", "--seconds", "2", "--audio-frame-ms", "10", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!((r["audio_frame_ms"].as_u64(), r["still_in_call"].as_bool()), (Some(10), Some(true)));
    assert!(r["a"]["audio"]["played"].as_u64().unwrap() > 100, "{r}");
    assert!(r["m2e_ms"]["p50"].as_f64().unwrap() > 0.0, "{r}");
    let bad = peercom(&["bench", "media", "--audio-frame-ms", "15"]);
    assert_eq!(bad.status.code(), Some(2));
}
