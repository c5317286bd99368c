//! The lab topology and its guard.
//!
//! ```text
//! direct: hA 10.1.0.10 -- lan0 gwA wan0 10.0.0.1 ==[a0 mid br0 b0]== 10.0.0.2 wan0 gwB lan0 -- 10.2.0.10 hB
//!         fd01::10           fd00::1                                  fd00::2               fd02::10
//! nat:    hA -- gwA wan0 172.16.0.2 -- in0 nat out0 10.0.0.1 -- 10.0.0.2 wan0 gwB -- hB
//!                                   (nft masquerade on out0; gwB has no route to 172.16.0.0/24)
//! ```
//!
//! Namespaces are `<prefix>-hA`, `<prefix>-gwA`, `<prefix>-mid` or `<prefix>-nat`,
//! `<prefix>-gwB`, `<prefix>-hB`; interface names are fixed (`eth0`, `lan0`, `wan0`, `a0`,
//! `b0`, `br0`, `in0`, `out0`) so they never exceed 15 characters.
//!
//! The middle link is watched from a namespace without XDP: frames a gateway sends with
//! AF_XDP, and frames its XDP program redirects, never reach the packet taps of the gateway's
//! own interface, so tcpdump on gwB's wan0 would miss the tunnel. On the direct link `mid` is
//! a plain Ethernet bridge (one L2 segment, 10.0.0.0/24, as if the gateways were cabled
//! together) and the capture runs on its port `b0` towards gwB; in the nat topology on the
//! router's public side `out0`. [`Lab::wire_tap`] names the place. Every veth end has TX checksum offload off (`ethtool -K IF tx
//! off`): a sender over veth otherwise leaves UDP/TCP checksums partial, which the AF_XDP
//! dataplane would see. IPv6 duplicate address detection is off, so addresses work at once.
//!
//! [`Lab`] is the guard: dropping it (also while unwinding from a panic) kills every process
//! it started and deletes its namespaces, unless [`Lab::keep`] was called.

use std::ffi::OsStr;
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::procs::{self, Output, Proc, Procs, netns_command};
use crate::stats::Stats;
use crate::{Result, err};

/// A node of the topology.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Node {
    HostA,
    GwA,
    /// The bridge in the middle of the direct link (no addresses, no XDP).
    Mid,
    Nat,
    GwB,
    HostB,
}

impl Node {
    /// The namespace name's suffix.
    pub fn suffix(self) -> &'static str {
        match self {
            Node::HostA => "hA",
            Node::GwA => "gwA",
            Node::Mid => "mid",
            Node::Nat => "nat",
            Node::GwB => "gwB",
            Node::HostB => "hB",
        }
    }
}

/// How the two gateways are joined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wan {
    /// One veth link, 10.0.0.1/24 fd00::1/64 <-> 10.0.0.2/24 fd00::2/64.
    Direct,
    /// gwA 172.16.0.2 behind a masquerading router whose public side is 10.0.0.1.
    Nat,
}

/// Addresses of the topology.
pub mod addr {
    pub const HOST_A: &str = "10.1.0.10";
    pub const HOST_A6: &str = "fd01::10";
    pub const HOST_B: &str = "10.2.0.10";
    pub const HOST_B6: &str = "fd02::10";
    pub const GWA_LAN: &str = "10.1.0.1";
    pub const GWB_LAN: &str = "10.2.0.1";
    /// gwA's WAN address on the direct link, and the NAT router's public address.
    pub const GWA_WAN: &str = "10.0.0.1";
    pub const GWA_WAN6: &str = "fd00::1";
    pub const GWB_WAN: &str = "10.0.0.2";
    pub const GWB_WAN6: &str = "fd00::2";
    /// gwA's WAN address behind the NAT.
    pub const GWA_PRIVATE: &str = "172.16.0.2";
    pub const NAT_INSIDE: &str = "172.16.0.1";
    pub const NET_A: &str = "10.1.0.0/24";
    pub const NET_A6: &str = "fd01::/64";
    pub const NET_B: &str = "10.2.0.0/24";
    pub const NET_B6: &str = "fd02::/64";
}

