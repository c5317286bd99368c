//! The generator and the sink in two network namespaces joined by a veth pair (made and
//! removed here): exact counts on a clean link, the exact loss when nftables drops every
//! tenth datagram, reordering and damage that the generator introduces on purpose, and a
//! latency histogram that is filled; the frame generators (AF_XDP, AF_PACKET) and the frame
//! sinks (AF_XDP behind xsecd's XDP program on a two-queue veth, AF_PACKET) counted as
//! exactly. Needs root (CI runs as root).

use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use serde_json::Value;

static SERIAL: Mutex<()> = Mutex::new(());

struct Net {
    a: String,
    b: String,
}

fn run(args: &[&str]) -> Output {
    let o = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", args.join(" ")));
    assert!(
        o.status.success(),
        "{}: {}",
        args.join(" "),
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

impl Net {
    fn up(tag: &str) -> Net {
        Net::with_queues(tag, 1)
    }

    fn with_queues(tag: &str, queues: u32) -> Net {
        let q = queues.to_string();
        let base = format!("xsec-pg{}-{tag}", std::process::id());
        let n = Net {
            a: format!("{base}-a"),
            b: format!("{base}-b"),
        };
        for ns in [&n.a, &n.b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
            run(&["ip", "netns", "add", ns]);
        }
        run(&[
            "ip",
            "link",
            "add",
            "pg0",
            "netns",
            &n.a,
            "numrxqueues",
            &q,
            "numtxqueues",
            &q,
            "type",
            "veth",
            "peer",
            "name",
            "pg0",
            "netns",
            &n.b,
            "numrxqueues",
            &q,
            "numtxqueues",
            &q,
        ]);
        for (ns, addr) in [(&n.a, "10.77.0.1/24"), (&n.b, "10.77.0.2/24")] {
            run(&["ip", "-n", ns, "addr", "add", addr, "dev", "pg0"]);
            run(&["ip", "-n", ns, "link", "set", "pg0", "up"]);
            run(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        n
    }

    fn spawn(&self, ns: &str, args: &[&str]) -> Child {
        Command::new("ip")
            .args(["netns", "exec", ns, env!("CARGO_BIN_EXE_xsec-pktgen")])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("xsec-pktgen: {e}"))
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for ns in [&self.a, &self.b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

fn summary(c: Child) -> Value {
    let o = c.wait_with_output().expect("wait");
    let out = String::from_utf8_lossy(&o.stdout);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "xsec-pktgen failed: {err}");
    let line = out.lines().last().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {out}\n{err}"))
}

/// Sink in B, generator in A; returns (generator summary, sink summary).
fn trial(n: &Net, gen_args: &[&str], expect: u64) -> (Value, Value) {
    trial_with(n, gen_args, &[], expect)
}

/// As [`trial`], with extra arguments for the sink.
fn trial_with(n: &Net, gen_args: &[&str], sink_extra: &[&str], expect: u64) -> (Value, Value) {
    let exp = expect.to_string();
    let mut sink_args = vec![
        "sink",
        "--seconds",
        "20",
        "--idle-exit",
        "1",
        "--expect",
        &exp,
    ];
    sink_args.extend_from_slice(sink_extra);
    let sink = n.spawn(&n.b, &sink_args);
    // the XDP sink loads a program and binds a socket per queue before it listens
    std::thread::sleep(Duration::from_millis(if sink_extra.is_empty() {
        300
    } else {
        1000
    }));
    let mut args = vec!["gen", "--dst", "10.77.0.2", "--seconds", "15"];
    args.extend_from_slice(gen_args);
    let g = summary(n.spawn(&n.a, &args));
    let s = summary(sink);
    eprintln!("gen: {g}\nsink: {s}");
    (g, s)
}

fn num(v: &Value, k: &str) -> u64 {
    v[k].as_u64()
        .unwrap_or_else(|| panic!("{k} missing in {v}"))
}

/// The sink received `n` datagrams, in order, and none was lost, repeated, damaged or
/// someone else's.
fn assert_all_received(s: &Value, n: u64) {
    assert_all_received_any_order(s, n);
    assert_eq!(num(s, "reordered"), 0, "reordered");
}

/// As [`assert_all_received`], in any order.
fn assert_all_received_any_order(s: &Value, n: u64) {
    assert_eq!(num(s, "received"), n);
    for k in ["lost", "duplicates", "corrupt", "foreign"] {
        assert_eq!(num(s, k), 0, "{k}");
    }
}

#[test]
fn clean_link_counts_every_datagram_and_measures_latency() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let n = Net::up("clean");
    let (g, s) = trial(
        &n,
        &[
            "--rate", "20000", "--count", "20000", "--size", "imix", "--flows", "4",
        ],
        20000,
    );
    assert_eq!(num(&g, "sent"), 20000);
    assert_all_received(&s, 20000);
    let lat = &s["latency_ns"];
    assert_eq!(num(lat, "samples"), 20000);
    let (p50, p99, max) = (num(lat, "p50"), num(lat, "p99"), num(lat, "max"));
    assert!(p50 > 0 && p50 <= p99 && p99 <= max, "{lat}");
    // paced at 20 kpps: the run took about a second, not a burst
    let secs = g["seconds"].as_f64().unwrap_or(0.0);
    assert!(secs >= 0.95, "20000 datagrams at 20 kpps in {secs} s");
}

#[test]
fn nftables_dropping_every_tenth_is_exactly_the_loss() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let n = Net::up("loss");
    run(&[
        "ip", "netns", "exec", &n.b, "nft", "add", "table", "inet", "pg",
    ]);
    run(&[
        "ip",
        "netns",
        "exec",
        &n.b,
        "nft",
        "add",
        "chain",
        "inet",
        "pg",
        "in",
        "{ type filter hook input priority 0; }",
    ]);
    run(&[
        "ip", "netns", "exec", &n.b, "nft", "add", "rule", "inet", "pg", "in", "udp", "dport",
        "5301", "numgen", "inc", "mod", "10", "==", "0", "drop",
    ]);
    let (_, s) = trial(&n, &["--rate", "20000", "--count", "10000"], 10000);
    assert_eq!(num(&s, "received"), 9000);
    assert_eq!(num(&s, "lost"), 1000);
    assert!((s["loss_pct"].as_f64().unwrap_or(0.0) - 10.0).abs() < 1e-9);
    assert_eq!(num(&s, "reordered"), 0);
}

#[test]
fn reordering_and_damage_are_detected() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let n = Net::up("reorder");
    let (_, s) = trial(
        &n,
        &[
            "--rate",
            "20000",
            "--count",
            "10000",
            "--batch",
            "30",
            "--swap-every",
            "100",
            "--corrupt-every",
            "500",
        ],
        10000,
    );
    let r = num(&s, "reordered");
    assert!(r > 50 && r <= 100, "reordered {r}");
    assert_eq!(num(&s, "corrupt"), 20);
    // a damaged datagram does not count as received: the 20 are missing
    assert_eq!(num(&s, "received"), 9980);
    assert_eq!(num(&s, "lost"), 20);
    assert_eq!(num(&s, "duplicates"), 0);
}

/// The frame generator on `io` (`xdp` or `packet`): every datagram counted, none damaged.
fn frame_generator(io: &str) {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let n = Net::up(io);
    let (g, s) = trial(
        &n,
        &[
            "--io", io, "--iface", "pg0", "--rate", "20000", "--count", "20000", "--size", "imix",
            "--flows", "4",
        ],
        20000,
    );
    assert_eq!(g["io"], io);
    assert_eq!(num(&g, "sent"), 20000);
    assert_all_received(&s, 20000);
    assert_eq!(num(&s["latency_ns"], "samples"), 20000);
}

#[test]
fn af_xdp_generator_is_counted_like_the_socket_one() {
    frame_generator("xdp");
}

#[test]
fn af_packet_generator_is_counted_like_the_socket_one() {
    frame_generator("packet");
}

#[test]
fn af_xdp_sink_takes_every_datagram_off_both_queues() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let n = Net::with_queues("xsink", 2);
    // 16 flows (16 sockets): the sending veth spreads them over its two TX queues, which
    // are the receiving veth's two RX queues
    let (_, s) = trial_with(
        &n,
        &[
            "--rate", "20000", "--count", "20000", "--size", "imix", "--flows", "16",
        ],
        &["--io", "xdp", "--iface", "pg0"],
        20000,
    );
    let input = &s["input"];
    assert_eq!(input["io"], "xdp", "{input}");
    // One stream over two queues read burst by burst: a burst from queue 1 can hold
    // datagrams older than the queue-0 burst read before it, so the sink sees reordering
    // that the link did not make (within a flow, and within a queue, order holds).
    assert_all_received_any_order(&s, 20000);
    let per_queue: Vec<u64> = input["per_queue"]
        .as_array()
        .expect("per_queue")
        .iter()
        .filter_map(Value::as_u64)
        .collect();
    assert_eq!(per_queue.len(), 2, "one socket per RX queue: {input}");
    assert!(
        per_queue.iter().all(|&q| q > 0),
        "both queues used: {input}"
    );
    // every datagram came through AF_XDP: none reached the kernel's UDP socket
    assert_eq!(per_queue.iter().sum::<u64>(), 20000, "{input}");
    assert_eq!(num(input, "from_kernel"), 0);
    assert_eq!(num(input, "not_ours"), 0);
    assert_eq!(num(&s["latency_ns"], "samples"), 20000);
}

#[test]
fn af_packet_sink_counts_every_datagram() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let n = Net::up("psink");
    let (_, s) = trial_with(
        &n,
        &["--rate", "20000", "--count", "20000", "--flows", "4"],
        &["--io", "packet", "--iface", "pg0"],
        20000,
    );
    assert_eq!(s["input"]["io"], "packet");
    assert_all_received(&s, 20000);
}
