//! `xsecctl`: operate a running `xsecd` through its control socket
//! (docs/control-protocol.md). Human tables by default, `--json` for scripts.

use clap::{Args, Parser, Subcommand};
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};
use xsec_dataplane::wire::pcap::{self, LinkType};
use xsecd::control;
use xsecd::control::client::{self, ClientError};

/// Operate a running xsecd: show SAs, policies and counters, change SAs and policies live,
/// test the SPD, trace packets, export metrics.
#[derive(Debug, Parser)]
#[command(name = "xsecctl", version)]
struct Cli {
    /// The control socket (default: $XSEC_SOCKET, else /run/xsec/xsecd.sock).
    #[arg(long, global = true, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// Print the daemon's JSON answer instead of a table.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// The daemon: version, uptime, configuration, workers.
    Status,
    /// Show SAs, policies, workers, interfaces or counters.
    #[command(subcommand)]
    Show(Show),
    /// Add an SA pair or a policy (live; validated like a configuration file).
    #[command(subcommand)]
    Add(Add),
    /// Remove an SA pair or a policy.
    #[command(subcommand)]
    Del(Del),
    /// Move a policy to another position in the SPD.
    #[command(subcommand)]
    Move(Move),
    /// Replace the configuration: validate all of CONFIG, apply only what changed, or
    /// nothing and say why.
    Reload {
        config: PathBuf,
        /// Say what the reload would change (or why it would be refused), apply nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Policy tools.
    #[command(subcommand)]
    Policy(PolicyCmd),
    /// Reserve an inbound SPI that no installed SA uses and no other client holds (for a key
    /// manager that installs the SA later); the reservation ends when it expires or an SA
    /// with the SPI is installed.
    AllocSpi {
        /// Seconds the reservation holds (1-3600).
        #[arg(long, default_value_t = 60)]
        lifetime: u64,
        /// Lowest SPI (default 0xc0000000, as strongSwan's spi_min); hex with 0x.
        #[arg(long, value_parser = parse_u32)]
        min: Option<u32>,
        /// Highest SPI (default 0xcfffffff).
        #[arg(long, value_parser = parse_u32)]
        max: Option<u32>,
    },
    /// Copy the packets of one policy or SA (plaintext, before encryption and after
    /// decryption) to a pcap file.
    Trace(TraceArgs),
    /// Live rates per SA and per worker.
    Monitor {
        /// Seconds between updates.
        #[arg(long, default_value_t = 1.0)]
        interval: f64,
        /// Stop after this many updates (0 = until interrupted).
        #[arg(long, default_value_t = 0)]
        count: u64,
    },
    /// OpenMetrics text of every counter.
    Metrics,
    /// Every SA and policy of the store with its client tag and attributes (no keys; their
    /// lengths), as JSON: what a restarting key manager rebuilds its view from.
    Dump {
        /// Only this client's objects.
        #[arg(long)]
        client: Option<String>,
    },
    /// Apply store operations from a JSON file (`-`: standard input) all or nothing: a list
    /// of `{"command": "add-sa", "args": {...}}` (docs/control-protocol.md). Keys belong in
    /// the file, never on the command line.
    Batch {
        file: PathBuf,
        /// The client tag the objects belong to.
        #[arg(long, default_value = "xsecctl")]
        client: String,
    },
    /// Send ICMP echo requests from the gateway itself through the outbound SPD: a check of
    /// a tunnel from inside (only replies that come back decrypted count). Exit status 1
    /// when no reply came.
    Ping {
        /// The destination: a host behind a peer.
        dst: String,
        /// The source: an address of this gateway (default: the protected interface's).
        #[arg(long = "from", short = 'I')]
        src: Option<String>,
        /// Echo requests.
        #[arg(short, long, default_value_t = 3)]
        count: u32,
        /// Seconds between two requests.
        #[arg(short, long, default_value_t = 1.0)]
        interval: f64,
        /// Seconds each request waits for its reply.
        #[arg(short = 'W', long, default_value_t = 1.0)]
        timeout: f64,
        /// Echo data bytes.
        #[arg(short, long, default_value_t = 56)]
        size: u16,
    },
    /// The IKE daemon (xsec-ike): its IKE and Child SAs and connections; start, stop,
    /// rekey, reload. Talks to xsec-ike's socket (`--ike-socket`).
    Ike(IkeArgs),
    /// Print SA lifetime and rekey events as they happen (one JSON object per line), and
    /// the events clients publish (xsec-ike: IKE and Child SAs up, down, rekeyed).
    Events {
        /// Stop after this many events (0 = until interrupted).
        #[arg(long, default_value_t = 0)]
        count: u64,
        /// Stop after this many seconds (0 = never).
        #[arg(long, default_value_t = 0)]
        seconds: u64,
    },
}

#[derive(Debug, Subcommand)]
enum Show {
    /// SAs: SPI, direction, mode, peer, encapsulation, algorithms, key lengths, sequence
    /// numbers, replay window, lifetimes, packets, bytes, drops, owning worker.
    Sa {
        /// Only this SPI (decimal or 0x-hex).
        #[arg(long)]
        spi: Option<String>,
        /// Drops by reason.
        #[arg(long)]
        counters: bool,
    },
    /// The ordered SPD of each direction.
    Policy {
        /// Hit counters.
        #[arg(long)]
        counters: bool,
    },
    Workers,
    Interfaces,
    /// Counters per worker and per drop reason.
    Counters,
}

#[derive(Debug, Subcommand)]
enum Add {
    /// FILE (or - for stdin) holds one [[sa]] table, as in the configuration file. Keys go
    /// in the file, never on the command line.
    Sa { file: PathBuf },
    /// From FILE (one [[policy]] table) or from the options.
    Policy(Box<PolicyArgs>),
}

#[derive(Debug, Args)]
struct PolicyArgs {
    /// A file holding one [[policy]] table (- for stdin); or use the options below.
    file: Option<PathBuf>,
    /// Position in the SPD, 1 = first (default: last).
    #[arg(long)]
    position: Option<usize>,
    #[arg(long)]
    name: Option<String>,
    /// out, in or both.
    #[arg(long)]
    direction: Option<String>,
    #[arg(long)]
    local: Option<String>,
    #[arg(long)]
    remote: Option<String>,
    #[arg(long)]
    protocol: Option<String>,
    #[arg(long)]
    local_port: Option<String>,
    #[arg(long)]
    remote_port: Option<String>,
    /// protect, bypass or discard.
    #[arg(long)]
    action: Option<String>,
    /// The SA pair of a protect policy.
    #[arg(long)]
    sa: Option<String>,
}

#[derive(Debug, Subcommand)]
enum Del {
    Sa { name: String },
    Policy { name: String },
}

#[derive(Debug, Subcommand)]
enum Move {
    Policy {
        name: String,
        /// New position, 1 = first.
        #[arg(long)]
        position: usize,
    },
}

#[derive(Debug, Subcommand)]
enum PolicyCmd {
    /// Which policies match a described packet: the first, and all of them by disposition,
    /// split by port ranges (ICMP: type and code ranges) where the answer differs. Asks the
    /// running daemon, or with --config tests a configuration file (no daemon, no root).
    Test {
        #[arg(long, value_name = "in|out")]
        dir: String,
        /// any, a name (tcp, udp, icmp, ipv6-icmp, ...) or a number.
        #[arg(long, default_value = "any")]
        proto: String,
        /// Our side: A, A:port, A:lo-hi, A:any, [v6]:port. ICMP: A:type.
        #[arg(long)]
        local: String,
        /// The peer's side, likewise. ICMP: B:code.
        #[arg(long)]
        remote: String,
        /// Test this configuration file instead of the daemon's running policies.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// The test's name, printed with its results.
        #[arg(long)]
        name: Option<String>,
        /// Beside the table, one record per result: the test, protocol, direction,
        /// addresses, first match and the matching PROTECT/BYPASS/DISCARD policies.
        #[arg(long)]
        records: bool,
    },
}

#[derive(Debug, Args)]
struct TraceArgs {
    #[arg(long, conflicts_with = "sa", required_unless_present = "sa")]
    policy: Option<String>,
    /// SPI of the SA (inbound: packets it decrypted; outbound: packets it will encrypt).
    #[arg(long)]
    sa: Option<String>,
    /// Stop after this many packets.
    #[arg(long, default_value_t = 100)]
    count: u64,
    /// Stop after this many seconds (0 = only the count stops it).
    #[arg(long, default_value_t = 0)]
    seconds: u64,
    #[arg(long)]
    pcap: PathBuf,
}

#[derive(Debug, Args)]
struct IkeArgs {
    /// xsec-ike's control socket (default: $XSEC_IKE_SOCKET, else /run/xsec/xsec-ike.sock).
    #[arg(long, value_name = "PATH")]
    ike_socket: Option<PathBuf>,
    #[command(subcommand)]
    cmd: IkeCmd,
}

#[derive(Debug, Subcommand)]
enum IkeCmd {
    /// IKE SAs and their Child SAs: identities, addresses, NAT, algorithms and key lengths,
    /// SPIs, selectors, ages, rekey times, counters (as `swanctl --list-sas`).
    ListSas,
    /// The configured connections and children (no secrets: their lengths).
    ListConns,
    /// Start the connection NAME (an IKE SA and its first Child SA).
    Initiate { name: String },
    /// Delete the IKE SAs of connection NAME and their Child SAs.
    Terminate { name: String },
    /// Rekey the Child SAs of connection NAME (only CHILD with --child), or its IKE SA
    /// with --ike.
    Rekey {
        name: String,
        #[arg(long)]
        child: Option<String>,
        #[arg(long)]
        ike: bool,
    },
    /// Read the configuration file again: new connections start, removed ones are
    /// deleted, IKE SAs of the others stay up.
    Reload,
    /// Message counters: received, sent, dropped by reason, COOKIEs.
    Stats,
}

/// The library's client, with xsecctl's exit codes: 2 when the daemon could not be asked,
/// 1 when it said no.
struct Client(client::Client);

type Res<T> = Result<T, (u8, String)>;

fn exit_code(e: ClientError) -> (u8, String) {
    match e {
        ClientError::Io(m) => (2, m),
        ClientError::Refused {
            kind,
            message,
            detail,
        } => {
            let mut msg = format!("{kind}: {message}");
            if let Some(d) = detail.filter(|d| !d.is_array()) {
                msg.push_str(&format!(
                    "\n{}",
                    serde_json::to_string_pretty(&d).unwrap_or_default()
                ));
            }
            (1, msg)
        }
    }
}

impl Client {
    fn connect(path: &Path) -> Res<Client> {
        client::Client::connect(path).map(Client).map_err(exit_code)
    }

