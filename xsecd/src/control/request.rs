//! Control requests, decoded into types: the envelope (`version`, `id`, `command`, `args`)
//! is checked first, then the command and its arguments become one [`Request`] — an unknown
//! command, a missing or misspelt argument, a wrong type: each is a clear error before any
//! handler runs. Key material (the hex keys of `add-sa`, the texts of `reload` and
//! `config-add-sa`) is held in [`Zeroizing`] strings.

use super::objects::{EndpointsSpec, PolicySpec, SaSpec};
use super::{Fail, proto, proto::kind};
use serde::Deserialize;
use serde_json::{Value, json};
use zeroize::Zeroizing;

/// Every command and its arguments. `args` may be omitted when a command takes none (or only
/// optional ones); arguments a command does not take are refused.
#[derive(Debug, Deserialize)]
#[serde(tag = "command", content = "args", rename_all = "kebab-case")]
pub enum Request {
    #[serde(alias = "status")]
    Hello(Hello),
    ShowSa(ShowSa),
    ShowPolicy(Counters),
    ShowWorkers(NoArgs),
    ShowCounters(NoArgs),
    ShowInterfaces(NoArgs),
    Metrics(NoArgs),
    PolicyTest(PolicyTest),
    AllocSpi(AllocSpi),
    Dump(Dump),
    // the store, one SA (one direction) or one policy at a time
    AddSa(SaArg),
    UpdateSa(SaArg),
    DelSa(Id),
    UpdateSaEndpoints(EndpointsSpec),
    AddPolicy(AddPolicy),
    UpdatePolicy(PolicyArg),
    DelPolicy(PolicyRef),
    MovePolicy(MovePolicy),
    /// Several of the above, all or nothing.
    Batch(Batch),
    // the configuration file's tables
    Reload(Reload),
    ConfigAddSa(Text),
    ConfigDelSa(Name),
    ConfigAddPolicy(ConfigAddPolicy),
    ConfigDelPolicy(Name),
    ConfigMovePolicy(ConfigMovePolicy),
    Trace(Trace),
    Subscribe(NoArgs),
    /// A client's own event (a key manager's IKE SA up or down), sent to every subscriber.
    PublishEvent(PublishEvent),
    /// ICMP echo requests the gateway originates through the outbound SPD.
    Ping(Ping),
}

impl Request {
    /// Is this an operation on the store (what `batch` may hold)?
    pub fn is_store_op(&self) -> bool {
        matches!(
            self,
            Request::AddSa(_)
                | Request::UpdateSa(_)
                | Request::DelSa(_)
                | Request::UpdateSaEndpoints(_)
                | Request::AddPolicy(_)
                | Request::UpdatePolicy(_)
                | Request::DelPolicy(_)
                | Request::MovePolicy(_)
                | Request::Batch(_)
        )
    }
}

