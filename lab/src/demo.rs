//! `xsec-lab run`: the bounded demo behind `cargo xtask lab`.
//!
//! Builds the topology (direct, or through the NAT with `--nat`), writes both gateway
//! configurations (tunnel 10.1.0.0/24 <-> 10.2.0.0/24 and fd01::/64 <-> fd02::/64, AES-GCM-128;
//! NAT-T through the NAT, ESP-in-UDP 2746 with heartbeats under `--udp-tunnel`), captures the
//! middle link (see `Lab::wire_tap`), starts both xsecd, runs pings (v4 and v6) and a UDP stream both
//! ways and a TCP transfer, prints both gateways' per-SA counters every second, then checks
//! the capture: only ESP (or its UDP encapsulation, keep-alives, ARP/ND) between the
//! gateways, no inner address in clear, and every ESP packet decrypted by tshark with a good
//! ICV using an `esp_sa` table written from the generated keys. `--plain` runs the same
//! topology and traffic with kernel forwarding only (the baseline, nothing encrypted).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::config::{Encap, Pair, PairOptions};
use crate::procs::Proc;
use crate::stats::{self, Stats};
use crate::tools::{parse_summary, received_count};
use crate::topo::parse_ping;
use crate::topo::{Lab, Node, TopoOptions, Wan, Xsecd, addr};
use crate::wire;
use crate::{Result, err};

/// Options of `xsec-lab run`.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub xsecd: Option<PathBuf>,
    pub seconds: u64,
    pub nat: bool,
    pub udp_tunnel: bool,
    pub plain: bool,
    pub keep: bool,
    pub prefix: String,
    /// This binary (the traffic tools run as its subcommands).
    pub lab_bin: PathBuf,
    /// Set by SIGINT/SIGTERM: stop early and tear down.
    pub stop: Arc<AtomicBool>,
}

struct Traffic {
    pings: Vec<(String, Proc)>,
    udp_recv: Vec<(String, Proc)>,
    udp_send: Vec<Proc>,
    tcp_sink: Proc,
    tcp_send: Proc,
}

fn check_stop(o: &RunOptions) -> Result<()> {
    if o.stop.load(Ordering::Relaxed) {
        Err(err!("interrupted: tearing the lab down"))
    } else {
        Ok(())
    }
}

/// Run the lab; `Ok(true)` if encrypted (or, with `--plain`, forwarded) traffic flowed both
/// ways and every check passed.
pub fn run(o: &RunOptions) -> Result<bool> {
    if o.plain && o.nat {
        return Err(err!(
            "--plain runs the direct topology only (the NAT has no way back in)"
        ));
    }
    let xsecd = match (&o.xsecd, o.plain) {
        (_, true) => None,
        (Some(p), false) => {
            Some(std::fs::canonicalize(p).map_err(|e| err!("--xsecd {}: {e}", p.display()))?)
        }
        (None, false) => return Err(err!("--xsecd PATH is required (or --plain)")),
    };
    let wan = if o.nat { Wan::Nat } else { Wan::Direct };
    let encap = if o.nat {
        Encap::NatT
    } else if o.udp_tunnel {
        Encap::Udp(2746)
    } else {
        Encap::None
    };
    let pair = Pair::new(PairOptions {
        encap,
        // heartbeats keep the NAT mapping; once a second makes them visible in a short run
        keepalive: if encap == Encap::None { 0 } else { 1 },
        wan,
        ..PairOptions::default()
    });
    let mut lab = Lab::up(TopoOptions::new(&o.prefix).wan(wan))?;
    if o.keep {
        lab.keep();
    }
    println!(
        "xsec-lab: topology {} up (namespaces {}-*), work folder {}",
        if o.nat { "nat" } else { "direct" },
        o.prefix,
        lab.workdir().display()
    );
    let result = run_in(o, &lab, xsecd.as_deref(), &pair);
    if let Err(e) = &result {
        println!("xsec-lab: {e}");
    }
    result
}

