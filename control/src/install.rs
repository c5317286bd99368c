//! Installing Child SAs in xsecd through control protocol v2, as the protocol document's
//! make-before-break recipe says: inbound SA first, then (one batch) the outbound SA and,
//! for a new CHILD_SA, its PROTECT policies; on deletion the reverse. xsec-ike's objects
//! are owned by the client tag `xsec-ike`, so nothing else can change them and a restarted
//! xsec-ike finds its own with `dump`.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use xsecd::control::client::{Client, ClientError};
use zeroize::Zeroizing;

use crate::ike::config::Mode;
use crate::ike::sa::{ChildSaUp, RandomSpis, SpiSource};
use crate::ike::wire::TrafficSelector;

/// The client tag of xsec-ike's objects in xsecd.
pub const CLIENT_TAG: &str = "xsec-ike";
/// NAT keepalive interval of outbound UDP-encapsulated SAs (strongSwan's `keep_alive`).
pub const KEEPALIVE_S: u64 = 20;

/// A selector's address range as xsecd writes it: a prefix when it is one, else `A-B`.
pub fn range_text(start: IpAddr, end: IpAddr) -> String {
    let (s, e, bits) = match (start, end) {
        (IpAddr::V4(a), IpAddr::V4(b)) => {
            (u128::from(u32::from(a)), u128::from(u32::from(b)), 32u32)
        }
        (IpAddr::V6(a), IpAddr::V6(b)) => (u128::from(a), u128::from(b), 128),
        _ => return format!("{start}-{end}"),
    };
    let span = e.wrapping_sub(s);
    // a prefix: span + 1 is a power of two and start is aligned to it
    if s <= e && span.wrapping_add(1) & span == 0 && s & span == 0 {
        let host = if span == u128::MAX {
            128
        } else {
            (span + 1).trailing_zeros()
        };
        return format!("{start}/{}", bits - host.min(bits));
    }
    format!("{start}-{end}")
}

fn ports_text(lo: u16, hi: u16) -> Option<String> {
    match (lo, hi) {
        (0, 65535) => None,
        (a, b) if a == b => Some(a.to_string()),
        (a, b) => Some(format!("{a}-{b}")),
    }
}

/// The selector fields of one local/remote pair (omitted: any).
fn selector(local: &TrafficSelector, remote: &TrafficSelector) -> serde_json::Map<String, Value> {
    let mut m = serde_json::Map::new();
    m.insert("local".into(), range_text(local.start, local.end).into());
    m.insert("remote".into(), range_text(remote.start, remote.end).into());
    let proto = if local.ip_proto != 0 {
        local.ip_proto
    } else {
        remote.ip_proto
    };
    if proto != 0 {
        m.insert("proto".into(), proto.to_string().into());
    }
    if let Some(p) = ports_text(local.start_port, local.end_port) {
        m.insert("local_port".into(), p.into());
    }
    if let Some(p) = ports_text(remote.start_port, remote.end_port) {
        m.insert("remote_port".into(), p.into());
    }
    m
}

/// Pairs of local and remote selectors of the same IP version.
fn pairs(
    local: &[TrafficSelector],
    remote: &[TrafficSelector],
) -> Vec<(TrafficSelector, TrafficSelector)> {
    let mut v = vec![];
    for l in local {
        for r in remote {
            if l.start.is_ipv4() == r.start.is_ipv4() {
                v.push((*l, *r));
            }
        }
    }
    v
}

/// The `add-policy` operations of a reqid's PROTECT policies, one per selector pair, both
/// directions.
fn add_policies(reqid: u32, pairs: &[(TrafficSelector, TrafficSelector)]) -> Vec<Value> {
    pairs
        .iter()
        .enumerate()
        .map(|(i, (l, r))| {
            let mut p = selector(l, r);
            p.insert("id".into(), policy_id(reqid, i).into());
            p.insert("direction".into(), "both".into());
            p.insert("action".into(), "protect".into());
            p.insert("reqid".into(), reqid.into());
            json!({"command": "add-policy", "args": {"policy": Value::Object(p)}})
        })
        .collect()
}

pub fn sa_id(reqid: u32, inbound: bool, spi: u32) -> String {
    format!(
        "ike-{reqid}-{}-{spi:08x}",
        if inbound { "in" } else { "out" }
    )
}

fn policy_id(reqid: u32, i: usize) -> String {
    format!("ike-{reqid}-{i}")
}

/// The limits xsecd enforces on a Child SA's SAs (time hard limit: `life_time`; the
/// soft time limit is xsec-ike's own `rekey_time` timer).
#[derive(Debug, Clone, Copy, Default)]
pub struct Lifetime {
    pub hard_s: Option<u64>,
    pub soft_bytes: Option<u64>,
    pub hard_bytes: Option<u64>,
    pub soft_packets: Option<u64>,
    pub hard_packets: Option<u64>,
}

