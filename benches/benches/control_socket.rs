//! SA operations through the control socket of a running xsecd, end to end: the request's
//! framing and decoding, the store, building the SA, the rounds to the worker (which applies
//! each change between two bursts) and the answer. A key manager's view: how many `add-sa`
//! per second one connection gets, one request at a time, pipelined (a window of requests
//! in flight), and in `batch` requests; then the same SAs deleted; and what the worker spent
//! applying the changes (its stall between two bursts), from `show-counters`, and what one
//! counters snapshot costs it with all the SAs installed (`show-workers`).
//!
//! Needs root (a namespace lab: gwA runs xsecd with one worker in adaptive idle mode, the
//! lab's default, so each round may find the worker asleep) and a release xsecd:
//!
//! ```text
//! cargo build --release -p xsecd
//! cargo bench -p xsec-benches --bench control_socket
//! ```
//!
//! `XSECD` names another executable; `XSEC_CONTROL_COUNT` the SAs per phase (20000). The
//! JSON summary is printed last and written to `target/control-socket.json`.

use serde_json::{Value, json};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use xsec_lab::config::{Pair, PairOptions, Rng};
use xsec_lab::topo::{Lab, Node, TopoOptions, addr};
use xsecd::control::client::Client;

fn sa(i: u32, key: &[u8]) -> Value {
    json!({
        "id": format!("b{i}"), "direction": "in", "spi": 0x0010_0000 + i, "reqid": 100 + i,
        "local": addr::GWA_WAN, "remote": addr::GWB_WAN,
        "encryption": "aes-gcm-128", "enc_key": format!("0x{}", hex::encode(key)),
        "selectors": [{"local": addr::NET_A, "remote": addr::NET_B}],
    })
}

fn ok(v: Value) -> Value {
    match xsecd::control::client::answer(v) {
        Ok(r) => r,
        Err(e) => panic!("the daemon refused a bench request: {e}"),
    }
}

/// `ids` as requests of `cmd` with a window of `window` requests in flight; the time taken.
fn pipelined(c: &mut Client, reqs: &[(String, Value)], window: usize) -> Duration {
    let t = Instant::now();
    let mut sent = 0;
    let mut got = 0;
    while got < reqs.len() {
        while sent < reqs.len() && sent - got < window {
            let (cmd, args) = &reqs[sent];
            c.send(cmd, args.clone()).expect("send");
            sent += 1;
        }
        ok(c.recv(Duration::from_secs(30)).expect("answer"));
        got += 1;
    }
    t.elapsed()
}

fn rate(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else is taken
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default();
    let xsecd = std::env::var_os("XSECD")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target/release/xsecd"));
    assert!(
        xsecd.is_file(),
        "no xsecd at {} (cargo build --release -p xsecd, or XSECD=...)",
        xsecd.display()
    );
    let n: u32 = std::env::var("XSEC_CONTROL_COUNT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let lab = Lab::up(TopoOptions::new("xsec-ctlbench")).expect("the namespace lab");
    let pair = Pair::new(PairOptions::default());
    let d = lab
        .start_xsecd(
            Node::GwA,
            &xsecd,
            &pair.a.to_toml(),
            Duration::from_secs(30),
        )
        .expect("xsecd starts");
    let mut c = Client::connect_as(&d.control, "bench").expect("control socket");
    let mut rng = Rng(7);
    let mut all: Vec<Value> = (0..3 * n).map(|i| sa(i, &rng.bytes(20))).collect();
    let mut results = serde_json::Map::new();

    // 1. one at a time: each request waits for its answer
    let mut lat: Vec<Duration> = Vec::with_capacity(n as usize);
    let t = Instant::now();
    for s in all.drain(..n as usize) {
        let t1 = Instant::now();
        c.call("add-sa", json!({ "sa": s })).expect("add-sa");
        lat.push(t1.elapsed());
    }
    let seq = t.elapsed();
    lat.sort_unstable();
    let pct = |q: f64| lat[((lat.len() - 1) as f64 * q) as usize].as_secs_f64() * 1e6;
    results.insert(
        "add_sa_one_at_a_time".into(),
        json!({"sas": n, "seconds": seq.as_secs_f64(), "per_s": rate(n as usize, seq),
               "latency_us": {"p50": pct(0.5), "p99": pct(0.99), "max": pct(1.0)}}),
    );

    // 2. pipelined: 32 requests in flight
    let reqs: Vec<(String, Value)> = all
        .drain(..n as usize)
        .map(|s| ("add-sa".to_owned(), json!({ "sa": s })))
        .collect();
    let p = pipelined(&mut c, &reqs, 32);
    results.insert(
        "add_sa_pipelined_32".into(),
        json!({"sas": n, "seconds": p.as_secs_f64(), "per_s": rate(n as usize, p)}),
    );

    // 3. batches of 100 add-sa
    let batches: Vec<(String, Value)> = all
        .chunks(100)
        .map(|ch| {
            let ops: Vec<Value> = ch
                .iter()
                .map(|s| json!({"command": "add-sa", "args": {"sa": s}}))
                .collect();
            ("batch".to_owned(), json!({ "ops": ops }))
        })
        .collect();
    let b = pipelined(&mut c, &batches, 4);
    results.insert(
        "add_sa_batch_100".into(),
        json!({"sas": all.len(), "seconds": b.as_secs_f64(), "per_s": rate(all.len(), b)}),
    );

    // what one counters snapshot (show-workers, the stats file) costs the worker now
    let ws = c.call("show-workers", json!({})).expect("show-workers");
    results.insert(
        "snapshot".into(),
        json!({"sas": ws[0]["sas"], "worker_us": ws[0]["snapshot_us"]}),
    );

    // 4. every SA deleted, pipelined
    let dels: Vec<(String, Value)> = (0..3 * n)
        .map(|i| ("del-sa".to_owned(), json!({"id": format!("b{i}")})))
        .collect();
    let del = pipelined(&mut c, &dels, 32);
    results.insert(
        "del_sa_pipelined_32".into(),
        json!({"sas": 3 * n, "seconds": del.as_secs_f64(), "per_s": rate(dels.len(), del)}),
    );

    let counters = ok(json!({"ok": true, "result": c
        .call("show-counters", json!({}))
        .expect("show-counters")}));
    let ctl = &counters["control"];
    let changes = ctl["worker_changes"].as_u64().unwrap_or(0);
    results.insert(
        "worker".into(),
        json!({
            "changes": changes,
            "mean_us": ctl["worker_change_ns"].as_u64().unwrap_or(0) as f64
                / changes.max(1) as f64 / 1e3,
            "max_us": ctl["worker_change_max_ns"].as_u64().unwrap_or(0) as f64 / 1e3,
            "over_10us": ctl["worker_changes_over_10us"],
        }),
    );
    let status = c.call("status", json!({})).expect("status");
    results.insert(
        "xsecd".into(),
        json!({"version": status["version"], "workers": 1, "idle": "adaptive"}),
    );
    let _ = lab.stop_xsecd(&d);
    let out = Value::Object(results);
    let path = root.join("target/control-socket.json");
    if let Err(e) = std::fs::write(&path, format!("{out:#}\n")) {
        eprintln!("{}: {e}", path.display());
    }
    println!("{out:#}");
}