    fn send(&mut self, cmd: &str, args: Value) -> Res<u64> {
        self.0.send(cmd, args).map_err(exit_code)
    }

    fn recv(&mut self, wait: Duration) -> Res<Value> {
        self.0.recv(wait).map_err(exit_code)
    }

    /// One request, one answer: the result, or the daemon's error.
    fn call(&mut self, cmd: &str, args: Value) -> Res<Value> {
        self.0.call(cmd, args).map_err(exit_code)
    }
}

fn answer(v: Value) -> Res<Value> {
    client::answer(v).map_err(exit_code)
}

/// Every page of `dump`, as one object; started again if the store changed meanwhile (its
/// generation moved), a few times at most.
fn dump_all(c: &mut Client, client: Option<&str>) -> Res<Value> {
    for _ in 0..5 {
        let (mut sas, mut policies) = (vec![], vec![]);
        let mut after = Value::Null;
        let mut generation = None;
        loop {
            let mut args = json!({"client": client, "limit": 1000});
            if !after.is_null() {
                args["after"] = after;
            }
            let mut page = c.call("dump", args)?;
            if generation.is_some_and(|g| g != page["generation"]) {
                generation = None;
                break;
            }
            generation = Some(page["generation"].clone());
            for (k, out) in [("sas", &mut sas), ("policies", &mut policies)] {
                if let Some(v) = page[k].as_array_mut() {
                    out.append(v);
                }
            }
            after = page["next"].take();
            if after.is_null() {
                break;
            }
        }
        if let Some(g) = generation {
            return Ok(json!({"generation": g, "sas": sas, "policies": policies}));
        }
    }
    Err((
        2,
        "dump: the store kept changing between pages; try again".into(),
    ))
}

/// A file (or `-`: standard input) that holds keys, in a buffer wiped when dropped (a file
/// is read in one allocation of its size).
fn read_secret_input(p: &Path) -> Res<zeroize::Zeroizing<Vec<u8>>> {
    if p == Path::new("-") {
        let mut v = zeroize::Zeroizing::new(Vec::with_capacity(1 << 20));
        std::io::stdin()
            .read_to_end(&mut v)
            .map_err(|e| (2, format!("stdin: {e}")))?;
        Ok(v)
    } else {
        std::fs::read(p)
            .map(zeroize::Zeroizing::new)
            .map_err(|e| (2, format!("{}: {e}", p.display())))
    }
}

fn read_input(p: &Path) -> Res<String> {
    if p == Path::new("-") {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .map_err(|e| (2, format!("stdin: {e}")))?;
        Ok(s)
    } else {
        std::fs::read_to_string(p).map_err(|e| (2, format!("{}: {e}", p.display())))
    }
}

/// A plain table: columns as wide as their widest cell.
fn table(head: &[&str], rows: &[Vec<String>]) -> String {
    let mut w: Vec<usize> = head.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if i < w.len() {
                w[i] = w[i].max(c.chars().count());
            }
        }
    }
    let line = |cells: Vec<String>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<width$}  ", width = w[i]));
            }
        }
        s.trim_end().to_owned() + "\n"
    };
    let mut out = line(head.iter().map(|s| s.to_string()).collect());
    for r in rows {
        out.push_str(&line(r.clone()));
    }
    out
}