fn run_in(o: &RunOptions, lab: &Lab, xsecd: Option<&std::path::Path>, pair: &Pair) -> Result<bool> {
    lab.write_file("esp_sa", pair.esp_sa_table())?;
    lab.write_file("gwA.toml", pair.a.to_toml())?;
    lab.write_file("gwB.toml", pair.b.to_toml())?;
    // next hops resolved before xsecd starts (it drops packets to unresolved ones); the
    // pings this sends between the gateways are not part of the capture
    lab.warm_neighbours()?;
    let mut daemons: Vec<Xsecd> = vec![];
    if let Some(x) = xsecd {
        for (node, conf) in [(Node::GwA, &pair.a), (Node::GwB, &pair.b)] {
            check_stop(o)?;
            match lab.start_xsecd(node, x, &conf.to_toml(), Duration::from_secs(30)) {
                Ok(d) => {
                    println!("xsec-lab: xsecd ready in {}", lab.ns(node));
                    daemons.push(d);
                }
                Err(e) => return Err(e),
            }
        }
    }
    // captured once both daemons run: before, the first one's heartbeats meet a peer kernel
    // without xsecd, which answers ICMP port unreachable (start-up, not a gateway leak)
    let cap = lab.capture_wire("wire")?;
    let t = start_traffic(o, lab)?;
    let started = Instant::now();
    let limit = Duration::from_secs(o.seconds + 30);
    loop {
        std::thread::sleep(Duration::from_secs(1));
        check_stop(o)?;
        let stats: Vec<(&str, Option<Stats>)> = daemons
            .iter()
            .map(|d| (d.node.suffix(), Stats::read(&d.stats_file).ok()))
            .collect();
        let rows: Vec<(&str, Option<&Stats>)> =
            stats.iter().map(|(n, s)| (*n, s.as_ref())).collect();
        let elapsed = started.elapsed().as_secs();
        if rows.is_empty() {
            println!("[{elapsed:>3}s] kernel forwarding (--plain): no gateway counters");
        } else {
            println!("[{elapsed:>3}s]\n{}", stats::table(&rows));
        }
        lab.daemons_alive(&daemons)?;
        let senders_done = t
            .pings
            .iter()
            .map(|(_, p)| p)
            .chain(&t.udp_send)
            .chain([&t.tcp_send])
            .all(|p| !lab.procs().is_running(p));
        if senders_done || started.elapsed() > limit {
            break;
        }
    }
    // receivers: a moment for the last datagrams, then stop them
    std::thread::sleep(Duration::from_secs(1));
    for p in t.udp_recv.iter().map(|(_, p)| p).chain([&t.tcp_sink]) {
        lab.procs().stop(p, Duration::from_secs(2));
    }
    for p in t
        .pings
        .iter()
        .map(|(_, p)| p)
        .chain(&t.udp_send)
        .chain([&t.tcp_send])
    {
        lab.procs().stop(p, Duration::from_secs(2));
    }
    std::thread::sleep(Duration::from_millis(1200)); // one more stats interval
    let final_stats: Vec<(Node, Option<Stats>)> = daemons
        .iter()
        .map(|d| (d.node, lab.stats(d).ok()))
        .collect();
    let mut failures: Vec<String> = vec![];
    // what an operator sees: xsecctl on gwA's control socket
    if let (Some(x), Some(d)) = (xsecd, daemons.first()) {
        let ctl = x.with_file_name("xsecctl");
        for args in [&["show", "sa"][..], &["show", "policy", "--counters"][..]] {
            let o = std::process::Command::new(&ctl)
                .arg("--socket")
                .arg(&d.control)
                .args(args)
                .output();
            match o {
                Ok(o) if o.status.success() => println!(
                    "\n$ xsecctl --socket {} {}\n{}",
                    d.control.display(),
                    args.join(" "),
                    String::from_utf8_lossy(&o.stdout).trim_end()
                ),
                Ok(o) => failures.push(format!(
                    "xsecctl {}: {}",
                    args.join(" "),
                    String::from_utf8_lossy(&o.stderr).trim()
                )),
                Err(e) => failures.push(format!("xsecctl ({}): {e}", ctl.display())),
            }
        }
    }
    for d in &daemons {
        if let Err(e) = lab.stop_xsecd(d) {
            failures.push(e.to_string());
        }
    }
    let pcap = lab.stop_capture(&cap)?;

    println!("\n==== summary ====");
    if xsecd.is_some() {
        println!(
            "keys: this run's random SA keys are in {} (xsecd-gwA.toml, xsecd-gwB.toml, esp_sa; \
             folder mode 0700); they are lab keys, used once",
            lab.workdir().display()
        );
    }
    for (name, p) in &t.pings {
        match parse_ping(&p.stdout_text()) {
            Some(r) => {
                println!("ping {name}: {}/{} answered", r.received, r.transmitted);
                if r.received == 0 {
                    failures.push(format!("ping {name}: no answer"));
                }
            }
            None => failures.push(format!("ping {name}: no summary ({})", p.stderr_tail(3))),
        }
    }
    let sent: Vec<u64> = t
        .udp_send
        .iter()
        .map(|p| parse_summary(&p.stdout_text(), "udp-send:").unwrap_or(0))
        .collect();
    for (i, (name, p)) in t.udp_recv.iter().enumerate() {
        let got = received_count(&p.stdout_text());
        println!(
            "udp {name}: {got}/{} delivered",
            sent.get(i).copied().unwrap_or(0)
        );
        if got == 0 {
            failures.push(format!("udp {name}: nothing delivered"));
        }
    }
    let tcp = parse_summary(&t.tcp_sink.stdout_text(), "tcp-sink:");
    println!(
        "tcp hA -> hB: {}",
        t.tcp_sink
            .stdout_text()
            .lines()
            .last()
            .unwrap_or("no result")
    );
    if tcp.is_none() {
        failures.push(format!(
            "tcp hA -> hB: not delivered intact ({}; {})",
            t.tcp_send.stdout_text().trim(),
            t.tcp_send.stderr_tail(3)
        ));
    }
    for (node, st) in &final_stats {
        match st {
            Some(st) => {
                let decap = st.engine("decap_packets");
                println!(
                    "{}: encap {} decap {} bypass {} heartbeats {} drops {:?}",
                    node.suffix(),
                    st.engine("encap_packets"),
                    decap,
                    st.engine("bypass_packets"),
                    st.heartbeats_sent(),
                    st.nonzero_drops()
                );
                if decap == 0 {
                    failures.push(format!("{}: decapsulated nothing", node.suffix()));
                }
            }
            None => failures.push(format!("{}: no stats file", node.suffix())),
        }
    }

    let ports: Vec<u16> = pair.opts.encap.port().into_iter().collect();
    let frames = wire::read_pcap(&pcap)?;
    let inner = [addr::NET_A, addr::NET_B, addr::NET_A6, addr::NET_B6];
    let report = wire::analyze(&frames, &ports, &inner);
    let (tap_node, tap_if) = lab.wire_tap();
    println!(
        "wire ({} {tap_if}, {}): {}",
        lab.ns(tap_node),
        pcap.display(),
        report.summary()
    );
    if xsecd.is_some() {
        if !report.clear.is_empty() {
            failures.push(format!(
                "{} clear packets on the middle link:\n{}",
                report.clear.len(),
                report.describe_clear(10)
            ));
        }
        let (ga, gb) = (addr::GWA_WAN.parse().ok(), addr::GWB_WAN.parse().ok());
        for (who, a) in [("gwA", ga), ("gwB", gb)] {
            if a.is_none_or(|a| report.esp_from(a) == 0) {
                failures.push(format!("no ESP from {who} on the middle link"));
            }
        }
        if pair.opts.keepalive > 0 && report.keepalives.is_empty() {
            failures.push("no keep-alive/heartbeat datagram on the middle link".into());
        }
        let ts = wire::tshark_decrypt(&pcap, &pair.esp_sa_table(), &ports, lab.workdir())?;
        println!(
            "tshark: {}/{} ESP packets decrypted with a good ICV (keys: {})",
            ts.good,
            ts.total,
            lab.workdir().join("esp_sa").display()
        );
        if ts.total == 0 || ts.good != ts.total {
            failures.push(format!(
                "tshark decrypted {}/{} ESP packets; first: {:?}",
                ts.good,
                ts.total,
                ts.lines.iter().take(5).collect::<Vec<_>>()
            ));
        }
    }
    if failures.is_empty() {
        println!(
            "xsec-lab: PASS: {} traffic flowed both ways",
            if xsecd.is_some() {
                "encrypted"
            } else {
                "kernel-forwarded (plain)"
            }
        );
        Ok(true)
    } else {
        println!("xsec-lab: FAIL:");
        for f in &failures {
            println!("  - {f}");
        }
        for d in &daemons {
            println!(
                "--- xsecd {} stderr (tail) ---\n{}",
                d.node.suffix(),
                d.proc.stderr_tail(30)
            );
        }
        Ok(false)
    }
}

