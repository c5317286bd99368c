//! xsec-ike against strongSwan: charon 5.9.8 (kernel-libipsec) from the IPsec peer harness
//! on one side, xsec-ike driving xsecd on the other, in the lab's namespaces.
//!
//! ```text
//! hA 10.1.0.10 -- gwA 10.0.0.1 ===== 10.0.0.2 gwB -- hB 10.2.0.10
//! ```
//!
//! Each test checks the whole chain: the IKE SA and its Child SA come up on both sides with
//! the same SPIs, xsecd carries ping both ways through the tunnel, the middle link carries
//! nothing in clear, every ESP packet on it decrypts with the keys **charon** derived (the
//! harness reads them from charon's log), and when xsec-ike stops it deletes the IKE SA at
//! the peer and leaves nothing in xsecd. strongSwan with kernel-libipsec always
//! UDP-encapsulates ESP (it fakes a NAT), so xsec-ike moves IKE to 4500 and installs
//! UDP-encapsulated SAs.
//!
//! They need root and the harness (`XSEC_HARNESS`, default `../shared/harness`) with charon
//! installed; they never skip.

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use xsec_interop_tests::Harness;
use xsec_lab::procs::Proc;
use xsec_lab::topo::{Lab, Node, TopoOptions, Wan, Xsecd, addr};
use xsec_lab::wire;

static SERIAL: Mutex<()> = Mutex::new(());
static BINS: OnceLock<Result<Bins, String>> = OnceLock::new();
static COUNTER: AtomicUsize = AtomicUsize::new(0);

const PSK: &str = "harness-psk-0123456789abcdef";
const ID_A: &str = "gw-a.harness.test";
const ID_B: &str = "gw-b.harness.test";

#[derive(Debug, Clone)]
struct Bins {
    xsecd: PathBuf,
    ike: PathBuf,
    xsecctl: PathBuf,
}

fn bins() -> Bins {
    BINS.get_or_init(|| {
        let m = xsec_lab::build::cargo_build(&["xsecd", "xsec-ike"]).map_err(|e| e.0)?;
        Ok(Bins {
            xsecd: m.get("xsecd").cloned().ok_or("no xsecd built")?,
            ike: m.get("xsec-ike").cloned().ok_or("no xsec-ike built")?,
            xsecctl: m.get("xsecctl").cloned().ok_or("no xsecctl built")?,
        })
    })
    .clone()
    .unwrap_or_else(|e| panic!("the IKE tests need the xsecd and xsec-ike executables: {e}"))
}

/// Which side runs what.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// xsec-ike (with xsecd) in gwA initiates to charon in gwB.
    XsecInitiates,
    /// charon in gwA initiates to xsec-ike (with xsecd) in gwB.
    SwanInitiates,
}

struct Ike {
    name: String,
    lab: Lab,
    harness: Harness,
    bins: Bins,
    role: Role,
    xsecd: Option<Xsecd>,
    ike: Option<Proc>,
    nat: bool,
    _serial: MutexGuard<'static, ()>,
}

impl Ike {
    fn new(name: &str, role: Role) -> Ike {
        Ike::with_wan(name, role, Wan::Direct)
    }

    fn with_wan(name: &str, role: Role, wan: Wan) -> Ike {
        let guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let bins = bins();
        let harness = Harness::locate();
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let prefix = format!("xsec-i{}-{n}", std::process::id());
        let workdir = std::env::temp_dir().join(format!("{prefix}-{name}"));
        let lab = Lab::up(TopoOptions::new(&prefix).wan(wan).workdir(&workdir))
            .unwrap_or_else(|e| panic!("{name}: cannot build the topology: {e}"));
        eprintln!(
            "{name}: namespaces {prefix}-*, work folder {}",
            workdir.display()
        );
        let t = Ike {
            name: name.to_owned(),
            lab,
            harness,
            bins,
            role,
            xsecd: None,
            ike: None,
            nat: wan == Wan::Nat,
            _serial: guard,
        };
        t.lab
            .warm_neighbours()
            .unwrap_or_else(|e| t.fail(&e.to_string()));
        t
    }

    /// The gateway xsec runs on, and charon's.
    fn xsec_node(&self) -> Node {
        match self.role {
            Role::XsecInitiates => Node::GwA,
            Role::SwanInitiates => Node::GwB,
        }
    }

