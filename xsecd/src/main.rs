//! `xsecd`: the xsec gateway daemon.

use clap::Parser;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use xsecd::daemon::{self, DaemonError, Options};

/// xsec's IPsec gateway: AF_XDP poll-mode workers running ESP on the configured interfaces.
#[derive(Debug, Parser)]
#[command(name = "xsecd", version)]
struct Args {
    /// The gateway configuration (TOML; see docs/config.md).
    #[arg(short, long)]
    config: PathBuf,
    /// Write counters as JSON to this file every `stats_interval_ms`.
    #[arg(long)]
    stats_file: Option<PathBuf>,
    /// The control socket (overrides `[control] socket`; default /run/xsec/xsecd.sock).
    #[arg(long, value_name = "PATH")]
    control: Option<PathBuf>,
    /// Validate the configuration and exit (0 = valid, 2 = invalid).
    #[arg(long)]
    check: bool,
    /// Install the forward guard for the configuration's interfaces (nftables: the kernel
    /// forwards nothing via them) and exit: for boot scripts, before xsecd first starts.
    #[arg(long, conflicts_with_all = ["check", "detach"])]
    install_guard: bool,
    /// Remove what xsecd leaves behind for the configuration's interfaces when it stops
    /// (the forward guard) and exit: the kernel forwards via them again, in clear.
    #[arg(long, conflicts_with = "check")]
    detach: bool,
    /// Benchmark backend: instead of attaching to the interfaces, feed the workers copies of
    /// this pcap's frames as if received on the unprotected side, endlessly; what they send
    /// is counted and dropped. Given several times, worker `i` replays file `i mod count`
    /// (traffic that RSS would have sent to its queue).
    #[arg(long, value_name = "PCAP")]
    replay_unprotected: Vec<PathBuf>,
    /// The same for the protected side.
    #[arg(long, value_name = "PCAP")]
    replay_protected: Vec<PathBuf>,
    /// With replay: write the first frames each worker sent to this pcap on exit.
    #[arg(long, value_name = "PCAP")]
    replay_capture: Option<PathBuf>,
    /// Log level of the running daemon: error, warn, info, debug or trace. `RUST_LOG`, when
    /// set, takes precedence (e.g. `RUST_LOG=xsecd::control=debug,info`).
    #[arg(long, value_name = "LEVEL", default_value = "info")]
    log_level: tracing::Level,
}

/// A CLI message: `xsecd: ` before every line, so that each line of a multi-line error
/// (one per configuration problem) reads `xsecd: FILE:LINE: FIELD: message`.
fn say(prefix: &str, msg: impl std::fmt::Display) {
    for line in msg.to_string().lines() {
        eprintln!("xsecd: {prefix}{line}");
    }
}

/// The daemon's fatal error: one log event per line.
fn fatal(msg: impl std::fmt::Display) {
    for line in msg.to_string().lines() {
        tracing::error!("{line}");
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.check {
        return match daemon::check(&args.config) {
            Ok(cfg) => {
                for w in &cfg.warnings {
                    say("warning: ", w);
                }
                println!(
                    "{}: OK ({} SA pair(s), {} policies)",
                    args.config.display(),
                    cfg.sas.len(),
                    cfg.spd.outbound.len() + cfg.spd.inbound.len()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                say("", e);
                ExitCode::from(2)
            }
        };
    }
    if args.install_guard || args.detach {
        let cfg = match daemon::check(&args.config) {
            Ok(c) => c,
            Err(e) => {
                say("", e);
                return ExitCode::from(2);
            }
        };
        let (u, p) = (&cfg.gateway.unprotected, &cfg.gateway.protected);
        let table = xsecd::guard::table_name(u, p);
        let r = if args.install_guard {
            xsecd::guard::install(u, p).map(|()| {
                format!("forward guard installed (nftables table inet {table}): nothing is forwarded via {u} or {p}")
            })
        } else {
            xsecd::guard::remove(u, p).map(|removed| match removed {
                true => format!("forward guard removed (nftables table inet {table}): the kernel forwards via {u} and {p} again"),
                false => format!("no forward guard for {u} and {p}: nothing to remove"),
            })
        };
        return match r {
            Ok(msg) => {
                println!("xsecd: {msg}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                say("", e);
                ExitCode::FAILURE
            }
        };
    }
    xsecd::logging::init("xsecd", args.log_level);
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        if let Err(e) = signal_hook::flag::register(sig, stop.clone()) {
            fatal(format_args!("cannot handle signal {sig}: {e}"));
            return ExitCode::FAILURE;
        }
    }
    let replay = if !args.replay_unprotected.is_empty() || !args.replay_protected.is_empty() {
        match xsecd::replay::ReplaySource::load(
            &args.replay_unprotected,
            &args.replay_protected,
            args.replay_capture.as_deref(),
        ) {
            Ok(r) => Some(r),
            Err(e) => {
                fatal(format_args!("replay: {e}"));
                return ExitCode::from(2);
            }
        }
    } else if args.replay_capture.is_some() {
        fatal("--replay-capture needs --replay-unprotected or --replay-protected");
        return ExitCode::from(2);
    } else {
        None
    };
    let opts = Options {
        config: args.config,
        stats_file: args.stats_file,
        control: args.control,
        replay,
    };
    match daemon::run(&opts, stop) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e @ (DaemonError::Config(_) | DaemonError::Refused(_))) => {
            fatal(e);
            ExitCode::from(2)
        }
        Err(e) => {
            fatal(e);
            ExitCode::FAILURE
        }
    }
}
