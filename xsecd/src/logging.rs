//! Logging set-up shared by xsec's daemons (xsecd, xsec-ike): `tracing` to stderr, the level
//! from `RUST_LOG` when it is a valid filter, else from the command line. One event per line:
//! UTC timestamp, level, module, message.

/// Install the subscriber; `prog` prefixes the message about a bad `RUST_LOG`.
pub fn init(prog: &str, level: tracing::Level) {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let filter = match std::env::var("RUST_LOG") {
        Ok(spec) if !spec.trim().is_empty() => match EnvFilter::try_new(&spec) {
            Ok(f) => f,
            Err(e) => {
                eprintln!("{prog}: RUST_LOG={spec:?} is not a filter ({e}); using --log-level");
                EnvFilter::new(level.as_str())
            }
        },
        _ => EnvFilter::new(level.as_str()),
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}