/// What to build.
#[derive(Debug, Clone)]
pub struct TopoOptions {
    /// Namespace prefix, e.g. `xsec-lab`.
    pub prefix: String,
    pub wan: Wan,
    /// RX/TX queues of every veth (1 = the kernel's default).
    pub queues: u16,
    /// Where configs, logs, captures go (default: `/tmp/<prefix>`; emptied first).
    pub workdir: Option<PathBuf>,
}

impl TopoOptions {
    pub fn new(prefix: &str) -> TopoOptions {
        TopoOptions {
            prefix: prefix.to_owned(),
            wan: Wan::Direct,
            queues: 1,
            workdir: None,
        }
    }

    pub fn wan(mut self, wan: Wan) -> TopoOptions {
        self.wan = wan;
        self
    }

    pub fn queues(mut self, n: u16) -> TopoOptions {
        self.queues = n.max(1);
        self
    }

    pub fn workdir(mut self, dir: impl Into<PathBuf>) -> TopoOptions {
        self.workdir = Some(dir.into());
        self
    }
}

/// A running xsecd.
#[derive(Debug, Clone)]
pub struct Xsecd {
    pub node: Node,
    pub proc: Proc,
    /// The executable it runs (for `--detach`).
    pub exe: PathBuf,
    pub config: PathBuf,
    pub stats_file: PathBuf,
    /// Its control socket (`xsecctl --socket`).
    pub control: PathBuf,
}

/// A running tcpdump.
#[derive(Debug, Clone)]
pub struct Capture {
    pub proc: Proc,
    pub pcap: PathBuf,
}

/// The outcome of one `ping` run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ping {
    pub transmitted: u32,
    pub received: u32,
    pub output: String,
}

/// The topology guard: namespaces and processes of one lab.
#[derive(Debug)]
pub struct Lab {
    pub opts: TopoOptions,
    workdir: PathBuf,
    namespaces: Vec<String>,
    procs: Procs,
    keep: bool,
}

/// Namespaces named `<prefix>-*` (any suffix).
pub fn namespaces_with_prefix(prefix: &str) -> Vec<String> {
    let Ok(o) = procs::run({
        let mut c = Command::new("ip");
        c.args(["netns", "list"]);
        c
    }) else {
        return vec![];
    };
    let want = format!("{prefix}-");
    o.stdout
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(&want))
        .map(str::to_owned)
        .collect()
}

/// Delete a namespace: the processes left in it (started by an earlier run of the lab, the
/// only thing that creates these names) are killed by pid first.
pub fn delete_namespace(ns: &str) {
    if let Ok(o) = procs::run({
        let mut c = Command::new("ip");
        c.args(["netns", "pids", ns]);
        c
    }) {
        for pid in o
            .stdout
            .split_whitespace()
            .filter_map(|p| p.parse::<i32>().ok())
        {
            if let Some(p) = rustix::process::Pid::from_raw(pid) {
                let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
            }
        }
    }
    let mut c = Command::new("ip");
    c.args(["netns", "del", ns]);
    let _ = procs::run(c);
}

/// Remove namespaces left over by an earlier lab with the same prefix.
pub fn remove_stale(prefix: &str) {
    for ns in namespaces_with_prefix(prefix) {
        eprintln!("xsec-lab: removing stale namespace {ns}");
        delete_namespace(&ns);
    }
}

fn ip<S: AsRef<OsStr>>(args: &[S]) -> Result<Output> {
    let mut c = Command::new("ip");
    c.args(args);
    procs::run(c)?.check()
}

