use crate::config::Config;
use std::path::Path;

pub fn check(file: &Path) -> i32 {
    match Config::load(file) {
        Ok(c) => {
            let devices: usize = c.contacts.iter().map(|c| c.devices.len()).sum();
            println!("{}: ok ({} contacts, {devices} devices)", file.display(), c.contacts.len());
            0
        }
        Err(e) => {
            eprintln!("{e}");
            2
        }
    }
}
