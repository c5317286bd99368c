//! `xsec-lab ike-bench`: IKE SA + Child SA setups per second, PSK, for xsec-ike and
//! strongSwan's charon in every pairing, in the same run.
//!
//! The lab's direct topology; the initiator runs in gwA pinned to CPU 0, the responder in gwB
//! pinned to CPU 1 (each side on one core). The initiator is configured with N connections
//! that start at once (xsec-ike: `start_action = "start"`, through its initiate window of 32;
//! charon: `start_action = start`, its own job queue), each with the same selectors; the
//! responder with one connection that narrows to them. A setup is counted when the
//! initiator reports its Child SA established; the rate is N divided by the time from the
//! start of the initiations to the N-th. Pairings are interleaved, repeated, and reported as
//! medians. xsec-ike runs without xsecd (`--no-xsecd`: nothing installed); charon installs
//! its Child SAs in kernel-libipsec (userspace, no routes), as it must. Memory per IKE SA:
//! the responder's resident set before and after a run of `--memory-tunnels`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::procs::Proc;
use crate::topo::{Lab, Node, TopoOptions};
use crate::{Result, err};

/// Options of `xsec-lab ike-bench`.
#[derive(Debug, Clone)]
pub struct IkeBenchOptions {
    /// The xsec-ike executable.
    pub ike: PathBuf,
    pub tunnels: usize,
    pub repeat: usize,
    /// IKE proposals to measure, strongSwan syntax (e.g. `aes128gcm16-prfsha256-x25519`).
    pub proposals: Vec<String>,
    /// Tunnels of the memory measurement (0: none).
    pub memory_tunnels: usize,
    pub prefix: String,
    pub json: Option<PathBuf>,
}

const CHARON: &str = "/usr/lib/ipsec/charon";
const PSK: &str = "ike-bench-psk-0123456789abcdef";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Who {
    Xsec,
    Charon,
}

impl Who {
    fn name(self) -> &'static str {
        match self {
            Who::Xsec => "xsec-ike",
            Who::Charon => "charon",
        }
    }
}

/// The selectors of tunnel `i`: the same pair for all (charon's kernel-libipsec routes a
/// Child SA's traffic from an address of the gateway inside the local selector, so the
/// selectors must hold the gateways' own addresses; identical policies are shared).
fn ts(_i: usize) -> (String, String) {
    ("10.64.0.0/16".into(), "10.128.0.0/16".into())
}

fn xsec_initiator(n: usize, proposal: &str) -> String {
    let mut s = String::from(
        "[ike]\nretransmit_timeout = \"2s\"\ncookie_threshold = 1000000\ninitiate_window = 32\n\n",
    );
    for i in 0..n {
        let (l, r) = ts(i);
        s.push_str(&format!(
            "[connections.t{i}]\nlocal_addrs = \"10.0.0.1\"\nremote_addrs = \"10.0.0.2\"\nproposals = [\"{proposal}\"]\n\
             [connections.t{i}.local]\nid = \"a.bench\"\n[connections.t{i}.remote]\nid = \"b.bench\"\n\
             [connections.t{i}.children.c]\nlocal_ts = \"{l}\"\nremote_ts = \"{r}\"\nesp_proposals = \"aes128gcm16\"\nstart_action = \"start\"\n\n"
        ));
    }
    s.push_str(&format!(
        "[secrets.s]\nid = [\"a.bench\", \"b.bench\"]\nsecret = \"{PSK}\"\n"
    ));
    s
}

fn xsec_responder(proposal: &str) -> String {
    format!(
        "[ike]\nretransmit_timeout = \"2s\"\ncookie_threshold = 1000000\n\n\
         [connections.r]\nlocal_addrs = \"10.0.0.2\"\nremote_addrs = \"10.0.0.1\"\nproposals = [\"{proposal}\"]\n\
         [connections.r.local]\nid = \"b.bench\"\n[connections.r.remote]\nid = \"a.bench\"\n\
         [connections.r.children.c]\nlocal_ts = \"10.128.0.0/16\"\nremote_ts = \"10.64.0.0/16\"\nesp_proposals = \"aes128gcm16\"\n\n\
         [secrets.s]\nid = [\"a.bench\", \"b.bench\"]\nsecret = \"{PSK}\"\n"
    )
}

