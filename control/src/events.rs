//! xsecd's event stream (`subscribe`), read by a thread of its own and handed to the event
//! loop through a channel, with one byte on a socket pair to wake the loop's `poll`:
//! ACQUIREs for trapped children, soft/hard lifetime expiries for rekeys and deletions.
//! The thread reconnects if xsecd goes away.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::{Value, json};
use xsecd::control::client::Client;

/// The loop's end of the event stream.
#[derive(Debug)]
pub struct Events {
    rx: mpsc::Receiver<Value>,
    /// Readable when events wait.
    pub wake: UnixStream,
}

impl Events {
    /// Start reading xsecd's events at `path`.
    pub fn spawn(path: PathBuf, stop: Arc<AtomicBool>) -> std::io::Result<Events> {
        let (tx, rx) = mpsc::channel();
        let (wake, mut poke) = UnixStream::pair()?;
        wake.set_nonblocking(true)?;
        poke.set_nonblocking(true)?;
        std::thread::Builder::new()
            .name("xsecd-events".into())
            .spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let mut c = match Client::connect(&path) {
                        Ok(c) => c,
                        Err(_) => {
                            std::thread::sleep(Duration::from_secs(1));
                            continue;
                        }
                    };
                    let Ok(id) = c.send("subscribe", json!({})) else {
                        continue;
                    };
                    while !stop.load(Ordering::Relaxed) {
                        match c.recv(Duration::from_millis(500)) {
                            Ok(v) if v["id"] == json!(id) => {
                                if let Some(ev) = v["stream"].get("event") {
                                    if tx.send(ev.clone()).is_err() {
                                        return;
                                    }
                                    let _ = poke.write(&[1]);
                                }
                            }
                            Ok(_) => {}
                            Err(e) if e.to_string().contains("idle") => {}
                            Err(e) => {
                                tracing::warn!("xsecd's event stream: {e}; reconnecting");
                                std::thread::sleep(Duration::from_secs(1));
                                break;
                            }
                        }
                    }
                }
            })?;
        Ok(Events { rx, wake })
    }

    /// The events that arrived.
    pub fn drain(&mut self) -> Vec<Value> {
        let mut b = [0u8; 256];
        while matches!(self.wake.read(&mut b), Ok(n) if n > 0) {}
        self.rx.try_iter().collect()
    }
}