fn s(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(x) => x.clone(),
        other => other.to_string(),
    }
}

fn encap(v: &Value) -> String {
    match v["type"].as_str() {
        Some("udp") => format!("udp {}→{}", s(&v["local_port"]), s(&v["remote_port"])),
        Some("ah") => "ah".into(),
        Some("ipcomp") => "ipcomp".into(),
        _ => "esp".into(),
    }
}

fn limit(v: &Value) -> String {
    let mut parts = vec![];
    if let Some(t) = v["time_s"].as_f64() {
        parts.push(format!("{t:.0}s"));
    }
    if let Some(b) = v["bytes"].as_u64() {
        parts.push(format!("{b}B"));
    }
    if let Some(p) = v["packets"].as_u64() {
        parts.push(format!("{p}p"));
    }
    if parts.is_empty() {
        "-".into()
    } else {
        parts.join("/")
    }
}

fn print_sas(v: &Value, counters: bool) {
    let rows: Vec<Vec<String>> = v
        .as_array()
        .into_iter()
        .flatten()
        .map(|x| {
            vec![
                s(&x["name"]),
                // hex as XFRM and strongSwan print it, decimal as the appliances configure it
                format!("{} ({})", s(&x["spi_hex"]), s(&x["spi"])),
                s(&x["direction"]),
                s(&x["mode"]),
                s(&x["peer"]),
                encap(&x["encap"]),
                if x["protocol"] == "ah" {
                    s(&x["integrity"])
                } else if x["protocol"] == "ipcomp" {
                    s(&x["compression"])
                } else {
                    format!("{}/{}", s(&x["encryption"]), s(&x["integrity"]))
                },
                format!("{}/{}", s(&x["enc_key_bits"]), s(&x["auth_key_bits"])),
                s(&x["seq"]),
                if x["direction"] == "in" {
                    format!(
                        "{}/{}",
                        s(&x["replay"]["received_in_window"]),
                        s(&x["replay"]["window"])
                    )
                } else {
                    "-".into()
                },
                format!(
                    "{:.0}s {}/{}",
                    x["lifetime"]["age_s"].as_f64().unwrap_or(0.0),
                    limit(&x["lifetime"]["soft"]),
                    limit(&x["lifetime"]["hard"])
                ),
                s(&x["packets"]),
                s(&x["bytes"]),
                s(&x["drops"]),
                s(&x["worker"]),
            ]
        })
        .collect();
    print!(
        "{}",
        table(
            &[
                "NAME",
                "SPI",
                "DIR",
                "MODE",
                "PEER",
                "ENCAP",
                "ALGORITHMS",
                "KEY BITS",
                "SEQ",
                "REPLAY",
                "LIFETIME used soft/hard",
                "PACKETS",
                "BYTES",
                "DROPS",
                "WORKER"
            ],
            &rows
        )
    );
    if counters {
        for x in v.as_array().into_iter().flatten() {
            let nz: Vec<String> = x["drop_reasons"]
                .as_object()
                .into_iter()
                .flatten()
                .filter(|(_, n)| n.as_u64() != Some(0))
                .map(|(r, n)| format!("{r}={n}"))
                .collect();
            if !nz.is_empty() {
                println!(
                    "{} {} drops: {}",
                    s(&x["name"]),
                    s(&x["direction"]),
                    nz.join(" ")
                );
            }
        }
    }
}

fn print_policies(v: &Value, counters: bool) {
    for dir in ["out", "in"] {
        println!("{} SPD:", if dir == "out" { "Outbound" } else { "Inbound" });
        let rows: Vec<Vec<String>> = v[dir]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| {
                let mut r = vec![
                    s(&p["position"]),
                    s(&p["name"]),
                    s(&p["local"]),
                    s(&p["remote"]),
                    s(&p["proto"]),
                    s(&p["local_port"]),
                    s(&p["remote_port"]),
                    s(&p["action"]),
                    s(&p["sa"]),
                ];
                if counters {
                    r.push(s(&p["hits"]));
                }
                r
            })
            .collect();
        let mut head = vec![
            "#", "NAME", "LOCAL", "REMOTE", "PROTO", "LPORT", "RPORT", "ACTION", "SA",
        ];
        if counters {
            head.push("HITS");
        }
        print!("{}", table(&head, &rows));
    }
    println!(
        "no policy matches: inbound {}, outbound {}",
        s(&v["inbound_default"]),
        s(&v["outbound_default"])
    );
    if counters {
        println!(
            "(inbound hits of protect policies count plaintext that arrived unprotected and was \
             dropped; decapsulated traffic is counted on its SA: xsecctl show sa)"
        );
    }
}

