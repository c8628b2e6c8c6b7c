use crate::config::Config;
use crate::identity::load_key_file;
use crate::log;
use crate::runtime;
use std::path::Path;

pub fn run(config_path: &Path, board: &str) -> i32 {
    let config = match Config::load(config_path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return 2;
        }
    };
    let key = match load_key_file(&config.key_path) {
        Ok(k) => k,
        Err(e) => {
            eprintln!("{}: {e}", config.key_path.display());
            return 2;
        }
    };
    let board = match (board, &config.camera_file) {
        ("sim", Some(f)) => Ok(Box::new(peercom_board::sim::SimBoard::default().with_camera_file(Some(f.clone())))
            as Box<dyn peercom_board::Board>),
        _ => peercom_board::open(board),
    };
    let board = match board {
        Ok(b) => b,
        Err(e) => {
            eprintln!("peercom run: {e}");
            return 2;
        }
    };
    let rt = match super::runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("peercom run: {e}");
            return 1;
        }
    };
    rt.block_on(async move {
        let (handle, task) = match runtime::start(&config, key, board) {
            Ok(x) => x,
            Err(e) => {
                eprintln!("peercom run: cannot listen on {}: {e}", config.listen);
                return 1;
            }
        };
        let _control = match runtime::control::serve(&config.control, handle.clone()) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("peercom run: control socket {}: {e}", config.control.display());
                return 1;
            }
        };
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("peercom run: {e}");
                return 1;
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        log!("{}: shutting down", config.name);
        handle.shutdown().await;
        let _ = task.await;
        let _ = std::fs::remove_file(&config.control);
        0
    })
}

pub fn node(o: runtime::node::NodeOptions) -> i32 {
    let rt = match super::runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("peercom node: {e}");
            return 1;
        }
    };
    let listen = o.listen;
    match rt.block_on(runtime::node::run(o)) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("peercom node: cannot run on {listen}: {e}");
            1
        }
    }
}