fn start_traffic(o: &RunOptions, lab: &Lab) -> Result<Traffic> {
    let bin = o.lab_bin.to_string_lossy().into_owned();
    let secs = o.seconds;
    let count = (secs * 20).to_string();
    let recv_timeout = (secs + 15).to_string();
    let mut udp_recv = vec![];
    for (name, node) in [("hA -> hB", Node::HostB), ("hB -> hA", Node::HostA)] {
        let p = lab.spawn(
            node,
            &format!("udp-recv-{}", node.suffix()),
            &[
                &bin,
                "udp-recv",
                "--port",
                "5001",
                "--count",
                &count,
                "--min",
                "1",
                "--timeout",
                &recv_timeout,
            ],
        )?;
        udp_recv.push((name.to_owned(), p));
    }
    let tcp_sink = lab.spawn(
        Node::HostB,
        "tcp-sink-hB",
        &[
            &bin,
            "tcp-sink",
            "--port",
            "5201",
            "--timeout",
            &(secs + 20).to_string(),
        ],
    )?;
    // wait for the listeners
    let end = Instant::now() + Duration::from_secs(10);
    for p in udp_recv.iter().map(|(_, p)| p).chain([&tcp_sink]) {
        while !p.stdout_text().contains("listening on") {
            if Instant::now() > end || !lab.procs().is_running(p) {
                return Err(err!(
                    "{} did not start listening: {}",
                    p.name,
                    p.stderr_tail(5)
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let n_ping = (secs * 2).max(1).to_string();
    let deadline = (secs + 5).to_string();
    let mut pings = vec![];
    for (name, node, dst) in [
        ("hA -> hB v4", Node::HostA, addr::HOST_B),
        ("hA -> hB v6", Node::HostA, addr::HOST_B6),
        ("hB -> hA v4", Node::HostB, addr::HOST_A),
        ("hB -> hA v6", Node::HostB, addr::HOST_A6),
    ] {
        let tag = format!(
            "ping-{}-{}",
            node.suffix(),
            if dst.contains(':') { "v6" } else { "v4" }
        );
        let p = lab.spawn(
            node,
            &tag,
            &[
                "ping", "-n", "-c", &n_ping, "-i", "0.5", "-W", "1", "-w", &deadline, dst,
            ],
        )?;
        pings.push((name.to_owned(), p));
    }
    let mut udp_send = vec![];
    for (node, dst) in [(Node::HostA, addr::HOST_B), (Node::HostB, addr::HOST_A)] {
        udp_send.push(lab.spawn(
            node,
            &format!("udp-send-{}", node.suffix()),
            &[
                &bin,
                "udp-send",
                "--dst",
                dst,
                "--port",
                "5001",
                "--count",
                &count,
                "--interval-ms",
                "50",
                "--size",
                "200",
                "--tag",
                "xsec-lab",
            ],
        )?);
    }
    let tcp_send = lab.spawn(
        Node::HostA,
        "tcp-send-hA",
        &[
            &bin,
            "tcp-send",
            "--dst",
            addr::HOST_B,
            "--port",
            "5201",
            "--bytes",
            "4000000",
            "--timeout",
            &(secs + 15).to_string(),
        ],
    )?;
    Ok(Traffic {
        pings,
        udp_recv,
        udp_send,
        tcp_sink,
        tcp_send,
    })
}
