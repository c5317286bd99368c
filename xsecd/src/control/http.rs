//! The optional metrics listener (`[control] metrics = "ADDR:PORT"`): `GET /metrics` answers
//! the OpenMetrics text of `xsecctl metrics`; anything else gets 404 or 405. One request per
//! connection, read with a deadline, so a slow client holds only its own thread.

use super::{Control, MAX_CONNS, lock, view};
use crate::daemon::log;
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// Serve until `ctl.stop`.
pub fn serve(ctl: Arc<Control>, l: TcpListener) {
    let _ = l.set_nonblocking(true);
    while !ctl.stop.load(Ordering::Relaxed) {
        match l.accept() {
            Ok((s, _)) => {
                if ctl.conns.load(Ordering::Relaxed) >= MAX_CONNS {
                    continue;
                }
                ctl.conns.fetch_add(1, Ordering::Relaxed);
                let c = ctl.clone();
                let spawned = std::thread::Builder::new()
                    .name("xsec-metrics".into())
                    .spawn(move || {
                        let _ = one(&c, s);
                        c.conns.fetch_sub(1, Ordering::Relaxed);
                    });
                if spawned.is_err() {
                    ctl.conns.fetch_sub(1, Ordering::Relaxed);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(20))
            }
            Err(e) => {
                log(format_args!("metrics listener: {e}"));
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

fn one(ctl: &Control, mut s: TcpStream) -> io::Result<()> {
    s.set_nonblocking(false)?;
    s.set_read_timeout(Some(Duration::from_millis(200)))?;
    s.set_write_timeout(Some(Duration::from_secs(5)))?;
    let end = Instant::now() + Duration::from_secs(5);
    let mut req = Vec::with_capacity(512);
    let mut buf = [0u8; 512];
    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
        if Instant::now() > end || req.len() > 8192 {
            return reply(
                &mut s,
                "408 Request Timeout",
                "text/plain",
                "request incomplete\n",
            );
        }
        match s.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => req.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err(e),
        }
    }
    let line = req.split(|&b| b == b'\r').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if method != "GET" {
        return reply(&mut s, "405 Method Not Allowed", "text/plain", "only GET\n");
    }
    if target != "/metrics" && !target.starts_with("/metrics?") {
        return reply(&mut s, "404 Not Found", "text/plain", "try /metrics\n");
    }
    let snaps = ctl.snapshots();
    let body = {
        let run = lock(&ctl.running);
        view::metrics(&run, &snaps, ctl.started.elapsed())
    };
    reply(
        &mut s,
        "200 OK",
        "application/openmetrics-text; version=1.0.0; charset=utf-8",
        &body,
    )
}

fn reply(s: &mut TcpStream, status: &str, ctype: &str, body: &str) -> io::Result<()> {
    write!(
        s,
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    s.flush()
}