fn charon_conf(dir: &Path) -> String {
    format!(
        "charon {{\n  load = random nonce openssl aes sha1 sha2 hmac gcm curve25519 gmp kdf pem pkcs1 x509 pubkey kernel-libipsec kernel-netlink socket-default vici\n\
         \x20 port = 500\n  port_nat_t = 4500\n  reuse_ikesa = no\n  dos_protection = no\n  cookie_threshold = 1000000\n  retransmit_timeout = 2\n  install_virtual_ip = no\n\
         \x20 filelog {{\n    bench {{\n      path = {}/charon.log\n      default = 1\n      flush_line = yes\n    }}\n  }}\n\
         \x20 syslog {{\n    daemon {{\n      default = -1\n    }}\n  }}\n\
         \x20 plugins {{\n    vici {{\n      socket = unix://{}/charon.vici\n    }}\n    kernel-libipsec {{\n      allow_peer_ts = yes\n    }}\n  }}\n}}\n",
        dir.display(),
        dir.display()
    )
}

fn charon_swanctl(initiator: bool, n: usize, proposal: &str) -> String {
    let mut s = String::from("connections {\n");
    if initiator {
        for i in 0..n {
            let (l, r) = ts(i);
            s.push_str(&format!(
                "  t{i} {{\n    local_addrs = 10.0.0.1\n    remote_addrs = 10.0.0.2\n    proposals = {proposal}\n    unique = never\n\
                 \x20   local {{\n      auth = psk\n      id = a.bench\n    }}\n    remote {{\n      auth = psk\n      id = b.bench\n    }}\n\
                 \x20   children {{\n      c {{\n        local_ts = {l}\n        remote_ts = {r}\n        esp_proposals = aes128gcm16\n        start_action = start\n      }}\n    }}\n  }}\n"
            ));
        }
    } else {
        s.push_str(&format!(
            "  r {{\n    local_addrs = 10.0.0.2\n    remote_addrs = 10.0.0.1\n    proposals = {proposal}\n    unique = never\n\
             \x20   local {{\n      auth = psk\n      id = b.bench\n    }}\n    remote {{\n      auth = psk\n      id = a.bench\n    }}\n\
             \x20   children {{\n      c {{\n        local_ts = 10.128.0.0/16\n        remote_ts = 10.64.0.0/16\n        esp_proposals = aes128gcm16\n      }}\n    }}\n  }}\n"
        ));
    }
    s.push_str(&format!(
        "}}\nsecrets {{\n  ike-s {{\n    id-a = a.bench\n    id-b = b.bench\n    secret = \"{PSK}\"\n  }}\n}}\n"
    ));
    s
}

/// A running daemon of the bench.
struct Daemon {
    who: Who,
    proc: Proc,
    /// charon's folder (log, vici socket).
    dir: PathBuf,
}

impl Daemon {
    fn established(&self) -> usize {
        let text = match self.who {
            Who::Xsec => self.proc.stdout_text(),
            Who::Charon => std::fs::read_to_string(self.dir.join("charon.log")).unwrap_or_default(),
        };
        text.lines()
            .filter(|l| l.contains("CHILD_SA") && l.contains("established with SPIs"))
            .count()
    }
}