/// The connection to xsecd, or none (`--no-xsecd`: negotiate only).
#[derive(Debug)]
pub struct Installer {
    client: Option<Client>,
    path: Option<PathBuf>,
    /// PROTECT policies installed, by reqid: how many.
    policies: std::collections::HashMap<u32, usize>,
    /// Outbound SAs of rekeys we answered, waiting for the switch: by the new inbound SPI.
    pending_out: std::collections::HashMap<u32, (u32, Zeroizing<String>)>,
}

impl Installer {
    pub fn connect(path: Option<&Path>) -> Result<Installer, ClientError> {
        let client = match path {
            Some(p) => Some(Client::connect_as(p, CLIENT_TAG)?),
            None => None,
        };
        Ok(Installer {
            client,
            path: path.map(Path::to_path_buf),
            policies: Default::default(),
            pending_out: Default::default(),
        })
    }

    pub fn is_connected(&self) -> bool {
        self.client.is_some()
    }

    fn call(&mut self, cmd: &str, args: Value) -> Result<Value, String> {
        let Some(c) = self.client.as_mut() else {
            return Ok(Value::Null);
        };
        match c.call(cmd, args.clone()) {
            Ok(v) => Ok(v),
            Err(ClientError::Io(e)) => {
                // one reconnection: xsecd may have restarted
                tracing::warn!("xsecd connection: {e}; reconnecting");
                let path = self.path.clone().ok_or_else(|| e.clone())?;
                let mut c = Client::connect_as(&path, CLIENT_TAG).map_err(|e| e.to_string())?;
                let r = c.call(cmd, args).map_err(|e| format!("{cmd}: {e}"));
                self.client = Some(c);
                r
            }
            Err(e) => Err(format!("{cmd}: {e}")),
        }
    }

    /// Remove every SA and policy xsec-ike left in xsecd (a restart after a crash): the
    /// IKE SAs they belonged to are gone with the old process, so they are renegotiated.
    /// Until then their traffic meets no policy and is dropped (fail closed).
    pub fn remove_leftovers(&mut self) -> Result<usize, String> {
        let Some(c) = self.client.as_mut() else {
            return Ok(0);
        };
        let mut ops = vec![];
        let mut policies = std::collections::BTreeSet::new();
        let mut after: Option<Value> = None;
        loop {
            let mut args = json!({"client": CLIENT_TAG, "limit": 1000});
            if let Some(a) = &after {
                args["after"] = a.clone();
            }
            let page = c.call("dump", args).map_err(|e| format!("dump: {e}"))?;
            for sa in page["sas"].as_array().into_iter().flatten() {
                if sa["client"] == CLIENT_TAG
                    && let Some(id) = sa["id"].as_str()
                {
                    ops.push(json!({"command": "del-sa", "args": {"id": id}}));
                }
            }
            for p in page["policies"].as_array().into_iter().flatten() {
                if p["client"] == CLIENT_TAG
                    && let Some(id) = p["id"].as_str()
                {
                    policies.insert(id.to_owned());
                }
            }
            match &page["next"] {
                Value::Null => break,
                n => after = Some(n.clone()),
            }
        }
        for id in policies {
            ops.push(json!({"command": "del-policy", "args": {"id": id}}));
        }
        let n = ops.len();
        if n > 0 {
            c.call("batch", json!({"ops": ops}))
                .map_err(|e| format!("batch: {e}"))?;
        }
        Ok(n)
    }