fn run(cli: Cli) -> Res<()> {
    if let Cmd::Policy(PolicyCmd::Test {
        dir,
        proto,
        local,
        remote,
        config: Some(file),
        name,
        records,
    }) = &cli.cmd
    {
        let v = policy_test_file(file, dir, proto, local, remote, name.as_deref())?;
        policy_test_out(&v, cli.json, *records);
        return Ok(());
    }
    if let Cmd::Ike(a) = &cli.cmd {
        return ike(a, cli.json);
    }
    let sock = cli.socket.clone().unwrap_or_else(control::default_socket);
    let mut c = Client::connect(&sock)?;
    let json_out = cli.json;
    let print_json =
        |v: &Value| println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
    match cli.cmd {
        Cmd::Ike(a) => ike(&a, json_out)?,
        Cmd::Status => {
            let v = c.call("hello", json!({}))?;
            if json_out {
                print_json(&v);
            } else {
                println!(
                    "xsecd {} (pid {}, protocol {}), up {:.0} s\nconfiguration {} (generation {}), {} worker(s), {} SA pair(s)",
                    s(&v["version"]),
                    s(&v["pid"]),
                    s(&v["protocol"]),
                    v["uptime_s"].as_f64().unwrap_or(0.0),
                    s(&v["config"]),
                    s(&v["generation"]),
                    s(&v["workers"]),
                    s(&v["sa_pairs"])
                );
            }
        }
        Cmd::Show(sh) => match sh {
            Show::Sa { spi, counters } => {
                let v = c.call("show-sa", json!({"spi": spi, "counters": counters}))?;
                if json_out {
                    print_json(&v)
                } else {
                    print_sas(&v, counters)
                }
            }
            Show::Policy { counters } => {
                let v = c.call("show-policy", json!({"counters": counters}))?;
                if json_out {
                    print_json(&v)
                } else {
                    print_policies(&v, counters)
                }
            }
            Show::Workers => {
                let v = c.call("show-workers", json!({}))?;
                if json_out {
                    print_json(&v);
                } else {
                    let rows: Vec<Vec<String>> = v
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|w| {
                            vec![
                                s(&w["id"]),
                                s(&w["queue"]),
                                s(&w["core"]),
                                s(&w["sas"]),
                                s(&w["rx"]),
                                s(&w["tx"]),
                                s(&w["encap_packets"]),
                                s(&w["decap_packets"]),
                                s(&w["drops"]),
                                format!("{:.1}", w["busy_pct"].as_f64().unwrap_or(0.0)),
                            ]
                        })
                        .collect();
                    print!(
                        "{}",
                        table(
                            &[
                                "WORKER", "QUEUE", "CORE", "SAS", "RX", "TX", "ENCAP", "DECAP",
                                "DROPS", "BUSY%"
                            ],
                            &rows
                        )
                    );
                }
            }
            Show::Interfaces => {
                let v = c.call("show-interfaces", json!({}))?;
                if json_out {
                    print_json(&v);
                } else {
                    let mut rows = vec![];
                    for i in v.as_array().into_iter().flatten() {
                        for q in i["queues"].as_array().into_iter().flatten() {
                            rows.push(vec![
                                s(&i["name"]),
                                s(&i["role"]),
                                s(&i["ifindex"]),
                                s(&i["xdp_mode"]),
                                s(&q["queue"]),
                                s(&q["worker"]),
                                s(&q["xdp"]["rx"]),
                                s(&q["xdp"]["no_socket"]),
                                s(&q["socket"]["rx_dropped"]),
                                s(&q["socket"]["rx_ring_full"]),
                            ]);
                        }
                    }
                    print!(
                        "{}",
                        table(
                            &[
                                "INTERFACE",
                                "ROLE",
                                "IFINDEX",
                                "XDP",
                                "QUEUE",
                                "WORKER",
                                "XDP RX",
                                "NO SOCKET (DROPPED)",
                                "SOCK DROPPED",
                                "RX RING FULL"
                            ],
                            &rows
                        )
                    );
                }
            }
            Show::Counters => {
                let v = c.call("show-counters", json!({}))?;
                if json_out {
                    print_json(&v);
                } else {
                    let t = &v["total"];
                    let kv = |x: &Value| -> String {
                        x.as_object()
                            .into_iter()
                            .flatten()
                            .map(|(k, n)| format!("{k}={}", s(n)))
                            .collect::<Vec<_>>()
                            .join(" ")
                    };
                    println!("engine: {}", kv(&t["engine"]));
                    println!("forwarding: {}", kv(&t["forward"]));
                    println!("reassembly: {}", kv(&t["reassembly"]));
                    match v["guard_dropped"].as_u64() {
                        Some(n) => println!("forward guard: {n} dropped"),
                        None => println!("forward guard: none"),
                    }
                    // the XDP program's classes per side and queue (zero columns left out)
                    let xdp: Vec<&Value> = v["xdp"].as_array().into_iter().flatten().collect();
                    let classes: Vec<String> = xdp
                        .first()
                        .and_then(|r| r.as_object())
                        .into_iter()
                        .flatten()
                        .map(|(k, _)| k.clone())
                        .filter(|k| k != "side" && k != "queue")
                        .filter(|k| xdp.iter().any(|r| r[k.as_str()].as_u64().unwrap_or(0) > 0))
                        .collect();
                    if !xdp.is_empty() {
                        let mut head: Vec<String> = vec!["XDP SIDE".into(), "QUEUE".into()];
                        head.extend(classes.iter().map(|c| c.to_uppercase()));
                        let rows: Vec<Vec<String>> = xdp
                            .iter()
                            .map(|r| {
                                let mut row = vec![s(&r["side"]), s(&r["queue"])];
                                row.extend(classes.iter().map(|c| s(&r[c.as_str()])));
                                row
                            })
                            .collect();
                        let head: Vec<&str> = head.iter().map(String::as_str).collect();
                        print!("{}", table(&head, &rows));
                    }
                    let rows: Vec<Vec<String>> = t["drops"]
                        .as_object()
                        .into_iter()
                        .flatten()
                        .filter(|(_, n)| n.as_u64() != Some(0))
                        .map(|(r, n)| {
                            let mut row = vec![r.clone(), s(n)];
                            for w in v["workers"].as_array().into_iter().flatten() {
                                row.push(s(&w["drops"][r]));
                            }
                            row
                        })
                        .collect();
                    if rows.is_empty() {
                        println!("drops: none");
                    } else {
                        let nw = v["workers"].as_array().map_or(0, Vec::len);
                        let mut head: Vec<String> = vec!["DROP REASON".into(), "TOTAL".into()];
                        head.extend((0..nw).map(|i| format!("W{i}")));
                        let head: Vec<&str> = head.iter().map(String::as_str).collect();
                        print!("{}", table(&head, &rows));
                    }
                    println!("control: {}", kv(&v["control"]));
                }
            }
        },
        Cmd::Add(Add::Sa { file }) => {
            let text = zeroize::Zeroizing::new(read_input(&file)?);
            let v = c.call("config-add-sa", json!({"text": text.as_str()}))?;
            change_out(&v, json_out);
        }
        Cmd::Add(Add::Policy(a)) => {
            let text = match &a.file {
                Some(f) => read_input(f)?,
                None => policy_toml(&a)?,
            };
            let v = c.call(
                "config-add-policy",
                json!({"text": text, "position": a.position}),
            )?;
            change_out(&v, json_out);
        }
        Cmd::Del(Del::Sa { name }) => {
            change_out(&c.call("config-del-sa", json!({"name": name}))?, json_out)
        }
        Cmd::Del(Del::Policy { name }) => change_out(
            &c.call("config-del-policy", json!({"name": name}))?,
            json_out,
        ),
        Cmd::Move(Move::Policy { name, position }) => change_out(
            &c.call(
                "config-move-policy",
                json!({"name": name, "position": position}),
            )?,
            json_out,
        ),
        Cmd::Reload { config, dry_run } => {
            let text = zeroize::Zeroizing::new(read_input(&config)?);
            let path = std::fs::canonicalize(&config).unwrap_or(config);
            let v = c.call(
                "reload",
                json!({"path": path, "text": text.as_str(), "dry_run": dry_run}),
            )?;
            change_out(&v, json_out);
        }
        Cmd::Policy(PolicyCmd::Test {
            dir,
            proto,
            local,
            remote,
            config: _,
            name,
            records,
        }) => {
            let v = c.call(
                "policy-test",
                json!({"direction": dir, "proto": proto, "local": local, "remote": remote,
                       "name": name}),
            )?;
            policy_test_out(&v, json_out, records);
        }
        Cmd::Dump { client } => print_json(&dump_all(&mut c, client.as_deref())?),
        Cmd::Ping {
            dst,
            src,
            count,
            interval,
            timeout,
            size,
        } => {
            let ms = |s: f64| (s * 1000.0).round().max(0.0) as u64;
            let v = c.call(
                "ping",
                json!({"dst": dst, "src": src, "count": count, "size": size,
                       "interval_ms": ms(interval), "timeout_ms": ms(timeout)}),
            )?;
            ping_out(&v, json_out);
            if v["received"].as_u64() == Some(0) {
                return Err((1, format!("no reply from {dst}")));
            }
        }
        Cmd::Batch { file, client } => {
            // the keys in the file stay in this one buffer (and the request's frame), both
            // wiped: the operations are checked as JSON text and sent as they are
            let text = read_secret_input(&file)?;
            serde_json::from_slice::<Vec<serde::de::IgnoredAny>>(&text).map_err(|e| {
                (
                    2,
                    format!("{}: not a JSON list of operations: {e}", file.display()),
                )
            })?;
            c.call("hello", json!({"client": client}))?;
            let mut args = zeroize::Zeroizing::new(Vec::with_capacity(text.len() + 8));
            args.extend_from_slice(b"{\"ops\":");
            args.extend_from_slice(&text);
            args.push(b'}');
            let v = c.0.call_with_raw_args("batch", &args).map_err(exit_code)?;
            change_out(&v, json_out);
        }
        Cmd::AllocSpi { lifetime, min, max } => {
            let v = c.call(
                "alloc-spi",
                json!({"lifetime_s": lifetime, "min": min, "max": max}),
            )?;
            if json_out {
                print_json(&v);
            } else {
                println!(
                    "spi {} ({}) reserved for {} s",
                    s(&v["spi_hex"]),
                    s(&v["spi"]),
                    s(&v["expires_in_s"])
                );
            }
        }
        Cmd::Trace(t) => trace(&mut c, &t, json_out)?,
        Cmd::Monitor { interval, count } => monitor(&mut c, interval, count)?,
        Cmd::Metrics => {
            let v = c.call("metrics", json!({}))?;
            if json_out {
                print_json(&v)
            } else {
                print!("{}", s(&v["text"]))
            }
        }
        Cmd::Events { count, seconds } => {
            let id = c.send("subscribe", json!({}))?;
            let end = (seconds > 0).then(|| Instant::now() + Duration::from_secs(seconds));
            let mut n = 0;
            loop {
                if end.is_some_and(|e| Instant::now() >= e) || (count > 0 && n >= count) {
                    break;
                }
                let v = match c.recv(Duration::from_millis(500)) {
                    Ok(v) => v,
                    Err((_, e)) if e.contains("idle") => continue,
                    Err(e) => return Err(e),
                };
                if v["id"] != json!(id) {
                    continue;
                }
                if v.get("ok").is_some() {
                    answer(v)?;
                    break;
                }
                if let Some(ev) = v["stream"].get("event") {
                    n += 1;
                    println!("{ev}");
                    let _ = std::io::stdout().flush();
                }
            }
        }
    }
    Ok(())
}