fn start(
    lab: &Lab,
    o: &IkeBenchOptions,
    who: Who,
    initiator: bool,
    n: usize,
    proposal: &str,
    tag: &str,
) -> Result<(Daemon, Instant)> {
    let (node, cpu) = if initiator {
        (Node::GwA, "0")
    } else {
        (Node::GwB, "1")
    };
    let dir = lab.workdir().join(tag);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("run")).map_err(|e| err!("{}: {e}", dir.display()))?;
    match who {
        Who::Xsec => {
            let cfg = dir.join("xsec-ike.toml");
            let text = if initiator {
                xsec_initiator(n, proposal)
            } else {
                xsec_responder(proposal)
            };
            std::fs::write(&cfg, text).map_err(|e| err!("{}: {e}", cfg.display()))?;
            let ike = o.ike.to_string_lossy().into_owned();
            let cfg_s = cfg.to_string_lossy().into_owned();
            let sock = dir.join("ike.sock").to_string_lossy().into_owned();
            // from the start of the process, as charon's from the loading of its connections
            let t0 = Instant::now();
            let p = lab.spawn(
                node,
                tag,
                &[
                    "taskset",
                    "-c",
                    cpu,
                    &ike,
                    "--config",
                    &cfg_s,
                    "--no-xsecd",
                    "--socket",
                    &sock,
                    "--log-level",
                    "warn",
                ],
            )?;
            let end = Instant::now() + Duration::from_secs(60);
            while !p.stdout_text().contains("xsec-ike: ready") {
                if Instant::now() > end || !lab.procs().is_running(&p) {
                    return Err(err!("{tag}: xsec-ike did not start: {}", p.stderr_tail(5)));
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            Ok((Daemon { who, proc: p, dir }, t0))
        }
        Who::Charon => {
            let conf = dir.join("strongswan.conf");
            std::fs::write(&conf, charon_conf(&dir))
                .map_err(|e| err!("{}: {e}", conf.display()))?;
            let swanctl = dir.join("swanctl.conf");
            std::fs::write(&swanctl, charon_swanctl(initiator, n, proposal))
                .map_err(|e| err!("{}: {e}", swanctl.display()))?;
            let run = dir.join("run").to_string_lossy().into_owned();
            let conf_s = conf.to_string_lossy().into_owned();
            // charon writes /run/charon.pid: a private mount namespace gives each its own /run
            let p = lab.spawn(
                node,
                tag,
                &[
                    "taskset",
                    "-c",
                    cpu,
                    "unshare",
                    "--mount",
                    "--propagation",
                    "private",
                    "sh",
                    "-c",
                    "mount --bind \"$1\" /run && exec env STRONGSWAN_CONF=\"$2\" \"$3\"",
                    "sh",
                    &run,
                    &conf_s,
                    CHARON,
                ],
            )?;
            let vici = dir.join("charon.vici");
            let end = Instant::now() + Duration::from_secs(20);
            while !vici.exists() {
                if Instant::now() > end || !lab.procs().is_running(&p) {
                    return Err(err!("{tag}: charon did not start: {}", p.stderr_tail(5)));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let t0 = Instant::now();
            let mut c = std::process::Command::new("swanctl");
            c.env("STRONGSWAN_CONF", &conf)
                .args(["--load-all", "--noprompt", "--uri"])
                .arg(format!("unix://{}", vici.display()))
                .arg("--file")
                .arg(&swanctl);
            let out = c.output().map_err(|e| err!("swanctl: {e}"))?;
            if !out.status.success() {
                return Err(err!(
                    "{tag}: swanctl --load-all: {}",
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
            Ok((Daemon { who, proc: p, dir }, t0))
        }
    }
}

fn stop(lab: &Lab, d: &Daemon) {
    lab.procs().stop(&d.proc, Duration::from_secs(3));
}

/// One measurement: the rate, and the responder's RSS growth per IKE SA (KiB).
fn measure(
    lab: &Lab,
    o: &IkeBenchOptions,
    init: Who,
    resp: Who,
    n: usize,
    proposal: &str,
    run: usize,
) -> Result<(f64, f64)> {
    let tag = format!("{}-{}-{run}", init.name(), resp.name());
    let (r, _) = start(lab, o, resp, false, 1, proposal, &format!("{tag}-resp"))?;
    std::thread::sleep(Duration::from_millis(300));
    let rss0 = crate::sysstat::rss_kib(r.proc.pid).unwrap_or(0);
    let (i, t0) = start(lab, o, init, true, n, proposal, &format!("{tag}-init"))?;
    let limit = Duration::from_secs(30 + n as u64 / 20);
    let mut done;
    loop {
        done = i.established();
        if done >= n || t0.elapsed() > limit {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let secs = t0.elapsed().as_secs_f64();
    let rss1 = crate::sysstat::rss_kib(r.proc.pid).unwrap_or(0);
    stop(lab, &i);
    stop(lab, &r);
    if done < n {
        return Err(err!("{tag}: {done} of {n} Child SAs within {limit:?}"));
    }
    Ok((n as f64 / secs, rss1.saturating_sub(rss0) as f64 / n as f64))
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() { 0.0 } else { v[v.len() / 2] }
}

/// Run the bench; the JSON it also writes to `o.json`.
pub fn run(o: &IkeBenchOptions) -> Result<Value> {
    let lab = Lab::up(TopoOptions::new(&o.prefix))?;
    lab.warm_neighbours()?;
    // charon's kernel-libipsec routes a Child SA's traffic from an address inside its local
    // selector: give each gateway one
    for (node, a) in [
        (Node::GwA, "10.64.255.254/32"),
        (Node::GwB, "10.128.255.254/32"),
    ] {
        lab.exec(node, &["ip", "addr", "add", a, "dev", "lo"])?
            .check()?;
    }
    let pairs = [
        (Who::Xsec, Who::Xsec),
        (Who::Xsec, Who::Charon),
        (Who::Charon, Who::Charon),
        (Who::Charon, Who::Xsec),
    ];
    let mut results = vec![];
    for proposal in &o.proposals {
        let mut rates: Vec<Vec<f64>> = vec![vec![]; pairs.len()];
        for rep in 0..o.repeat {
            // alternate the order of the pairings between repetitions
            let order: Vec<usize> = if rep % 2 == 0 {
                (0..pairs.len()).collect()
            } else {
                (0..pairs.len()).rev().collect()
            };
            for k in order {
                let (i, r) = pairs[k];
                let (rate, _) = measure(&lab, o, i, r, o.tunnels, proposal, rep)?;
                println!(
                    "ike-bench: {proposal}: {} -> {}: {rate:.0} setups/s",
                    i.name(),
                    r.name()
                );
                rates[k].push(rate);
            }
        }
        let base = median(&mut rates[2].clone());
        for (k, (i, r)) in pairs.iter().enumerate() {
            let mut v = rates[k].clone();
            let m = median(&mut v);
            results.push(json!({
                "proposal": proposal, "initiator": i.name(), "responder": r.name(),
                "tunnels": o.tunnels, "setups_per_s": rates[k], "median": m,
                "vs_charon_to_charon": if base > 0.0 { m / base } else { 0.0 },
            }));
        }
    }
    let mut memory = vec![];
    if o.memory_tunnels > 0 {
        for (i, r) in [(Who::Xsec, Who::Xsec), (Who::Charon, Who::Charon)] {
            let p = o
                .proposals
                .first()
                .cloned()
                .unwrap_or_else(|| "aes128gcm16-prfsha256-x25519".into());
            let (rate, kib) = measure(&lab, o, i, r, o.memory_tunnels, &p, 99)?;
            println!(
                "ike-bench: memory: {} responder at {} tunnels: {:.1} KiB per IKE SA ({rate:.0} setups/s)",
                r.name(),
                o.memory_tunnels,
                kib
            );
            memory.push(
                json!({"responder": r.name(), "initiator": i.name(), "tunnels": o.memory_tunnels,
                "kib_per_ike_sa": kib, "setups_per_s": rate, "proposal": p}),
            );
        }
    }
    let info = crate::sysstat::cpuinfo();
    let v = json!({
        "bench": "ike-setups",
        "cpu": {
            "model": info.model,
            "cpus": info.cpus,
            "flags": info.flags.iter().map(|(f, h)| (f.to_string(), json!(h))).collect::<serde_json::Map<_, _>>(),
        },
        "options": {"tunnels": o.tunnels, "repeat": o.repeat, "proposals": o.proposals, "memory_tunnels": o.memory_tunnels},
        "method": "N connections start at once on the initiator (gwA, CPU 0) towards one responder connection (gwB, CPU 1); rate = N / time to the N-th Child SA on the initiator; xsec-ike without xsecd, charon with kernel-libipsec (no routes)",
        "results": results,
        "memory": memory,
    });
    if let Some(p) = &o.json {
        std::fs::write(p, serde_json::to_string_pretty(&v).unwrap_or_default())
            .map_err(|e| err!("{}: {e}", p.display()))?;
    }
    Ok(v)
}