    fn sa_json(c: &ChildSaUp, reqid: u32, inbound: bool, life: &Lifetime) -> Zeroizing<String> {
        let (spi, keys) = if inbound {
            (c.spi_in, &c.keys_in)
        } else {
            (c.spi_out, &c.keys_out)
        };
        let mut sa = json!({
            "id": sa_id(reqid, inbound, spi),
            "name": format!("{}.{}", c.conn, c.child),
            "direction": if inbound { "in" } else { "out" },
            "spi": spi,
            "reqid": reqid,
            "mode": c.mode.name(),
            "local": c.local.ip().to_string(),
            "remote": c.remote.ip().to_string(),
            "encryption": c.alg.encr.name(),
            "esn": c.alg.esn,
            "replay_window": if inbound { 1024 } else { 64 },
        });
        if let Some(i) = c.alg.integ {
            sa["integrity"] = i.name().into();
        }
        if c.encap {
            sa["encap"] = "nat-t".into();
            sa["local_port"] = c.local.port().into();
            sa["remote_port"] = c.remote.port().into();
            if !inbound && c.keepalive {
                sa["keepalive_s"] = KEEPALIVE_S.into();
            }
        }
        let mut l = serde_json::Map::new();
        for (k, v) in [
            ("hard_s", life.hard_s),
            ("soft_bytes", life.soft_bytes),
            ("hard_bytes", life.hard_bytes),
            ("soft_packets", life.soft_packets),
            ("hard_packets", life.hard_packets),
        ] {
            if let Some(v) = v {
                l.insert(k.into(), v.into());
            }
        }
        if !l.is_empty() {
            sa["lifetime"] = Value::Object(l);
        }
        if inbound {
            let sels: Vec<Value> = pairs(&c.local_ts, &c.remote_ts)
                .iter()
                .map(|(l, r)| Value::Object(selector(l, r)))
                .collect();
            sa["selectors"] = sels.into();
        }
        if c.mode == Mode::Transport && !c.encap {
            // transport mode: the packet's own addresses are the outer ones, and its selectors
            // decide (an SA with endpoints would restrict it to the IKE peers' addresses)
            if let Some(o) = sa.as_object_mut() {
                o.remove("local");
                o.remove("remote");
            }
        }
        // the keys go into the text last, in zeroized buffers only
        let text = Zeroizing::new(sa.to_string());
        let mut out = Zeroizing::new(String::with_capacity(text.len() + 200));
        out.push_str(&text[..text.len() - 1]);
        out.push_str(",\"enc_key\":\"0x");
        out.push_str(&Zeroizing::new(hex::encode(&keys.encr[..])));
        out.push('"');
        if c.alg.integ.is_some() {
            out.push_str(",\"auth_key\":\"0x");
            out.push_str(&Zeroizing::new(hex::encode(&keys.integ[..])));
            out.push('"');
        }
        out.push('}');
        out
    }

    fn raw(&mut self, cmd: &str, args: &str) -> Result<Value, String> {
        let Some(c) = self.client.as_mut() else {
            return Ok(Value::Null);
        };
        c.call_with_raw_args(cmd, args.as_bytes())
            .map_err(|e| format!("{cmd}: {e}"))
    }

    /// Install a Child SA: the inbound SA, then in one batch the outbound SA, the deletion
    /// of the outbound SA it replaces (`old_out`), and for a new CHILD_SA its policies.
    /// Without `c.outbound_now` only the inbound SA goes in; [`Installer::switch`] adds the
    /// outbound one later.
    pub fn install(
        &mut self,
        c: &ChildSaUp,
        reqid: u32,
        life: &Lifetime,
        old_out: Option<u32>,
    ) -> Result<(), String> {
        let inbound = Self::sa_json(c, reqid, true, life);
        let mut args = Zeroizing::new(String::from("{\"sa\":"));
        args.push_str(&inbound);
        args.push('}');
        self.raw("add-sa", &args)?;
        let outbound = Self::sa_json(c, reqid, false, life);
        if !c.outbound_now {
            self.pending_out.insert(c.spi_in, (reqid, outbound));
            return Ok(());
        }
        let mut ops = Zeroizing::new(String::from(
            "{\"ops\":[{\"command\":\"add-sa\",\"args\":{\"sa\":",
        ));
        ops.push_str(&outbound);
        ops.push_str("}}");
        if let Some(o) = old_out {
            ops.push_str(&format!(
                ",{{\"command\":\"del-sa\",\"args\":{{\"id\":\"{}\"}}}}",
                sa_id(reqid, false, o)
            ));
        }
        if !self.policies.contains_key(&reqid) {
            let ps = pairs(&c.local_ts, &c.remote_ts);
            for op in add_policies(reqid, &ps) {
                ops.push(',');
                ops.push_str(&op.to_string());
            }
            if self.client.is_some() {
                self.policies.insert(reqid, ps.len());
            }
        }
        ops.push_str("]}");
        if let Err(e) = self.raw("batch", &ops) {
            // do not leave a lone inbound SA behind
            let _ = self.call("del-sa", json!({"id": sa_id(reqid, true, c.spi_in)}));
            return Err(e);
        }
        Ok(())
    }

    /// Tell xsecd's subscribers (`xsecctl events`) what happened: `ev` is an object with a
    /// `type` (`ike-up`, `ike-child-up`, ...) and no key, ever.
    pub fn publish(&mut self, ev: Value) {
        if self.client.is_none() {
            return;
        }
        if let Err(e) = self.call("publish-event", json!({ "event": ev })) {
            tracing::debug!("publish-event: {e}");
        }
    }

