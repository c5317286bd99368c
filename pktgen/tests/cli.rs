//! Bad arguments are refused with a message and exit status 2, before anything is sent.

use std::process::Command;

fn refused(args: &[&str], says: &str) {
    let o = Command::new(env!("CARGO_BIN_EXE_xsec-pktgen"))
        .args(args)
        .output()
        .expect("run xsec-pktgen");
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
    assert!(err.contains(says), "{args:?}: {err}");
    assert!(o.stdout.is_empty(), "{args:?} printed a result");
}

#[test]
fn bad_generator_arguments_are_refused() {
    let g = ["gen", "--dst", "127.0.0.1", "--seconds", "0.1"];
    let with = |more: &[&'static str]| -> Vec<&'static str> {
        g.iter().chain(more.iter()).copied().collect()
    };
    refused(&with(&["--size", "20"]), "size 20: from 60");
    refused(&with(&["--size", "9001"]), "to 9000");
    refused(&with(&["--size", "big"]), "a number of bytes or imix");
    refused(&with(&["--io", "bogus"]), "--io bogus");
    refused(&with(&["--io", "xdp"]), "needs --iface");
    refused(
        &with(&["--io", "xdp", "--iface", "lo", "--size", "5000"]),
        "to 4082",
    );
    refused(
        &["gen", "--dst", "::1", "--io", "xdp", "--iface", "lo"],
        "IPv4 only",
    );
}
