//! xsec-ike's own control socket: the framing and request shape of xsecd's control protocol
//! (v2: `{"version": 2, "id", "command", "args"}`, 4-byte length frames), one request per
//! connection, answered from the event loop. `xsecctl ike ...` is its client.
//!
//! Commands: `list-sas`, `list-conns`, `initiate {conn}`, `terminate {conn}`,
//! `rekey {conn, child?, ike?}`, `reload`, `stats`. Nothing it answers holds a key.

use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};
use xsecd::control::proto;

/// The default socket, beside xsecd's.
pub const DEFAULT_SOCKET: &str = "/run/xsec/xsec-ike.sock";

/// A request read from a client.
#[derive(Debug)]
pub struct Request {
    pub id: u64,
    pub command: String,
    pub args: Value,
}

#[derive(Debug)]
pub struct Server {
    pub listener: UnixListener,
    path: PathBuf,
}

impl Server {
    /// Bind (0600; a stale socket file is replaced, a live one refused).
    pub fn bind(path: &Path) -> Result<Server, String> {
        let cfg = xsecd::config::ControlConfig {
            socket: path.to_path_buf(),
            ..Default::default()
        };
        let listener = xsecd::control::bind(&cfg, None)
            .map_err(|e| e.replace("another xsecd", "another program"))?;
        Ok(Server {
            listener,
            path: path.to_path_buf(),
        })
    }

    /// A waiting client's request, if one connected.
    pub fn accept(&self) -> Option<(UnixStream, Option<Request>)> {
        let (mut s, _) = self.listener.accept().ok()?;
        let _ = s.set_nonblocking(false);
        let _ = s.set_read_timeout(Some(Duration::from_millis(100)));
        let body = match proto::read_frame(&mut s, Duration::from_secs(1)) {
            Ok(b) => b,
            Err(_) => return Some((s, None)),
        };
        let req = match serde_json::from_slice::<Value>(&body) {
            Ok(v) if v["version"] == json!(proto::VERSION) => {
                v["command"].as_str().map(|c| Request {
                    id: v["id"].as_u64().unwrap_or(0),
                    command: c.to_owned(),
                    args: if v["args"].is_object() {
                        v["args"].clone()
                    } else {
                        json!({})
                    },
                })
            }
            _ => None,
        };
        Some((s, req))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Send the answer and close.
pub fn answer(mut s: UnixStream, v: &Value) {
    let _ = s.set_write_timeout(Some(Duration::from_secs(1)));
    let _ = proto::write_frame(&mut s, v);
}

pub use proto::{error, kind, ok};