fn change_out(v: &Value, json_out: bool) {
    if json_out {
        println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
        return;
    }
    let list = |x: &Value| {
        let v: Vec<String> = x.as_array().into_iter().flatten().map(s).collect();
        if v.is_empty() {
            "-".into()
        } else {
            v.join(", ")
        }
    };
    let sa = &v["sas"];
    println!(
        "{} (generation {}): SAs added {}, removed {}, changed {}, unchanged {}",
        if v["applied"] == json!(false) {
            "dry run, nothing applied; would apply"
        } else {
            "applied"
        },
        s(&v["generation"]),
        list(&sa["added"]),
        list(&sa["removed"]),
        list(&sa["changed"]),
        s(&sa["unchanged"])
    );
    for dir in ["out", "in"] {
        let p = &v["policies"][dir];
        println!(
            "{dir} policies: added {}, removed {}, changed {}{}",
            list(&p["added"]),
            list(&p["removed"]),
            list(&p["changed"]),
            if p["reordered"] == json!(true) {
                ", reordered"
            } else {
                ""
            }
        );
    }
    for w in v["warnings"].as_array().into_iter().flatten() {
        println!("warning: {}", s(w));
    }
}

/// `policy test --config FILE`: the file's SPD, compiled as xsecd would, tested here.
/// `ping`'s answer, as ping prints it.
fn ping_out(v: &Value, json_out: bool) {
    if json_out {
        println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
        return;
    }
    let s = |k: &str| v[k].as_str().unwrap_or("?").to_owned();
    let policy = match (
        v["policy"]["name"].as_str(),
        v["policy"]["disposition"].as_str(),
    ) {
        (Some(n), Some(d)) => format!("policy {n} ({d})"),
        (None, Some(d)) => format!("no policy ({d})"),
        _ => "no policy".to_owned(),
    };
    println!(
        "PING {} from {} via {policy}: {} data bytes",
        s("dst"),
        s("src"),
        v["size"]
    );
    for (i, r) in v["rtt_ms"].as_array().into_iter().flatten().enumerate() {
        match r.as_f64() {
            Some(ms) => println!("seq {i}: reply in {ms:.3} ms"),
            None => println!("seq {i}: no reply"),
        }
    }
    let (sent, got) = (
        v["sent"].as_u64().unwrap_or(0),
        v["received"].as_u64().unwrap_or(0),
    );
    let lost = (sent.saturating_sub(got) * 100)
        .checked_div(sent)
        .unwrap_or(0);
    print!(
        "--- {}: {sent} sent, {got} received, {lost}% lost",
        s("dst")
    );
    match (
        v["min_ms"].as_f64(),
        v["avg_ms"].as_f64(),
        v["max_ms"].as_f64(),
    ) {
        (Some(a), Some(b), Some(c)) => println!("; rtt min/avg/max {a:.3}/{b:.3}/{c:.3} ms"),
        _ => println!(),
    }
}

