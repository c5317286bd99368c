//! `xsec-lab`: the namespace lab (`run`), the throughput bench (`bench`) and the traffic tools
//! they and the gateway tests run inside the namespaces (`udp-recv`, `udp-send`, `tcp-sink`,
//! `tcp-send`, `udp-flood`, `udp-count`). See the library's documentation for the topology.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use clap::{Parser, Subcommand};
use xsec_lab::{bench, capacity, config, demo, ndr, plot, tools, versus};

#[derive(Debug, Parser)]
#[command(
    name = "xsec-lab",
    about = "xsec's network-namespace lab and traffic tools"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Two gateways running xsecd between two hosts: traffic both ways for a bounded time,
    /// live per-SA counters, the middle link captured and decrypted by tshark.
    Run {
        /// The xsecd executable (not needed with --plain).
        #[arg(long)]
        xsecd: Option<PathBuf>,
        /// How long the traffic runs.
        #[arg(long, default_value_t = 20)]
        seconds: u64,
        /// gwA behind a masquerading NAT router; ESP in UDP 4500 (NAT-T).
        #[arg(long)]
        nat: bool,
        /// ESP-in-UDP on port 2746 with heartbeats.
        #[arg(long, conflicts_with = "nat")]
        udp_tunnel: bool,
        /// No xsecd: the same topology and traffic with plain kernel forwarding.
        #[arg(long)]
        plain: bool,
        /// Leave the namespaces up afterwards (remove them with `ip netns del`).
        #[arg(long)]
        keep: bool,
        /// Namespace prefix.
        #[arg(long, default_value = "xsec-lab")]
        prefix: String,
        /// Negotiate the SAs with xsec-ike (this executable) on both gateways, PSK, instead
        /// of manual keys; rekeys are shown as they happen.
        #[arg(long, value_name = "XSEC_IKE", conflicts_with_all = ["plain", "udp_tunnel"])]
        ike: Option<PathBuf>,
    },
    /// IKE SA + Child SA setups per second (PSK) for xsec-ike and strongSwan's charon in
    /// every pairing, interleaved in one run; memory per IKE SA of each responder.
    IkeBench {
        /// The xsec-ike executable.
        #[arg(long)]
        ike: PathBuf,
        /// Tunnels per measurement.
        #[arg(long, default_value_t = 300)]
        tunnels: usize,
        #[arg(long, default_value_t = 3)]
        repeat: usize,
        /// IKE proposals, comma-separated (strongSwan syntax).
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "aes128gcm16-prfsha256-x25519,aes128gcm16-prfsha256-modp2048"
        )]
        proposals: Vec<String>,
        /// Tunnels of the memory measurement (0: skip it).
        #[arg(long, default_value_t = 10000)]
        memory_tunnels: usize,
        #[arg(long, default_value = "xsec-ikeb")]
        prefix: String,
        /// Write the results here as JSON.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// Packets/s and Gbps hA -> hB through two xsecd (AES-128-GCM tunnel) and through plain
    /// kernel forwarding on the same topology, in one run; medians over the repeats.
    Bench {
        /// The xsecd executable.
        #[arg(long)]
        xsecd: PathBuf,
        /// Length of each measurement.
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        /// L3 sizes of the inner datagram (IPv4 + UDP headers + payload), comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "64,512,1400")]
        sizes: Vec<usize>,
        /// Measurements per size and mode.
        #[arg(long, default_value_t = 3)]
        repeat: usize,
        /// xsecd's idle settings to measure, comma-separated (busy, adaptive).
        #[arg(long, value_delimiter = ',', default_value = "adaptive,busy")]
        idle: Vec<String>,
        /// Datagrams per sendmmsg(2) call in the sender (1: one send(2) each).
        #[arg(long, default_value_t = 32)]
        batch: usize,
        /// Also write every trial and the medians as JSON.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Namespace prefix.
        #[arg(long, default_value = "xsec-bench")]
        prefix: String,
    },
    /// A worker's own capacity, without the kernel's packet path: xsecd's replay backend
    /// feeds it copies of pcap frames and drops what it sends (DPDK's net_pcap infinite_rx
    /// -> net_null); encryption at gwA, then decryption of that ESP at gwB.
    Capacity {
        /// The xsecd executable.
        #[arg(long)]
        xsecd: PathBuf,
        /// Length of each measurement (after a one-second warm-up).
        #[arg(long, default_value_t = 3.0)]
        seconds: f64,
        /// Inner IP packet sizes, comma-separated; `imix` is 7:4:1 of 64, 576, 1420.
        #[arg(long, value_delimiter = ',', default_value = "64,512,1420,imix")]
        sizes: Vec<String>,
        /// Algorithms, comma-separated: aes128gcm16, aes256gcm16, aes128-sha1, aes128-sha256,
        /// chacha20poly1305.
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "aes128gcm16,aes256gcm16,aes128-sha256,chacha20poly1305"
        )]
        algs: Vec<String>,
        /// Worker counts, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "1")]
        workers: Vec<usize>,
        /// SA pair counts, comma-separated; with as many SAs as workers or more, each
        /// worker replays only its own SAs' traffic (RSS with SA affinity), else all of it.
        #[arg(long, value_delimiter = ',', default_value = "1")]
        sas: Vec<usize>,
        /// UDP flows in the replayed traffic.
        #[arg(long, default_value_t = 64)]
        flows: usize,
        /// Measurements per cell (the table gives medians).
        #[arg(long, default_value_t = 1)]
        repeat: usize,
        /// Also write every trial and the medians as JSON.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Namespace prefix.
        #[arg(long, default_value = "xsec-cap")]
        prefix: String,
        /// With one SA pair and several workers: per-worker outbound SAs (one per worker,
        /// pinned) and any-worker inbound SAs, installed with `xsecctl batch` (next to
        /// xsecd), instead of one pair whose worker takes the others' packets.
        #[arg(long)]
        per_worker: bool,
        /// SPD sizes, comma-separated: 1 is the one-policy tunnel; N builds issue 19's mix of
        /// N policies (N/10 TCP port-range BYPASS/DISCARD in front of PROTECT /24 sites, the
        /// traffic's site last), all sites on one SA pair unless --site-sas.
        #[arg(long, value_delimiter = ',', default_value = "1")]
        policies: Vec<usize>,
        /// With --policies N: one SA pair per site instead of one for all.
        #[arg(long)]
        site_sas: bool,
    },
    /// The tables at scale: xsecd's start-up and reload times with N SA pairs (a hub, one
    /// pair per /24 site, N/9 port-range policies in front) and its resident memory per SA
    /// pair; xsecd runs in gwB's namespace on its interfaces.
    Scale {
        /// The xsecd executable (xsecctl is taken from beside it).
        #[arg(long)]
        xsecd: PathBuf,
        /// SA pair counts, comma-separated (1 is the baseline of the memory per pair).
        #[arg(long, value_delimiter = ',', default_value = "1,1000,10000")]
        sas: Vec<usize>,
        /// Measurements per count (the table gives medians).
        #[arg(long, default_value_t = 3)]
        repeat: usize,
        /// Also write every sample and the medians as JSON.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Namespace prefix.
        #[arg(long, default_value = "xsec-scale")]
        prefix: String,
    },
    /// xsec's worker capacity against DPDK's ipsec-secgw in the same minutes: each cell
    /// A/B then B/A on alternate repetitions, both under the baseline's boost; paired ratios
    /// (min / median / max) to stdout and JSON. Installs and builds the baseline
    /// (`../shared/baselines/dpdk`) on first use.
    VsDpdk {
        /// The xsecd executable.
        #[arg(long)]
        xsecd: PathBuf,
        /// The DPDK baseline folder.
        #[arg(long, default_value = "../shared/baselines/dpdk")]
        baseline: PathBuf,
        /// Repetitions of every cell (each one pair per direction).
        #[arg(long, default_value_t = 5)]
        reps: usize,
        /// Inner IP packet sizes, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "64,512,1420")]
        sizes: Vec<String>,
        /// aes128gcm16 and/or aes128-sha1 (the baseline's two).
        #[arg(long, value_delimiter = ',', default_value = "aes128gcm16,aes128-sha1")]
        algs: Vec<String>,
        /// Measurement window of each run (after its warm-up).
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
        /// Write the pairs and the summary as JSON.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Namespace prefix.
        #[arg(long, default_value = "xsec-vs")]
        prefix: String,
        /// What to compare: capacity (ipsec-secgw vs xsec-lab capacity), cycles
        /// (librte_ipsec cpu-crypto vs the engine's burst bench, bursts of 32), memory
        /// (bytes per inbound SA: xsec's SAD vs rte_ipsec_sa + cryptodev sessions).
        #[arg(long, value_delimiter = ',', default_value = "capacity,cycles")]
        what: Vec<String>,
        /// Rounds of the burst bench per repetition.
        #[arg(long, default_value_t = 300)]
        rounds: usize,
        /// SAs on each side for `--what memory`.
        #[arg(long, default_value_t = 100_000)]
        memory_sas: usize,
    },
    /// xsec's SAD memory alone (what `vs-dpdk --what memory` runs in a process of its own):
    /// prints `bytes_per_sa=N` for N inbound tunnel-mode SAs.
    #[command(hide = true)]
    SaMemory {
        #[arg(long)]
        alg: String,
        #[arg(long)]
        sas: usize,
    },
    /// NDR/PDR searches (RFC 2544 style) hA -> hB with xsec-pktgen: plain kernel forwarding,
    /// xsecd in BYPASS and xsecd tunnels, in one run; latency at half the NDR.
    Ndr {
        /// The xsecd executable.
        #[arg(long)]
        xsecd: PathBuf,
        /// The xsec-pktgen executable (default: next to this one).
        #[arg(long)]
        pktgen: Option<PathBuf>,
        /// Modes, comma-separated: plain, bypass, ipsec (one per --algs × --sas), decap
        /// (gwB alone decrypting what xsec-pktgen in gwA encrypts with gwA's configuration,
        /// on AF_XDP).
        #[arg(long, value_delimiter = ',', default_value = "plain,bypass,ipsec")]
        modes: Vec<String>,
        /// Algorithms of the ipsec mode, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "aes128gcm16")]
        algs: Vec<String>,
        /// SA pairs (tunnels) of the ipsec mode, comma-separated; the flows are spread over
        /// them by source port.
        #[arg(long, value_delimiter = ',', default_value = "1")]
        sas: Vec<usize>,
        /// Worker counts of bypass and ipsec, comma-separated (one veth queue each; more
        /// than one uses native XDP, which spreads flows over the queues).
        #[arg(long, value_delimiter = ',', default_value = "1")]
        workers: Vec<usize>,
        /// IP packet sizes, comma-separated, or imix.
        #[arg(long, value_delimiter = ',', default_value = "64,512,1400")]
        sizes: Vec<String>,
        /// Length of each trial.
        #[arg(long, default_value_t = 2.0)]
        seconds: f64,
        /// Stop a search when its interval is narrower than this share of its top.
        #[arg(long, default_value_t = 0.03)]
        precision: f64,
        /// Most trials per search.
        #[arg(long, default_value_t = 8)]
        max_trials: usize,
        /// Loss that still passes for the PDR, percent.
        #[arg(long, default_value_t = 0.5)]
        pdr_loss: f64,
        /// UDP flows.
        #[arg(long, default_value_t = 4)]
        flows: u16,
        /// The generator's I/O: socket (kernel UDP, sendmmsg) or xdp (AF_XDP on hA's eth0).
        #[arg(long, default_value = "socket")]
        gen_io: String,
        /// The sink's I/O: socket (kernel UDP) or xdp (AF_XDP behind xsecd's XDP program on
        /// hB's eth0).
        #[arg(long, default_value = "socket")]
        sink_io: String,
        /// Also write the results as JSON.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Namespace prefix.
        #[arg(long, default_value = "xsec-ndr")]
        prefix: String,
        /// `ipsec` with one SA pair and several workers: per-worker outbound SAs and
        /// any-worker inbound SAs (`xsecctl batch`, next to xsecd), as `capacity --per-worker`.
        #[arg(long)]
        per_worker: bool,
    },
    /// SVG charts from the JSON of `capacity` (Mpps against size) or `ndr` (latency
    /// percentiles at half the NDR).
    Plot {
        /// `capacity --json` output.
        #[arg(long)]
        capacity: Option<PathBuf>,
        /// Worker count to plot from the capacity JSON.
        #[arg(long, default_value_t = 1)]
        workers: u64,
        /// `ndr --json` output.
        #[arg(long)]
        ndr: Option<PathBuf>,
        /// The SVG file to write.
        #[arg(long)]
        out: PathBuf,
    },
    /// Send UDP datagrams as fast as possible for a while; print one JSON line.
    UdpFlood {
        #[arg(long)]
        dst: IpAddr,
        #[arg(long)]
        port: u16,
        /// Datagram size at L3: IP header + UDP header + payload.
        #[arg(long)]
        size: usize,
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
        /// Datagrams per sendmmsg(2) call (1: one send(2) each).
        #[arg(long, default_value_t = 32)]
        batch: usize,
    },
    /// Count UDP datagrams for a while; print one JSON line.
    UdpCount {
        #[arg(long)]
        port: u16,
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
    },
    /// Receive UDP datagrams; exit 0 if at least --min (default --count) arrived in time.
    UdpRecv {
        #[arg(long)]
        port: u16,
        #[arg(long)]
        bind: Option<IpAddr>,
        #[arg(long, default_value_t = 1)]
        count: u64,
        #[arg(long)]
        min: Option<u64>,
        /// Seconds.
        #[arg(long, default_value_t = 10.0)]
        timeout: f64,
    },
    /// Send UDP datagrams.
    UdpSend {
        #[arg(long)]
        dst: IpAddr,
        #[arg(long)]
        port: u16,
        /// Source port (0: any).
        #[arg(long, default_value_t = 0)]
        sport: u16,
        #[arg(long, default_value_t = 1)]
        count: u64,
        /// Payload bytes (with --tag).
        #[arg(long, default_value_t = 64)]
        size: usize,
        #[arg(long, default_value_t = 0)]
        interval_ms: u64,
        /// Text at the start of each payload, followed by the sequence number.
        #[arg(long, default_value = "xsec-lab")]
        tag: String,
        /// Exact payload as hex instead (e.g. a non-ESP marker and an IKE header).
        #[arg(long)]
        payload_hex: Option<String>,
    },
    /// Accept one TCP connection, check its content, answer `ok N`.
    TcpSink {
        #[arg(long)]
        port: u16,
        #[arg(long)]
        bind: Option<IpAddr>,
        /// Seconds.
        #[arg(long, default_value_t = 30.0)]
        timeout: f64,
    },
    /// Send N pattern bytes over TCP; exit 0 only if the sink confirms all of them.
    TcpSend {
        #[arg(long)]
        dst: IpAddr,
        #[arg(long)]
        port: u16,
        #[arg(long)]
        bytes: u64,
        /// Seconds.
        #[arg(long, default_value_t = 30.0)]
        timeout: f64,
    },
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s.clamp(0.0, 86_400.0))
}