    /// PROTECT policies for a trapped child before any SA exists: its traffic raises an
    /// ACQUIRE (and is dropped) until the negotiation installs the SAs.
    pub fn trap(
        &mut self,
        reqid: u32,
        local: &[TrafficSelector],
        remote: &[TrafficSelector],
    ) -> Result<(), String> {
        if self.policies.contains_key(&reqid) || self.client.is_none() {
            return Ok(());
        }
        let ps = pairs(local, remote);
        let ops = add_policies(reqid, &ps);
        self.call("batch", json!({ "ops": ops }))?;
        self.policies.insert(reqid, ps.len());
        Ok(())
    }

    /// Move the outbound traffic to the Child SA installed without its outbound SA
    /// (responder of a rekey), deleting the old outbound SA in the same batch.
    pub fn switch(&mut self, spi_in: u32, old_out: Option<u32>) -> Result<(), String> {
        let Some((reqid, outbound)) = self.pending_out.remove(&spi_in) else {
            return Err(format!("no outbound SA waits for {spi_in:08x}_i"));
        };
        let mut ops = Zeroizing::new(String::from(
            "{\"ops\":[{\"command\":\"add-sa\",\"args\":{\"sa\":",
        ));
        ops.push_str(&outbound);
        ops.push_str("}}");
        if let Some(o) = old_out {
            ops.push_str(&format!(
                ",{{\"command\":\"del-sa\",\"args\":{{\"id\":\"{}\"}}}}",
                sa_id(reqid, false, o)
            ));
        }
        ops.push_str("]}");
        self.raw("batch", &ops).map(|_| ())
    }

    /// Remove a Child SA's SAs (its outbound one unless already gone); with `last` (no
    /// other Child SA of the reqid remains and it is not trapped) its policies too, in the
    /// same batch, so its traffic is discarded.
    pub fn remove(
        &mut self,
        reqid: u32,
        spi_in: u32,
        spi_out: Option<u32>,
        last: bool,
    ) -> Result<(), String> {
        self.pending_out.remove(&spi_in);
        let mut ops = vec![];
        if let Some(o) = spi_out {
            ops.push(json!({"command": "del-sa", "args": {"id": sa_id(reqid, false, o)}}));
        }
        ops.push(json!({"command": "del-sa", "args": {"id": sa_id(reqid, true, spi_in)}}));
        if last && let Some(n) = self.policies.remove(&reqid) {
            for i in 0..n {
                ops.push(json!({"command": "del-policy", "args": {"id": policy_id(reqid, i)}}));
            }
        }
        self.call("batch", json!({ "ops": ops })).map(|_| ())
    }

    /// Move a Child SA's SAs to the peer's new address/port (NAT rebinding), keeping their
    /// sequence numbers and replay windows.
    pub fn move_peer(
        &mut self,
        reqid: u32,
        spi_in: u32,
        spi_out: u32,
        remote: std::net::SocketAddr,
    ) -> Result<(), String> {
        for (inbound, spi) in [(false, spi_out), (true, spi_in)] {
            self.call(
                "update-sa-endpoints",
                json!({"id": sa_id(reqid, inbound, spi), "remote": remote.ip().to_string(), "remote_port": remote.port()}),
            )?;
        }
        Ok(())
    }
}

impl SpiSource for Installer {
    /// An SPI reserved by xsecd (`alloc-spi`), so no other SA can take it meanwhile.
    fn inbound_spi(&mut self) -> Option<u32> {
        let Some(c) = self.client.as_mut() else {
            return RandomSpis.inbound_spi();
        };
        match c.call("alloc-spi", json!({"lifetime_s": 120})) {
            Ok(v) => v["spi"].as_u64().and_then(|s| u32::try_from(s).ok()),
            Err(e) => {
                tracing::error!("alloc-spi: {e}");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_as_prefixes_when_they_are() {
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        assert_eq!(range_text(ip("10.1.0.0"), ip("10.1.0.255")), "10.1.0.0/24");
        assert_eq!(range_text(ip("10.1.0.7"), ip("10.1.0.7")), "10.1.0.7/32");
        assert_eq!(
            range_text(ip("0.0.0.0"), ip("255.255.255.255")),
            "0.0.0.0/0"
        );
        assert_eq!(
            range_text(ip("10.1.0.1"), ip("10.1.0.9")),
            "10.1.0.1-10.1.0.9"
        );
        assert_eq!(
            range_text(ip("10.1.0.128"), ip("10.1.1.127")),
            "10.1.0.128-10.1.1.127"
        );
        assert_eq!(
            range_text(ip("::"), ip("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")),
            "::/0"
        );
        assert_eq!(
            range_text(ip("fd02::"), ip("fd02::ffff:ffff:ffff:ffff")),
            "fd02::/64"
        );
        assert_eq!(ports_text(0, 65535), None);
        assert_eq!(ports_text(500, 500).as_deref(), Some("500"));
    }
}
