//! The forward guard: an nftables table that stops the kernel from forwarding anything into or
//! out of the gateway's two interfaces.
//!
//! With xsecd running, the XDP program hands every packet the gateway would forward to a
//! worker, whose SPD decides (PROTECT, BYPASS, DISCARD); the kernel forwards nothing between
//! the interfaces. The guard makes that hold when the workers are not there to decide: while
//! xsecd starts, after it exits, crashes or is killed (the XDP program goes with the process),
//! and for frames the program passes to the kernel. It drops, in the kernel's forward hook,
//! every packet that arrives on either interface or would leave by either — traffic addressed
//! to the gateway itself (IKE, ARP/ND, management) never crosses the forward hook and is not
//! touched.
//!
//! The gateway's own traffic never meets the workers either: the kernel sends it. In the
//! output hook the guard drops what the gateway itself would send out of the unprotected
//! interface from one of its *other* addresses (the protected interface's, say
//! `ping -I 10.1.0.1 10.2.0.10`): such a packet speaks for the protected side, and only the
//! SPD may let that out, which it cannot see there. The gateway's traffic from the
//! unprotected interface's own addresses (IKE, management, NAT keepalives) and from no
//! address at all (DAD) is untouched.
//!
//! The table outlives xsecd on purpose: a clean stop leaves it too (forwarding stays blocked
//! until an xsecd runs again), and only `xsecd --detach` removes it. A running xsecd checks
//! every second that it is still there and puts it back if not (`nft flush ruleset`, e.g. an
//! `nftables.service` reload, removes every table): start such a service before xsecd, and
//! before `xsecd --install-guard` at boot. It is written with `nft`
//! in one transaction (`table …` + `delete table …` + the new table), so a second install
//! replaces the first atomically and never leaves a moment without it.

use std::io::Write;
use std::process::{Command, Stdio};

/// nftables' table family and the prefix of the table name.
const FAMILY: &str = "inet";
const PREFIX: &str = "xsec_guard_";

/// The table name for a pair of interfaces: one guard per gateway instance.
pub fn table_name(unprotected: &str, protected: &str) -> String {
    let clean = |s: &str| -> String {
        s.chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect()
    };
    format!("{PREFIX}{}_{}", clean(unprotected), clean(protected))
}

/// The ruleset of the guard (what `nft -f -` is given).
pub fn ruleset(unprotected: &str, protected: &str) -> String {
    let t = table_name(unprotected, protected);
    let mut s = String::new();
    // declare-then-delete: the delete never fails, and the whole file is one transaction
    s.push_str(&format!(
        "table {FAMILY} {t} {{}}\ndelete table {FAMILY} {t}\n"
    ));
    s.push_str(&format!("table {FAMILY} {t} {{\n"));
    s.push_str("  comment \"xsecd: only the SPD forwards here; no protected-side source leaves by the unprotected side\"\n");
    s.push_str("  chain forward {\n");
    s.push_str("    type filter hook forward priority filter - 10; policy accept;\n");
    for (dir, name) in [
        ("iifname", protected),
        ("oifname", protected),
        ("iifname", unprotected),
        ("oifname", unprotected),
    ] {
        s.push_str(&format!("    {dir} {} counter drop\n", quote(name)));
    }
    s.push_str("  }\n");
    s.push_str("  chain output {\n");
    s.push_str("    type filter hook output priority filter - 10; policy accept;\n");
    s.push_str(&format!(
        "    oifname {} fib saddr type local fib saddr . oif type != local counter drop\n",
        quote(unprotected)
    ));
    s.push_str("  }\n}\n");
    s
}

/// An interface name as an nftables string.
fn quote(name: &str) -> String {
    format!("\"{name}\"")
}

fn nft(input: &str) -> Result<(), String> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            format!(
                "running nft: {e} (the forward guard needs nftables' `nft`; install nftables, or \
                 set gateway.forward_guard = false to rely on the XDP program alone)"
            )
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(input.as_bytes())
            .map_err(|e| format!("nft: {e}"))?;
    }
    let out = child.wait_with_output().map_err(|e| format!("nft: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "nft: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Install (or replace) the guard for the two interfaces.
pub fn install(unprotected: &str, protected: &str) -> Result<(), String> {
    // a name nft cannot quote would guard some other name: refuse it
    if let Some(bad) = [unprotected, protected]
        .into_iter()
        .find(|n| n.contains(['"', '\\']) || n.is_empty())
    {
        return Err(format!(
            "interface name {bad:?} cannot be written in an nftables rule"
        ));
    }
    nft(&ruleset(unprotected, protected))
}

/// Remove the guard; `Ok(false)` if there was none.
pub fn remove(unprotected: &str, protected: &str) -> Result<bool, String> {
    let t = table_name(unprotected, protected);
    if !present(unprotected, protected) {
        return Ok(false);
    }
    nft(&format!("delete table {FAMILY} {t}\n")).map(|()| true)
}

/// Whether the guard's table exists.
pub fn present(unprotected: &str, protected: &str) -> bool {
    let t = table_name(unprotected, protected);
    Command::new("nft")
        .args(["list", "table", FAMILY, &t])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Packets the guard dropped so far (every rule's counter summed), or `None` without a guard.
pub fn dropped(unprotected: &str, protected: &str) -> Option<u64> {
    let t = table_name(unprotected, protected);
    let out = Command::new("nft")
        .args(["list", "table", FAMILY, &t])
        .stderr(Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    Some(sum_counters(&String::from_utf8_lossy(&out.stdout)))
}

/// The sum of `counter packets N` over a listing.
fn sum_counters(listing: &str) -> u64 {
    let mut sum = 0u64;
    let mut words = listing.split_whitespace();
    while let Some(w) = words.next() {
        if w == "packets"
            && let Some(n) = words.next().and_then(|n| n.parse::<u64>().ok())
        {
            sum = sum.saturating_add(n);
        }
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_rules() {
        assert_eq!(table_name("wan0", "lan.10"), "xsec_guard_wan0_lan_10");
        let r = ruleset("wan0", "lan0");
        assert!(r.starts_with("table inet xsec_guard_wan0_lan0 {}\ndelete table inet"));
        for rule in [
            "iifname \"lan0\" counter drop",
            "oifname \"lan0\" counter drop",
            "iifname \"wan0\" counter drop",
            "oifname \"wan0\" counter drop",
        ] {
            assert!(r.contains(rule), "{rule} missing from\n{r}");
        }
        assert!(r.contains("hook forward"));
        assert!(r.contains(
            "oifname \"wan0\" fib saddr type local fib saddr . oif type != local counter drop"
        ));
        assert!(r.contains("hook output"));
        // nft refuses comments over 128 characters (and with it the whole guard)
        let comment = r
            .lines()
            .find(|l| l.trim_start().starts_with("comment"))
            .expect("comment");
        assert!(
            comment.trim().len() - "comment \"\"".len() <= 128,
            "{comment}"
        );
    }

    #[test]
    fn counters_are_summed() {
        let l = "table inet t {\n chain forward {\n  iifname \"a\" counter packets 3 bytes 180 drop\n  \
                 oifname \"a\" counter packets 4 bytes 9 drop\n }\n}\n";
        assert_eq!(sum_counters(l), 7);
        assert_eq!(sum_counters("nothing"), 0);
    }
}