impl Lab {
    /// Build the topology. Stale namespaces of the same prefix are removed first; on error,
    /// whatever was created is removed again (the half-built `Lab` is dropped).
    pub fn up(opts: TopoOptions) -> Result<Lab> {
        if !rustix::process::geteuid().is_root() {
            return Err(err!("the lab needs root (network namespaces, veth, XDP)"));
        }
        for prog in ["ip", "ethtool", "sysctl"] {
            if !procs::on_path(prog) {
                return Err(err!(
                    "`{prog}` is not installed (Debian: apt-get install iproute2 ethtool procps)"
                ));
            }
        }
        if opts.wan == Wan::Nat && !procs::on_path("nft") {
            return Err(err!(
                "`nft` is not installed (Debian: apt-get install nftables)"
            ));
        }
        let workdir = opts
            .workdir
            .clone()
            .unwrap_or_else(|| std::env::temp_dir().join(&opts.prefix));
        let _ = std::fs::remove_dir_all(&workdir);
        std::fs::create_dir_all(&workdir)
            .map_err(|e| err!("cannot create {}: {e}", workdir.display()))?;
        // the gateways' configs and the esp_sa table hold the run's keys: owner only
        std::fs::set_permissions(&workdir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| err!("chmod 700 {}: {e}", workdir.display()))?;
        remove_stale(&opts.prefix);
        let mut lab = Lab {
            opts,
            workdir,
            namespaces: vec![],
            procs: Procs::default(),
            keep: false,
        };
        lab.build()?;
        Ok(lab)
    }

    /// The namespace of `node`.
    pub fn ns(&self, node: Node) -> String {
        format!("{}-{}", self.opts.prefix, node.suffix())
    }

    /// The folder of configs, logs and captures.
    pub fn workdir(&self) -> &Path {
        &self.workdir
    }

    /// The registry of the lab's processes.
    pub fn procs(&self) -> &Procs {
        &self.procs
    }

    /// Leave namespaces and processes up when the guard is dropped.
    pub fn keep(&mut self) {
        self.keep = true;
    }

    /// The nodes present.
    pub fn nodes(&self) -> Vec<Node> {
        let mut v = vec![Node::HostA, Node::GwA];
        v.push(match self.opts.wan {
            Wan::Direct => Node::Mid,
            Wan::Nat => Node::Nat,
        });
        v.extend([Node::GwB, Node::HostB]);
        v
    }

    fn add_ns(&mut self, node: Node) -> Result<()> {
        let ns = self.ns(node);
        ip(&["netns", "add", &ns])?;
        self.namespaces.push(ns.clone());
        ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        // DAD off: IPv6 addresses are usable at once (nodad on each address as well)
        self.sysctl(
            node,
            &[
                "net.ipv6.conf.all.accept_dad=0",
                "net.ipv6.conf.default.accept_dad=0",
                "net.ipv6.conf.all.disable_ipv6=0",
                "net.ipv6.conf.default.disable_ipv6=0",
            ],
        )
    }

    fn sysctl(&self, node: Node, settings: &[&str]) -> Result<()> {
        let mut args = vec!["sysctl", "-qw"];
        args.extend_from_slice(settings);
        self.exec(node, &args)?.check().map(|_| ())
    }

    /// A veth pair `a_if` in `a` <-> `b_if` in `b`, both ends up, TX checksum offload off.
    fn veth(&self, a: Node, a_if: &str, b: Node, b_if: &str) -> Result<()> {
        let (na, nb) = (self.ns(a), self.ns(b));
        let q = self.opts.queues.to_string();
        // explicit even for 1: the kernel's default here is one queue per CPU, and a flow
        // hashed to a queue without an AF_XDP socket would bypass the dataplane
        let mut args = vec!["-n", &na, "link", "add", a_if];
        args.extend(["numrxqueues", &q, "numtxqueues", &q]);
        args.extend(["type", "veth", "peer", "name", b_if]);
        args.extend(["numrxqueues", &q, "numtxqueues", &q]);
        args.extend(["netns", &nb]);
        ip(&args)?;
        for (node, ifname) in [(a, a_if), (b, b_if)] {
            let ns = self.ns(node);
            ip(&["-n", &ns, "link", "set", ifname, "up"])?;
            self.exec(node, &["ethtool", "-K", ifname, "tx", "off"])?
                .check()?;
        }
        Ok(())
    }

