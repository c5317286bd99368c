//! End-to-end tests of the gateway: two `xsecd` (AF_XDP + the XDP program) in network
//! namespaces between two hosts, built by the `xsec-lab` library.
//!
//! ```text
//! hA 10.1.0.10 -- gwA (xsecd) 10.0.0.1 ===== 10.0.0.2 (xsecd) gwB -- hB 10.2.0.10
//!    fd01::10                  [nat: 172.16.0.2 -- NAT 10.0.0.1]          fd02::10
//! ```
//!
//! Every test builds its own namespaces (`xsec-t<pid>-<n>-*`), starts the daemons, sends
//! traffic with the `xsec-lab` traffic tools and checks: delivery, xsecd's stats, and the
//! capture of the middle link (`Lab::wire_tap`): nothing but ESP (or its UDP encapsulation,
//! keep-alives, ARP/ND) and no inner-subnet address in clear; every ESP packet decrypted by
//! the harness's `esp_tool.py` (explicit keys, one direction at a time) and
//! `tshark_decrypt.sh` (an `esp_sa` table written from the generated keys).
//!
//! They need root, iproute2, ethtool, tcpdump, nftables, ping, tshark and the IPsec peer
//! harness (`XSEC_HARNESS`, default `../shared/harness`); they never skip: anything missing
//! fails them. `xsecd` and `xsec-lab` are built by the test itself with
//! `$CARGO build -p xsecd -p xsec-lab --bins` (see `xsec_lab::build`), or taken from
//! `XSECD` and `XSEC_LAB_BIN`. Each test starts two daemons on a small machine: they run one
//! at a time (a static lock). A failed test keeps its work folder (`/tmp/xsec-t<pid>-<n>-<name>`:
//! configs, daemon logs, stats, the capture); `XSEC_GATEWAY_KEEP=1` keeps every one.
//!
//! The neighbour tables start cold: the first packet of each path waits in xsecd while the
//! kernel resolves its next hop, and the tests count exact deliveries, so they check that too.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use xsec_interop_tests::Harness;
use xsec_lab::config::{Action, Alg, Encap, Mode, Pair, PairOptions};
use xsec_lab::fuzz;
use xsec_lab::procs::{Output, Proc};
use xsec_lab::stats::Stats;
use xsec_lab::tools::{received_count, received_from, received_payloads};
use xsec_lab::topo::{Lab, Node, TopoOptions, Wan, Xsecd, addr};
use xsec_lab::wire::{self, WireReport};

static SERIAL: Mutex<()> = Mutex::new(());
static BINS: OnceLock<Result<(PathBuf, PathBuf), String>> = OnceLock::new();
static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// One test at a time; a failed (panicked) test does not poison the others.
fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// `(xsecd, xsec-lab)`, built once per test binary.
fn bins() -> (PathBuf, PathBuf) {
    BINS.get_or_init(|| xsec_lab::build::executables().map_err(|e| e.0))
        .clone()
        .unwrap_or_else(|e| {
            panic!("the gateway tests need the xsecd and xsec-lab executables: {e}")
        })
}

/// Remove namespaces of earlier test runs whose process is gone (`xsec-t<pid>-<n>-*`).
fn remove_dead_test_namespaces() {
    for ns in xsec_lab::topo::namespaces_with_prefix("xsec") {
        let Some(rest) = ns.strip_prefix("xsec-t") else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            xsec_lab::topo::delete_namespace(&ns);
        }
    }
}

/// A topology, the two gateway configurations, and the daemons started on it.
struct Scenario {
    name: &'static str,
    lab: Lab,
    pair: Pair,
    xsecd: PathBuf,
    tool: String,
    daemons: Vec<Xsecd>,
    _serial: MutexGuard<'static, ()>,
}

fn scenario(name: &'static str, opts: PairOptions) -> Scenario {
    scenario_with(name, opts, 1, |_| {})
}

fn scenario_with(
    name: &'static str,
    opts: PairOptions,
    queues: u16,
    edit: impl FnOnce(&mut Pair),
) -> Scenario {
    let guard = serial();
    let (xsecd, tool) = bins();
    remove_dead_test_namespaces();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let prefix = format!("xsec-t{}-{n}", std::process::id());
    let workdir = std::env::temp_dir().join(format!("{prefix}-{name}"));
    let lab = Lab::up(
        TopoOptions::new(&prefix)
            .wan(opts.wan)
            .queues(queues)
            .workdir(&workdir),
    )
    .unwrap_or_else(|e| panic!("{name}: cannot build the topology: {e}"));
    let mut pair = Pair::new(opts);
    edit(&mut pair);
    eprintln!(
        "{name}: namespaces {prefix}-*, work folder {}",
        workdir.display()
    );
    Scenario {
        name,
        lab,
        pair,
        xsecd,
        tool: tool.to_string_lossy().into_owned(),
        daemons: vec![],
        _serial: guard,
    }
}

impl Scenario {
    /// Panic with `msg`, the daemons' stderr tails and where the artefacts are.
    fn fail(&self, msg: &str) -> ! {
        let mut s = format!(
            "{}: {msg}\n(work folder {})",
            self.name,
            self.lab.workdir().display()
        );
        for d in &self.daemons {
            s.push_str(&format!(
                "\n--- xsecd {} stderr (tail) ---\n{}",
                d.node.suffix(),
                d.proc.stderr_tail(25)
            ));
        }
        panic!("{s}");
    }

    fn check(&self, ok: bool, msg: impl FnOnce() -> String) {
        if !ok {
            self.fail(&msg());
        }
    }

