//! `[control]`: the control socket and the metrics listener.

use super::reader::{Fail, Table, keep};
use std::net::SocketAddr;
use std::path::PathBuf;

/// Where `xsecd` listens when the configuration does not say.
pub const DEFAULT_SOCKET: &str = "/run/xsec/xsecd.sock";

/// The `[control]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlConfig {
    /// The Unix control socket (created 0600, or 0660 with `group`).
    pub socket: PathBuf,
    /// A group whose members may also use the socket.
    pub group: Option<String>,
    /// Serve OpenMetrics text on `http://ADDR/metrics`.
    pub metrics: Option<SocketAddr>,
}

impl Default for ControlConfig {
    fn default() -> Self {
        ControlConfig {
            socket: PathBuf::from(DEFAULT_SOCKET),
            group: None,
            metrics: None,
        }
    }
}

pub(super) fn read(t: &mut Table<'_, '_>, fails: &mut Vec<Fail>) -> Option<ControlConfig> {
    let socket = keep(
        fails,
        t.get("socket")
            .map_or(Ok(PathBuf::from(DEFAULT_SOCKET)), |v| {
                let s = v.string()?;
                let p = PathBuf::from(s);
                if !p.is_absolute() {
                    return Err(v.fail(format!("{s:?} must be an absolute path")));
                }
                // sockaddr_un holds 108 bytes including the terminating NUL.
                if s.len() > 107 {
                    return Err(v.fail(format!(
                        "{} bytes is too long for a Unix socket path (at most 107)",
                        s.len()
                    )));
                }
                Ok(p)
            }),
    );
    let group = keep(
        fails,
        t.get("group")
            .map(|v| {
                let s = v.string()?;
                if s.is_empty()
                    || s.len() > 32
                    || !s
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
                {
                    return Err(v.fail(format!("{s:?} is not a valid group name")));
                }
                Ok(s.to_owned())
            })
            .transpose(),
    );
    let metrics = keep(
        fails,
        t.get("metrics")
            .map(|v| v.parse::<SocketAddr>())
            .transpose(),
    );
    Some(ControlConfig {
        socket: socket?,
        group: group?,
        metrics: metrics?,
    })
}