    fn addr(&self, node: Node, ifname: &str, cidr: &str) -> Result<()> {
        let ns = self.ns(node);
        let mut args = vec!["-n", &ns, "addr", "add", cidr, "dev", ifname];
        if cidr.contains(':') {
            args.push("nodad");
        }
        ip(&args).map(|_| ())
    }

    fn route(&self, node: Node, dst: &str, via: &str) -> Result<()> {
        let ns = self.ns(node);
        let fam = if via.contains(':') { "-6" } else { "-4" };
        ip(&["-n", &ns, fam, "route", "add", dst, "via", via]).map(|_| ())
    }

    fn build(&mut self) -> Result<()> {
        use addr::*;
        for node in self.nodes() {
            self.add_ns(node)?;
        }
        for gw in [Node::GwA, Node::GwB] {
            self.sysctl(
                gw,
                &[
                    "net.ipv4.ip_forward=1",
                    "net.ipv6.conf.all.forwarding=1",
                    "net.ipv4.conf.all.rp_filter=0",
                    "net.ipv4.conf.default.rp_filter=0",
                    // a gateway forwarding back out of its arrival link would send ICMP
                    // redirects, clear text on the middle link that is not part of a test
                    "net.ipv4.conf.all.send_redirects=0",
                    "net.ipv4.conf.default.send_redirects=0",
                ],
            )?;
        }
        // inner subnets
        self.veth(Node::HostA, "eth0", Node::GwA, "lan0")?;
        self.addr(Node::HostA, "eth0", &format!("{HOST_A}/24"))?;
        self.addr(Node::HostA, "eth0", &format!("{HOST_A6}/64"))?;
        self.addr(Node::GwA, "lan0", &format!("{GWA_LAN}/24"))?;
        self.addr(Node::GwA, "lan0", "fd01::1/64")?;
        self.route(Node::HostA, "default", GWA_LAN)?;
        self.route(Node::HostA, "default", "fd01::1")?;
        self.veth(Node::HostB, "eth0", Node::GwB, "lan0")?;
        self.addr(Node::HostB, "eth0", &format!("{HOST_B}/24"))?;
        self.addr(Node::HostB, "eth0", &format!("{HOST_B6}/64"))?;
        self.addr(Node::GwB, "lan0", &format!("{GWB_LAN}/24"))?;
        self.addr(Node::GwB, "lan0", "fd02::1/64")?;
        self.route(Node::HostB, "default", GWB_LAN)?;
        self.route(Node::HostB, "default", "fd02::1")?;
        match self.opts.wan {
            Wan::Direct => {
                // a quiet bridge: no IPv6 (no link-local, RS or MLD of its own)
                self.sysctl(
                    Node::Mid,
                    &[
                        "net.ipv6.conf.all.disable_ipv6=1",
                        "net.ipv6.conf.default.disable_ipv6=1",
                    ],
                )?;
                let mid = self.ns(Node::Mid);
                ip(&[
                    "-n",
                    &mid,
                    "link",
                    "add",
                    "br0",
                    "type",
                    "bridge",
                    "mcast_snooping",
                    "0",
                ])?;
                self.veth(Node::GwA, "wan0", Node::Mid, "a0")?;
                self.veth(Node::Mid, "b0", Node::GwB, "wan0")?;
                for port in ["a0", "b0"] {
                    ip(&["-n", &mid, "link", "set", port, "master", "br0"])?;
                }
                ip(&["-n", &mid, "link", "set", "br0", "up"])?;
                self.addr(Node::GwA, "wan0", &format!("{GWA_WAN}/24"))?;
                self.addr(Node::GwA, "wan0", &format!("{GWA_WAN6}/64"))?;
                self.addr(Node::GwB, "wan0", &format!("{GWB_WAN}/24"))?;
                self.addr(Node::GwB, "wan0", &format!("{GWB_WAN6}/64"))?;
                // the kernel path (BYPASS traffic, transport mode's bump in the wire)
                self.route(Node::GwA, NET_B, GWB_WAN)?;
                self.route(Node::GwA, NET_B6, GWB_WAN6)?;
                self.route(Node::GwB, NET_A, GWA_WAN)?;
                self.route(Node::GwB, NET_A6, GWA_WAN6)?;
            }
            Wan::Nat => {
                self.sysctl(Node::Nat, &["net.ipv4.ip_forward=1"])?;
                self.veth(Node::GwA, "wan0", Node::Nat, "in0")?;
                self.veth(Node::Nat, "out0", Node::GwB, "wan0")?;
                self.addr(Node::GwA, "wan0", &format!("{GWA_PRIVATE}/24"))?;
                self.route(Node::GwA, "default", NAT_INSIDE)?;
                self.addr(Node::Nat, "in0", &format!("{NAT_INSIDE}/24"))?;
                self.addr(Node::Nat, "out0", &format!("{GWA_WAN}/24"))?;
                self.addr(Node::GwB, "wan0", &format!("{GWB_WAN}/24"))?;
                // gwB has no route to 172.16.0.0/24: it only ever sees gwA as 10.0.0.1.
                // Plain masquerade keeps the source port when it is free (UDP 4500 stays
                // 4500, which manual keying needs: the SA names the peer's port).
                let rules = "table ip xseclab {
    chain postrouting {
        type nat hook postrouting priority srcnat; policy accept;
        oifname \"out0\" ip saddr 172.16.0.0/24 masquerade
    }
    chain forward {
        type filter hook forward priority filter; policy drop;
        iifname \"in0\" oifname \"out0\" accept
        iifname \"out0\" oifname \"in0\" ct state established,related accept
    }
}
";
                let path = self.workdir.join("nat.nft");
                std::fs::write(&path, rules).map_err(|e| err!("write {}: {e}", path.display()))?;
                let p = path.to_string_lossy().into_owned();
                self.exec(Node::Nat, &["nft", "-f", &p])?.check()?;
            }
        }
        Ok(())
    }

    /// `ip netns exec NS ARGS` as a [`Command`] (not started).
    pub fn command<S: AsRef<OsStr>>(&self, node: Node, args: &[S]) -> Command {
        netns_command(&self.ns(node), args)
    }

    /// Run a program in `node` to completion.
    pub fn exec<S: AsRef<OsStr>>(&self, node: Node, args: &[S]) -> Result<Output> {
        procs::run(self.command(node, args))
    }

    /// Run a shell command line in `node` (`sh -c`).
    pub fn sh(&self, node: Node, script: &str) -> Result<Output> {
        self.exec(node, &["sh", "-c", script])
    }

    /// Start a program in `node` in the background; `name` names its output files.
    pub fn spawn<S: AsRef<OsStr>>(&self, node: Node, name: &str, args: &[S]) -> Result<Proc> {
        self.procs
            .spawn(&self.workdir, name, self.command(node, args))
    }

    /// Write a file into the work folder.
    pub fn write_file(&self, name: &str, contents: impl AsRef<[u8]>) -> Result<PathBuf> {
        let p = self.workdir.join(name);
        std::fs::write(&p, contents).map_err(|e| err!("write {}: {e}", p.display()))?;
        Ok(p)
    }

    /// Start `xsecd --config CONFIG --stats-file ...` in `node` and wait (up to `timeout`) for
    /// its `xsecd: ready` line. On failure the error carries its stderr tail.
    pub fn start_xsecd(
        &self,
        node: Node,
        xsecd: &Path,
        config_toml: &str,
        timeout: Duration,
    ) -> Result<Xsecd> {
        self.start_xsecd_with(node, xsecd, config_toml, timeout, &[])
    }

    /// [`Lab::start_xsecd`] with more arguments (e.g. the replay backend's).
    pub fn start_xsecd_with(
        &self,
        node: Node,
        xsecd: &Path,
        config_toml: &str,
        timeout: Duration,
        extra: &[&OsStr],
    ) -> Result<Xsecd> {
        let tag = format!("xsecd-{}", node.suffix());
        let config = self.write_file(&format!("{tag}.toml"), config_toml)?;
        let stats_file = self.workdir.join(format!("{tag}.stats.json"));
        let _ = std::fs::remove_file(&stats_file);
        let control = self.workdir.join(format!("{tag}.sock"));
        let mut args: Vec<&OsStr> = vec![
            xsecd.as_os_str(),
            OsStr::new("--config"),
            config.as_os_str(),
            OsStr::new("--stats-file"),
            stats_file.as_os_str(),
            OsStr::new("--control"),
            control.as_os_str(),
        ];
        args.extend_from_slice(extra);
        let proc = self.spawn(node, &tag, &args)?;
        let end = Instant::now() + timeout;
        loop {
            if proc
                .stdout_text()
                .lines()
                .any(|l| l.trim() == "xsecd: ready")
            {
                return Ok(Xsecd {
                    node,
                    proc,
                    exe: xsecd.to_path_buf(),
                    config,
                    stats_file,
                    control,
                });
            }
            if let Some(st) = self.procs.try_status(&proc) {
                return Err(err!(
                    "xsecd in {} exited ({st}) before it was ready; config {}\n--- xsecd stderr ---\n{}",
                    self.ns(node),
                    config.display(),
                    proc.stderr_tail(40)
                ));
            }
            if Instant::now() >= end {
                let tail = proc.stderr_tail(40);
                self.procs.stop(&proc, Duration::from_secs(3));
                return Err(err!(
                    "xsecd in {} printed no `xsecd: ready` within {timeout:?}; config {}\n--- xsecd stderr ---\n{tail}",
                    self.ns(node),
                    config.display()
                ));
            }
            // fine enough to time a start (`xsec-lab scale`)
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// `Ok` while every daemon of `ds` runs; otherwise which one died, with its stderr tail.
    pub fn daemons_alive(&self, ds: &[Xsecd]) -> Result<()> {
        for d in ds {
            if !self.procs().is_running(&d.proc) {
                return Err(err!(
                    "xsecd in {} died\n--- xsecd stderr ---\n{}",
                    self.ns(d.node),
                    d.proc.stderr_tail(40)
                ));
            }
        }
        Ok(())
    }

    /// Read an xsecd's stats file (waits up to 5 s for its first write).
    pub fn stats(&self, x: &Xsecd) -> Result<Stats> {
        let end = Instant::now() + Duration::from_secs(5);
        loop {
            match Stats::read(&x.stats_file) {
                Ok(s) => return Ok(s),
                Err(e) if Instant::now() >= end => return Err(e),
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    /// Stop an xsecd with SIGINT; `Err` (with its stderr tail) unless it exits 0 in time.
    /// Then `xsecd --detach` removes the forward guard it leaves (fail closed) on purpose:
    /// the lab's topologies are reused, by plain kernel forwarding too.
    pub fn stop_xsecd(&self, x: &Xsecd) -> Result<()> {
        self.stop_xsecd_keep_guard(x)?;
        let o = self.exec(
            x.node,
            &[
                x.exe.as_os_str(),
                OsStr::new("--config"),
                x.config.as_os_str(),
                OsStr::new("--detach"),
            ],
        )?;
        if !o.ok() {
            return Err(err!("xsecd --detach in {}: {o}", self.ns(x.node)));
        }
        Ok(())
    }

    /// [`Lab::stop_xsecd`] without the `--detach`: what xsecd leaves is left.
    pub fn stop_xsecd_keep_guard(&self, x: &Xsecd) -> Result<()> {
        match self.procs.stop(&x.proc, Duration::from_secs(10)) {
            Some(s) if s.success() => Ok(()),
            Some(s) => Err(err!(
                "xsecd in {} exited with {s} on SIGINT\n--- xsecd stderr ---\n{}",
                self.ns(x.node),
                x.proc.stderr_tail(40)
            )),
            None => Err(err!(
                "xsecd in {} did not exit within 10 s of SIGINT (killed)\n--- xsecd stderr ---\n{}",
                self.ns(x.node),
                x.proc.stderr_tail(40)
            )),
        }
    }

    /// Where the middle link is captured: the bridge port towards gwB (direct) or the NAT's
    /// public side (nat). Both see every frame between the gateways (on the nat topology,
    /// with gwA's address translated to 10.0.0.1).
    pub fn wire_tap(&self) -> (Node, &'static str) {
        match self.opts.wan {
            Wan::Direct => (Node::Mid, "b0"),
            Wan::Nat => (Node::Nat, "out0"),
        }
    }

    /// Capture the middle link at [`Lab::wire_tap`] into `<name>.pcap`.
    pub fn capture_wire(&self, name: &str) -> Result<Capture> {
        let (node, ifname) = self.wire_tap();
        self.capture(node, ifname, name)
    }

    /// Start tcpdump on `ifname` in `node`, writing `<name>.pcap`; returns once it listens.
    pub fn capture(&self, node: Node, ifname: &str, name: &str) -> Result<Capture> {
        self.capture_snap(node, ifname, name, 0)
    }

    /// The middle link's headers only: the first `snaplen` bytes of each frame (long
    /// captures at tens of kpps, where only SPIs and sequence numbers matter).
    pub fn capture_wire_headers(&self, name: &str, snaplen: u32) -> Result<Capture> {
        let (node, ifname) = self.wire_tap();
        self.capture_snap(node, ifname, name, snaplen)
    }

    /// [`Lab::capture`] keeping `snaplen` bytes of each frame (0: all).
    pub fn capture_snap(
        &self,
        node: Node,
        ifname: &str,
        name: &str,
        snaplen: u32,
    ) -> Result<Capture> {
        if !procs::on_path("tcpdump") {
            return Err(err!("`tcpdump` is not installed (apt-get install tcpdump)"));
        }
        let pcap = self.workdir.join(format!("{name}.pcap"));
        let p = pcap.to_string_lossy().into_owned();
        // -Z root: Debian's tcpdump would otherwise drop to its own user, which may not write
        // into the work folder
        let proc = self.spawn(
            node,
            &format!("tcpdump-{name}"),
            &[
                "tcpdump",
                "-i",
                ifname,
                "-n",
                "-s",
                &snaplen.to_string(),
                "-U",
                "--immediate-mode",
                // a 32 MiB ring: the TCP transfers burst faster than tcpdump writes on 2 cores
                "-B",
                "32768",
                "-Z",
                "root",
                "-w",
                &p,
            ],
        )?;
        let end = Instant::now() + Duration::from_secs(15);
        loop {
            if proc.stderr_text().contains("listening on") {
                return Ok(Capture { proc, pcap });
            }
            if let Some(st) = self.procs.try_status(&proc) {
                return Err(err!("tcpdump exited ({st}): {}", proc.stderr_tail(10)));
            }
            if Instant::now() >= end {
                return Err(err!(
                    "tcpdump is not listening after 15 s: {}",
                    proc.stderr_tail(10)
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stop a capture (after a second for tcpdump to drain its buffer); the pcap's path.
    pub fn stop_capture(&self, c: &Capture) -> Result<PathBuf> {
        std::thread::sleep(Duration::from_millis(1000));
        self.procs.stop(&c.proc, Duration::from_secs(5));
        if c.pcap.is_file() {
            Ok(c.pcap.clone())
        } else {
            Err(err!(
                "tcpdump wrote no {}: {}",
                c.pcap.display(),
                c.proc.stderr_tail(10)
            ))
        }
    }

    /// `ping -c COUNT -i INTERVAL -W 1 -w DEADLINE DST` in `node`.
    pub fn ping(
        &self,
        node: Node,
        dst: &str,
        count: u32,
        interval: f64,
        deadline_s: u32,
    ) -> Result<Ping> {
        let o = self.exec(
            node,
            &[
                "ping",
                "-n",
                "-c",
                &count.to_string(),
                "-i",
                &format!("{interval}"),
                "-W",
                "1",
                "-w",
                &deadline_s.to_string(),
                dst,
            ],
        )?;
        parse_ping(&o.stdout).ok_or_else(|| err!("cannot read the summary of {o}"))
    }

    /// Resolve every next hop the gateways use, with kernel pings, before xsecd starts.
    ///
    /// xsecd takes next hops from the kernel's neighbour table; a packet whose next hop is not
    /// resolved yet is dropped (`forward.no_neighbour`) while the kernel resolves it. Tests
    /// that count exact deliveries call this first. It sends ICMP in clear between the
    /// gateways, so it belongs before any capture of the middle link.
    pub fn warm_neighbours(&self) -> Result<()> {
        use addr::*;
        let mut probes = vec![
            (Node::GwA, HOST_A),
            (Node::GwA, HOST_A6),
            (Node::GwB, HOST_B),
            (Node::GwB, HOST_B6),
        ];
        match self.opts.wan {
            Wan::Direct => probes.extend([
                (Node::GwA, GWB_WAN),
                (Node::GwA, GWB_WAN6),
                (Node::GwB, GWA_WAN),
                (Node::GwB, GWA_WAN6),
            ]),
            Wan::Nat => probes.extend([(Node::GwA, NAT_INSIDE), (Node::GwB, GWA_WAN)]),
        }
        for (node, dst) in probes {
            let p = self.ping(node, dst, 1, 0.2, 5)?;
            if p.received == 0 {
                return Err(err!(
                    "{} cannot reach {dst} by kernel forwarding:\n{}",
                    self.ns(node),
                    p.output
                ));
            }
        }
        Ok(())
    }

    /// MAC address of an interface.
    pub fn mac(&self, node: Node, ifname: &str) -> Result<String> {
        let o = self
            .exec(node, &["cat", &format!("/sys/class/net/{ifname}/address")])?
            .check()?;
        Ok(o.stdout.trim().to_owned())
    }

    /// Whether an XDP program is attached to `ifname` (`ip -d link show`).
    pub fn xdp_attached(&self, node: Node, ifname: &str) -> Result<bool> {
        let o = self
            .exec(node, &["ip", "-d", "link", "show", ifname])?
            .check()?;
        Ok(o.stdout.contains("xdp") || o.stdout.contains("prog/xdp"))
    }

    /// Tear everything down now (what `Drop` does).
    pub fn down(&mut self) {
        if self.keep {
            eprintln!(
                "xsec-lab: keeping namespaces {} and their processes (work folder {}); \
                 remove them with `ip netns del NAME` after stopping the processes",
                self.namespaces.join(" "),
                self.workdir.display()
            );
            self.namespaces.clear();
            return;
        }
        self.procs.kill_all(Duration::from_secs(5));
        for ns in self.namespaces.drain(..).rev() {
            delete_namespace(&ns);
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.down();
    }
}

/// Read ping's `N packets transmitted, M received` line.
pub fn parse_ping(out: &str) -> Option<Ping> {
    let line = out.lines().find(|l| l.contains("packets transmitted"))?;
    let mut nums = line
        .split(',')
        .map(|part| part.split_whitespace().next().and_then(|n| n.parse().ok()));
    let transmitted = nums.next()??;
    let received = nums.next()??;
    Some(Ping {
        transmitted,
        received,
        output: out.to_owned(),
    })
}

/// Parse an address (panics only on the lab's own constants).
pub fn ip_of(s: &str) -> IpAddr {
    s.parse()
        .unwrap_or_else(|_| panic!("{s} is not an IP address"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ping_summary() {
        let out = "PING 10.2.0.10 (10.2.0.10) 56(84) bytes of data.\n\
            64 bytes from 10.2.0.10: icmp_seq=1 ttl=62 time=0.1 ms\n\n\
            --- 10.2.0.10 ping statistics ---\n\
            3 packets transmitted, 2 received, 33.3333% packet loss, time 402ms\n";
        let p = parse_ping(out).expect("parsed");
        assert_eq!((p.transmitted, p.received), (3, 2));
        assert!(parse_ping("nothing").is_none());
    }

    #[test]
    fn namespace_names() {
        let o = TopoOptions::new("xsec-t1-2");
        assert_eq!(o.queues, 1);
        assert_eq!(Node::GwB.suffix(), "gwB");
    }
}