    /// Start xsecd on the gateways given, with the pair's configurations.
    fn start(&mut self, nodes: &[Node]) {
        for &node in nodes {
            let conf = match node {
                Node::GwA => self.pair.a.to_toml(),
                Node::GwB => self.pair.b.to_toml(),
                _ => self.fail("xsecd runs on gwA and gwB only"),
            };
            match self
                .lab
                .start_xsecd(node, &self.xsecd, &conf, Duration::from_secs(30))
            {
                Ok(d) => self.daemons.push(d),
                Err(e) => self.fail(&format!("xsecd did not start: {e}")),
            }
        }
    }

    fn daemon(&self, node: Node) -> &Xsecd {
        self.daemons
            .iter()
            .find(|d| d.node == node)
            .unwrap_or_else(|| self.fail(&format!("no xsecd on {node:?}")))
    }

    /// Stats after the next write (waits a little more than one stats interval).
    fn stats(&self, node: Node) -> Stats {
        std::thread::sleep(Duration::from_millis(700));
        self.lab
            .stats(self.daemon(node))
            .unwrap_or_else(|e| self.fail(&format!("stats of {node:?}: {e}")))
    }

    fn assert_alive(&self) {
        for d in &self.daemons {
            self.check(self.lab.procs().is_running(&d.proc), || {
                format!("xsecd on {:?} is not running", d.node)
            });
        }
    }

    /// Stop every daemon with SIGINT: each must exit 0 and leave no XDP program behind.
    fn stop_all(&mut self) {
        for d in &self.daemons {
            if let Err(e) = self.lab.stop_xsecd(d) {
                self.fail(&e.to_string());
            }
            for ifname in ["wan0", "lan0"] {
                let attached = self.lab.xdp_attached(d.node, ifname);
                self.check(attached == Ok(false), || {
                    format!(
                        "{:?} {ifname}: XDP still attached after xsecd exited ({attached:?})",
                        d.node
                    )
                });
            }
        }
        self.daemons.clear();
    }

    fn spawn_tool(&self, node: Node, name: &str, args: &[&str]) -> Proc {
        let mut v = vec![self.tool.as_str()];
        v.extend_from_slice(args);
        self.lab
            .spawn(node, name, &v)
            .unwrap_or_else(|e| self.fail(&e.to_string()))
    }

    fn run_tool(&self, node: Node, args: &[&str]) -> Output {
        let mut v = vec![self.tool.as_str()];
        v.extend_from_slice(args);
        self.lab
            .exec(node, &v)
            .unwrap_or_else(|e| self.fail(&e.to_string()))
    }