fn policy_test_file(
    file: &std::path::Path,
    dir: &str,
    proto: &str,
    local: &str,
    remote: &str,
    name: Option<&str>,
) -> Res<Value> {
    let cfg = xsecd::config::load(file).map_err(|e| (2, e.to_string()))?;
    let spd = cfg
        .spd
        .compile()
        .map_err(|e| (2, format!("{}: {e}", file.display())))?;
    let probe =
        control::policy_test::Probe::parse(dir, proto, local, remote, name).map_err(|m| (2, m))?;
    Ok(control::policy_test::run(&spd, &probe))
}

/// A policy test's answer: a table of its port (or ICMP type/code) ranges, and with
/// `records` one record per range in the appliances' terms.
fn policy_test_out(v: &Value, json_out: bool, records: bool) {
    if json_out {
        println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
        return;
    }
    let icmp = v["icmp"] == json!(true);
    let range = |p: &Value| match p.as_array() {
        Some(a) if a.len() == 2 && a[0] == a[1] => s(&a[0]),
        Some(a) if a.len() == 2 => format!("{}-{}", s(&a[0]), s(&a[1])),
        _ => "-".into(),
    };
    let names = |x: &Value| -> String {
        let v: Vec<String> = x.as_array().into_iter().flatten().map(s).collect();
        if v.is_empty() {
            "none".into()
        } else {
            v.join(",")
        }
    };
    let results: Vec<&Value> = v["results"].as_array().into_iter().flatten().collect();
    let rows: Vec<Vec<String>> = results
        .iter()
        .map(|r| {
            let by: Vec<String> = control::policy_test::DISPOSITIONS
                .iter()
                .filter(|d| r["by_disposition"].get(**d).is_some())
                .map(|d| format!("{d}: {}", names(&r["by_disposition"][*d])))
                .collect();
            vec![
                range(&r["local_ports"]),
                range(&r["remote_ports"]),
                s(&r["first"]),
                s(&r["disposition"]),
                by.join("; "),
            ]
        })
        .collect();
    let (l, r) = if icmp {
        ("ICMP TYPE", "ICMP CODE")
    } else {
        ("LOCAL PORTS", "REMOTE PORTS")
    };
    if let Some(n) = v["name"].as_str() {
        println!("test {n}:");
    }
    print!(
        "{}",
        table(&[l, r, "FIRST MATCH", "DISPOSITION", "ALL MATCHES"], &rows)
    );
    if !records {
        return;
    }
    for r in &results {
        let side = |addr: &Value, ports: &Value, what: &str| match ports {
            Value::Null => s(addr),
            p => format!("{} {what} {}", s(addr), range(p)),
        };
        let (lw, rw) = if icmp {
            ("type", "code")
        } else {
            ("port", "port")
        };
        println!();
        println!("test:         {}", v["name"].as_str().unwrap_or("-"));
        println!("protocol:     {}", s(&v["proto"]));
        let dir = match v["direction"].as_str() {
            Some("in") => "inbound",
            Some("out") => "outbound",
            _ => "-",
        };
        println!("direction:    {dir}");
        println!("local:        {}", side(&v["local"], &r["local_ports"], lw));
        println!(
            "remote:       {}",
            side(&v["remote"], &r["remote_ports"], rw)
        );
        println!(
            "first match:  {}",
            match r["first"].as_str() {
                Some(f) => format!("{f} (#{})", s(&r["first_position"])),
                None => format!("none ({})", s(&r["disposition"])),
            }
        );
        for d in control::policy_test::DISPOSITIONS {
            println!("{:<13} {}", format!("{d}:"), names(&r["by_disposition"][d]));
        }
    }
}

/// A 32-bit number, decimal or hex with `0x`.
fn parse_u32(v: &str) -> Result<u32, String> {
    let r = match v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
        Some(h) => u32::from_str_radix(h, 16),
        None => v.parse(),
    };
    r.map_err(|_| format!("{v:?} is not a 32-bit number (decimal, or hex with 0x)"))
}

