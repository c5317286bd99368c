//! The optional metrics listener (`[control] metrics = "ADDR:PORT"`): `GET /metrics` answers
//! the OpenMetrics text of `xsecctl metrics`; anything else gets 404 or 405. One request per
//! connection, each on its own thread and under deadlines, so a slow client holds only its
//! own thread, and only for a few seconds.
//!
//! Its connections are counted apart from the control socket's ([`MAX_HTTP_CONNS`] here,
//! [`MAX_CONNS`](super::MAX_CONNS) there): anyone who can reach the metrics address may open
//! HTTP connections, and they must never lock operators out of the control socket.

use super::{Control, lock, view};
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// HTTP connections served at once; more are answered 503 and closed.
pub const MAX_HTTP_CONNS: usize = 16;
/// A request must have arrived whole (up to its blank line) this long after the connection
/// was accepted, or it is answered 408 and closed: a client that sends nothing is gone then.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(5);
/// The answer must have been written within this time (a client that reads slowly gets cut
/// off instead of holding its thread).
const REPLY_DEADLINE: Duration = Duration::from_secs(5);
/// Longest request head read.
const MAX_REQUEST: usize = 8192;

/// What one listener allows (tests use shorter deadlines).
#[derive(Debug, Clone, Copy)]
struct Limits {
    conns: usize,
    request: Duration,
}

/// Serve until `ctl.stop`.
pub fn serve(ctl: Arc<Control>, l: TcpListener) {
    serve_with(
        ctl,
        l,
        Limits {
            conns: MAX_HTTP_CONNS,
            request: REQUEST_DEADLINE,
        },
    );
}

