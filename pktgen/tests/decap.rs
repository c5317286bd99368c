//! `xsec-pktgen gen --esp-config`: the generator stands in for gwA (encrypting with gwA's
//! configuration, sending out of gwA's WAN port on AF_XDP) and xsecd on gwB decrypts; the sink
//! in hB must get every datagram intact. Raw ESP and ESP-in-UDP (port 2746). A second run
//! that starts the sequence numbers over must be refused by gwB's anti-replay, and one that
//! starts above them accepted. Needs root (CI runs as root).

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use serde_json::Value;
use xsec_lab::config::{Encap, Pair, PairOptions};
use xsec_lab::topo::{Lab, Node, TopoOptions, addr};

static SERIAL: Mutex<()> = Mutex::new(());

const COUNT: u64 = 2000;

fn xsecd() -> PathBuf {
    xsec_lab::build::executables()
        .unwrap_or_else(|e| panic!("the decap tests need xsecd: {e}"))
        .0
}

fn pktgen() -> String {
    env!("CARGO_BIN_EXE_xsec-pktgen").to_owned()
}

fn last_json(text: &str, what: &str) -> Value {
    xsec_lab::tools::last_json(text).unwrap_or_else(|| panic!("{what} printed no summary"))
}

/// Run the stand-in generator from `seq_start` and the sink; the sink's summary.
/// Generate `COUNT` ESP packets from gwA's stand-in and return host B's sink summary. The
/// sink ends once it has them all, or `sink_s` seconds after it started (a run that should
/// deliver nothing waits only that long).
fn run(lab: &Lab, conf: &str, seq_start: u64, tag: &str, sink_s: u64) -> Value {
    let bin = pktgen();
    let sink = lab
        .spawn(
            Node::HostB,
            &format!("sink-{tag}"),
            &[
                &bin,
                "sink",
                "--port",
                "5301",
                "--seconds",
                &sink_s.to_string(),
                "--idle-exit",
                "1",
                "--expect",
                &COUNT.to_string(),
                "--quiet",
            ],
        )
        .expect("sink");
    let t0 = std::time::Instant::now();
    while !sink.stderr_text().contains("listening on") {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "the sink did not start"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let g = lab
        .exec(
            Node::GwA,
            &[
                &bin,
                "gen",
                "--io",
                "xdp",
                "--iface",
                "wan0",
                "--src",
                addr::HOST_A,
                "--dst",
                addr::HOST_B,
                "--size",
                "imix",
                "--flows",
                "4",
                "--rate",
                "20000",
                "--count",
                &COUNT.to_string(),
                "--seconds",
                "10",
                "--quiet",
                "--esp-config",
                conf,
                "--esp-seq-start",
                &seq_start.to_string(),
            ],
        )
        .expect("generator");
    assert!(g.ok(), "generator: {g}");
    let gj = last_json(&g.stdout, "the generator");
    assert_eq!(gj["sent"], COUNT, "generator: {gj}");
    let t0 = std::time::Instant::now();
    while lab.procs().is_running(&sink) {
        assert!(
            t0.elapsed() < Duration::from_secs(25),
            "the sink did not end"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    last_json(&sink.stdout_text(), "the sink")
}

fn standin(encap: Encap, tag: &str) {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let xsecd = xsecd();
    let prefix = format!("xsec-pd{}-{tag}", std::process::id());
    let lab = Lab::up(TopoOptions::new(&prefix)).expect("topology");
    lab.warm_neighbours().expect("neighbours");
    let pair = Pair::new(PairOptions {
        encap,
        ..PairOptions::default()
    });
    let conf = lab
        .write_file("gwA-standin.toml", pair.a.to_toml())
        .expect("config");
    let conf = conf.to_string_lossy().into_owned();
    let gwb = lab
        .start_xsecd(
            Node::GwB,
            &xsecd,
            &pair.b.to_toml(),
            Duration::from_secs(30),
        )
        .expect("xsecd on gwB");

    // every datagram through, intact
    let s = run(&lab, &conf, 1, "first", 20);
    assert_eq!(s["received"], COUNT, "{tag}: sink {s}");
    assert_eq!(s["lost"], 0, "{tag}: sink {s}");
    assert_eq!(s["corrupt"], 0, "{tag}: sink {s}");
    let st = lab.stats(&gwb).expect("stats");
    let decap = st.sa_packets("ab", "in");
    assert_eq!(decap, COUNT, "{tag}: gwB decapsulated {decap}");

    // the same sequence numbers again: replays, all refused
    // the generator sends 2,000 packets in a tenth of a second: 4 s is ample for any of
    // them to come through
    let s = run(&lab, &conf, 1, "replayed", 4);
    assert_eq!(s["received"], 0, "{tag}: replayed ESP delivered: {s}");
    let st = lab.stats(&gwb).expect("stats");
    let refused = st.drop_count("replay_old") + st.drop_count("replay_duplicate");
    assert_eq!(refused, COUNT, "{tag}: drops {:?}", st.nonzero_drops());

    // above the window: accepted again
    let s = run(&lab, &conf, 10 * COUNT, "above", 20);
    assert_eq!(s["received"], COUNT, "{tag}: sink {s}");
    lab.stop_xsecd(&gwb).expect("stop xsecd");
}

#[test]
fn esp_standin_for_gwa_is_decrypted_by_gwb() {
    standin(Encap::None, "esp");
}

#[test]
fn esp_in_udp_standin_for_gwa_is_decrypted_by_gwb() {
    standin(Encap::Udp(2746), "udp");
}
