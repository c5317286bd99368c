//! `xsec-ike`: the IKEv2 daemon. Negotiates IKE and Child SAs with its peers and installs
//! them in xsecd through the control socket (protocol v2).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use clap::Parser;
use xsec_ike::daemon::{self, DaemonError, Options};

#[derive(Debug, Parser)]
#[command(
    name = "xsec-ike",
    version,
    about = "xsec's IKEv2 daemon (RFC 7296), installing SAs in xsecd"
)]
struct Args {
    /// The configuration file (TOML, modelled on swanctl.conf).
    #[arg(long, short, value_name = "FILE")]
    config: PathBuf,
    /// xsecd's control socket (default: `[ike] control`, else xsecd's default).
    #[arg(long, value_name = "PATH")]
    control: Option<PathBuf>,
    /// Negotiate only, install nothing (interop checks without a dataplane; no traffic
    /// is protected).
    #[arg(long)]
    no_xsecd: bool,
    /// xsec-ike's control socket, for `xsecctl ike` (default: `[ike] socket`, else
    /// /run/xsec/xsec-ike.sock).
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// Run as this user (name or UID:GID) once the UDP ports are bound and xsecd is
    /// connected. xsecd's control socket must be open to the user's group
    /// (`[control] group` in xsecd's file).
    #[arg(long, value_name = "USER")]
    user: Option<String>,
    /// Check the configuration and exit.
    #[arg(long)]
    check: bool,
    /// Log level: error, warn, info, debug or trace (`RUST_LOG` takes precedence).
    #[arg(long, value_name = "LEVEL", default_value = "info")]
    log_level: tracing::Level,
}

fn say(msg: impl std::fmt::Display) {
    for line in msg.to_string().lines() {
        eprintln!("xsec-ike: {line}");
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.check {
        return match xsec_ike::config::load(&args.config) {
            Ok(c) => {
                for w in &c.warnings {
                    say(format_args!("warning: {w}"));
                }
                println!(
                    "xsec-ike: {}: {} connections",
                    args.config.display(),
                    c.conns.len()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                say(e);
                ExitCode::from(2)
            }
        };
    }
    xsecd::logging::init("xsec-ike", args.log_level);
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        if let Err(e) = signal_hook::flag::register(sig, stop.clone()) {
            say(format_args!("cannot handle signal {sig}: {e}"));
            return ExitCode::FAILURE;
        }
    }
    let opts = Options {
        config: args.config,
        control: args.control,
        no_xsecd: args.no_xsecd,
        socket: args.socket,
        user: args.user,
    };
    match daemon::run(&opts, stop) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e @ DaemonError::Config(_)) => {
            say(e);
            ExitCode::from(2)
        }
        Err(e) => {
            say(e);
            ExitCode::FAILURE
        }
    }
}