fn serve_with(ctl: Arc<Control>, l: TcpListener, lim: Limits) {
    let _ = l.set_nonblocking(true);
    // This listener's open connections. Kept here, not in `Control::conns`, so that HTTP
    // clients never count against the control socket's limit.
    let open = Arc::new(AtomicUsize::new(0));
    while !ctl.stop.load(Ordering::Relaxed) {
        match l.accept() {
            Ok((s, _)) => {
                ctl.counters
                    .http_connections
                    .fetch_add(1, Ordering::Relaxed);
                if open.load(Ordering::Relaxed) >= lim.conns {
                    ctl.counters.http_busy.fetch_add(1, Ordering::Relaxed);
                    busy(s, lim.conns);
                    continue;
                }
                let slot = Slot::take(&open);
                let c = ctl.clone();
                // If the thread cannot start, the closure is dropped and the slot with it.
                let _ = std::thread::Builder::new()
                    .name("xsec-metrics".into())
                    .spawn(move || {
                        let _slot = slot;
                        let _ = one(&c, s, lim.request);
                    });
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(20))
            }
            Err(e) => {
                tracing::warn!("metrics listener: {e}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// One open connection; the count goes down when it is dropped, even if the connection's
/// thread panics or never starts.
#[derive(Debug)]
struct Slot(Arc<AtomicUsize>);

impl Slot {
    fn take(open: &Arc<AtomicUsize>) -> Slot {
        open.fetch_add(1, Ordering::Relaxed);
        Slot(open.clone())
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Turn a client away at the limit: a short 503 (into a fresh socket's empty send buffer, so
/// it does not wait on the client), then close. Runs on the accepting thread.
fn busy(mut s: TcpStream, limit: usize) {
    let _ = s.set_nonblocking(false);
    let _ = reply(
        &mut s,
        "503 Service Unavailable",
        "text/plain",
        &format!("{limit} metrics connections are open already\n"),
        Instant::now() + Duration::from_millis(100),
    );
}

fn one(ctl: &Control, mut s: TcpStream, request_deadline: Duration) -> io::Result<()> {
    let end = Instant::now() + request_deadline;
    s.set_nonblocking(false)?;
    // Short reads, so the deadline is looked at while the client sends nothing.
    s.set_read_timeout(Some(Duration::from_millis(200)))?;
    let mut req = Vec::with_capacity(512);
    let mut buf = [0u8; 512];
    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
        if req.len() > MAX_REQUEST {
            return reply(
                &mut s,
                "431 Request Header Fields Too Large",
                "text/plain",
                "request too large\n",
                Instant::now() + REPLY_DEADLINE,
            );
        }
        if Instant::now() >= end {
            ctl.counters.http_timeouts.fetch_add(1, Ordering::Relaxed);
            return reply(
                &mut s,
                "408 Request Timeout",
                "text/plain",
                "request incomplete\n",
                Instant::now() + REPLY_DEADLINE,
            );
        }
        match s.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => req.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) => {}
            Err(e) => return Err(e),
        }
    }
    let line = req.split(|&b| b == b'\r').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let by = Instant::now() + REPLY_DEADLINE;
    if method != "GET" {
        return reply(
            &mut s,
            "405 Method Not Allowed",
            "text/plain",
            "only GET\n",
            by,
        );
    }
    if target != "/metrics" && !target.starts_with("/metrics?") {
        return reply(&mut s, "404 Not Found", "text/plain", "try /metrics\n", by);
    }
    let snaps = ctl.snapshots();
    let sys = ctl.system();
    let body = {
        let run = lock(&ctl.running);
        view::metrics(&run, &snaps, &sys, ctl.started.elapsed())
    };
    reply(
        &mut s,
        "200 OK",
        "application/openmetrics-text; version=1.0.0; charset=utf-8",
        &body,
        Instant::now() + REPLY_DEADLINE,
    )
}

/// Write the whole answer (one buffer, so head and body leave together) by `end`.
fn reply(s: &mut TcpStream, status: &str, ctype: &str, body: &str, end: Instant) -> io::Result<()> {
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body.as_bytes());
    write_by(s, &out, end)
}

/// `write_all` under a deadline for the whole buffer, not for each write: a client reading a
/// byte at a time cannot keep the connection past `end`.
fn write_by(s: &mut TcpStream, mut buf: &[u8], end: Instant) -> io::Result<()> {
    while !buf.is_empty() {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        s.set_write_timeout(Some(left))?;
        match s.write(buf) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    // Test support: a failed unwrap here is a failed test.
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::config::{self, ControlConfig};
    use crate::control::running::{Running, Source};
    use crate::control::{self, CtlCounters, proto};
    use serde_json::{Value, json};
    use std::os::unix::net::{UnixListener, UnixStream};
    use std::path::{Path, PathBuf};
    use std::sync::Mutex;
    use std::sync::atomic::AtomicBool;
    use std::thread::JoinHandle;

    const CONFIG: &str = "[gateway]\nunprotected = \"wan0\"\nprotected = \"lan0\"\n";

    /// A directory removed at the end of the test.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> TempDir {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            let p =
                std::env::temp_dir().join(format!("xsecd-{tag}-{}-{nanos}", std::process::id()));
            std::fs::create_dir_all(&p).unwrap();
            TempDir(p)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// A request as a client sends it: framed body, decoded, dispatched.
    fn call(ctl: &Control, cmd: &str, args: &Value) -> Result<Value, control::Fail> {
        call_as(ctl, &mut control::ANONYMOUS.to_owned(), cmd, args)
    }

    /// The same from a connection whose client tag is `client` (`hello` changes it).
    fn call_as(
        ctl: &Control,
        client: &mut String,
        cmd: &str,
        args: &Value,
    ) -> Result<Value, control::Fail> {
        let body = proto::request(1, cmd, args.clone()).to_string();
        let (_, req) = control::request::decode(body.as_bytes());
        control::dispatch(ctl, req?, client)
    }

    /// A control plane without workers or XDP (no root needed): enough for both listeners,
    /// `status`, `show-counters` and `GET /metrics`.
    fn control(dir: &Path) -> (Arc<Control>, UnixListener) {
        let path = dir.join("gw.toml");
        let cfg = config::parse(CONFIG, &path).unwrap();
        let running = Running::new(cfg, Source::new(CONFIG, &path), 1).unwrap();
        let cc = ControlConfig {
            socket: dir.join("xsecd.sock"),
            group: None,
            metrics: None,
        };
        let unix = control::bind(&cc, None).unwrap();
        let ctl = Control {
            spis: Mutex::new(Default::default()),
            running: Mutex::new(running),
            xdp: Mutex::new(None),
            workers: vec![],
            resolve: crossbeam_channel::unbounded().0,
            clock: Default::default(),
            started: Instant::now(),
            subscribers: Mutex::new(vec![]),
            ifaces: [("wan0".into(), 0), ("lan0".into(), 0)],
            xdp_mode: "skb",
            cfg: cc,
            gid: None,
            conns: AtomicUsize::new(0),
            tracing: AtomicBool::new(false),
            counters: CtlCounters::default(),
            stop: Arc::new(AtomicBool::new(false)),
            probes: Arc::new(crate::probe::ProbeBoard::new(1)),
            own_addrs: [None, None],
        };
        (Arc::new(ctl), unix)
    }

    fn spawn_http(ctl: &Arc<Control>, lim: Limits) -> (std::net::SocketAddr, JoinHandle<()>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let c = ctl.clone();
        (addr, std::thread::spawn(move || serve_with(c, l, lim)))
    }

    /// Wait (up to 10 s) for `f`.
    fn wait_for(what: &str, f: impl Fn() -> bool) {
        let end = Instant::now() + Duration::from_secs(10);
        while !f() {
            assert!(Instant::now() < end, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Send `request` (may be empty) and read the whole answer until the server closes.
    fn http(mut s: TcpStream, request: &str) -> String {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(request.as_bytes()).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    }

    /// [`http`] on a new connection until it is not turned away: a slot is given back just
    /// after its connection is closed, so a client right behind may still get a 503.
    fn http_when_free(addr: std::net::SocketAddr, request: &str) -> String {
        for _ in 0..100 {
            let r = http(TcpStream::connect(addr).unwrap(), request);
            if !r.starts_with("HTTP/1.1 503") {
                return r;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("the metrics listener stays busy");
    }

    const GET: &str = "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n";

    fn ctl_request(ctl: &Control, id: u64, command: &str) -> Value {
        let mut u = UnixStream::connect(&ctl.cfg.socket).unwrap();
        u.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        proto::write_frame(&mut u, &proto::request(id, command, json!({}))).unwrap();
        let body = proto::read_frame(&mut u, Duration::from_secs(10)).unwrap();
        serde_json::from_slice(&body).unwrap()
    }

    #[test]
    fn http_clients_cannot_take_the_control_sockets_connections() {
        let dir = TempDir::new("http-limit");
        let (ctl, unix) = control(&dir.0);
        let c = ctl.clone();
        let ctl_server = std::thread::spawn(move || control::serve(c, unix));
        // A deadline longer than the test: the idle clients keep their slots throughout.
        let (addr, http_server) = spawn_http(
            &ctl,
            Limits {
                conns: MAX_HTTP_CONNS,
                request: Duration::from_secs(60),
            },
        );

        // 40 idle clients (more than either limit): MAX_HTTP_CONNS are served, the rest
        // turned away with a 503.
        let mut idle: Vec<TcpStream> = (0..40).map(|_| TcpStream::connect(addr).unwrap()).collect();
        let n = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        wait_for("40 HTTP connections", || {
            n(&ctl.counters.http_connections) == 40
        });
        assert_eq!(n(&ctl.counters.http_busy), 40 - MAX_HTTP_CONNS as u64);

        // The control socket still answers, and counts the two listeners apart.
        let v = ctl_request(&ctl, 1, "status");
        assert_eq!(v["ok"], json!(true), "{v}");
        let v = ctl_request(&ctl, 2, "show-counters");
        let c = &v["result"]["control"];
        assert_eq!(c["busy"], json!(0), "{v}");
        assert_eq!(c["connections"], json!(2), "{v}");
        assert_eq!(c["http_connections"], json!(40), "{v}");
        assert_eq!(c["http_busy"], json!(24), "{v}");
        assert_eq!(c["http_timeouts"], json!(0), "{v}");

        // One more HTTP client is refused and closed.
        let r = http(TcpStream::connect(addr).unwrap(), "");
        assert!(r.starts_with("HTTP/1.1 503 "), "{r}");
        assert_eq!(n(&ctl.counters.http_busy), 25);

        // A client holding a slot is still served; once it is done, its slot takes another.
        let r = http(idle.remove(0), GET);
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
        assert!(r.contains("xsec_uptime_seconds"), "{r}");
        let r = http_when_free(addr, GET);
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");

        ctl.stop.store(true, Ordering::Relaxed);
        drop(idle);
        ctl_server.join().unwrap();
        http_server.join().unwrap();
    }

    #[test]
    fn an_http_client_that_sends_nothing_is_closed_at_the_deadline() {
        let dir = TempDir::new("http-deadline");
        let (ctl, _unix) = control(&dir.0);
        let deadline = Duration::from_millis(300);
        let (addr, server) = spawn_http(
            &ctl,
            Limits {
                conns: 1,
                request: deadline,
            },
        );
        let t = Instant::now();
        let r = http(TcpStream::connect(addr).unwrap(), "");
        assert!(r.starts_with("HTTP/1.1 408 "), "{r}");
        assert!(t.elapsed() >= deadline && t.elapsed() < Duration::from_secs(5));
        assert_eq!(ctl.counters.http_timeouts.load(Ordering::Relaxed), 1);
        // A partial request is cut off the same way.
        let r = http_when_free(addr, "GET /metr");
        assert!(r.starts_with("HTTP/1.1 408 "), "{r}");
        assert_eq!(ctl.counters.http_timeouts.load(Ordering::Relaxed), 2);
        // The slot is free again.
        let r = http_when_free(addr, GET);
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");

        ctl.stop.store(true, Ordering::Relaxed);
        server.join().unwrap();
    }

    /// `reload` with `dry_run`: the summary of what would change, `applied: false`, and the
    /// running configuration untouched; a bad file is refused the same way a reload is.
    #[test]
    fn a_dry_run_reload_says_what_would_change_and_changes_nothing() {
        let dir = TempDir::new("dry-run");
        let (ctl, _unix) = control(&dir.0);
        let text = format!(
            "{CONFIG}\n[[policy]]\nname = \"web\"\ndirection = \"out\"\n\
             local = \"10.1.0.0/24\"\nremote = \"0.0.0.0/0\"\naction = \"bypass\"\n"
        );
        let before = control::lock(&ctl.running).generation;
        let args = json!({"path": dir.0.join("gw.toml"), "text": text, "dry_run": true});
        let v = call(&ctl, "reload", &args).unwrap();
        assert_eq!(
            v["generation"],
            json!(before + 1),
            "the generation it would make"
        );
        assert_eq!(v["applied"], json!(false), "{v}");
        assert_eq!(v["policies"]["out"]["added"], json!(["web"]), "{v}");
        let run = control::lock(&ctl.running);
        assert_eq!(run.generation, before, "nothing applied");
        assert!(
            run.spd
                .policies(xsec_dataplane::spd::Direction::Outbound)
                .is_empty()
        );
        drop(run);
        let bad = json!({"path": "gw.toml", "text": "[gateway]\nunprotected = 1\n",
                         "dry_run": true});
        let (kind, _, detail) = call(&ctl, "reload", &bad).unwrap_err();
        assert_eq!(kind, proto::kind::CONFIG);
        assert!(detail[0]["line"].as_u64().is_some(), "{detail}");
    }

    /// `policy-test` on the running SPD: `any` ports, and an ICMP type past 255 refused (it
    /// once looped forever in the port cutter while holding the configuration lock).
    #[test]
    fn policy_test_takes_any_and_refuses_icmp_types_past_255() {
        let dir = TempDir::new("policy-test");
        let (ctl, _unix) = control(&dir.0);
        let args = json!({"direction": "out", "proto": "tcp", "local": "10.1.0.1:any",
                          "remote": "10.2.0.1:443", "name": "t1"});
        let v = call(&ctl, "policy-test", &args).unwrap();
        assert_eq!(v["name"], json!("t1"));
        assert_eq!(v["results"][0]["disposition"], json!("discard"), "{v}");
        assert_eq!(v["results"][0]["local_ports"], json!([0, 65535]));
        let args = json!({"direction": "out", "proto": "icmp", "local": "10.1.0.1:300",
                          "remote": "10.2.0.1"});
        let (kind, msg, _) = call(&ctl, "policy-test", &args).unwrap_err();
        assert_eq!(kind, proto::kind::BAD_ARGS);
        assert!(msg.contains("0-255"), "{msg}");
    }

    /// `alloc-spi`: distinct SPIs, never an installed one, a narrow range runs out (busy),
    /// a reservation ends when an SA with its SPI is installed.
    #[test]
    fn alloc_spi_hands_out_each_spi_once() {
        let dir = TempDir::new("alloc-spi");
        let (ctl, _unix) = control(&dir.0);
        let a = |args: Value| call(&ctl, "alloc-spi", &args);
        let s1 = a(json!({})).unwrap();
        let spi = s1["spi"].as_u64().unwrap();
        assert!((0xc000_0000..=0xcfff_ffff).contains(&spi), "{s1}");
        assert_eq!(s1["expires_in_s"], json!(60));
        let r = json!({"min": 0x1000, "max": 0x1001, "lifetime_s": 30});
        let mut two = [
            a(r.clone()).unwrap()["spi"].as_u64(),
            a(r.clone()).unwrap()["spi"].as_u64(),
        ];
        two.sort_unstable();
        assert_eq!(two, [Some(0x1000), Some(0x1001)]);
        let (kind, msg, _) = a(r.clone()).unwrap_err();
        assert_eq!(kind, proto::kind::BUSY, "{msg}");
        let (kind, _, _) = a(json!({"min": 5, "max": 10})).unwrap_err();
        assert_eq!(kind, proto::kind::BAD_ARGS);
        // an installed SA's SPI is never handed out (the example's spi_in is 0x2222)
        let text = include_str!("../../../examples/ar410-tunnel-a.toml");
        let path = dir.0.join("a.toml");
        let cfg = config::parse(text, &path).unwrap();
        *control::lock(&ctl.running) = Running::new(cfg, Source::new(text, &path), 1).unwrap();
        let (kind, _, _) = a(json!({"min": 0x2222, "max": 0x2222})).unwrap_err();
        assert_eq!(kind, proto::kind::BUSY, "0x2222 is installed");
        assert_eq!(
            a(json!({"min": 0x2222, "max": 0x2223})).unwrap()["spi"],
            json!(0x2223)
        );
    }

    /// An SA object of control protocol v2.
    fn sa(id: &str, dir: &str, spi: u32, reqid: u32) -> Value {
        json!({
            "id": id, "name": "child", "direction": dir, "spi": format!("{spi:#x}"),
            "reqid": reqid, "local": "192.0.2.1", "remote": "198.51.100.2",
            "encryption": "aes-gcm-128",
            "enc_key": format!("0x{}", "a5".repeat(20)),
            "selectors": [{"local": "10.1.0.0/24", "remote": "10.2.0.0/24"}],
        })
    }

    fn ids(ctl: &Control, client: &str) -> Vec<String> {
        let d = call(ctl, "dump", &json!({"client": client})).unwrap();
        d["sas"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["id"].as_str().unwrap().to_owned())
            .collect()
    }

    /// `dump` pages: every object once, SAs by id then policies in SPD order, whatever the
    /// page size; the last page says `next: null`; a bad limit is refused.
    #[test]
    fn dump_pages_cover_everything_once() {
        let dir = TempDir::new("v2-dump");
        let (ctl, _unix) = control(&dir.0);
        let mut ike = control::ANONYMOUS.to_owned();
        call_as(&ctl, &mut ike, "hello", &json!({"client": "ike"})).unwrap();
        let mut ops: Vec<Value> = (0..1203u32)
            .map(|i| json!({"command": "add-sa", "args": {"sa": sa(&format!("in-{i:05}"), "in", 0x10_0000 + i, 100 + i)}}))
            .collect();
        for i in 0..7 {
            ops.push(json!({"command": "add-policy", "args": {"policy": {
                "id": format!("p{i}"), "direction": if i % 2 == 0 { "out" } else { "both" },
                "local": format!("10.{i}.0.0/16"), "action": "bypass"}}}));
        }
        call_as(&ctl, &mut ike, "batch", &json!({"ops": ops})).unwrap();
        for limit in [1usize, 7, 500, 1000] {
            let (mut sas, mut pols, mut after, mut pages) = (vec![], vec![], Value::Null, 0);
            loop {
                let mut args = json!({"client": "ike", "limit": limit});
                if !after.is_null() {
                    args["after"] = after.clone();
                }
                let page = call(&ctl, "dump", &args).unwrap();
                let n = page["sas"].as_array().unwrap().len()
                    + page["policies"].as_array().unwrap().len();
                assert!(n <= limit && (n > 0 || page["next"].is_null()), "{page}");
                for x in page["sas"].as_array().unwrap() {
                    sas.push(x["id"].as_str().unwrap().to_owned());
                }
                for x in page["policies"].as_array().unwrap() {
                    pols.push(format!(
                        "{}/{}",
                        x["direction"].as_str().unwrap(),
                        x["id"].as_str().unwrap()
                    ));
                }
                pages += 1;
                after = page["next"].clone();
                if after.is_null() {
                    break;
                }
            }
            let want: Vec<String> = (0..1203).map(|i| format!("in-{i:05}")).collect();
            assert_eq!(sas, want, "limit {limit}");
            // 4 outbound-only, 3 both: 7 outbound, then 3 inbound
            assert_eq!(pols.len(), 10, "limit {limit}: {pols:?}");
            assert_eq!(pols[0], "out/p0");
            assert_eq!(pols[9], "in/p5");
            assert_eq!(pages, (1213usize).div_ceil(limit), "limit {limit}");
        }
        for bad in [
            json!({"limit": 0}),
            json!({"limit": 1001}),
            json!({"after": {"policy": ["up", 1]}}),
        ] {
            assert!(call(&ctl, "dump", &bad).is_err(), "{bad}");
        }
    }

    /// `worker` of an SA object: a number pins it, "any" puts an inbound SA on every
    /// worker; dump says which; anything else, or a worker xsecd does not have, is refused.
    #[test]
    fn sa_worker_placement_over_the_protocol() {
        let dir = TempDir::new("v2-worker");
        let (ctl, _unix) = control(&dir.0);
        let mut ike = control::ANONYMOUS.to_owned();
        call_as(&ctl, &mut ike, "hello", &json!({"client": "ike"})).unwrap();
        let mut any = sa("in-any", "in", 0xc000_0001, 50);
        any["worker"] = json!("any");
        let mut pinned = sa("out-0", "out", 0x0a00_0001, 50);
        pinned["worker"] = json!(0);
        let ops = json!({"ops": [
            {"command": "add-sa", "args": {"sa": any}},
            {"command": "add-sa", "args": {"sa": pinned}},
        ]});
        call_as(&ctl, &mut ike, "batch", &ops).unwrap();
        let d = call(&ctl, "dump", &json!({"client": "ike"})).unwrap();
        let by_id = |id: &str| {
            d["sas"]
                .as_array()
                .unwrap()
                .iter()
                .find(|x| x["id"] == id)
                .cloned()
                .unwrap()
        };
        assert_eq!(by_id("in-any")["worker"], "any");
        // what a restarting client needs to rebuild the SA, but its keys
        let a = by_id("in-any");
        assert_eq!(
            (
                a["ttl"].clone(),
                a["dscp"].clone(),
                a["df"].clone(),
                a["ecn"].clone()
            ),
            (json!(64), json!("copy"), json!("copy"), json!("normal"))
        );
        assert!(a.get("enc_key").is_none() && a["enc_key_bytes"] == 20);
        assert_eq!(
            (
                by_id("out-0")["worker"].clone(),
                by_id("out-0")["worker_pinned"].clone()
            ),
            (json!(0), json!(true))
        );
        for (w, why) in [
            (json!(1), "worker 1: xsecd has 1 worker"),
            (json!("all"), "neither a worker number"),
        ] {
            let mut x = sa("out-x", "out", 0x0a00_0002, 50);
            x["worker"] = w;
            let e = call_as(&ctl, &mut ike, "add-sa", &json!({"sa": x})).unwrap_err();
            assert!(e.1.contains(why), "{}", e.1);
        }
    }

    #[test]
    fn every_store_operation_and_refusal() {
        let dir = TempDir::new("v2-ops");
        let (ctl, _unix) = control(&dir.0);
        let mut ike = control::ANONYMOUS.to_owned();
        let mut other = control::ANONYMOUS.to_owned();
        let h = call_as(&ctl, &mut ike, "hello", &json!({"client": "ike"})).unwrap();
        assert_eq!(h["client"], "ike");
        call_as(&ctl, &mut other, "hello", &json!({"client": "other"})).unwrap();
        let kind = |r: Result<Value, control::Fail>| r.unwrap_err().0;
        assert_eq!(
            kind(call(&ctl, "hello", &json!({"client": "config"}))),
            proto::kind::REFUSED
        );
        assert_eq!(
            kind(call(&ctl, "hello", &json!({"client": "a b"}))),
            proto::kind::BAD_ARGS
        );
        let op = |c: &mut String, cmd: &str, args: Value| call_as(&ctl, c, cmd, &args);

        let r = op(
            &mut ike,
            "add-sa",
            json!({"sa": sa("in-1", "in", 0xc000_0001, 50)}),
        )
        .unwrap();
        assert_eq!(r["sas"]["added"], json!(["in-1"]));
        // refusals: nothing applied by any of them
        let dup_id = op(
            &mut ike,
            "add-sa",
            json!({"sa": sa("in-1", "in", 0xc000_0009, 50)}),
        );
        assert_eq!(kind(dup_id), proto::kind::BAD_ARGS);
        let dup_spi = op(
            &mut ike,
            "add-sa",
            json!({"sa": sa("in-x", "in", 0xc000_0001, 50)}),
        );
        let (k, m, _) = dup_spi.unwrap_err();
        assert_eq!(k, proto::kind::BAD_ARGS);
        assert!(m.contains("0xc0000001"), "{m}");
        let mut short = sa("in-s", "in", 0xc000_0002, 50);
        short["enc_key"] = json!("0x0102");
        assert_eq!(
            kind(op(&mut ike, "add-sa", json!({"sa": short}))),
            proto::kind::BAD_ARGS
        );
        let mut nohex = sa("in-s", "in", 0xc000_0002, 50);
        nohex["enc_key"] = json!("0xzz");
        assert_eq!(
            kind(op(&mut ike, "add-sa", json!({"sa": nohex}))),
            proto::kind::BAD_ARGS
        );
        assert_eq!(
            kind(op(&mut ike, "del-sa", json!({"id": "nope"}))),
            proto::kind::NOT_FOUND
        );
        assert_eq!(
            kind(op(&mut other, "del-sa", json!({"id": "in-1"}))),
            proto::kind::REFUSED
        );
        let taken = op(
            &mut other,
            "add-sa",
            json!({"sa": sa("o-1", "out", 0x1234, 50)}),
        );
        assert_eq!(kind(taken), proto::kind::REFUSED, "reqid 50 is ike's");
        let mut moved = sa("in-1", "in", 0xc000_0003, 50);
        moved["ttl"] = json!(9);
        assert_eq!(
            kind(op(&mut ike, "update-sa", json!({"sa": moved}))),
            proto::kind::BAD_ARGS
        );
        assert_eq!(ids(&ctl, "ike"), ["in-1"]);

        // a policy may name a reqid that has no outbound SA yet
        let pol = json!({"policy": {"id": "net", "direction": "out", "local": "10.1.0.0/24",
                                    "remote": "10.2.0.0/24", "action": "protect", "reqid": 50}});
        op(&mut ike, "add-policy", pol.clone()).unwrap();
        assert_eq!(kind(op(&mut ike, "add-policy", pol)), proto::kind::BAD_ARGS);

        // a batch with one bad operation applies nothing
        let bad = op(
            &mut ike,
            "batch",
            json!({"ops": [
                {"command": "add-sa", "args": {"sa": sa("out-1", "out", 0x0a00_0001, 50)}},
                {"command": "del-sa", "args": {"id": "in-1"}},
                {"command": "del-sa", "args": {"id": "in-1"}},
            ]}),
        );
        let (k, m, _) = bad.unwrap_err();
        assert_eq!(k, proto::kind::NOT_FOUND);
        assert!(m.contains("operation 3"), "{m}");
        assert_eq!(ids(&ctl, "ike"), ["in-1"]);
        let nested = op(
            &mut ike,
            "batch",
            json!({"ops": [{"command": "dump", "args": {}}]}),
        );
        assert_eq!(kind(nested), proto::kind::BAD_ARGS);
        let r = op(
            &mut ike,
            "batch",
            json!({"ops": [
                {"command": "add-sa", "args": {"sa": sa("out-1", "out", 0x0a00_0001, 50)}},
                {"command": "add-sa", "args": {"sa": sa("in-2", "in", 0xc000_0002, 50)}},
            ]}),
        )
        .unwrap();
        assert_eq!(r["sas"]["added"].as_array().unwrap().len(), 2);

        // endpoints move; the dump shows the new ones and never a key
        op(
            &mut ike,
            "update-sa-endpoints",
            json!({"id": "out-1", "remote": "198.51.100.99"}),
        )
        .unwrap();
        let d = call(&ctl, "dump", &json!({"client": "ike"})).unwrap();
        let text = d.to_string();
        assert!(
            !text.contains(&"a5".repeat(20)),
            "a key in the dump: {text}"
        );
        let out = d["sas"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["id"] == "out-1")
            .unwrap();
        assert_eq!(out["remote"], "198.51.100.99");
        assert_eq!(out["enc_key_bytes"], 20);
        assert_eq!(d["policies"][0]["reqids"], json!([50]));

        // update, move and delete policies; delete SAs
        op(
            &mut ike,
            "add-policy",
            json!({"policy": {"id": "ssh", "direction": "both",
            "local": "10.1.0.0/24", "proto": "tcp", "local_port": "22", "action": "bypass"}}),
        )
        .unwrap();
        op(&mut ike, "move-policy", json!({"id": "ssh", "position": 1})).unwrap();
        let d = call(&ctl, "dump", &json!({})).unwrap();
        let outs: Vec<&str> = d["policies"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["direction"] == "out")
            .map(|p| p["id"].as_str().unwrap())
            .collect();
        assert_eq!(outs, ["ssh", "net"]);
        op(
            &mut ike,
            "update-policy",
            json!({"policy": {"id": "net", "direction": "out",
            "local": "10.1.0.0/16", "action": "protect", "reqid": 50}}),
        )
        .unwrap();
        op(&mut ike, "del-policy", json!({"id": "ssh"})).unwrap();
        assert_eq!(
            kind(op(&mut ike, "del-policy", json!({"id": "ssh"}))),
            proto::kind::NOT_FOUND
        );
        for id in ["out-1", "in-1", "in-2"] {
            op(&mut ike, "del-sa", json!({"id": id})).unwrap();
        }
        assert!(ids(&ctl, "ike").is_empty());
    }

    /// A client that leaves (crashes) leaves its SAs; under the same tag it lists and deletes
    /// them. Clients working at once each see all their operations applied.
    #[test]
    fn clients_come_back_and_work_at_once_over_the_socket() {
        let dir = TempDir::new("v2-clients");
        let (ctl, unix) = control(&dir.0);
        let server = {
            let c = ctl.clone();
            std::thread::spawn(move || control::serve(c, unix))
        };
        let req = |u: &mut UnixStream, id: u64, cmd: &str, args: Value| -> Value {
            proto::write_frame(u, &proto::request(id, cmd, args)).unwrap();
            let body = proto::read_frame(u, Duration::from_secs(10)).unwrap();
            serde_json::from_slice(&body).unwrap()
        };
        {
            let mut u = UnixStream::connect(&ctl.cfg.socket).unwrap();
            req(&mut u, 1, "hello", json!({"client": "ike"}));
            let a = req(
                &mut u,
                2,
                "add-sa",
                json!({"sa": sa("in-1", "in", 0xc000_0001, 7)}),
            );
            assert_eq!(a["ok"], true, "{a}");
            // gone without a word
        }
        let workers: Vec<_> = (0..4u32)
            .map(|t| {
                let path = ctl.cfg.socket.clone();
                std::thread::spawn(move || {
                    let mut u = UnixStream::connect(path).unwrap();
                    req(&mut u, 1, "hello", json!({"client": format!("c{t}")}));
                    for i in 0..25u32 {
                        let spi = 0x1_0000 + t * 100 + i;
                        let a = req(
                            &mut u,
                            2 + u64::from(i),
                            "add-sa",
                            json!({"sa": sa(&format!("c{t}-{i}"), "in", spi, 100 + t)}),
                        );
                        assert_eq!(a["ok"], true, "{a}");
                    }
                })
            })
            .collect();
        for w in workers {
            w.join().unwrap();
        }
        let mut u = UnixStream::connect(&ctl.cfg.socket).unwrap();
        req(&mut u, 1, "hello", json!({"client": "ike"}));
        let d = req(&mut u, 2, "dump", json!({"client": "ike"}));
        assert_eq!(d["result"]["sas"][0]["id"], "in-1", "{d}");
        assert_eq!(ids(&ctl, "c3").len(), 25);
        assert_eq!(
            call(&ctl, "dump", &json!({})).unwrap()["sas"]
                .as_array()
                .unwrap()
                .len(),
            101
        );
        let del = req(&mut u, 3, "del-sa", json!({"id": "in-1"}));
        assert_eq!(del["ok"], true, "{del}");
        ctl.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        server.join().unwrap();
    }
}