    fn swan_inst(&self) -> &'static str {
        match self.role {
            Role::XsecInitiates => "gwB",
            Role::SwanInitiates => "gwA",
        }
    }

    fn fail(&self, msg: &str) -> ! {
        let mut s = format!(
            "{}: {msg}\n(work folder {})",
            self.name,
            self.lab.workdir().display()
        );
        if let Some(p) = &self.ike {
            s.push_str(&format!(
                "\n--- xsec-ike stdout ---\n{}\n--- xsec-ike stderr (tail) ---\n{}",
                p.stdout_text(),
                p.stderr_tail(30)
            ));
        }
        if let Some(x) = &self.xsecd {
            s.push_str(&format!(
                "\n--- xsecd stderr (tail) ---\n{}",
                x.proc.stderr_tail(15)
            ));
        }
        let log = self.swan_dir().join(self.swan_inst()).join("charon.log");
        if let Ok(l) = std::fs::read_to_string(&log) {
            let tail: Vec<&str> = l.lines().rev().take(40).collect();
            s.push_str("\n--- charon.log (tail) ---\n");
            for line in tail.into_iter().rev() {
                s.push_str(line);
                s.push('\n');
            }
        }
        panic!("{s}");
    }

    fn swan_dir(&self) -> PathBuf {
        self.lab.workdir().join("ipp").join("swan")
    }

    /// `swan.sh ARGS` on this lab's namespaces.
    fn swan(&self, args: &[&str]) -> String {
        let mut c = Command::new("bash");
        c.arg(self.harness.dir.join("swan.sh"))
            .args(args)
            .env(
                "IPP_PREFIX",
                self.lab.ns(Node::GwA).trim_end_matches("-gwA"),
            )
            .env("IPP_WORK", self.lab.workdir().join("ipp"));
        let o = c
            .output()
            .unwrap_or_else(|e| self.fail(&format!("cannot run swan.sh: {e}")));
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        if !o.status.success() {
            self.fail(&format!("swan.sh {args:?} failed:\n{text}"));
        }
        text
    }

    fn charon_log(&self) -> String {
        std::fs::read_to_string(self.swan_dir().join(self.swan_inst()).join("charon.log"))
            .unwrap_or_default()
    }

    fn start_xsecd(&mut self) {
        let node = self.xsec_node();
        let toml = "[gateway]\nunprotected = \"wan0\"\nprotected = \"lan0\"\nidle = \"adaptive\"\n";
        let x = self
            .lab
            .start_xsecd_with(node, &self.bins.xsecd, toml, Duration::from_secs(20), &[])
            .unwrap_or_else(|e| self.fail(&e.to_string()));
        self.xsecd = Some(x);
    }

    /// xsec-ike's configuration for this role: the harness's identities, PSK, subnets.
    fn ike_config(&self, ike: &str, esp: &str, psk: &str, start: bool) -> String {
        self.ike_config_with(ike, esp, psk, start, "", "")
    }

    /// [`Ike::ike_config`] with extra lines in the connection and the child.
    fn ike_config_with(
        &self,
        ike: &str,
        esp: &str,
        psk: &str,
        start: bool,
        conn_extra: &str,
        child_extra: &str,
    ) -> String {
        let (me, peer, my_id, peer_id, lnet, rnet) = match self.role {
            Role::XsecInitiates => (
                if self.nat {
                    addr::GWA_PRIVATE
                } else {
                    addr::GWA_WAN
                },
                addr::GWB_WAN,
                ID_A,
                ID_B,
                addr::NET_A,
                addr::NET_B,
            ),
            Role::SwanInitiates => (
                addr::GWB_WAN,
                addr::GWA_WAN,
                ID_B,
                ID_A,
                addr::NET_B,
                addr::NET_A,
            ),
        };
        format!(
            r#"[ike]
retransmit_timeout = "2s"
retransmit_tries = 3

[connections.gw-gw]
local_addrs = "{me}"
remote_addrs = "{peer}"
proposals = ["{ike}"]
{conn_extra}

[connections.gw-gw.local]
auth = "psk"
id = "{my_id}"

[connections.gw-gw.remote]
auth = "psk"
id = "{peer_id}"

[connections.gw-gw.children.net-net]
local_ts = "{lnet}"
remote_ts = "{rnet}"
esp_proposals = ["{esp}"]
start_action = "{}"
{child_extra}

[secrets.gw]
id = ["{my_id}", "{peer_id}"]
secret = "{psk}"
"#,
            if start { "start" } else { "none" }
        )
    }

    fn start_ike(&mut self, config: &str) {
        let node = self.xsec_node();
        let path = self
            .lab
            .write_file("xsec-ike.toml", config)
            .unwrap_or_else(|e| self.fail(&e.to_string()));
        let control = self.xsecd.as_ref().map(|x| x.control.clone());
        let mut args = vec![
            self.bins.ike.to_string_lossy().into_owned(),
            "--config".into(),
            path.to_string_lossy().into_owned(),
            "--log-level".into(),
            "debug".into(),
            "--socket".into(),
            self.ike_socket().to_string_lossy().into_owned(),
        ];
        match control {
            Some(c) => {
                args.push("--control".into());
                args.push(c.to_string_lossy().into_owned());
            }
            None => args.push("--no-xsecd".into()),
        }
        let p = self
            .lab
            .spawn(node, "xsec-ike", &args)
            .unwrap_or_else(|e| self.fail(&e.to_string()));
        self.ike = Some(p);
        self.wait_stdout("xsec-ike: ready", Duration::from_secs(15));
    }

    fn ike_socket(&self) -> PathBuf {
        self.lab.workdir().join("xsec-ike.sock")
    }

    /// `xsecctl ike ARGS` against this test's xsec-ike; its stdout (fails on an error).
    fn xsecctl_ike(&self, args: &[&str]) -> String {
        let mut c = Command::new(&self.bins.xsecctl);
        c.arg("ike")
            .arg("--ike-socket")
            .arg(self.ike_socket())
            .args(args);
        let o = c
            .output()
            .unwrap_or_else(|e| self.fail(&format!("xsecctl: {e}")));
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        if !o.status.success() {
            self.fail(&format!(
                "xsecctl ike {args:?} failed: {}{out}",
                String::from_utf8_lossy(&o.stderr)
            ));
        }
        out
    }

    fn ike_stdout(&self) -> String {
        self.ike
            .as_ref()
            .map(|p| p.stdout_text())
            .unwrap_or_default()
    }

    /// Wait for a line of xsec-ike's stdout containing `what`; the line.
    fn wait_stdout(&self, what: &str, limit: Duration) -> String {
        let end = Instant::now() + limit;
        loop {
            if let Some(l) = self.ike_stdout().lines().find(|l| l.contains(what)) {
                return l.to_owned();
            }
            if let Some(p) = &self.ike
                && let Some(st) = self.lab.procs().try_status(p)
            {
                self.fail(&format!("xsec-ike exited ({st}) before printing {what:?}"));
            }
            if Instant::now() >= end {
                self.fail(&format!("xsec-ike printed no {what:?} within {limit:?}"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn stop_ike(&mut self) {
        if let Some(p) = self.ike.take() {
            let st = self.lab.procs().stop(&p, Duration::from_secs(5));
            eprintln!(
                "{}: xsec-ike stopped ({st:?})\n{}",
                self.name,
                p.stdout_text()
            );
            self.ike = Some(p);
        }
    }

    fn dump(&self) -> serde_json::Value {
        self.xsecd_call("dump")
    }

    /// xsecd's `show-counters`, all workers: `["total"]["drops"]` by reason.
    fn counters(&self) -> serde_json::Value {
        self.xsecd_call("show-counters")
    }

    fn xsecd_call(&self, command: &str) -> serde_json::Value {
        let x = self.xsecd.as_ref().unwrap_or_else(|| self.fail("no xsecd"));
        let mut c = xsecd::control::client::Client::connect(&x.control)
            .unwrap_or_else(|e| self.fail(&e.to_string()));
        c.call(command, serde_json::json!({}))
            .unwrap_or_else(|e| self.fail(&e.to_string()))
    }

    /// The SPIs of a `CHILD_SA ... established with SPIs X_i Y_o` line.
    fn spis(line: &str) -> (u32, u32) {
        let words: Vec<&str> = line.split_whitespace().collect();
        let find = |suffix: &str| {
            words
                .iter()
                .find_map(|w| w.trim_end_matches(',').strip_suffix(suffix))
                .and_then(|h| u32::from_str_radix(h, 16).ok())
                .unwrap_or_else(|| panic!("no SPI{suffix} in {line:?}"))
        };
        (find("_i"), find("_o"))
    }

    /// Stop the capture; its file and what it carried, failed if any inner-subnet packet
    /// crossed in clear.
    fn wire_report(&self, cap: &xsec_lab::topo::Capture) -> (PathBuf, wire::WireReport) {
        let pcap = self
            .lab
            .stop_capture(cap)
            .unwrap_or_else(|e| self.fail(&e.to_string()));
        let frames = wire::read_pcap(&pcap).unwrap_or_else(|e| self.fail(&e.to_string()));
        let r = wire::analyze(&frames, &[4500], &[addr::NET_A, addr::NET_B]);
        eprintln!("{}: wire: {}", self.name, r.summary());
        if !r.leaks.is_empty() {
            self.fail(&format!(
                "inner traffic in clear on the wire: {}",
                r.describe_clear(5)
            ));
        }
        (pcap, r)
    }

    fn ping(&self, from: Node, to: &str, n: u32) {
        let p = self
            .lab
            .ping(from, to, n, 0.2, 10)
            .unwrap_or_else(|e| self.fail(&e.to_string()));
        if p.received != n {
            self.fail(&format!(
                "ping {to}: {} of {n} answered\n{}",
                p.received, p.output
            ));
        }
    }
}

/// Establish, carry traffic both ways, check the wire against charon's keys, stop.
fn xsec_initiates_with(name: &str, ike: &str, esp: &str) {
    let mut t = Ike::new(name, Role::XsecInitiates);
    t.swan(&[
        "up",
        "--only",
        "gwB",
        "--no-initiate",
        "--ike",
        ike,
        "--esp",
        esp,
    ]);
    t.start_xsecd();
    let cap = t
        .lab
        .capture_wire("wire")
        .unwrap_or_else(|e| t.fail(&e.to_string()));
    let cfg = t.ike_config(ike, esp, PSK, true);
    t.start_ike(&cfg);
    let ike_line = t.wait_stdout("IKE_SA gw-gw", Duration::from_secs(15));
    if !ike_line.contains("established") {
        t.fail(&format!("the IKE SA did not come up: {ike_line}"));
    }
    let child = t.wait_stdout("CHILD_SA gw-gw.net-net", Duration::from_secs(10));
    if !child.contains("established") {
        t.fail(&format!("the Child SA did not come up: {child}"));
    }
    let (spi_in, spi_out) = Ike::spis(&child);
    t.ping(Node::HostA, addr::HOST_B, 5);
    t.ping(Node::HostB, addr::HOST_A, 5);
    // charon's view: the same SPIs, crossed
    let log = t.charon_log();
    let want = format!("established with SPIs {spi_out:08x}_i {spi_in:08x}_o");
    if !log.contains(&want) {
        t.fail(&format!("charon's log has no CHILD_SA {want:?}"));
    }
    t.swan(&["keys"]);
    t.stop_ike();
    let (pcap, r) = t.wire_report(&cap);
    for spi in [spi_in, spi_out] {
        if r.esp_by_spi.get(&spi).copied().unwrap_or(0) < 10 {
            t.fail(&format!(
                "fewer than 10 ESP packets with SPI {spi:08x}: {}",
                r.summary()
            ));
        }
    }
    if r.ike.len() < 4 {
        t.fail(&format!(
            "fewer than 4 IKE messages on the wire: {}",
            r.summary()
        ));
    }
    // every ESP packet decrypts with the keys charon derived, checked by two
    // implementations that are not xsec: esp_check.py (Python `cryptography`, every
    // algorithm) and esp_tool.py (scapy; no ChaCha20-Poly1305)
    let sas_path = t.swan_dir().join("sas.json");
    let sas: serde_json::Value = std::fs::read_to_string(&sas_path)
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or_else(|| t.fail("swan.sh keys wrote no sas.json"));
    let check_sas: Vec<serde_json::Value> = sas
        .as_array()
        .into_iter()
        .flatten()
        .map(|sa| {
            let enc = match (sa["encr_alg"].as_str(), sa["encr_bits"].as_u64()) {
                (Some("AES_GCM_16"), Some(160)) => "aes-gcm-128",
                (Some("AES_GCM_16"), Some(288)) => "aes-gcm-256",
                (Some("AES_CBC"), Some(128)) => "aes-cbc-128",
                (Some("AES_CBC"), Some(256)) => "aes-cbc-256",
                (Some("CHACHA20_POLY1305"), _) => "chacha20-poly1305",
                other => t.fail(&format!(
                    "charon's SA uses {other:?}, which this test does not map"
                )),
            };
            let auth = match sa["integ_alg"].as_str() {
                Some("HMAC_SHA2_256_128") => "hmac-sha256-128",
                Some("HMAC_SHA2_384_192") => "hmac-sha384-192",
                Some("HMAC_SHA2_512_256") => "hmac-sha512-256",
                Some("HMAC_SHA1_96") => "hmac-sha1-96",
                _ => "none",
            };
            serde_json::json!({"spi": sa["spi"], "enc": enc, "enc_key": sa["encr_key"],
                "auth": auth, "auth_key": sa["integ_key"], "mode": "tunnel", "esn": false})
        })
        .collect();
    let check_path = t
        .lab
        .write_file(
            "esp_check_sas.json",
            serde_json::Value::from(check_sas).to_string(),
        )
        .unwrap_or_else(|e| t.fail(&e.to_string()));
    let run = t.harness.python_script(
        &xsec_interop_tests::crate_file("esp_check.py"),
        &[
            "--pcap".as_ref(),
            pcap.as_os_str(),
            "--sas".as_ref(),
            check_path.as_os_str(),
        ],
    );
    let total = r.esp_total();
    if !run.ok() || !run.stdout.contains(&format!("{total} passed, 0 failed")) {
        t.fail(&format!(
            "esp_check.py did not pass all {total} ESP packets with charon's keys:\n{run}"
        ));
    }
    eprintln!(
        "{name}: esp_check: {}",
        run.stdout.lines().last().unwrap_or("")
    );
    if !sas
        .as_array()
        .into_iter()
        .flatten()
        .any(|sa| sa.get("warning").is_some())
    {
        let run = t.harness.esp_tool(&[
            "decrypt".as_ref(),
            "--sa-json".as_ref(),
            sas_path.as_os_str(),
            "--pcap".as_ref(),
            pcap.as_os_str(),
        ]);
        if !run.ok() {
            t.fail(&format!(
                "esp_tool.py could not decrypt the capture with charon's keys:\n{run}"
            ));
        }
        eprintln!(
            "{name}: esp_tool: {}",
            run.stdout.lines().last().unwrap_or("")
        );
    }
    // the peer heard the DELETE, xsecd holds nothing of xsec-ike's
    let end = Instant::now() + Duration::from_secs(5);
    while !t.charon_log().contains("received DELETE for IKE_SA") {
        if Instant::now() > end {
            t.fail("charon never received the DELETE of the IKE SA");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let d = t.dump();
    if !d["sas"].as_array().is_some_and(|a| a.is_empty())
        || !d["policies"].as_array().is_some_and(|a| a.is_empty())
    {
        t.fail(&format!(
            "xsecd still holds objects after xsec-ike stopped: {d}"
        ));
    }
    t.swan(&["down"]);
}

#[test]
fn xsec_ike_initiates_aes_gcm_x25519() {
    xsec_initiates_with(
        "init-gcm-x25519",
        "aes128gcm16-prfsha256-x25519",
        "aes128gcm16",
    );
}

#[test]
fn xsec_ike_initiates_aes_cbc_sha256_modp2048() {
    xsec_initiates_with(
        "init-cbc-modp2048",
        "aes256-sha256-modp2048",
        "aes256-sha256",
    );
}

#[test]
fn xsec_ike_initiates_chacha20_ecp256() {
    xsec_initiates_with(
        "init-chacha-ecp256",
        "chacha20poly1305-prfsha256-ecp256",
        "chacha20poly1305",
    );
}

/// charon initiates; xsec-ike answers, narrows nothing, installs, and traffic flows.
#[test]
fn strongswan_initiates_to_xsec_ike() {
    let mut t = Ike::new("resp-gcm", Role::SwanInitiates);
    t.start_xsecd();
    let cfg = t.ike_config("aes128gcm16-prfsha256-x25519", "aes128gcm16", PSK, false);
    t.start_ike(&cfg);
    t.swan(&["up", "--only", "gwA"]);
    let child = t.wait_stdout("CHILD_SA gw-gw.net-net", Duration::from_secs(15));
    if !child.contains("established") {
        t.fail(&format!("the Child SA did not come up: {child}"));
    }
    let (spi_in, spi_out) = Ike::spis(&child);
    let log = t.charon_log();
    if !log.contains(&format!(
        "established with SPIs {spi_out:08x}_i {spi_in:08x}_o"
    )) {
        t.fail("charon's Child SA SPIs are not ours crossed");
    }
    t.ping(Node::HostB, addr::HOST_A, 5);
    t.ping(Node::HostA, addr::HOST_B, 5);
    // charon deletes: xsec-ike removes the SAs and policies from xsecd
    t.swan(&["swanctl", "gwA", "--terminate", "--ike", "gw-gw"]);
    t.wait_stdout("down: deleted by the peer", Duration::from_secs(10));
    let d = t.dump();
    if !d["sas"].as_array().is_some_and(|a| a.is_empty()) {
        t.fail(&format!(
            "xsecd still holds SAs after the peer's DELETE: {d}"
        ));
    }
    t.stop_ike();
    t.swan(&["down"]);
}

/// A wrong pre-shared key: AUTHENTICATION_FAILED both ways, nothing installed.
#[test]
fn wrong_psk_fails_authentication_and_installs_nothing() {
    let mut t = Ike::new("wrong-psk", Role::XsecInitiates);
    t.swan(&["up", "--only", "gwB", "--no-initiate"]);
    t.start_xsecd();
    let cfg = t.ike_config(
        "aes128gcm16-prfsha256-x25519",
        "aes128gcm16",
        "not-the-harness-psk",
        true,
    );
    t.start_ike(&cfg);
    let line = t.wait_stdout("IKE_SA gw-gw", Duration::from_secs(15));
    if !line.contains("AUTHENTICATION_FAILED") {
        t.fail(&format!("expected AUTHENTICATION_FAILED, got {line:?}"));
    }
    if t.ike_stdout().contains("CHILD_SA") {
        t.fail("a Child SA despite the failed authentication");
    }
    let d = t.dump();
    if !d["sas"].as_array().is_some_and(|a| a.is_empty()) {
        t.fail(&format!("xsecd holds SAs: {d}"));
    }
    t.stop_ike();
    t.swan(&["down"]);
}

/// `N packets transmitted, M received` of a ping's output.
fn ping_counts(out: &str) -> Option<(u32, u32)> {
    let line = out.lines().find(|l| l.contains("packets transmitted"))?;
    let mut nums = line
        .split(|c: char| !c.is_ascii_digit())
        .filter(|w| !w.is_empty());
    let tx = nums.next()?.parse().ok()?;
    let rx = nums.next()?.parse().ok()?;
    Some((tx, rx))
}

/// Rekeys during traffic, every kind: xsec-ike rekeys the Child SA (PFS x25519) every 4 s
/// and the IKE SA after 7 s; charon rekeys the Child SA and then the IKE SA from its side.
/// A ping every 10 ms through the tunnel loses nothing, the two sides agree on the final
/// SPIs, and xsecd ends with one SA pair.
#[test]
fn rekeys_from_both_sides_during_traffic_lose_nothing() {
    let mut t = Ike::new("rekeys", Role::XsecInitiates);
    t.swan(&[
        "up",
        "--only",
        "gwB",
        "--no-initiate",
        "--ike",
        "aes128gcm16-prfsha256-x25519",
        "--esp",
        "aes128gcm16-x25519",
    ]);
    t.start_xsecd();
    let cfg = t.ike_config_with(
        "aes128gcm16-prfsha256-x25519",
        "aes128gcm16-x25519",
        PSK,
        true,
        "rekey_time = \"7s\"",
        "rekey_time = \"4s\"",
    );
    t.start_ike(&cfg);
    t.wait_stdout("CHILD_SA gw-gw.net-net", Duration::from_secs(15));
    t.ping(Node::HostA, addr::HOST_B, 2);
    let ping = t
        .lab
        .spawn(
            Node::HostA,
            "ping-flow",
            &[
                "ping",
                "-n",
                "-i",
                "0.01",
                "-c",
                "1400",
                "-W",
                "1",
                addr::HOST_B,
            ],
        )
        .unwrap_or_else(|e| t.fail(&e.to_string()));
    std::thread::sleep(Duration::from_millis(2500));
    t.swan(&["swanctl", "gwB", "--rekey", "--child", "net-net"]);
    std::thread::sleep(Duration::from_millis(3000));
    t.swan(&["swanctl", "gwB", "--rekey", "--ike", "gw-gw"]);
    let end = Instant::now() + Duration::from_secs(30);
    while t.lab.procs().try_status(&ping).is_none() {
        if Instant::now() > end {
            t.fail("the ping did not finish");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = ping.stdout_text();
    let Some((tx, rx)) = ping_counts(&out) else {
        t.fail(&format!("no ping summary:\n{out}"));
    };
    let stdout = t.ike_stdout();
    let ups = stdout.matches("CHILD_SA gw-gw.net-net{").count();
    let ike_rekeys = stdout.matches("rekeyed to").count();
    eprintln!(
        "rekeys: {tx} sent, {rx} received; {ups} Child SAs, {ike_rekeys} IKE rekeys\n{stdout}"
    );
    if rx != tx || tx != 1400 {
        let seqs: Vec<u32> = out
            .lines()
            .filter_map(|l| l.split("icmp_seq=").nth(1)?.split(' ').next()?.parse().ok())
            .collect();
        let missing: Vec<u32> = (1..=tx).filter(|s| !seqs.contains(s)).collect();
        t.fail(&format!(
            "ping lost packets across the rekeys: {rx} of {tx}, icmp_seq {missing:?} missing\n\
             --- xsecd drops ---\n{}\n--- charon's SAs ---\n{}",
            t.counters()["total"]["drops"],
            t.swan(&["swanctl", "gwB", "--list-sas"])
        ));
    }
    // the precise form of a lost packet: ESP for an SA xsecd did not hold (yet, or any
    // more); a Child SA must be in xsecd before the message that lets charon use it leaves
    let drops = t.counters()["total"]["drops"].clone();
    if drops["no_sa"].as_u64() != Some(0) {
        t.fail(&format!(
            "inbound ESP for an SA xsecd did not hold: {drops}"
        ));
    }
    if ups < 4 || ike_rekeys < 2 {
        t.fail(&format!(
            "expected at least 4 Child SAs and 2 IKE rekeys, saw {ups} and {ike_rekeys}"
        ));
    }
    // both sides on the same, last Child SA
    let last = stdout
        .lines()
        .rfind(|l| l.contains("established with SPIs"))
        .unwrap_or_else(|| t.fail("no Child SA line"))
        .to_owned();
    let (spi_in, spi_out) = Ike::spis(&last);
    let sas = t.swan(&["swanctl", "gwB", "--list-sas"]);
    if !sas.contains(&format!("{spi_out:08x}")) || !sas.contains(&format!("{spi_in:08x}")) {
        t.fail(&format!(
            "charon does not hold {spi_in:08x}/{spi_out:08x}:\n{sas}"
        ));
    }
    // xsecd holds exactly what xsec-ike still counts: one outbound SA (the newest) and
    // the inbound SAs not yet reported down (the newest, and old ones within their grace
    // period); rekeys go on meanwhile, so compare around one dump
    let live = |stdout: &str| -> (std::collections::BTreeSet<u32>, Option<u32>) {
        let mut ins = std::collections::BTreeSet::new();
        let mut out = None;
        for l in stdout.lines() {
            if l.contains("established with SPIs") {
                let (i, o) = Ike::spis(l);
                ins.insert(i);
                out = Some(o);
            } else if l.contains("CHILD_SA gw-gw.net-net ") && l.contains(" down: ") {
                let (i, _) = Ike::spis(l);
                ins.remove(&i);
            }
        }
        (ins, out)
    };
    let mut agreed = false;
    for _ in 0..20 {
        let before = live(&t.ike_stdout());
        let d = t.dump();
        let after = live(&t.ike_stdout());
        let mut ins = std::collections::BTreeSet::new();
        let mut outs = vec![];
        for sa in d["sas"].as_array().into_iter().flatten() {
            let spi = sa["spi"].as_u64().unwrap_or(0) as u32;
            if sa["direction"] == "in" {
                ins.insert(spi);
            } else {
                outs.push(spi);
            }
        }
        let found = (ins, outs.first().copied().filter(|_| outs.len() == 1));
        if found == before && before == after {
            agreed = true;
            eprintln!(
                "rekeys: xsecd holds inbound {:x?}, outbound {:x?}",
                found.0, found.1
            );
            break;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    if !agreed {
        t.fail(&format!(
            "xsecd's SAs never matched xsec-ike's live Child SAs: {}",
            t.dump()
        ));
    }
    t.stop_ike();
    t.swan(&["down"]);
}

/// The operator's view: `xsecctl ike` starts, shows, rekeys, reloads and stops connections
/// of a running xsec-ike, and never prints the pre-shared key.
#[test]
fn xsecctl_ike_operates_xsec_ike() {
    let mut t = Ike::new("xsecctl-ike", Role::XsecInitiates);
    t.swan(&["up", "--only", "gwB", "--no-initiate"]);
    t.start_xsecd();
    let cfg = t.ike_config("aes128gcm16-prfsha256-x25519", "aes128gcm16", PSK, false);
    t.start_ike(&cfg);
    let conns = t.xsecctl_ike(&["list-conns"]);
    if !conns.contains("psk (28 bytes)") || conns.contains(PSK) {
        t.fail(&format!(
            "list-conns must show the key's length, never the key:\n{conns}"
        ));
    }
    if !t.xsecctl_ike(&["list-sas"]).contains("no IKE SAs") {
        t.fail("an IKE SA before initiate");
    }
    t.xsecctl_ike(&["initiate", "gw-gw"]);
    let child = t.wait_stdout("CHILD_SA gw-gw.net-net", Duration::from_secs(15));
    let (spi_in, spi_out) = Ike::spis(&child);
    let sas = t.xsecctl_ike(&["list-sas"]);
    eprintln!("{sas}");
    for want in [
        "gw-gw: ESTABLISHED, IKEv2".to_string(),
        format!("SPIs: {spi_in:08x}_i {spi_out:08x}_o"),
        "remote 'gw-b.harness.test' @ 10.0.0.2:4500".into(),
        "10.1.0.0/24 === 10.2.0.0/24".into(),
        "aes128gcm16 (keys: encryption 160 bits".into(),
    ] {
        if !sas.contains(&want) {
            t.fail(&format!("list-sas lacks {want:?}:\n{sas}"));
        }
    }
    let j: serde_json::Value = serde_json::from_str(&{
        let mut c = Command::new(&t.bins.xsecctl);
        c.args(["--json", "ike", "--ike-socket"])
            .arg(t.ike_socket())
            .arg("list-sas");
        String::from_utf8_lossy(&c.output().expect("xsecctl").stdout).into_owned()
    })
    .unwrap_or_else(|e| t.fail(&format!("list-sas --json: {e}")));
    if j["sas"][0]["children"][0]["spi_in"] != format!("{spi_in:08x}") {
        t.fail(&format!("list-sas --json: {j}"));
    }
    // xsec-ike's events reach xsecd's subscribers (`xsecctl events`), and only a client's
    // own event types may be published
    let xc = t
        .xsecd
        .as_ref()
        .map(|x| x.control.clone())
        .unwrap_or_else(|| t.fail("no xsecd"));
    let mut sub =
        xsecd::control::client::Client::connect(&xc).unwrap_or_else(|e| t.fail(&e.to_string()));
    let sub_id = sub
        .send("subscribe", serde_json::json!({}))
        .unwrap_or_else(|e| t.fail(&e.to_string()));
    {
        let mut c =
            xsecd::control::client::Client::connect(&xc).unwrap_or_else(|e| t.fail(&e.to_string()));
        let r = c.call(
            "publish-event",
            serde_json::json!({"event": {"type": "acquire"}}),
        );
        if r.is_ok() {
            t.fail("a client published one of the engine's event types");
        }
    }
    t.xsecctl_ike(&["rekey", "gw-gw"]);
    let end = Instant::now() + Duration::from_secs(10);
    let mut seen = vec![];
    loop {
        if Instant::now() > end {
            t.fail(&format!(
                "no ike-child-up event for the rekey among {seen:?}"
            ));
        }
        let Ok(v) = sub.recv(Duration::from_millis(500)) else {
            continue;
        };
        if v["id"] != serde_json::json!(sub_id) {
            continue;
        }
        let ev = v["stream"]["event"].clone();
        if ev.to_string().contains("key\"") || ev.to_string().contains("enc_key") {
            t.fail(&format!("an event with a key in it: {ev}"));
        }
        if ev["type"] == "ike-child-up" && ev["client"] == "xsec-ike" && !ev["rekey_of"].is_null() {
            break;
        }
        seen.push(ev["type"].clone());
    }
    let end = Instant::now() + Duration::from_secs(10);
    while t.ike_stdout().matches("established with SPIs").count() < 2 {
        if Instant::now() > end {
            t.fail("`xsecctl ike rekey` made no new Child SA");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    t.xsecctl_ike(&["rekey", "gw-gw", "--ike"]);
    t.wait_stdout("rekeyed to", Duration::from_secs(10));
    t.ping(Node::HostA, addr::HOST_B, 3);
    let stats = t.xsecctl_ike(&["stats"]);
    if !stats.contains("ike_sas") {
        t.fail(&format!("stats: {stats}"));
    }
    // a reload with a broken file changes nothing and says where
    let path = t.lab.workdir().join("xsec-ike.toml");
    std::fs::write(
        &path,
        cfg.replace("retransmit_tries = 3", "retransmit_tries = \"many\""),
    )
    .unwrap_or_else(|e| t.fail(&e.to_string()));
    let o = Command::new(&t.bins.xsecctl)
        .args(["ike", "--ike-socket"])
        .arg(t.ike_socket())
        .arg("reload")
        .output()
        .expect("xsecctl");
    let err = String::from_utf8_lossy(&o.stderr);
    if o.status.success() || !err.contains("xsec-ike.toml:3: ike.retransmit_tries") {
        t.fail(&format!("a bad reload: {err}"));
    }
    std::fs::write(&path, &cfg).unwrap_or_else(|e| t.fail(&e.to_string()));
    let r = t.xsecctl_ike(&["reload"]);
    if !r.contains("reloaded: 1 connections") {
        t.fail(&format!("reload: {r}"));
    }
    t.ping(Node::HostA, addr::HOST_B, 3);
    t.xsecctl_ike(&["terminate", "gw-gw"]);
    t.wait_stdout("down: deleted", Duration::from_secs(10));
    let d = t.dump();
    if !d["sas"].as_array().is_some_and(|a| a.is_empty()) {
        t.fail(&format!("xsecd holds SAs after terminate: {d}"));
    }
    t.stop_ike();
    t.swan(&["down"]);
}

/// The JSON of `xsecctl ike list-sas`.
fn list_sas_json(t: &Ike) -> serde_json::Value {
    ike_json(t, "list-sas")
}

/// `xsecctl --json ike COMMAND` against this test's xsec-ike.
fn ike_json(t: &Ike, command: &str) -> serde_json::Value {
    let o = Command::new(&t.bins.xsecctl)
        .args(["--json", "ike", "--ike-socket"])
        .arg(t.ike_socket())
        .arg(command)
        .output()
        .unwrap_or_else(|e| t.fail(&format!("xsecctl: {e}")));
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| t.fail(&format!("{command} --json: {e}")))
}

/// xsec-ike behind a masquerading NAT (gwA 172.16.0.2 -> 10.0.0.1): NAT detected on our
/// side, IKE moves to 4500, UDP-encapsulated ESP carries traffic both ways.
#[test]
fn through_a_nat() {
    let mut t = Ike::with_wan("nat", Role::XsecInitiates, Wan::Nat);
    t.swan(&["up", "--only", "gwB", "--no-initiate", "--topo", "nat"]);
    t.start_xsecd();
    let cfg = t.ike_config("aes128gcm16-prfsha256-x25519", "aes128gcm16", PSK, true);
    t.start_ike(&cfg);
    let child = t.wait_stdout("CHILD_SA gw-gw.net-net", Duration::from_secs(15));
    if !child.contains("established") || !child.contains("UDP-encapsulated") {
        t.fail(&child);
    }
    t.ping(Node::HostA, addr::HOST_B, 5);
    t.ping(Node::HostB, addr::HOST_A, 5);
    let j = list_sas_json(&t);
    if j["sas"][0]["nat_local"] != serde_json::json!(true) {
        t.fail(&format!("the NAT in front of us was not detected: {j}"));
    }
    if !t.charon_log().contains("remote host is behind NAT") {
        t.fail("charon did not see us behind the NAT");
    }
    t.stop_ike();
    t.swan(&["down"]);
}

/// DPD: charon dies (SIGKILL, no DELETE); xsec-ike's liveness checks go unanswered, the IKE
/// SA and its Child SA are removed, and hA's traffic to hB is then dropped by xsecd —
/// never sent in clear.
#[test]
fn dpd_clears_a_dead_peer_fail_closed() {
    let mut t = Ike::new("dpd", Role::XsecInitiates);
    t.swan(&["up", "--only", "gwB", "--no-initiate"]);
    t.start_xsecd();
    let cfg = t
        .ike_config_with(
            "aes128gcm16-prfsha256-x25519",
            "aes128gcm16",
            PSK,
            true,
            "dpd_delay = \"2s\"\ndpd_action = \"clear\"",
            "",
        )
        .replace(
            "retransmit_timeout = \"2s\"\nretransmit_tries = 3",
            "retransmit_timeout = \"1s\"\nretransmit_tries = 2",
        );
    t.start_ike(&cfg);
    t.wait_stdout("CHILD_SA gw-gw.net-net", Duration::from_secs(15));
    t.ping(Node::HostA, addr::HOST_B, 3);
    let pid =
        std::fs::read_to_string(t.swan_dir().join("gwB").join("charon.pid")).unwrap_or_default();
    let st = Command::new("kill").args(["-KILL", pid.trim()]).status();
    if !st.is_ok_and(|s| s.success()) {
        t.fail(&format!("cannot kill charon (pid {pid:?})"));
    }
    let cap = t
        .lab
        .capture_wire("after-dpd")
        .unwrap_or_else(|e| t.fail(&e.to_string()));
    t.wait_stdout("down: dead peer detected", Duration::from_secs(20));
    let d = t.dump();
    if !d["sas"].as_array().is_some_and(|a| a.is_empty())
        || !d["policies"].as_array().is_some_and(|a| a.is_empty())
    {
        t.fail(&format!("xsecd holds objects of a dead peer: {d}"));
    }
    let p = t
        .lab
        .ping(Node::HostA, addr::HOST_B, 3, 0.2, 3)
        .unwrap_or_else(|e| t.fail(&e.to_string()));
    if p.received != 0 {
        t.fail("traffic still reaches hB after the SAs were cleared");
    }
    t.wire_report(&cap);
    t.stop_ike();
}

/// kill -9 xsec-ike during traffic: xsecd keeps forwarding with the SAs it has; a new
/// xsec-ike removes what the old one left, negotiates again (INITIAL_CONTACT makes charon
/// drop the old SAs), and traffic flows on the new SAs. Nothing leaves in clear.
#[test]
fn kill_9_xsec_ike_then_restart() {
    let mut t = Ike::new("kill9", Role::XsecInitiates);
    t.swan(&["up", "--only", "gwB", "--no-initiate"]);
    t.start_xsecd();
    let cap = t
        .lab
        .capture_wire("wire")
        .unwrap_or_else(|e| t.fail(&e.to_string()));
    let cfg = t.ike_config("aes128gcm16-prfsha256-x25519", "aes128gcm16", PSK, true);
    t.start_ike(&cfg);
    let first = t.wait_stdout("CHILD_SA gw-gw.net-net", Duration::from_secs(15));
    let (old_in, _) = Ike::spis(&first);
    t.ping(Node::HostA, addr::HOST_B, 3);
    if let Some(p) = t.ike.take() {
        let _ = Command::new("kill")
            .args(["-KILL", &p.pid.to_string()])
            .status();
        let _ = t.lab.procs().stop(&p, Duration::from_secs(2));
    }
    // the dataplane carries on alone
    t.ping(Node::HostA, addr::HOST_B, 5);
    t.ping(Node::HostB, addr::HOST_A, 3);
    t.start_ike(&cfg);
    t.wait_stdout("left by a previous xsec-ike", Duration::from_secs(5));
    let again = t.wait_stdout("CHILD_SA gw-gw.net-net", Duration::from_secs(15));
    let (new_in, new_out) = Ike::spis(&again);
    if new_in == old_in {
        t.fail("the old Child SA was adopted, not renegotiated");
    }
    t.ping(Node::HostA, addr::HOST_B, 5);
    let d = t.dump();
    let spis: Vec<u64> = d["sas"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["spi"].as_u64())
        .collect();
    if spis.len() != 2 || !spis.contains(&u64::from(new_in)) || !spis.contains(&u64::from(new_out))
    {
        t.fail(&format!("xsecd should hold exactly the new pair: {d}"));
    }
    let sas = t.swan(&["swanctl", "gwB", "--list-sas"]);
    if sas.matches("INSTALLED").count() != 1 {
        t.fail(&format!(
            "charon should hold one Child SA (INITIAL_CONTACT):\n{sas}"
        ));
    }
    t.stop_ike();
    t.wire_report(&cap);
    t.swan(&["down"]);
}

/// The rounds strongSwan users meet, with charon initiating: its x25519 KE gets
/// INVALID_KE_PAYLOAD (xsec-ike takes MODP-2048 only) and it retries; xsec-ike, over its
/// COOKIE threshold, asks for a COOKIE first; xsec-ike's IKE_AUTH answer is lost on the way
/// and sent again from its cache when charon retransmits.
#[test]
fn cookie_invalid_ke_and_retransmission_with_charon() {
    let mut t = Ike::new("rounds", Role::SwanInitiates);
    t.start_xsecd();
    let cfg = t
        .ike_config("aes128gcm16-prfsha256-modp2048", "aes128gcm16", PSK, false)
        .replace("[ike]\n", "[ike]\ncookie_threshold = 0\n");
    t.start_ike(&cfg);
    // drop xsec-ike's first IKE answer on port 4500 (the IKE_AUTH response)
    let gw = t.xsec_node();
    let rules = "table inet xike_drop {\n  chain out {\n    type filter hook output priority 0; policy accept;\n    udp sport 4500 counter drop\n  }\n}\n";
    let f = t
        .lab
        .write_file("drop.nft", rules)
        .unwrap_or_else(|e| t.fail(&e.to_string()));
    let f = f.to_string_lossy().into_owned();
    t.lab
        .exec(gw, &["nft", "-f", &f])
        .unwrap_or_else(|e| t.fail(&e.to_string()));
    t.swan(&[
        "up",
        "--only",
        "gwA",
        "--no-initiate",
        "--ike",
        "aes128gcm16-prfsha256-x25519,aes128gcm16-prfsha256-modp2048",
    ]);
    let mut initiate = {
        let mut c = Command::new("bash");
        c.arg(t.harness.dir.join("swan.sh"))
            .args([
                "swanctl",
                "gwA",
                "--initiate",
                "--child",
                "net-net",
                "--timeout",
                "30",
            ])
            .env("IPP_PREFIX", t.lab.ns(Node::GwA).trim_end_matches("-gwA"))
            .env("IPP_WORK", t.lab.workdir().join("ipp"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        c.spawn()
            .unwrap_or_else(|e| t.fail(&format!("swanctl --initiate: {e}")))
    };
    // lift the drop once it has dropped one answer
    let end = Instant::now() + Duration::from_secs(15);
    loop {
        let o = t
            .lab
            .exec(gw, &["nft", "list", "table", "inet", "xike_drop"])
            .unwrap_or_else(|e| t.fail(&e.to_string()));
        if !o.stdout.contains("packets 0 ") {
            t.lab
                .exec(gw, &["nft", "delete", "table", "inet", "xike_drop"])
                .unwrap_or_else(|e| t.fail(&e.to_string()));
            break;
        }
        if Instant::now() > end {
            t.fail("xsec-ike never answered on 4500");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    t.wait_stdout("CHILD_SA gw-gw.net-net", Duration::from_secs(20));
    let _ = initiate.wait();
    let stats = t.xsecctl_ike(&["stats"]);
    eprintln!("rounds: {stats}");
    let field = |k: &str| -> u64 {
        stats
            .lines()
            .find(|l| l.starts_with(k))
            .and_then(|l| l.split_whitespace().last())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    if field("cookies_sent") < 1 || field("init_refused") < 1 {
        t.fail(&format!(
            "expected a COOKIE round and an INVALID_KE_PAYLOAD round:\n{stats}"
        ));
    }
    let j = list_sas_json(&t);
    if j["sas"][0]["retransmits_answered"].as_u64().unwrap_or(0) < 1 {
        t.fail(&format!(
            "charon's retransmitted IKE_AUTH was not answered from the cache: {j}"
        ));
    }
    let log = t.charon_log();
    for want in [
        "parsed IKE_SA_INIT response 0 [ N(INVAL_KE) ]",
        "received COOKIE notify",
        "retransmit 1 of request with message ID 1",
    ] {
        if !log.contains(want) {
            t.fail(&format!("charon's log lacks {want:?}"));
        }
    }
    t.ping(Node::HostB, addr::HOST_A, 3);
    t.stop_ike();
    t.swan(&["down"]);
}

/// charon (x25519 only) answers xsec-ike's MODP-2048 KE with INVALID_KE_PAYLOAD; xsec-ike
/// retries with x25519.
#[test]
fn charon_asks_xsec_ike_for_another_group() {
    let mut t = Ike::new("invalid-ke", Role::XsecInitiates);
    t.swan(&[
        "up",
        "--only",
        "gwB",
        "--no-initiate",
        "--ike",
        "aes128gcm16-prfsha256-x25519",
    ]);
    t.start_xsecd();
    let cfg = t.ike_config(
        "aes128gcm16-prfsha256-modp2048-x25519",
        "aes128gcm16",
        PSK,
        true,
    );
    t.start_ike(&cfg);
    let line = t.wait_stdout("IKE_SA gw-gw", Duration::from_secs(15));
    if !line.contains("established") || !line.contains("x25519") {
        t.fail(&line);
    }
    if !t
        .charon_log()
        .contains("generating IKE_SA_INIT response 0 [ N(INVAL_KE) ]")
    {
        t.fail("charon sent no INVALID_KE_PAYLOAD");
    }
    t.wait_stdout("CHILD_SA gw-gw.net-net", Duration::from_secs(5));
    t.ping(Node::HostA, addr::HOST_B, 3);
    t.stop_ike();
    t.swan(&["down"]);
}

/// On-demand tunnels and xsecd's volume limits: a trapped child installs its PROTECT
/// policies at start and negotiates when hA's first packet raises an ACQUIRE (the packets
/// before are dropped, never sent in clear); then xsecd's packet limit (`rekey_packets`)
/// makes xsec-ike rekey the Child SA while pings flow, losing none.
#[test]
fn trap_negotiates_on_traffic_and_volume_limits_rekey() {
    let mut t = Ike::new("trap", Role::XsecInitiates);
    t.swan(&["up", "--only", "gwB", "--no-initiate"]);
    t.start_xsecd();
    let cap = t
        .lab
        .capture_wire("wire")
        .unwrap_or_else(|e| t.fail(&e.to_string()));
    let cfg = t
        .ike_config_with(
            "aes128gcm16-prfsha256-x25519",
            "aes128gcm16",
            PSK,
            false,
            "",
            "rekey_packets = 100",
        )
        .replace("start_action = \"none\"", "start_action = \"trap\"");
    t.start_ike(&cfg);
    std::thread::sleep(Duration::from_millis(500));
    if t.ike_stdout().contains("IKE_SA") {
        t.fail("a trapped connection negotiated before any traffic");
    }
    let d = t.dump();
    if d["policies"].as_array().map_or(0, |a| a.len()) != 2
        || !d["sas"].as_array().is_some_and(|a| a.is_empty())
    {
        t.fail(&format!("expected the trap's policies and no SA: {d}"));
    }
    let p = t
        .lab
        .ping(Node::HostA, addr::HOST_B, 10, 0.3, 8)
        .unwrap_or_else(|e| t.fail(&e.to_string()));
    t.wait_stdout("ACQUIRE for gw-gw", Duration::from_secs(1));
    t.wait_stdout("CHILD_SA gw-gw.net-net", Duration::from_secs(5));
    if p.received < 5 {
        t.fail(&format!(
            "only {} of 10 pings after the ACQUIRE",
            p.received
        ));
    }
    // 100 packets per SA, 300 pings (600 ESP packets counted both ways): rekeys by volume
    let before = t.ike_stdout().matches("established with SPIs").count();
    let p = t
        .lab
        .ping(Node::HostA, addr::HOST_B, 300, 0.01, 20)
        .unwrap_or_else(|e| t.fail(&e.to_string()));
    let after = t.ike_stdout().matches("established with SPIs").count();
    eprintln!(
        "trap: {} of 300 pings, Child SAs {before} -> {after}",
        p.received
    );
    if p.received != 300 {
        t.fail(&format!(
            "pings lost across volume rekeys: {} of 300",
            p.received
        ));
    }
    if after < before + 2 {
        t.fail("xsecd's packet limit did not make xsec-ike rekey");
    }
    t.stop_ike();
    t.wire_report(&cap);
    t.swan(&["down"]);
}

/// xsec-ike on both gateways (xsecd on both), over IPv6 outer addresses (IKE on fd00::1 <->
/// fd00::2, ESP over IPv6 carrying both families) and a second connection in transport mode
/// between the hosts (bump in the wire: ESP between hA and hB's own addresses); traffic
/// both ways on each, nothing in clear. xsec-ike runs as `nobody` after start-up, with
/// xsecd's control socket opened to its group.
#[test]
fn xsec_ike_to_xsec_ike_ipv6_outer_and_transport_as_nobody() {
    let t = Ike::new("xsec-xsec", Role::XsecInitiates);
    let lab = &t.lab;
    let mut procs = vec![];
    for (node, me, peer, lnet, rnet, lh, rh, start) in [
        (
            Node::GwB,
            "fd00::2",
            "fd00::1",
            addr::NET_B,
            addr::NET_A,
            addr::HOST_B,
            addr::HOST_A,
            false,
        ),
        (
            Node::GwA,
            "fd00::1",
            "fd00::2",
            addr::NET_A,
            addr::NET_B,
            addr::HOST_A,
            addr::HOST_B,
            true,
        ),
    ] {
        let toml = "[gateway]\nunprotected = \"wan0\"\nprotected = \"lan0\"\nidle = \"adaptive\"\n\n[control]\ngroup = \"nogroup\"\n";
        let x = lab
            .start_xsecd_with(node, &t.bins.xsecd, toml, Duration::from_secs(20), &[])
            .unwrap_or_else(|e| t.fail(&e.to_string()));
        let (lv6, rv6) = if node == Node::GwA {
            (addr::NET_A6, addr::NET_B6)
        } else {
            (addr::NET_B6, addr::NET_A6)
        };
        let start_s = if start { "start" } else { "none" };
        let cfg = format!(
            "[ike]\nretransmit_timeout = \"2s\"\n\n\
             [connections.v6]\nlocal_addrs = \"{me}\"\nremote_addrs = \"{peer}\"\nproposals = [\"aes256gcm16-prfsha384-ecp384\"]\n\
             [connections.v6.local]\nid = \"{me}\"\n[connections.v6.remote]\nid = \"{peer}\"\n\
             [connections.v6.children.nets]\nlocal_ts = [\"{lnet}\", \"{lv6}\"]\nremote_ts = [\"{rnet}\", \"{rv6}\"]\n\
             esp_proposals = [\"aes256gcm16-esn\"]\nstart_action = \"{start_s}\"\n\
             [connections.v6.children.hosts]\nlocal_ts = \"{lh}/32\"\nremote_ts = \"{rh}/32\"\nmode = \"transport\"\n\
             esp_proposals = [\"aes128-sha256\"]\nstart_action = \"{start_s}\"\n\n\
             [secrets.v6]\nid = [\"{me}\", \"{peer}\"]\nsecret = \"{PSK}\"\n"
        );
        let path = lab
            .write_file(&format!("xsec-ike-{}.toml", node.suffix()), &cfg)
            .unwrap_or_else(|e| t.fail(&e.to_string()));
        let sock = lab
            .workdir()
            .join(format!("xsec-ike-{}.sock", node.suffix()));
        let p = lab
            .spawn(
                node,
                &format!("xsec-ike-{}", node.suffix()),
                &[
                    t.bins.ike.to_string_lossy().as_ref(),
                    "--config",
                    path.to_string_lossy().as_ref(),
                    "--control",
                    x.control.to_string_lossy().as_ref(),
                    "--socket",
                    sock.to_string_lossy().as_ref(),
                    "--user",
                    "nobody",
                ],
            )
            .unwrap_or_else(|e| t.fail(&e.to_string()));
        let end = Instant::now() + Duration::from_secs(10);
        while !p.stdout_text().contains("xsec-ike: ready") {
            if Instant::now() > end {
                t.fail(&format!("xsec-ike in {node:?}: {}", p.stderr_tail(10)));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        procs.push((p, x));
    }
    let end = Instant::now() + Duration::from_secs(15);
    while !procs
        .iter()
        .all(|(p, _)| p.stdout_text().matches("established with SPIs").count() >= 2)
    {
        if Instant::now() > end {
            t.fail(&format!(
                "two Child SAs on each side:\n{}",
                procs
                    .iter()
                    .map(|(p, _)| p.stdout_text() + &p.stderr_tail(10))
                    .collect::<Vec<_>>()
                    .join("\n")
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    for (p, _) in &procs {
        let status = std::fs::read_to_string(format!("/proc/{}/status", p.pid)).unwrap_or_default();
        let uid = status.lines().find(|l| l.starts_with("Uid:")).unwrap_or("");
        if !uid.split_whitespace().skip(1).all(|u| u == "65534") {
            t.fail(&format!("xsec-ike still runs as {uid:?}"));
        }
        let out = p.stdout_text();
        if !out.contains("hosts{") || !out.contains(", aes128-sha256, transport") {
            t.fail(&format!("no transport-mode Child SA:\n{out}"));
        }
    }
    let cap = lab
        .capture_wire("wire")
        .unwrap_or_else(|e| t.fail(&e.to_string()));
    // hA <-> hB IPv4: the transport-mode Child SA (more specific policy); the subnets'
    // IPv6: the tunnel over IPv6
    t.ping(Node::HostA, addr::HOST_B, 5);
    t.ping(Node::HostB, addr::HOST_A, 5);
    t.ping(Node::HostA, addr::HOST_B6, 5);
    t.ping(Node::HostB, addr::HOST_A6, 5);
    let (_, r) = t.wire_report(&cap);
    let from = |a: &str| r.esp_from(a.parse().expect("ip"));
    if from(addr::HOST_A) < 5 || from(addr::HOST_B) < 5 {
        t.fail(&format!(
            "no transport-mode ESP between the hosts: {}",
            r.summary()
        ));
    }
    if from("fd00::1") < 5 || from("fd00::2") < 5 {
        t.fail(&format!(
            "no ESP over IPv6 between the gateways: {}",
            r.summary()
        ));
    }
    for (p, _) in &procs {
        lab.procs().stop(p, Duration::from_secs(5));
    }
}

/// strongSwan refuses transport-mode Child SAs with kernel-libipsec: the negotiation is
/// what can be checked against it. xsec-ike asks for transport mode (USE_TRANSPORT_MODE),
/// charon answers NO_PROPOSAL_CHOSEN ("unsupported mode"): the IKE SA stands, no Child SA
/// is installed.
#[test]
fn transport_mode_refused_by_charon_installs_nothing() {
    let mut t = Ike::new("transport-charon", Role::XsecInitiates);
    t.swan(&[
        "up",
        "--only",
        "gwB",
        "--no-initiate",
        "--mode",
        "transport",
    ]);
    t.start_xsecd();
    let cfg = t
        .ike_config("aes128gcm16-prfsha256-x25519", "aes128gcm16", PSK, true)
        .replace(
            "local_ts = \"10.1.0.0/24\"",
            "local_ts = \"10.0.0.1/32\"\nmode = \"transport\"",
        )
        .replace("remote_ts = \"10.2.0.0/24\"", "remote_ts = \"10.0.0.2/32\"");
    t.start_ike(&cfg);
    let line = t.wait_stdout("CHILD_SA gw-gw.net-net", Duration::from_secs(15));
    if !line.contains("failed") {
        t.fail(&format!(
            "charon accepted a transport-mode Child SA? {line}"
        ));
    }
    if !t.ike_stdout().contains("IKE_SA gw-gw[") || !t.charon_log().contains("USE_TRANSP") {
        t.fail("the IKE SA did not come up, or no USE_TRANSPORT_MODE reached charon");
    }
    let d = t.dump();
    if !d["sas"].as_array().is_some_and(|a| a.is_empty()) {
        t.fail(&format!("xsecd holds SAs: {d}"));
    }
    t.stop_ike();
    t.swan(&["down"]);
}

/// Reauthentication (`reauth_time`) during traffic against charon: every 5 s a new IKE SA
/// with a new Child SA, the old IKE SA deleted once the new one is up, and xsecd ends with
/// one SA pair. A ping every 10 ms loses at most one packet per reauthentication: charon,
/// answering IKE_AUTH, sends on the new Child SA at once, and our inbound SA goes in only
/// when its answer has arrived (strongSwan's own reauthentication has the same window; a
/// Child SA rekey, with CREATE_CHILD_SA, has none and loses nothing).
#[test]
fn reauthentication_with_charon_during_traffic() {
    let mut t = Ike::new("reauth", Role::XsecInitiates);
    t.swan(&["up", "--only", "gwB", "--no-initiate"]);
    t.start_xsecd();
    let cfg = t.ike_config_with(
        "aes128gcm16-prfsha256-x25519",
        "aes128gcm16",
        PSK,
        true,
        "reauth_time = \"5s\"",
        "",
    );
    t.start_ike(&cfg);
    t.wait_stdout("CHILD_SA gw-gw.net-net", Duration::from_secs(15));
    t.ping(Node::HostA, addr::HOST_B, 2);
    let p = t
        .lab
        .ping(Node::HostA, addr::HOST_B, 1200, 0.01, 25)
        .unwrap_or_else(|e| t.fail(&e.to_string()));
    let out = t.ike_stdout();
    let reauths = out
        .lines()
        .filter(|l| l.contains("IKE_SA gw-gw[") && l.contains("down: reauthenticated"))
        .count();
    eprintln!(
        "reauth: {} of {} pings, {reauths} IKE SAs reauthenticated\n{out}",
        p.received, p.transmitted
    );
    if reauths < 2 {
        t.fail(&format!(
            "expected at least 2 reauthentications, saw {reauths}"
        ));
    }
    let lost = p.transmitted.saturating_sub(p.received) as usize;
    if lost > reauths {
        t.fail(&format!(
            "{lost} pings lost across {reauths} reauthentications ({} of {})",
            p.received, p.transmitted
        ));
    }
    std::thread::sleep(Duration::from_millis(500));
    let d = t.dump();
    if d["sas"].as_array().map_or(0, |a| a.len()) != 2 {
        t.fail(&format!("xsecd should hold one SA pair: {d}"));
    }
    t.stop_ike();
    t.swan(&["down"]);
}

/// `xsecctl --json ike list-conns`: the watchdog of connection gw-gw.
fn watchdog_json(t: &Ike) -> serde_json::Value {
    ike_json(t, "list-conns")["conns"][0]["watchdog"].clone()
}

/// Wait until the watchdog's JSON satisfies `ok`; the JSON.
fn wait_watchdog(
    t: &Ike,
    what: &str,
    limit: Duration,
    ok: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let end = Instant::now() + limit;
    loop {
        let w = watchdog_json(t);
        if ok(&w) {
            return w;
        }
        if Instant::now() >= end {
            t.fail(&format!("watchdog: {what} not within {limit:?}: {w}"));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The tunnel watchdog ("ICMP detect") against charon: xsec-ike probes host B from gwA's
/// LAN address through the tunnel (xsecd's `ping`: answered only through ESP). When host B
/// stops answering pings — charon and its IKE stay alive, so DPD sees nothing — three
/// unanswered probes restart the IKE SA (new Child SA SPIs); once host B answers again the
/// watchdog is back to OK. No probe crosses the wire in clear.
#[test]
fn watchdog_restarts_the_ike_sa_when_the_far_host_stops_answering() {
    let mut t = Ike::new("watchdog", Role::XsecInitiates);
    t.swan(&["up", "--only", "gwB", "--no-initiate"]);
    t.start_xsecd();
    let wd = format!(
        "dpd_delay = \"2s\"\ndpd_action = \"restart\"\n\n[connections.gw-gw.watchdog]\n\
         host = \"{}\"\nsource = \"{}\"\ninterval = 1\ntimeout = 1\ntries = 3\n",
        addr::HOST_B,
        addr::GWA_LAN
    );
    let cfg = t.ike_config_with(
        "aes128gcm16-prfsha256-x25519",
        "aes128gcm16",
        PSK,
        true,
        &wd,
        "",
    );
    t.start_ike(&cfg);
    let first = t.wait_stdout("CHILD_SA gw-gw.net-net", Duration::from_secs(15));
    let cap = t
        .lab
        .capture_wire("watchdog")
        .unwrap_or_else(|e| t.fail(&e.to_string()));
    t.ping(Node::HostA, addr::HOST_B, 3);
    let w = wait_watchdog(&t, "3 replies", Duration::from_secs(10), |w| {
        w["state"] == "ok" && w["replies"].as_u64().unwrap_or(0) >= 3
    });
    if w["lost"] != 0 || w["restarts"] != 0 || w["last_rtt_ms"].as_f64().is_none() {
        t.fail(&format!("watchdog while host B answers: {w}"));
    }
    let text = t.xsecctl_ike(&["list-conns"]);
    if !text.contains("watchdog: 10.2.0.10 from 10.1.0.1 every 1s, timeout 1s, 3 tries: OK") {
        t.fail(&format!("list-conns: {text}"));
    }
    // host B stops answering pings; nothing else changes
    let block = t.lab.sh(
        Node::HostB,
        "nft add table inet wd && \
         nft add chain inet wd in '{ type filter hook input priority 0; policy accept; }' && \
         nft add rule inet wd in icmp type echo-request drop",
    );
    if !block.as_ref().is_ok_and(|o| o.ok()) {
        t.fail(&format!("cannot block pings on host B: {block:?}"));
    }
    let w = wait_watchdog(&t, "failing", Duration::from_secs(10), |w| {
        w["state"] == "failing"
    });
    eprintln!("watchdog failing: {w}");
    t.wait_stdout(
        "watchdog of gw-gw: 10.2.0.10 unreachable through the tunnel, restarting",
        Duration::from_secs(15),
    );
    // a new Child SA with new SPIs
    let end = Instant::now() + Duration::from_secs(20);
    let second = loop {
        let out = t.ike_stdout();
        let lines: Vec<&str> = out
            .lines()
            .filter(|l| l.contains("CHILD_SA gw-gw.net-net") && l.contains(" established "))
            .collect();
        if lines.len() >= 2 {
            break lines[lines.len() - 1].to_owned();
        }
        if Instant::now() >= end {
            t.fail("no new Child SA after the watchdog's restart");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let (a, b) = (Ike::spis(&first), Ike::spis(&second));
    if a.0 == b.0 || a.1 == b.1 {
        t.fail(&format!("the restart kept the SPIs: {first} / {second}"));
    }
    // host B answers again: OK, and traffic flows on the new SAs
    let _ = t.lab.sh(Node::HostB, "nft delete table inet wd");
    let w = wait_watchdog(&t, "ok again", Duration::from_secs(15), |w| {
        w["state"] == "ok" && w["restarts"].as_u64().unwrap_or(0) >= 1
    });
    let replies = w["replies"].as_u64().unwrap_or(0);
    wait_watchdog(
        &t,
        "a reply after the restart",
        Duration::from_secs(10),
        |w| w["replies"].as_u64().unwrap_or(0) > replies,
    );
    t.ping(Node::HostA, addr::HOST_B, 3);
    let (_, r) = t.wire_report(&cap);
    let lan: std::net::IpAddr = addr::GWA_LAN.parse().expect("address");
    if r.clear
        .iter()
        .any(|f| f.src == Some(lan) || f.dst == Some(lan))
    {
        t.fail(&format!(
            "a probe crossed in clear: {}",
            r.describe_clear(5)
        ));
    }
    t.stop_ike();
}