fn exit(r: xsec_lab::Result<u64>) -> ExitCode {
    match r {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// A flag set by SIGINT and SIGTERM.
/// A flag set by SIGINT/SIGTERM; `None` (the reason printed) if the handlers cannot be set.
fn stop_flag() -> Option<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        if let Err(e) = signal_hook::flag::register(sig, Arc::clone(&stop)) {
            eprintln!("xsec-lab: cannot handle signal {sig}: {e}");
            return None;
        }
    }
    Some(stop)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::IkeBench {
            ike,
            tunnels,
            repeat,
            proposals,
            memory_tunnels,
            prefix,
            json,
        } => {
            let o = xsec_lab::ikebench::IkeBenchOptions {
                ike,
                tunnels,
                repeat,
                proposals,
                memory_tunnels,
                prefix,
                json,
            };
            match xsec_lab::ikebench::run(&o) {
                Ok(_) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("xsec-lab ike-bench: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Cmd::Bench {
            xsecd,
            seconds,
            sizes,
            repeat,
            idle,
            batch,
            json,
            prefix,
        } => {
            let Some(stop) = stop_flag() else {
                return ExitCode::FAILURE;
            };
            let lab_bin = match std::env::current_exe() {
                Ok(b) => b,
                Err(e) => {
                    eprintln!("xsec-lab: cannot find my own executable: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let o = bench::BenchOptions {
                xsecd,
                seconds: seconds.max(1),
                sizes,
                repeat: repeat.max(1),
                idle,
                batch,
                json,
                prefix,
                lab_bin,
                stop,
            };
            match bench::run(&o) {
                Ok(_) => ExitCode::SUCCESS,
                Err(_) => ExitCode::from(2),
            }
        }
        Cmd::Capacity {
            xsecd,
            seconds,
            sizes,
            algs,
            workers,
            sas,
            flows,
            repeat,
            json,
            prefix,
            per_worker,
            policies,
            site_sas,
        } => {
            let Some(stop) = stop_flag() else {
                return ExitCode::FAILURE;
            };
            if policies.iter().any(|&p| p == 0 || p > 100_000) {
                eprintln!("xsec-lab capacity: --policies: 1 to 100000");
                return ExitCode::from(2);
            }
            let (parsed_sizes, parsed_algs) = match parse_sizes_algs("capacity", &sizes, &algs) {
                Ok(v) => v,
                Err(code) => return code,
            };
            let o = capacity::CapacityOptions {
                xsecd,
                seconds: seconds.max(0.5),
                sizes: parsed_sizes,
                algs: parsed_algs,
                workers,
                sas,
                flows,
                repeat: repeat.max(1),
                json,
                prefix,
                stop,
                per_worker,
                policies,
                site_sas,
            };
            match capacity::run(&o) {
                Ok(_) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("xsec-lab capacity: {e}");
                    ExitCode::from(2)
                }
            }
        }
        Cmd::Scale {
            xsecd,
            sas,
            repeat,
            json,
            prefix,
        } => {
            let Some(stop) = stop_flag() else {
                return ExitCode::FAILURE;
            };
            let o = xsec_lab::scale::ScaleOptions {
                xsecd,
                sas,
                repeat: repeat.max(1),
                json,
                prefix,
                stop,
            };
            match xsec_lab::scale::run(&o) {
                Ok(_) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("xsec-lab scale: {e}");
                    ExitCode::from(2)
                }
            }
        }
        Cmd::VsDpdk {
            xsecd,
            baseline,
            reps,
            sizes,
            algs,
            seconds,
            json,
            prefix,
            what,
            rounds,
            memory_sas,
        } => {
            if let Some(w) = what
                .iter()
                .find(|w| !["capacity", "cycles", "memory"].contains(&w.as_str()))
            {
                eprintln!("xsec-lab vs-dpdk: --what {w}: capacity, cycles and/or memory");
                return ExitCode::from(2);
            }
            // both sides under the baseline's boost (its own autogroup at nice -20): enter it
            // once, so the DPDK script (which checks its niceness) runs in it too
            let boost = baseline.join("boost");
            if std::env::var_os("XSEC_LAB_BOOSTED").is_none() && boost.exists() {
                let me = std::env::current_exe().unwrap_or_else(|_| "xsec-lab".into());
                let st = std::process::Command::new(&boost)
                    .arg(me)
                    .args(std::env::args_os().skip(1))
                    .env("XSEC_LAB_BOOSTED", "1")
                    .status();
                return match st {
                    Ok(s) if s.success() => ExitCode::SUCCESS,
                    Ok(_) => ExitCode::from(2),
                    Err(e) => {
                        eprintln!("xsec-lab vs-dpdk: {}: {e}", boost.display());
                        ExitCode::from(2)
                    }
                };
            }
            let Some(stop) = stop_flag() else {
                return ExitCode::FAILURE;
            };
            let (sizes, algs) = match parse_sizes_algs("vs-dpdk", &sizes, &algs) {
                Ok(v) => v,
                Err(code) => return code,
            };
            let baseline = std::fs::canonicalize(&baseline).unwrap_or(baseline);
            let o = versus::VersusOptions {
                xsecd,
                baseline,
                reps,
                sizes,
                algs,
                seconds: seconds.max(1.0),
                json,
                prefix,
                stop,
                capacity: what.iter().any(|w| w == "capacity"),
                cycles: what.iter().any(|w| w == "cycles"),
                rounds: rounds.max(10),
                memory: what.iter().any(|w| w == "memory").then_some(memory_sas),
            };
            match versus::run(&o) {
                Ok(_) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("xsec-lab vs-dpdk: {e}");
                    ExitCode::from(2)
                }
            }
        }
        Cmd::SaMemory { alg, sas } => {
            let Some(a) = xsec_lab::config::Alg::from_name(&alg) else {
                eprintln!("xsec-lab sa-memory: --alg {alg}: unknown");
                return ExitCode::from(2);
            };
            match versus::sad_memory(a, sas) {
                Ok(b) => {
                    println!("bytes_per_sa={b:.0}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("xsec-lab sa-memory: {e}");
                    ExitCode::from(2)
                }
            }
        }
        Cmd::Ndr {
            xsecd,
            pktgen,
            modes,
            algs,
            sas,
            workers,
            sizes,
            seconds,
            precision,
            max_trials,
            pdr_loss,
            flows,
            gen_io,
            sink_io,
            json,
            prefix,
            per_worker,
        } => {
            let Some(stop) = stop_flag() else {
                return ExitCode::FAILURE;
            };
            let pktgen = pktgen.unwrap_or_else(|| {
                std::env::current_exe()
                    .ok()
                    .and_then(|p| p.parent().map(|d| d.join("xsec-pktgen")))
                    .unwrap_or_else(|| PathBuf::from("xsec-pktgen"))
            });
            let (parsed_sizes, parsed_algs) = match parse_sizes_algs("ndr", &sizes, &algs) {
                Ok(v) => v,
                Err(code) => return code,
            };
            let o = ndr::NdrOptions {
                xsecd,
                pktgen,
                modes,
                algs: parsed_algs,
                sas,
                workers,
                sizes: parsed_sizes,
                seconds: seconds.max(0.5),
                precision: precision.clamp(0.001, 0.5),
                max_trials: max_trials.max(1),
                pdr_loss_pct: pdr_loss.max(0.0),
                flows: flows.max(1),
                gen_io,
                sink_io,
                json,
                prefix,
                stop,
                per_worker,
            };
            match ndr::run(&o) {
                Ok(_) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("xsec-lab ndr: {e}");
                    ExitCode::from(2)
                }
            }
        }
        Cmd::Plot {
            capacity,
            workers,
            ndr,
            out,
        } => {
            let svg = match (capacity, ndr) {
                (Some(c), None) => {
                    plot::read_json(&c).and_then(|d| plot::capacity_chart(&d, workers))
                }
                (None, Some(n)) => plot::read_json(&n).and_then(|d| plot::latency_chart(&d)),
                _ => {
                    eprintln!("xsec-lab plot: give --capacity or --ndr");
                    return ExitCode::from(2);
                }
            };
            match svg.and_then(|s| {
                std::fs::write(&out, s).map_err(|e| xsec_lab::err!("{}: {e}", out.display()))
            }) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("xsec-lab plot: {e}");
                    ExitCode::from(2)
                }
            }
        }
        Cmd::UdpFlood {
            dst,
            port,
            size,
            seconds,
            batch,
        } => exit(tools::udp_flood(&tools::UdpFlood {
            dst,
            port,
            size,
            duration: secs(seconds),
            batch,
        })),
        Cmd::UdpCount { port, seconds } => exit(tools::udp_count(port, secs(seconds))),
        Cmd::Run {
            xsecd,
            seconds,
            nat,
            udp_tunnel,
            plain,
            keep,
            prefix,
            ike,
        } => {
            let Some(stop) = stop_flag() else {
                return ExitCode::FAILURE;
            };
            let lab_bin = match std::env::current_exe() {
                Ok(p) => p,
                Err(e) => {
                    eprintln!("xsec-lab: cannot find my own executable: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let o = demo::RunOptions {
                ike,
                xsecd,
                seconds: seconds.max(1),
                nat,
                udp_tunnel,
                plain,
                keep,
                prefix,
                lab_bin,
                stop,
            };
            match demo::run(&o) {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => ExitCode::FAILURE,
                Err(_) => ExitCode::from(2),
            }
        }
        Cmd::UdpRecv {
            port,
            bind,
            count,
            min,
            timeout,
        } => exit(tools::udp_recv(&tools::UdpRecv {
            port,
            bind,
            count,
            min,
            timeout: secs(timeout),
        })),
        Cmd::UdpSend {
            dst,
            port,
            sport,
            count,
            size,
            interval_ms,
            tag,
            payload_hex,
        } => {
            // hex digits, `0x` in front allowed
            let payload = match payload_hex.as_deref().map(str::trim) {
                Some(h) => match hex::decode(h.strip_prefix("0x").unwrap_or(h)) {
                    Ok(p) => Some(p),
                    Err(_) => {
                        eprintln!("udp-send: --payload-hex is not hex");
                        return ExitCode::from(2);
                    }
                },
                None => None,
            };
            exit(tools::udp_send(&tools::UdpSend {
                dst,
                port,
                sport,
                count,
                size,
                interval: Duration::from_millis(interval_ms),
                tag,
                payload,
            }))
        }
        Cmd::TcpSink {
            port,
            bind,
            timeout,
        } => exit(tools::tcp_sink(port, bind, secs(timeout))),
        Cmd::TcpSend {
            dst,
            port,
            bytes,
            timeout,
        } => exit(tools::tcp_send(dst, port, bytes, secs(timeout))),
    }
}

/// `--sizes` (numbers or `imix`, which is 0) and `--algs` (short names) of `capacity` and
/// `ndr`; on a bad value the message is printed and the exit code returned.
fn parse_sizes_algs(
    cmd: &str,
    sizes: &[String],
    algs: &[String],
) -> Result<(Vec<usize>, Vec<config::Alg>), ExitCode> {
    let mut out_sizes = vec![];
    for s in sizes {
        match s.as_str() {
            "imix" => out_sizes.push(0),
            n => match n.parse() {
                Ok(n) => out_sizes.push(n),
                Err(_) => {
                    eprintln!("xsec-lab {cmd}: --sizes {s}: a number or imix");
                    return Err(ExitCode::from(2));
                }
            },
        }
    }
    let mut out_algs = vec![];
    for a in algs {
        match config::Alg::from_name(a) {
            Some(a) => out_algs.push(a),
            None => {
                let names: Vec<&str> = config::Alg::ALL.iter().map(|a| a.name()).collect();
                eprintln!("xsec-lab {cmd}: --algs {a}: one of {}", names.join(", "));
                return Err(ExitCode::from(2));
            }
        }
    }
    Ok((out_sizes, out_algs))
}