/// The commands, for the unknown-command message.
pub const COMMANDS: &str = "hello (status), show-sa, show-policy, show-workers, \
    show-interfaces, show-counters, metrics, policy-test, alloc-spi, dump, add-sa, update-sa, \
    del-sa, update-sa-endpoints, add-policy, update-policy, del-policy, move-policy, batch, \
    reload, config-add-sa, config-del-sa, config-add-policy, config-del-policy, \
    config-move-policy, trace, subscribe, publish-event, ping";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hello {
    /// This connection's client tag: the objects it adds are its own, and a client that
    /// comes back under the same tag finds them (`dump`). Default `anonymous`.
    pub client: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dump {
    /// Only this client's objects.
    pub client: Option<String>,
    /// The page after this object (a previous page's `next`).
    pub after: Option<DumpCursor>,
    /// Objects per page (SAs and policies together): 1 to [`DUMP_MAX`], default
    /// [`DUMP_DEFAULT`].
    pub limit: Option<usize>,
}

/// Objects in a `dump` page unless the request says otherwise.
pub const DUMP_DEFAULT: usize = 500;
/// At most this many objects in a `dump` page (well within a frame).
pub const DUMP_MAX: usize = 1000;

/// Where a `dump` page ends: SAs come first, by id, then policies, outbound then inbound, by
/// position.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum DumpCursor {
    /// After the SA of this id.
    Sa(String),
    /// After the policy at this position (1-based) of this direction (`out`, `in`).
    Policy(String, usize),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SaArg {
    pub sa: SaSpec,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Id {
    pub id: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddPolicy {
    pub policy: PolicySpec,
    /// 1 = first; default last.
    pub position: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyArg {
    pub policy: PolicySpec,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyRef {
    pub id: String,
    /// `in` or `out`; default: each direction the policy is in.
    pub direction: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MovePolicy {
    pub id: String,
    pub direction: Option<String>,
    pub position: usize,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Batch {
    /// Each `{"command": ..., "args": ...}` of a store operation.
    pub ops: Vec<Request>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoArgs {}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Counters {
    #[serde(default)]
    pub counters: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShowSa {
    /// Decimal or `0x` hex.
    pub spi: Option<String>,
    pub spi_num: Option<u32>,
    #[serde(default)]
    pub counters: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyTest {
    pub direction: String,
    pub proto: Option<String>,
    pub local: String,
    pub remote: String,
    pub name: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishEvent {
    /// A JSON object with a `type` of the client's own (not one of the engine's).
    pub event: Value,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ping {
    /// The destination (a host behind a peer, reached through a tunnel).
    pub dst: String,
    /// An address of this gateway (default: the protected interface's, of `dst`'s family).
    pub src: Option<String>,
    /// Echo requests (1-100, default 1).
    pub count: Option<u32>,
    /// Between two requests (10-10,000 ms, default 1,000).
    pub interval_ms: Option<u64>,
    /// How long each waits for its reply (10-10,000 ms, default 1,000).
    pub timeout_ms: Option<u64>,
    /// Echo data bytes (0-1,400, default 56).
    pub size: Option<u16>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AllocSpi {
    pub lifetime_s: Option<u64>,
    pub min: Option<u32>,
    pub max: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reload {
    pub path: String,
    pub text: Zeroizing<String>,
    #[serde(default)]
    pub dry_run: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Text {
    pub text: Zeroizing<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Name {
    pub name: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigAddPolicy {
    pub text: Zeroizing<String>,
    pub position: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigMovePolicy {
    pub name: String,
    pub position: usize,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Trace {
    pub policy: Option<String>,
    /// An SPI, decimal or `0x` hex.
    pub sa: Option<String>,
    pub count: Option<u64>,
    pub seconds: Option<u64>,
}

/// Decode one request frame's body: its `id` (0 when there is none) and the request, or the
/// error to answer with that `id`. Never panics, whatever the bytes.
pub fn decode(body: &[u8]) -> (u64, Result<Request, Fail>) {
    let v: Value = match serde_json::from_slice(body) {
        Ok(v @ Value::Object(_)) => v,
        Ok(_) => return (0, Err(fail(kind::BAD_JSON, "a request is a JSON object"))),
        Err(e) => return (0, Err(fail(kind::BAD_JSON, format!("not JSON: {e}")))),
    };
    let v = super::Wiped(v);
    let id = v.get("id").and_then(Value::as_u64).unwrap_or(0);
    (id, typed(&v))
}

fn typed(v: &Value) -> Result<Request, Fail> {
    match v.get("version").and_then(Value::as_u64) {
        Some(proto::VERSION) => {}
        other => {
            return Err(fail(
                kind::VERSION,
                format!(
                    "protocol version {} is not spoken here; this xsecd speaks version {}",
                    other.map_or("(missing)".to_owned(), |v| v.to_string()),
                    proto::VERSION
                ),
            ));
        }
    }
    let command = match v.get("command") {
        Some(Value::String(c)) if !c.is_empty() => c.as_str(),
        Some(Value::String(_)) | None | Some(Value::Null) => {
            return Err(fail(kind::BAD_ARGS, "request has no command"));
        }
        Some(_) => return Err(fail(kind::BAD_ARGS, "command must be a string")),
    };
    let args = match v.get("args") {
        None | Some(Value::Null) => json!({}),
        Some(a @ Value::Object(_)) => a.clone(),
        Some(_) => return Err(fail(kind::BAD_ARGS, "args must be a JSON object")),
    };
    let known = super::Wiped(json!({ "command": command, "args": args }));
    Request::deserialize(&*known).map_err(|e| {
        let msg = e.to_string();
        if msg.starts_with("unknown variant") {
            fail(
                kind::UNKNOWN_COMMAND,
                format!("unknown command {command:?}; commands: {COMMANDS}"),
            )
        } else {
            fail(kind::BAD_ARGS, format!("{command}: args: {msg}"))
        }
    })
}

fn fail(k: &'static str, msg: impl Into<String>) -> Fail {
    (k, msg.into(), Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(v: Value) -> Result<Request, Fail> {
        decode(v.to_string().as_bytes()).1
    }

    #[test]
    fn commands_and_arguments_are_typed() {
        let r = req(json!({"version": 2, "id": 7, "command": "status"}));
        assert!(matches!(r, Ok(Request::Hello(_))));
        let r = req(json!({"version": 2, "command": "move-policy",
                           "args": {"id": "p", "position": 2}}));
        assert!(matches!(
            r,
            Ok(Request::MovePolicy(MovePolicy { position: 2, .. }))
        ));
        let r = req(json!({"version": 2, "command": "reload",
                           "args": {"path": "a.toml", "text": "[gateway]"}}));
        assert!(matches!(
            r,
            Ok(Request::Reload(Reload { dry_run: false, .. }))
        ));
    }

    #[test]
    fn each_refusal_has_its_kind() {
        let k = |v: Value| req(v).map(|_| ()).unwrap_err().0;
        assert_eq!(k(json!({"version": 1, "command": "hello"})), kind::VERSION);
        assert_eq!(k(json!({"command": "hello"})), kind::VERSION);
        assert_eq!(
            k(json!({"version": 2, "command": "fly"})),
            kind::UNKNOWN_COMMAND
        );
        assert_eq!(k(json!({"version": 2})), kind::BAD_ARGS);
        assert_eq!(k(json!({"version": 2, "command": 3})), kind::BAD_ARGS);
        assert_eq!(
            k(json!({"version": 2, "command": "hello", "args": [1]})),
            kind::BAD_ARGS
        );
        // missing, misspelt, mistyped arguments
        assert_eq!(
            k(json!({"version": 2, "command": "del-sa"})),
            kind::BAD_ARGS
        );
        assert_eq!(
            k(json!({"version": 2, "command": "del-sa", "args": {"nmae": "x"}})),
            kind::BAD_ARGS
        );
        assert_eq!(
            k(json!({"version": 2, "command": "move-policy",
                     "args": {"id": "x", "position": "2"}})),
            kind::BAD_ARGS
        );
        let (_, r) = decode(b"[1,2]");
        assert_eq!(r.unwrap_err().0, kind::BAD_JSON);
        let (_, r) = decode(b"{\"version\": 1,");
        assert_eq!(r.unwrap_err().0, kind::BAD_JSON);
        let (_, e) = (
            0,
            req(json!({"version": 2, "command": "config-del-sa", "args": {"nmae": "x"}})),
        );
        let msg = e.unwrap_err().1;
        assert!(
            msg.contains("unknown field `nmae`") && msg.contains("`name`"),
            "{msg}"
        );
    }
}