    fn wait_listening(&self, p: &Proc) {
        let end = Instant::now() + Duration::from_secs(10);
        while !p.stdout_text().contains("listening on") {
            self.check(
                Instant::now() < end && self.lab.procs().is_running(p),
                || format!("{} is not listening: {}", p.name, p.stderr_tail(5)),
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A receiver of up to `count` datagrams on `port` in `node` (stopped by `finish_recv`).
    fn udp_receiver(&self, node: Node, port: u16, count: u64, tag: &str) -> Proc {
        let p = self.spawn_tool(
            node,
            &format!("udp-recv-{tag}"),
            &[
                "udp-recv",
                "--port",
                &port.to_string(),
                "--count",
                &count.to_string(),
                "--min",
                "0",
                "--timeout",
                "30",
            ],
        );
        self.wait_listening(&p);
        p
    }

    /// Wait up to `patience` for the receiver to get its count, then stop it; its output.
    fn finish_recv(&self, p: &Proc, patience: Duration) -> String {
        self.lab.procs().wait(p, patience);
        self.lab.procs().stop(p, Duration::from_secs(2));
        p.stdout_text()
    }

    /// `count` datagrams from `from` to `dst`:`port` (received in `to`); how many arrived.
    fn udp(&self, from: Node, to: Node, dst: &str, port: u16, count: u64) -> u64 {
        let tag = format!(
            "{}-{port}-{}",
            to.suffix(),
            if dst.contains(':') { "v6" } else { "v4" }
        );
        let r = self.udp_receiver(to, port, count, &tag);
        let o = self.run_tool(
            from,
            &[
                "udp-send",
                "--dst",
                dst,
                "--port",
                &port.to_string(),
                "--count",
                &count.to_string(),
                "--interval-ms",
                "20",
                "--size",
                "300",
                "--tag",
                self.name,
            ],
        );
        self.check(o.ok(), || format!("udp-send failed: {o}"));
        let out = self.finish_recv(&r, Duration::from_secs(5));
        received_count(&out)
    }

    /// A TCP transfer of `bytes` from `from` to `dst` (sink in `to`); panics unless intact.
    fn tcp(&self, from: Node, to: Node, dst: &str, port: u16, bytes: u64) {
        let sink = self.spawn_tool(
            to,
            &format!("tcp-sink-{}-{port}", to.suffix()),
            &["tcp-sink", "--port", &port.to_string(), "--timeout", "60"],
        );
        self.wait_listening(&sink);
        let o = self.run_tool(
            from,
            &[
                "tcp-send",
                "--dst",
                dst,
                "--port",
                &port.to_string(),
                "--bytes",
                &bytes.to_string(),
                "--timeout",
                "45",
            ],
        );
        let st = self.lab.procs().wait(&sink, Duration::from_secs(10));
        self.check(o.ok() && st.is_some_and(|s| s.success()), || {
            format!(
                "TCP {from:?} -> {dst} ({bytes} bytes) failed: {o}\nsink: {}{}",
                sink.stdout_text(),
                sink.stderr_tail(5)
            )
        });
    }

    /// Ping until the first answer (the path may need ARP/ND first), then `count` more.
    fn ping(&self, from: Node, dst: &str, count: u32) {
        let first = self
            .lab
            .ping(from, dst, 10, 0.3, 6)
            .unwrap_or_else(|e| self.fail(&e.to_string()));
        self.check(first.received > 0, || {
            format!("ping {from:?} -> {dst}: no answer\n{}", first.output)
        });
        let p = self
            .lab
            .ping(from, dst, count, 0.2, 10)
            .unwrap_or_else(|e| self.fail(&e.to_string()));
        self.check(p.received == count, || {
            format!(
                "ping {from:?} -> {dst}: {}/{} answered\n{}",
                p.received, p.transmitted, p.output
            )
        });
    }

    /// Capture the middle link. Started once both daemons are ready: before that, a heartbeat
    /// of the first daemon reaches a peer without xsecd, whose kernel answers with an ICMP
    /// port unreachable in clear (start-up, not a leak of the gateway).
    fn capture(&self) -> xsec_lab::topo::Capture {
        self.lab
            .capture_wire("wire")
            .unwrap_or_else(|e| self.fail(&e.to_string()))
    }

    fn stop_capture(&self, c: &xsec_lab::topo::Capture) -> PathBuf {
        self.lab
            .stop_capture(c)
            .unwrap_or_else(|e| self.fail(&e.to_string()))
    }

    fn encap_ports(&self) -> Vec<u16> {
        self.pair.opts.encap.port().into_iter().collect()
    }

    /// Read the capture: only ESP (+ keep-alives, IKE, ARP/ND) and no inner address in clear,
    /// except clear packets `allowed` accepts; ESP from both ends.
    fn check_wire(&self, pcap: &Path, allowed: impl Fn(&wire::Frame) -> bool) -> WireReport {
        self.check_wire_for(pcap, allowed, |_| true)
    }

    /// [`Scenario::check_wire`], requiring ESP only for the SAs `used` selects.
    fn check_wire_for(
        &self,
        pcap: &Path,
        allowed: impl Fn(&wire::Frame) -> bool,
        used: impl Fn(&xsec_lab::config::EspSa) -> bool,
    ) -> WireReport {
        let frames = wire::read_pcap(pcap).unwrap_or_else(|e| self.fail(&e.to_string()));
        let inner = [addr::NET_A, addr::NET_B, addr::NET_A6, addr::NET_B6];
        let r = wire::analyze(&frames, &self.encap_ports(), &inner);
        eprintln!("{}: wire: {}", self.name, r.summary());
        let bad: Vec<String> = r
            .clear
            .iter()
            .filter(|f| !allowed(f))
            .take(10)
            .map(|f| f.to_string())
            .collect();
        self.check(bad.is_empty(), || {
            format!("clear packets on the middle link:\n  {}", bad.join("\n  "))
        });
        for sa in self.pair.sas.iter().filter(|sa| used(sa)) {
            let n = r.esp_by_spi.get(&sa.spi).copied().unwrap_or(0);
            self.check(n > 0, || {
                format!(
                    "no ESP with SPI {:#x} ({:?} -> peer) on the middle link",
                    sa.spi, sa.sender
                )
            });
        }
        r
    }

    /// Decrypt the capture with the harness: esp_tool.py (per direction, explicit keys,
    /// IPv4 outer only) and tshark_decrypt.sh (the whole capture, an esp_sa table).
    fn decrypt_with_harness(&self, pcap: &Path, wire: &WireReport) {
        let h = Harness::locate();
        let ports = self.encap_ports();
        let seen = |spi: u32| wire.esp_by_spi.get(&spi).copied().unwrap_or(0) > 0;
        for sa in self
            .pair
            .sas
            .iter()
            .filter(|s| !s.src.contains(':') && seen(s.spi))
        {
            let part = self.lab.workdir().join(format!("spi-{:x}.pcap", sa.spi));
            let filter = match sa.encap.port() {
                None => format!("src host {} and ip proto 50", sa.src),
                Some(p) => format!("src host {} and udp port {p}", sa.src),
            };
            let split = xsec_lab::procs::run({
                let mut c = std::process::Command::new("tcpdump");
                c.args(["-Z", "root", "-r"])
                    .arg(pcap)
                    .arg("-w")
                    .arg(&part)
                    .arg(&filter);
                c
            })
            .unwrap_or_else(|e| self.fail(&e.to_string()));
            self.check(split.ok(), || format!("splitting the capture: {split}"));
            let mut args: Vec<String> = vec![
                "decrypt".into(),
                "--pcap".into(),
                part.to_string_lossy().into_owned(),
            ];
            args.extend(sa.esp_tool_args());
            for p in &ports {
                args.extend(["--udp-port".to_owned(), p.to_string()]);
            }
            let r = h.esp_tool(&args);
            let ok_n = r
                .stdout
                .lines()
                .filter(|l| l.contains(" ok, scapy SA.decrypt agrees"))
                .count();
            self.check(r.ok() && ok_n > 0 && !r.stdout.contains("ERROR"), || {
                format!("esp_tool.py could not decrypt SPI {:#x}: {r}", sa.spi)
            });
            eprintln!(
                "{}: esp_tool.py decrypted {ok_n} packets of SPI {:#x}",
                self.name, sa.spi
            );
        }
        let esp_sa = self
            .lab
            .write_file("esp_sa", self.pair.esp_sa_table())
            .unwrap_or_else(|e| self.fail(&e.to_string()));
        let mut args: Vec<String> = vec![
            pcap.to_string_lossy().into_owned(),
            "--keys".into(),
            esp_sa.to_string_lossy().into_owned(),
            "--check".into(),
        ];
        for p in ports.iter().filter(|p| **p != 4500) {
            args.extend(["--udp-port".to_owned(), p.to_string()]);
        }
        let r = h.tshark_decrypt(&args);
        self.check(r.ok(), || {
            format!("tshark_decrypt.sh: not every ESP packet decrypted: {r}")
        });
        eprintln!("{}: {}", self.name, r.stdout.lines().last().unwrap_or(""));
    }

    /// Run esp_tool.py in gwA's namespace (to send what it builds towards gwB).
    fn esp_tool_in_gwa(&self, args: &[String]) -> Output {
        let h = Harness::locate();
        let mut v: Vec<String> = vec![
            h.python.to_string_lossy().into_owned(),
            h.dir.join("esp_tool.py").to_string_lossy().into_owned(),
        ];
        v.extend_from_slice(args);
        self.lab
            .exec(Node::GwA, &v)
            .unwrap_or_else(|e| self.fail(&e.to_string()))
    }
}

impl Drop for Scenario {
    /// The work folder (configs, logs, captures) is kept when the test failed or
    /// `XSEC_GATEWAY_KEEP` is set; the namespaces and processes always go (the `Lab` guard).
    fn drop(&mut self) {
        let dir = self.lab.workdir().to_path_buf();
        if std::thread::panicking() || std::env::var_os("XSEC_GATEWAY_KEEP").is_some() {
            eprintln!("{}: artefacts kept in {}", self.name, dir.display());
        } else {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn both_ways_traffic(s: &Scenario, v6: bool, tcp: bool) {
    let mut families = vec![(addr::HOST_A, addr::HOST_B, 5201, 1_000_000)];
    if v6 {
        families.push((addr::HOST_A6, addr::HOST_B6, 5203, 500_000));
    }
    for (host_a, host_b, tcp_port, tcp_bytes) in families {
        s.ping(Node::HostA, host_b, 5);
        s.ping(Node::HostB, host_a, 5);
        for (from, to, dst) in [
            (Node::HostA, Node::HostB, host_b),
            (Node::HostB, Node::HostA, host_a),
        ] {
            let n = s.udp(from, to, dst, 5000, 20);
            s.check(n == 20, || {
                format!("UDP {from:?} -> {dst}: {n}/20 delivered")
            });
        }
        if tcp {
            s.tcp(Node::HostA, Node::HostB, host_b, tcp_port, tcp_bytes);
            s.tcp(Node::HostB, Node::HostA, host_a, tcp_port + 1, tcp_bytes);
        }
    }
}

/// Both gateways decapsulated and encapsulated, and the SAs counted packets both ways.
fn check_counters(s: &Scenario) {
    for node in [Node::GwA, Node::GwB] {
        let st = s.stats(node);
        s.check(
            st.engine("decap_packets") > 0 && st.engine("encap_packets") > 0,
            || {
                format!(
                    "{node:?}: encap {} decap {}: {}",
                    st.engine("encap_packets"),
                    st.engine("decap_packets"),
                    st.0
                )
            },
        );
        s.check(
            st.sa_packets("ab", "in") > 0 && st.sa_packets("ab", "out") > 0,
            || format!("{node:?}: SA ab counted nothing: {:?}", st.sas()),
        );
    }
}

/// The common body: traffic both ways through two daemons, then the wire and the counters.
fn end_to_end(name: &'static str, opts: PairOptions, v6: bool, tcp: bool) -> Scenario {
    let mut s = scenario(name, opts);
    s.start(&[Node::GwA, Node::GwB]);
    let cap = s.capture();
    both_ways_traffic(&s, v6, tcp);
    check_counters(&s);
    s.assert_alive();
    // the capture ends before the daemons do: a peer's keepalive reaching a gateway whose
    // XDP program is gone draws a port unreachable from its kernel (shutdown, not a leak)
    let pcap = s.stop_capture(&cap);
    s.stop_all();
    let r = s.check_wire_for(&pcap, |_| false, |sa| v6 || sa.name != "ab6");
    s.decrypt_with_harness(&pcap, &r);
    s
}

#[test]
fn tunnel_aes_gcm_raw_esp_v4_v6_icmp_udp_tcp() {
    end_to_end("tunnel-gcm", PairOptions::default(), true, true);
}

#[test]
fn tunnel_aes_cbc_hmac_sha256_raw_esp() {
    let opts = PairOptions {
        alg: Alg::AesCbc128Sha256,
        seed: 2,
        ..PairOptions::default()
    };
    end_to_end("tunnel-cbc", opts, true, false);
}

#[test]
fn transport_mode_between_the_hosts() {
    let opts = PairOptions {
        mode: Mode::Transport,
        alg: Alg::AesCbc128Sha1,
        seed: 3,
        ..PairOptions::default()
    };
    let s = end_to_end("transport", opts, false, true);
    drop(s);
}

#[test]
fn transport_mode_ipv6_hosts() {
    let opts = PairOptions {
        mode: Mode::Transport,
        seed: 4,
        ..PairOptions::default()
    };
    let mut s = scenario("transport-v6", opts);
    s.start(&[Node::GwA, Node::GwB]);
    let cap = s.capture();
    s.ping(Node::HostA, addr::HOST_B6, 5);
    s.ping(Node::HostB, addr::HOST_A6, 5);
    let n = s.udp(Node::HostA, Node::HostB, addr::HOST_B6, 5000, 10);
    s.check(n == 10, || format!("UDP over IPv6 transport: {n}/10"));
    s.tcp(Node::HostB, Node::HostA, addr::HOST_A6, 5205, 300_000);
    let st = s.stats(Node::GwB);
    s.check(
        st.sa_packets("ab6", "in") > 0 && st.sa_packets("ab6", "out") > 0,
        || format!("SA ab6 counted nothing: {:?}", st.sas()),
    );
    // the capture ends before the daemons do: a peer's keepalive reaching a gateway whose
    // XDP program is gone draws a port unreachable from its kernel (shutdown, not a leak)
    let pcap = s.stop_capture(&cap);
    s.stop_all();
    let r = s.check_wire_for(&pcap, |_| false, |sa| sa.name == "ab6");
    let (a6, b6): (IpAddr, IpAddr) = (
        addr::HOST_A6.parse().expect("v6"),
        addr::HOST_B6.parse().expect("v6"),
    );
    s.check(r.esp_from(a6) > 0 && r.esp_from(b6) > 0, || {
        format!("no IPv6 ESP both ways: {}", r.summary())
    });
    s.decrypt_with_harness(&pcap, &r);
}

#[test]
fn nat_traversal_udp_4500_through_the_nat() {
    let opts = PairOptions {
        encap: Encap::NatT,
        keepalive: 1,
        wan: Wan::Nat,
        seed: 5,
        ..PairOptions::default()
    };
    let mut s = scenario("nat-t", opts);
    // manual keys name the peer's port: the NAT must keep 4500 as 4500
    let r = s.udp_receiver(Node::GwB, 4500, 1, "nat-port-check");
    let o = s.run_tool(
        Node::GwA,
        &[
            "udp-send",
            "--dst",
            addr::GWB_WAN,
            "--port",
            "4500",
            "--sport",
            "4500",
            "--payload-hex",
            "00000000aa",
        ],
    );
    s.check(o.ok(), || o.to_string());
    let out = s.finish_recv(&r, Duration::from_secs(5));
    s.check(
        received_from(&out) == vec![format!("{}:4500", addr::GWA_WAN)],
        || format!("the NAT did not keep UDP source port 4500: {out}"),
    );
    s.start(&[Node::GwA, Node::GwB]);
    let cap = s.capture();
    // gwA speaks first: the NAT only lets gwB's packets in on the mapping gwA's created
    s.ping(Node::HostA, addr::HOST_B, 5);
    both_ways_traffic(&s, true, true);
    check_counters(&s);
    // the capture ends before the daemons do: a peer's keepalive reaching a gateway whose
    // XDP program is gone draws a port unreachable from its kernel (shutdown, not a leak)
    let pcap = s.stop_capture(&cap);
    s.stop_all();
    let r = s.check_wire(&pcap, |_| false);
    let raw_esp = wire::read_pcap(&pcap)
        .map(|f| {
            f.iter()
                .enumerate()
                .filter(|(i, f)| {
                    matches!(
                        wire::classify(i + 1, f, &[4500]).kind,
                        wire::Kind::Esp { .. }
                    )
                })
                .count()
        })
        .unwrap_or(0);
    s.check(raw_esp == 0, || {
        format!("{raw_esp} raw ESP packets behind a NAT-T SA")
    });
    s.check(r.esp_from(addr::GWA_WAN.parse().expect("ip")) > 0, || {
        r.summary()
    });
    s.decrypt_with_harness(&pcap, &r);
}

#[test]
fn esp_in_udp_2746_with_heartbeats() {
    let opts = PairOptions {
        encap: Encap::Udp(2746),
        keepalive: 1,
        seed: 6,
        ..PairOptions::default()
    };
    let mut s = scenario("udp-2746", opts);
    s.start(&[Node::GwA, Node::GwB]);
    let cap = s.capture();
    both_ways_traffic(&s, true, false);
    std::thread::sleep(Duration::from_millis(2500)); // at least two heartbeat intervals
    check_counters(&s);
    for node in [Node::GwA, Node::GwB] {
        let st = s.stats(node);
        s.check(st.heartbeats_sent() > 0, || {
            format!("{node:?}: heartbeats_sent is 0: {}", st.0)
        });
    }
    // the capture ends before the daemons do: a peer's keepalive reaching a gateway whose
    // XDP program is gone draws a port unreachable from its kernel (shutdown, not a leak)
    let pcap = s.stop_capture(&cap);
    s.stop_all();
    let r = s.check_wire(&pcap, |_| false);
    let hb: Vec<_> = r
        .keepalives
        .iter()
        .filter(|f| f.udp_payload == [0xff] && f.dport == Some(2746))
        .collect();
    s.check(hb.len() >= 2, || {
        format!(
            "{} one-byte 0xFF UDP/2746 heartbeats captured: {}",
            hb.len(),
            r.summary()
        )
    });
    for who in [addr::GWA_WAN, addr::GWB_WAN] {
        let ip: IpAddr = who.parse().expect("ip");
        s.check(hb.iter().any(|f| f.src == Some(ip)), || {
            format!("no heartbeat from {who}")
        });
    }
    s.decrypt_with_harness(&pcap, &r);
}

#[test]
fn esp_tool_packets_delivered_and_bad_ones_dropped() {
    let mut s = scenario(
        "inject",
        PairOptions {
            seed: 7,
            ..PairOptions::default()
        },
    );
    // only gwB runs xsecd: gwA's namespace is the forger
    s.start(&[Node::GwB]);
    let sa = s.pair.sa(Node::GwA, false).clone();
    let recv = s.udp_receiver(Node::HostB, 5000, 10, "injected");
    let before = s.stats(Node::GwB);
    let send = |seq: u32, payload: &str, extra: &[&str], spi: Option<&str>| {
        let mut args: Vec<String> = vec!["encrypt".into()];
        let mut sa_args = sa.esp_tool_args();
        if let Some(spi) = spi {
            sa_args[1] = spi.to_owned();
        }
        args.extend(sa_args);
        args.extend(
            [
                "--outer-src",
                addr::GWA_WAN,
                "--outer-dst",
                addr::GWB_WAN,
                "--seq",
                &seq.to_string(),
                "--inner-scapy",
                &format!(
                    "IP(src='{}',dst='{}')/UDP(sport=4000,dport=5000)/Raw(b'{payload}')",
                    addr::HOST_A,
                    addr::HOST_B
                ),
                "--send",
            ]
            .map(str::to_owned),
        );
        args.extend(extra.iter().map(|a| (*a).to_owned()));
        let o = s.esp_tool_in_gwa(&args);
        s.check(o.ok(), || format!("esp_tool.py encrypt --send failed: {o}"));
    };
    send(1, "injected-good", &[], None);
    send(2, "injected-bad-icv", &["--bad-icv"], None);
    send(3, "injected-replayed", &["--count", "2"], None);
    send(4, "injected-unknown-spi", &[], Some("0xdeadbeef"));
    send(5, "injected-good-again", &["--extra-pad", "2"], None);
    std::thread::sleep(Duration::from_secs(1));
    let out = s.finish_recv(&recv, Duration::from_secs(1));
    let got = received_payloads(&out);
    s.check(
        got == vec!["injected-good", "injected-replayed", "injected-good-again"],
        || {
            format!(
                "hB received {got:?}, wanted the good, the first replayed and the padded packet"
            )
        },
    );
    let after = s.stats(Node::GwB);
    for (drop, n) in [("icv_failed", 1), ("replay_duplicate", 1), ("no_sa", 1)] {
        let d = after.drop_count(drop) - before.drop_count(drop);
        s.check(d == n, || {
            format!(
                "drops.{drop} grew by {d}, not {n}: {:?}",
                after.nonzero_drops()
            )
        });
    }
    s.assert_alive();
    s.stop_all();
}

#[test]
fn bypass_flows_through_the_kernel_and_discard_does_not_flow() {
    let mut s = scenario_with(
        "policies",
        PairOptions {
            seed: 8,
            ..PairOptions::default()
        },
        1,
        |p| {
            p.port_policy("bypass-udp7", "udp", 7, Action::Bypass);
            p.port_policy("discard-udp9", "udp", 9, Action::Discard);
        },
    );
    s.start(&[Node::GwA, Node::GwB]);
    let cap = s.capture();
    s.ping(Node::HostA, addr::HOST_B, 3);
    let n = s.udp(Node::HostA, Node::HostB, addr::HOST_B, 7, 10);
    s.check(n == 10, || format!("BYPASS UDP/7: {n}/10 delivered"));
    let n = s.udp(Node::HostA, Node::HostB, addr::HOST_B, 9, 10);
    s.check(n == 0, || format!("DISCARD UDP/9: {n}/10 delivered"));
    let n = s.udp(Node::HostA, Node::HostB, addr::HOST_B, 5000, 10);
    s.check(n == 10, || format!("protected UDP/5000: {n}/10 delivered"));
    let st = s.stats(Node::GwA);
    s.check(st.drop_count("policy_discard") >= 10, || {
        format!("gwA policy_discard: {:?}", st.nonzero_drops())
    });
    s.check(st.engine("bypass_packets") >= 10, || {
        format!("gwA bypass_packets {}", st.engine("bypass_packets"))
    });
    // the capture ends before the daemons do: a peer's keepalive reaching a gateway whose
    // XDP program is gone draws a port unreachable from its kernel (shutdown, not a leak)
    let pcap = s.stop_capture(&cap);
    s.stop_all();
    // clear text allowed only for UDP to port 7
    let r = s.check_wire(&pcap, |f| {
        matches!(f.kind, wire::Kind::Clear { proto: 17 }) && f.dport == Some(7)
    });
    let bypassed = r.clear.iter().filter(|f| f.dport == Some(7)).count();
    s.check(bypassed == 10, || {
        format!("{bypassed} UDP/7 datagrams in clear on the middle link, not 10")
    });
    s.check(!r.clear.iter().any(|f| f.dport == Some(9)), || {
        "discarded UDP/9 reached the middle link".into()
    });
}

#[test]
fn ike_packets_reach_a_socket_on_the_gateway() {
    let opts = PairOptions {
        encap: Encap::NatT,
        seed: 9,
        ..PairOptions::default()
    };
    let mut s = scenario("ike", opts);
    s.start(&[Node::GwB]);
    // an IKE_SA_INIT-like header: SPIi, SPIr 0, next payload 33, version 2.0, exchange 34
    let ike = "0102030405060708000000000000000021202208000000000000001c";
    let r500 = s.udp_receiver(Node::GwB, 500, 1, "ike500");
    let r4500 = s.udp_receiver(Node::GwB, 4500, 1, "ike4500");
    for (sport, payload) in [("500", ike.to_owned()), ("4500", format!("00000000{ike}"))] {
        let o = s.run_tool(
            Node::GwA,
            &[
                "udp-send",
                "--dst",
                addr::GWB_WAN,
                "--port",
                sport,
                "--sport",
                sport,
                "--payload-hex",
                &payload,
            ],
        );
        s.check(o.ok(), || o.to_string());
    }
    for (r, port) in [(&r500, 500), (&r4500, 4500)] {
        let out = s.finish_recv(r, Duration::from_secs(5));
        s.check(
            received_from(&out) == vec![format!("{}:{port}", addr::GWA_WAN)],
            || format!("IKE on UDP {port} did not reach the socket on gwB: {out}"),
        );
    }
    s.assert_alive();
    s.stop_all();
}

#[test]
fn malformed_config_is_rejected_and_nothing_attached() {
    let s = scenario(
        "bad-config",
        PairOptions {
            seed: 10,
            ..PairOptions::default()
        },
    );
    // first: every configuration the lab generates passes --check
    let variants = [
        PairOptions::default(),
        PairOptions {
            alg: Alg::AesCbc128Sha1,
            mode: Mode::Transport,
            ..PairOptions::default()
        },
        PairOptions {
            encap: Encap::NatT,
            keepalive: 1,
            wan: Wan::Nat,
            ..PairOptions::default()
        },
        PairOptions {
            encap: Encap::Udp(2746),
            keepalive: 1,
            alg: Alg::AesCbc128Sha256,
            ..PairOptions::default()
        },
    ];
    for (i, v) in variants.into_iter().enumerate() {
        let mut p = Pair::new(v);
        p.port_policy("bypass-udp7", "udp", 7, Action::Bypass);
        for (side, conf) in [("a", &p.a), ("b", &p.b)] {
            let f = s
                .lab
                .write_file(&format!("valid-{i}{side}.toml"), conf.to_toml())
                .expect("write");
            let o = s
                .lab
                .exec(
                    Node::GwB,
                    &[
                        s.xsecd.as_os_str(),
                        "--config".as_ref(),
                        f.as_os_str(),
                        "--check".as_ref(),
                    ],
                )
                .expect("run");
            s.check(o.ok(), || {
                format!("a generated config fails --check: {o}\n{}", conf.to_toml())
            });
        }
    }
    let good = s.pair.b.to_toml();
    let line = good
        .lines()
        .position(|l| l.starts_with("encryption = "))
        .expect("an encryption line")
        + 1;
    let bad = good.replacen("encryption = \"aes-gcm-128\"", "encryption = \"rot13\"", 1);
    let f = s.lab.write_file("bad.toml", &bad).expect("write");
    let fs = f.to_string_lossy().into_owned();
    let o = s
        .lab
        .exec(
            Node::GwB,
            &[
                s.xsecd.to_string_lossy().as_ref(),
                "--config",
                &fs,
                "--check",
            ],
        )
        .expect("run");
    s.check(o.code == Some(2), || {
        format!("--check of a bad config should exit 2: {o}")
    });
    s.check(
        o.stderr.contains(&format!("{fs}:{line}:")) && o.stderr.contains("encryption"),
        || format!("--check should name {fs}:{line}: encryption: {o}"),
    );
    let p = s
        .lab
        .spawn(
            Node::GwB,
            "xsecd-bad",
            &[
                s.xsecd.to_string_lossy().as_ref(),
                "--config",
                &fs,
                "--stats-file",
                "/dev/null",
            ],
        )
        .expect("spawn");
    let st = s.lab.procs().wait(&p, Duration::from_secs(15));
    s.check(st.is_some_and(|st| !st.success()), || {
        format!("xsecd with a bad config: {st:?}\n{}", p.stderr_text())
    });
    s.check(p.stderr_text().contains(&format!("{fs}:{line}:")), || {
        format!("no file:line message: {}", p.stderr_text())
    });
    s.check(!p.stdout_text().contains("xsecd: ready"), || {
        "xsecd said ready with a bad config".into()
    });
    for ifname in ["wan0", "lan0"] {
        s.check(s.lab.xdp_attached(Node::GwB, ifname) == Ok(false), || {
            format!("XDP attached to {ifname} after a config error")
        });
    }
}

#[test]
fn fuzzed_frames_leave_xsecd_alive_and_forwarding() {
    let opts = PairOptions {
        encap: Encap::NatT,
        seed: 11,
        ..PairOptions::default()
    };
    let mut s = scenario("fuzz", opts);
    s.start(&[Node::GwA, Node::GwB]);
    s.ping(Node::HostA, addr::HOST_B, 3);
    let mac = |n, i| {
        fuzz::parse_mac(&s.lab.mac(n, i).unwrap_or_else(|e| s.fail(&e.to_string())))
            .unwrap_or_else(|| s.fail("bad MAC"))
    };
    let target = fuzz::Target {
        src_mac: mac(Node::GwA, "wan0"),
        dst_mac: mac(Node::GwB, "wan0"),
        src: Ipv4Addr::new(10, 0, 0, 1),
        dst: Ipv4Addr::new(10, 0, 0, 2),
        src6: addr::GWA_WAN6.parse().expect("v6"),
        dst6: addr::GWB_WAN6.parse().expect("v6"),
        spis: s.pair.sas.iter().map(|sa| sa.spi).collect(),
    };
    let frames = fuzz::frames(0xf022, 4000, &target);
    let file = s
        .lab
        .write_file("fuzz.frames", fuzz::write_frames(&frames))
        .expect("write");
    let h = Harness::locate();
    let o = s
        .lab
        .exec(
            Node::GwA,
            &[
                h.python.to_string_lossy().as_ref(),
                "-c",
                fuzz::INJECTOR,
                "wan0",
                &file.to_string_lossy(),
                "10",
            ],
        )
        .unwrap_or_else(|e| s.fail(&e.to_string()));
    s.check(o.ok() && o.stdout.contains("inject: sent"), || {
        format!("the injector failed: {o}")
    });
    eprintln!("fuzz: {}", o.stdout.trim());
    s.assert_alive();
    let st = s.stats(Node::GwB);
    eprintln!("fuzz: gwB drops {:?}", st.nonzero_drops());
    s.check(!st.nonzero_drops().is_empty(), || {
        "the fuzzed frames were not seen (no drop counted)".into()
    });
    // still passing traffic both ways
    s.ping(Node::HostA, addr::HOST_B, 3);
    s.ping(Node::HostB, addr::HOST_A, 3);
    let n = s.udp(Node::HostA, Node::HostB, addr::HOST_B, 5000, 10);
    s.check(n == 10, || format!("UDP after fuzzing: {n}/10"));
    s.assert_alive();
    s.stop_all();
}

#[test]
fn two_queues_two_workers() {
    let opts = PairOptions {
        queues: vec![0, 1],
        seed: 12,
        ..PairOptions::default()
    };
    // Driver-mode XDP: veth spreads frames over its RX queues only with native XDP (NAPI per
    // queue); generic XDP sees every frame on queue 0.
    let mut s = scenario_with("two-queues", opts, 2, |p| {
        p.a.xdp_mode = "driver".to_owned();
        p.b.xdp_mode = "driver".to_owned();
    });
    s.start(&[Node::GwA, Node::GwB]);
    // 16 flows: the sender's veth spreads them over both queues by flow hash, so both workers
    // receive; SA pair 0 belongs to worker 0, so worker 1 must hand its packets over.
    let recv = s.udp_receiver(Node::HostB, 5000, 80, "flows");
    for sport in 40001..=40016u16 {
        let o = s.run_tool(
            Node::HostA,
            &[
                "udp-send",
                "--dst",
                addr::HOST_B,
                "--port",
                "5000",
                "--sport",
                &sport.to_string(),
                "--count",
                "5",
                "--interval-ms",
                "5",
            ],
        );
        s.check(o.ok(), || o.to_string());
    }
    let out = s.finish_recv(&recv, Duration::from_secs(5));
    let n = received_count(&out);
    s.check(n == 80, || {
        format!("16 flows over 2 queues: {n}/80 delivered")
    });
    s.ping(Node::HostB, addr::HOST_A, 3);
    let st = s.stats(Node::GwA);
    s.check(st.worker_count() == 2, || {
        format!("gwA reports {} workers, not 2", st.worker_count())
    });
    let workers = st.0["workers"].as_array().cloned().unwrap_or_default();
    let field = |w: &serde_json::Value, k: &str| w[k].as_u64().unwrap_or(0);
    s.check(workers.iter().all(|w| field(w, "rx_prot") > 0), || {
        format!("both of gwA's workers should receive from the LAN: {workers:?}")
    });
    let handed: u64 = workers.iter().map(|w| field(w, "handoff_tx")).sum();
    let taken: u64 = workers.iter().map(|w| field(w, "handoff_rx")).sum();
    let lost: u64 = workers.iter().map(|w| field(w, "handoff_drop")).sum();
    s.check(handed > 0 && handed == taken && lost == 0, || {
        format!("handoff to the SA's owner: {handed} handed, {taken} taken, {lost} dropped")
    });
    s.stop_all();
}

#[test]
fn path_mtu_outer_fragments_and_frag_needed() {
    let opts = PairOptions {
        seed: 14,
        ..PairOptions::default()
    };
    let mut s = scenario_with("mtu", opts, 1, |_| {});
    // The gateways' WAN links carry 1400 bytes.
    for gw in [Node::GwA, Node::GwB] {
        let o = s
            .lab
            .exec(gw, &["ip", "link", "set", "wan0", "mtu", "1400"])
            .unwrap_or_else(|e| s.fail(&e.to_string()));
        s.check(o.ok(), || o.to_string());
    }
    s.start(&[Node::GwA, Node::GwB]);
    s.ping(Node::HostA, addr::HOST_B, 2);
    // DF clear, 1428-byte inner packets: the ESP packets exceed 1400, each gateway fragments
    // the outer packet and the other reassembles it before decapsulation.
    let o = s
        .lab
        .exec(
            Node::HostA,
            &[
                "ping",
                "-n",
                "-c",
                "4",
                "-i",
                "0.2",
                "-W",
                "3",
                "-M",
                "dont",
                "-s",
                "1400",
                addr::HOST_B,
            ],
        )
        .unwrap_or_else(|e| s.fail(&e.to_string()));
    s.check(o.stdout.contains("4 received"), || {
        format!("big pings with DF clear should pass fragmented: {o}")
    });
    let (a, b) = (s.stats(Node::GwA), s.stats(Node::GwB));
    let re = |st: &xsec_lab::stats::Stats, k: &str| st.0["reassembly"][k].as_u64().unwrap_or(0);
    s.check(
        a.forward("fragmented") >= 4
            && b.forward("fragmented") >= 4
            && re(&a, "reassembled") >= 4
            && re(&b, "reassembled") >= 4,
        || {
            format!(
                "fragmented A {} B {}, reassembled A {} B {}",
                a.forward("fragmented"),
                b.forward("fragmented"),
                re(&a, "reassembled"),
                re(&b, "reassembled")
            )
        },
    );
    // DF set: gateway A answers "fragmentation needed" with the MTU left after ESP.
    let o = s
        .lab
        .exec(
            Node::HostA,
            &[
                "ping",
                "-n",
                "-c",
                "3",
                "-i",
                "0.3",
                "-W",
                "2",
                "-M",
                "do",
                "-s",
                "1400",
                addr::HOST_B,
            ],
        )
        .unwrap_or_else(|e| s.fail(&e.to_string()));
    let text = format!("{}{}", o.stdout, o.stderr);
    s.check(!o.ok() && text.to_lowercase().contains("mtu"), || {
        format!("big pings with DF set should draw fragmentation-needed: {o}")
    });
    let a = s.stats(Node::GwA);
    s.check(a.forward("icmp_sent") >= 1, || {
        format!("gwA icmp_sent = {}", a.forward("icmp_sent"))
    });
    // TTL 2: gateway A forwards with TTL 1, gateway B cannot; its "time exceeded" (from its
    // protected address) goes back to host A through the tunnel, not in clear.
    let cap = s.capture();
    let o = s
        .lab
        .exec(
            Node::HostA,
            &["ping", "-n", "-c", "1", "-W", "2", "-t", "2", addr::HOST_B],
        )
        .unwrap_or_else(|e| s.fail(&e.to_string()));
    s.check(
        o.stdout.contains("Time to live exceeded") && o.stdout.contains("10.2.0.1"),
        || format!("TTL 2 should draw time exceeded from gateway B: {o}"),
    );
    let pcap = s.stop_capture(&cap);
    let r = s.check_wire_for(&pcap, |_| false, |sa| sa.name == "ab");
    s.check(r.esp_from("10.0.0.2".parse().expect("v4")) >= 1, || {
        format!(
            "the ICMP error should cross the wire as ESP: {}",
            r.summary()
        )
    });
    s.stop_all();
}