fn toml_str(x: &str) -> String {
    let mut o = String::from("\"");
    for c in x.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            c if c.is_control() => o.push_str(&format!("\\u{:04x}", c as u32)),
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

fn policy_toml(a: &PolicyArgs) -> Res<String> {
    let mut t = String::from("[[policy]]\n");
    let name = a.name.as_ref().ok_or((
        2,
        "add policy: give FILE or at least --name, --local, --remote and --action".to_owned(),
    ))?;
    for (k, v) in [
        ("name", Some(name)),
        ("direction", a.direction.as_ref()),
        ("local", a.local.as_ref()),
        ("remote", a.remote.as_ref()),
        ("protocol", a.protocol.as_ref()),
        ("local_port", a.local_port.as_ref()),
        ("remote_port", a.remote_port.as_ref()),
        ("action", a.action.as_ref()),
        ("sa", a.sa.as_ref()),
    ] {
        if let Some(v) = v {
            t.push_str(&format!("{k} = {}\n", toml_str(v)));
        }
    }
    Ok(t)
}

fn trace(c: &mut Client, t: &TraceArgs, json_out: bool) -> Res<()> {
    let fail = |e: std::io::Error| (2, format!("{}: {e}", t.pcap.display()));
    let mut f = std::fs::File::create(&t.pcap).map_err(fail)?;
    f.write_all(&pcap::header(LinkType::RAW)).map_err(fail)?;
    let id = c.send(
        "trace",
        json!({"policy": t.policy, "sa": t.sa, "count": t.count, "seconds": t.seconds}),
    )?;
    let mut n = 0u64;
    loop {
        let v = match c.recv(Duration::from_secs(1)) {
            Ok(v) => v,
            Err((_, e)) if e.contains("idle") => continue,
            Err(e) => return Err(e),
        };
        if v["id"] != json!(id) {
            continue;
        }
        if v.get("ok").is_some() {
            let r = answer(v)?;
            if json_out {
                println!(
                    "{}",
                    json!({"captured": r["captured"], "written": n, "pcap": t.pcap})
                );
            } else {
                println!("{n} packet(s) written to {}", t.pcap.display());
            }
            return Ok(());
        }
        let p = &v["stream"]["packet"];
        let Some(data) = p["hex"].as_str().and_then(|h| hex::decode(h).ok()) else {
            continue;
        };
        let mut record = Vec::with_capacity(pcap::RECORD_HEADER_LEN + data.len());
        pcap::push_record(&mut record, p["time_us"].as_u64().unwrap_or(0), &data);
        f.write_all(&record)
            .and_then(|()| f.flush())
            .map_err(fail)?;
        n += 1;
    }
}

fn monitor(c: &mut Client, interval: f64, count: u64) -> Res<()> {
    let iv = Duration::from_secs_f64(interval.clamp(0.1, 3600.0));
    let mut prev: Option<(Instant, Value, Value)> = None;
    let mut n = 0;
    loop {
        let sas = c.call("show-sa", json!({}))?;
        let workers = c.call("show-workers", json!({}))?;
        let now = Instant::now();
        if let Some((t0, psas, pw)) = &prev {
            let dt = now.duration_since(*t0).as_secs_f64().max(1e-3);
            let find = |arr: &Value, key: (&Value, &Value)| -> Option<Value> {
                arr.as_array()?
                    .iter()
                    .find(|x| (&x["spi"], &x["direction"]) == key)
                    .cloned()
            };
            let rows: Vec<Vec<String>> = sas
                .as_array()
                .into_iter()
                .flatten()
                .map(|x| {
                    let old = find(psas, (&x["spi"], &x["direction"]));
                    let d = |k: &str| {
                        let a = x[k].as_u64().unwrap_or(0);
                        let b = old.as_ref().and_then(|o| o[k].as_u64()).unwrap_or(a);
                        a.saturating_sub(b) as f64 / dt
                    };
                    vec![
                        s(&x["name"]),
                        s(&x["spi_hex"]),
                        s(&x["direction"]),
                        format!("{:.0}", d("packets")),
                        format!("{:.3}", d("bytes") * 8.0 / 1e6),
                        format!("{:.0}", d("drops")),
                        s(&x["worker"]),
                    ]
                })
                .collect();
            let wrows: Vec<Vec<String>> = workers
                .as_array()
                .into_iter()
                .flatten()
                .map(|w| {
                    let old = pw
                        .as_array()
                        .and_then(|a| a.iter().find(|o| o["id"] == w["id"]).cloned());
                    let d = |k: &str| {
                        let a = w[k].as_u64().unwrap_or(0);
                        let b = old.as_ref().and_then(|o| o[k].as_u64()).unwrap_or(a);
                        a.saturating_sub(b) as f64 / dt
                    };
                    let busy = {
                        let l = d("loops");
                        if l > 0.0 {
                            100.0 * d("busy_loops") / l
                        } else {
                            0.0
                        }
                    };
                    vec![
                        s(&w["id"]),
                        format!("{:.0}", d("rx")),
                        format!("{:.0}", d("tx")),
                        format!("{:.0}", d("encap_packets")),
                        format!("{:.0}", d("decap_packets")),
                        format!("{:.0}", d("drops")),
                        format!("{busy:.1}"),
                    ]
                })
                .collect();
            print!("\x1b[2J\x1b[H");
            print!(
                "{}",
                table(
                    &["SA", "SPI", "DIR", "PKT/S", "MBIT/S", "DROP/S", "WORKER"],
                    &rows
                )
            );
            println!();
            print!(
                "{}",
                table(
                    &[
                        "WORKER", "RX/S", "TX/S", "ENCAP/S", "DECAP/S", "DROP/S", "BUSY%"
                    ],
                    &wrows
                )
            );
            let _ = std::io::stdout().flush();
            n += 1;
            if count > 0 && n >= count {
                return Ok(());
            }
        }
        prev = Some((now, sas, workers));
        std::thread::sleep(iv);
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err((code, msg)) => {
            eprintln!("xsecctl: {msg}");
            ExitCode::from(code)
        }
    }
}

/// `xsecctl ike ...`: one request to xsec-ike.
fn ike(a: &IkeArgs, json_out: bool) -> Res<()> {
    let path = a
        .ike_socket
        .clone()
        .or_else(|| std::env::var_os("XSEC_IKE_SOCKET").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("/run/xsec/xsec-ike.sock"));
    let (cmd, args) = match &a.cmd {
        IkeCmd::ListSas => ("list-sas", json!({})),
        IkeCmd::ListConns => ("list-conns", json!({})),
        IkeCmd::Initiate { name } => ("initiate", json!({ "conn": name })),
        IkeCmd::Terminate { name } => ("terminate", json!({ "conn": name })),
        IkeCmd::Rekey { name, child, ike } => {
            ("rekey", json!({ "conn": name, "child": child, "ike": ike }))
        }
        IkeCmd::Reload => ("reload", json!({})),
        IkeCmd::Stats => ("stats", json!({})),
    };
    let mut c = Client::connect(&path).map_err(|(code, m)| {
        (
            code,
            m.replace(
                "is xsecd running? see --socket",
                "is xsec-ike running? see --ike-socket",
            ),
        )
    })?;
    let v = c.call(cmd, args)?;
    if json_out {
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        return Ok(());
    }
    match &a.cmd {
        IkeCmd::ListSas => {
            let sas = v["sas"].as_array().cloned().unwrap_or_default();
            if sas.is_empty() {
                println!("no IKE SAs");
            }
            for sa in sas {
                let nat = match (sa["nat_local"].as_bool(), sa["nat_remote"].as_bool()) {
                    (Some(true), Some(true)) => " [NAT both]",
                    (Some(true), _) => " [NAT here]",
                    (_, Some(true)) => " [NAT peer]",
                    _ => "",
                };
                println!(
                    "{}: {}, IKEv2, {}_i{} {}_r{}",
                    s(&sa["conn"]),
                    s(&sa["state"]).to_uppercase(),
                    s(&sa["spi_i"]),
                    if sa["initiator"] == json!(true) {
                        "*"
                    } else {
                        ""
                    },
                    s(&sa["spi_r"]),
                    if sa["initiator"] == json!(false) {
                        "*"
                    } else {
                        ""
                    },
                );
                println!("  local  '{}' @ {}", s(&sa["local_id"]), s(&sa["local"]));
                println!(
                    "  remote '{}' @ {}{nat}",
                    s(&sa["remote_id"]),
                    s(&sa["remote"])
                );
                println!(
                    "  {} (keys: encryption {} bits, integrity {} bits)",
                    s(&sa["algorithms"]),
                    s(&sa["key_bits"]["encr"]),
                    s(&sa["key_bits"]["integ"])
                );
                println!(
                    "  established {}s ago, rekeying in {}s; retransmits {}, answered from cache {}, dropped: integrity {}, message ID {}, malformed {}",
                    s(&sa["established_s"]),
                    s(&sa["rekey_in_s"]),
                    s(&sa["retransmits_sent"]),
                    s(&sa["retransmits_answered"]),
                    s(&sa["dropped_integrity"]),
                    s(&sa["dropped_message_id"]),
                    s(&sa["dropped_malformed"])
                );
                for ch in sa["children"].as_array().into_iter().flatten() {
                    println!(
                        "  {}: INSTALLED, {}, reqid {}, {}SPIs: {}_i {}_o{}",
                        s(&ch["name"]),
                        s(&ch["mode"]).to_uppercase(),
                        s(&ch["reqid"]),
                        if ch["encap"] == json!(true) {
                            "ESP in UDP "
                        } else {
                            "ESP "
                        },
                        s(&ch["spi_in"]),
                        s(&ch["spi_out"]),
                        if ch["rekeying"] == json!(true) {
                            " (rekeying)"
                        } else {
                            ""
                        }
                    );
                    println!(
                        "    {} (keys: encryption {} bits, integrity {} bits), established {}s ago, rekeying in {}s, expires in {}s",
                        s(&ch["algorithms"]),
                        s(&ch["key_bits"]["encr"]),
                        s(&ch["key_bits"]["integ"]),
                        s(&ch["established_s"]),
                        s(&ch["rekey_in_s"]),
                        s(&ch["expire_in_s"])
                    );
                    let list = |k: &str| {
                        ch[k]
                            .as_array()
                            .map(|a| a.iter().map(s).collect::<Vec<_>>().join(" "))
                            .unwrap_or_default()
                    };
                    println!("    {} === {}", list("local_ts"), list("remote_ts"));
                }
            }
        }
        IkeCmd::ListConns => {
            for c in v["conns"].as_array().into_iter().flatten() {
                println!(
                    "{}: {}...{} IKEv2, dpd_delay {}s ({}), rekey_time {}s",
                    s(&c["name"]),
                    s(&c["local_addr"]),
                    s(&c["remote_addr"]),
                    s(&c["dpd_delay_s"]),
                    s(&c["dpd_action"]),
                    s(&c["rekey_time_s"])
                );
                println!(
                    "  local  '{}' psk ({} bytes)\n  remote '{}' psk\n  proposals: {}",
                    s(&c["local_id"]),
                    s(&c["psk_bytes"]),
                    s(&c["remote_id"]),
                    c["proposals"]
                        .as_array()
                        .map(|a| a.iter().map(s).collect::<Vec<_>>().join(", "))
                        .unwrap_or_default()
                );
                for ch in c["children"].as_array().into_iter().flatten() {
                    let list = |k: &str| {
                        ch[k]
                            .as_array()
                            .map(|a| a.iter().map(s).collect::<Vec<_>>().join(" "))
                            .unwrap_or_default()
                    };
                    println!(
                        "  {}: {}, reqid {}, start_action {}, rekey_time {}s, life_time {}s\n    esp: {}\n    {} === {}",
                        s(&ch["name"]),
                        s(&ch["mode"]).to_uppercase(),
                        s(&ch["reqid"]),
                        s(&ch["start_action"]),
                        s(&ch["rekey_time_s"]),
                        s(&ch["life_time_s"]),
                        list("esp_proposals"),
                        list("local_ts"),
                        list("remote_ts")
                    );
                }
                let w = &c["watchdog"];
                if !w.is_null() {
                    let from = if w["source"].is_null() {
                        String::new()
                    } else {
                        format!(" from {}", s(&w["source"]))
                    };
                    let rtt = w["last_rtt_ms"]
                        .as_f64()
                        .map_or(String::new(), |ms| format!(", last rtt {ms:.3} ms"));
                    let err = w["error"]
                        .as_str()
                        .map_or(String::new(), |e| format!(" ({e})"));
                    println!(
                        "  watchdog: {}{from} every {}s, timeout {}s, {} tries: {}{err}; sent {}, replies {}, lost {}, restarts {}{rtt}",
                        s(&w["host"]),
                        s(&w["interval_s"]),
                        s(&w["timeout_s"]),
                        s(&w["tries"]),
                        s(&w["state"]).to_uppercase(),
                        s(&w["sent"]),
                        s(&w["replies"]),
                        s(&w["lost"]),
                        s(&w["restarts"]),
                    );
                }
            }
        }
        IkeCmd::Initiate { name } => println!("initiating {name}: IKE SA {}", s(&v["ike"])),
        IkeCmd::Terminate { name } => println!("deleting {} IKE SA(s) of {name}", s(&v["started"])),
        IkeCmd::Rekey { name, .. } => println!("{} rekey(s) of {name} started", s(&v["started"])),
        IkeCmd::Reload => println!(
            "reloaded: {} connections, added {}, {} IKE SA(s) of removed connections deleted",
            s(&v["conns"]),
            s(&v["added"]),
            s(&v["terminated"])
        ),
        IkeCmd::Stats => {
            if let Some(o) = v.as_object() {
                for (k, x) in o {
                    println!("{k:<22} {}", s(x));
                }
            }
        }
    }
    Ok(())
}
