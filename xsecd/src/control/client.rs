//! A client of the control socket (protocol v2): what `xsecctl`, the tests, the benches and a
//! key manager use to talk to xsecd. One connection, requests numbered in order; answers are
//! read in the order the requests were sent (the daemon answers a connection's requests in
//! order), so requests may be pipelined: [`Client::send`] several, then [`Client::recv`] each.

use super::proto;
use serde_json::{Value, json};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The socket could not be reached, or the conversation broke off.
    #[error("{0}")]
    Io(String),
    /// The daemon answered with an error: nothing was changed.
    #[error("{kind}: {message}")]
    Refused {
        kind: String,
        message: String,
        /// `error.detail`, if the daemon sent one (diagnostics, the refused operation).
        detail: Option<Value>,
    },
}

/// One connection to xsecd's control socket.
#[derive(Debug)]
pub struct Client {
    s: UnixStream,
    next: u64,
}

impl Client {
    /// Connect to the socket at `path`; the error hints at the usual causes.
    pub fn connect(path: &Path) -> Result<Client, ClientError> {
        let s = UnixStream::connect(path).map_err(|e| {
            let hint = match e.kind() {
                std::io::ErrorKind::PermissionDenied => {
                    " (the socket is for root, xsecd's user and control.group)"
                }
                std::io::ErrorKind::NotFound if !super::is_socket(path) => {
                    " (is xsecd running? see --socket)"
                }
                std::io::ErrorKind::ConnectionRefused => " (is xsecd running?)",
                _ => "",
            };
            ClientError::Io(format!("{}: {e}{hint}", path.display()))
        })?;
        // short reads: `proto::read_frame` waits in slices of this
        let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
        Ok(Client { s, next: 1 })
    }

    /// Connect and name this connection's client (`hello {client}`): the owner of the SAs
    /// and policies it adds.
    pub fn connect_as(path: &Path, client: &str) -> Result<Client, ClientError> {
        let mut c = Client::connect(path)?;
        c.call("hello", json!({ "client": client }))?;
        Ok(c)
    }

    /// Send one request; its id.
    pub fn send(&mut self, cmd: &str, args: Value) -> Result<u64, ClientError> {
        let id = self.next;
        self.next += 1;
        proto::write_frame(&mut self.s, &proto::request(id, cmd, args))
            .map_err(|e| ClientError::Io(format!("send: {e}")))?;
        Ok(id)
    }

    /// One request whose `args` is `args_json` as it stands (JSON text the caller checked),
    /// without parsing it into values: for arguments that hold keys, which then exist only
    /// in the caller's buffer and in this request's zeroized frame.
    pub fn call_with_raw_args(
        &mut self,
        cmd: &str,
        args_json: &[u8],
    ) -> Result<Value, ClientError> {
        let id = self.next;
        self.next += 1;
        let head = format!(
            "{{\"version\":{},\"id\":{id},\"command\":{},\"args\":",
            proto::VERSION,
            serde_json::Value::from(cmd)
        );
        let mut body =
            zeroize::Zeroizing::new(Vec::with_capacity(head.len() + args_json.len() + 1));
        body.extend_from_slice(head.as_bytes());
        body.extend_from_slice(args_json);
        body.push(b'}');
        proto::write_body(&mut self.s, &body).map_err(|e| ClientError::Io(format!("send: {e}")))?;
        self.answer_to(id)
    }

    /// The next frame (an answer or a streamed item), waiting at most `wait` for it.
    pub fn recv(&mut self, wait: Duration) -> Result<Value, ClientError> {
        let body = proto::read_frame(&mut self.s, wait)
            .map_err(|e| ClientError::Io(format!("receive: {e}")))?;
        serde_json::from_slice(&body)
            .map_err(|e| ClientError::Io(format!("receive: not JSON: {e}")))
    }

    /// One request, one answer: the result, or the daemon's error.
    pub fn call(&mut self, cmd: &str, args: Value) -> Result<Value, ClientError> {
        let id = self.send(cmd, args)?;
        self.answer_to(id)
    }

    /// The answer to request `id` (the next frame): its result, or the daemon's error.
    fn answer_to(&mut self, id: u64) -> Result<Value, ClientError> {
        let v = self.recv(Duration::from_secs(30))?;
        // id 0: the daemon's answer to the connection itself (refused, a bad frame)
        if v["id"] != json!(id) && v["id"] != json!(0) {
            return Err(ClientError::Io(format!(
                "answer to request {} while waiting for {id}",
                v["id"]
            )));
        }
        answer(v)
    }
}

/// An answer's result, or its error.
pub fn answer(v: Value) -> Result<Value, ClientError> {
    if v["ok"] == json!(true) {
        return Ok(v["result"].clone());
    }
    let e = &v["error"];
    Err(ClientError::Refused {
        kind: e["kind"].as_str().unwrap_or("error").to_owned(),
        message: e["message"].as_str().unwrap_or("(no message)").to_owned(),
        detail: e.get("detail").filter(|d| !d.is_null()).cloned(),
    })
}
