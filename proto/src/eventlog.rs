//! peapod's event log: where a shim started without containerd (the `peapod` CLI's
//! embedded mode) records its task events, so the CLI can show a pod's history (start
//! and exit times, restarts, OOM kills) after the fact.
//!
//! The log is a file of containerd `Envelope`s (`containerd.services.events.ttrpc.v1`,
//! the message a shim forwards to containerd), each length-delimited: a protobuf varint
//! length, then the message. The shim appends one record per `write` on an `O_APPEND`
//! file, so records never interleave and appear in publishing order; a shim killed
//! mid-write leaves at most one torn record at the end.
//!
//! Besides containerd's task events, the log holds peapod's own probe records
//! ([`ProbeRecord`], topic [`PROBE_TOPIC`]): what the shim's prober found. They are only
//! ever written here, never sent to containerd (under kubelet, kubelet probes).

use std::io;
use std::path::Path;

use containerd_shim_protos::protobuf::{CodedInputStream, Message};
pub use containerd_shim_protos::shim::event::Envelope;
use sandbox::pod::hooks::HookKind;
use sandbox::pod::probe::{ProbeKind, ProbeResult};
use serde::{Deserialize, Serialize};

/// The topic of a probe record.
pub const PROBE_TOPIC: &str = "/peapod/probe";

/// The `type_url` of a probe record's `Any`: its value is a [`ProbeRecord`] in JSON.
pub const PROBE_TYPE_URL: &str = "peapod.v1.ProbeRecord+json";

/// What one probe check of a container found, when it matters to the container's status
/// or events: its result changed, it is the first failure of a run of them (kubelet's
/// `Unhealthy` event), or it kills the container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeRecord {
    /// Task id of the container.
    pub container_id: String,
    /// Which probe.
    pub probe: ProbeKind,
    /// The probe's result after this check.
    pub result: ProbeResult,
    /// The result changed with this check.
    pub changed: bool,
    /// The check failed: why (the command's output, the HTTP status, the connection
    /// error); empty when it passed.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// The first failure of a run of failures.
    #[serde(default)]
    pub unhealthy: bool,
    /// The failure kills the container (a liveness or startup probe).
    #[serde(default)]
    pub kill: bool,
}

/// The topic of a hook record.
pub const HOOK_TOPIC: &str = "/peapod/hook";

/// The `type_url` of a hook record's `Any`: its value is a [`HookRecord`] in JSON.
pub const HOOK_TYPE_URL: &str = "peapod.v1.HookRecord+json";

/// A lifecycle hook of a container ran.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HookRecord {
    /// Task id of the container.
    pub container_id: String,
    /// Which hook.
    pub hook: HookKind,
    /// Its handler as kubelet's messages name it (`Exec lifecycle hook ([cmd])`).
    pub handler: String,
    /// It succeeded.
    pub ok: bool,
    /// Why it failed; empty when it succeeded.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

impl HookRecord {
    /// The record in `envelope`, if it is one ([`HOOK_TOPIC`], [`HOOK_TYPE_URL`]).
    pub fn from_envelope(envelope: &Envelope) -> Option<HookRecord> {
        (envelope.topic == HOOK_TOPIC && envelope.event.type_url == HOOK_TYPE_URL)
            .then(|| serde_json::from_slice(&envelope.event.value).ok())
            .flatten()
    }
}

impl ProbeRecord {
    /// The record in `envelope`, if it is one ([`PROBE_TOPIC`], [`PROBE_TYPE_URL`], JSON
    /// that decodes).
    pub fn from_envelope(envelope: &Envelope) -> Option<ProbeRecord> {
        (envelope.topic == PROBE_TOPIC && envelope.event.type_url == PROBE_TYPE_URL)
            .then(|| serde_json::from_slice(&envelope.event.value).ok())
            .flatten()
    }
}

/// The environment variable naming the event log of a shim started without containerd.
pub const EVENT_LOG_ENV: &str = "PEAPOD_EVENT_LOG";

/// One record of the log: `envelope` length-delimited, to be appended in one `write`.
///
/// Errors: protobuf's, when the envelope cannot be encoded.
pub fn encode(envelope: &Envelope) -> Result<Vec<u8>, containerd_shim_protos::protobuf::Error> {
    envelope.write_length_delimited_to_bytes()
}

/// Reads the event log at `path`: the envelopes in order. A record cut short (the shim
/// killed mid-write) ends the list; a missing file is an empty log.
///
/// Errors: reading the file (other than it not existing).
pub fn read(path: &Path) -> io::Result<Vec<Envelope>> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    Ok(decode(&bytes))
}

/// The envelopes of an event log's bytes, in order, up to the first record that does not
/// decode (a record cut short by a shim killed mid-write, or garbage).
pub fn decode(bytes: &[u8]) -> Vec<Envelope> {
    let mut input = CodedInputStream::from_bytes(bytes);
    let mut out = Vec::new();
    while !input.eof().unwrap_or(true) {
        match input.read_message::<Envelope>() {
            Ok(e) => out.push(e),
            Err(_) => break,
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope(topic: &str) -> Envelope {
        Envelope {
            topic: topic.to_string(),
            namespace: "ns".to_string(),
            ..Default::default()
        }
    }

    #[test]
    fn records_read_back_in_order_and_a_torn_one_ends_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events");
        let mut bytes = encode(&envelope("/tasks/start")).unwrap();
        bytes.extend(encode(&envelope("/tasks/exit")).unwrap());
        std::fs::write(&path, &bytes).unwrap();
        let topics: Vec<String> = read(&path).unwrap().into_iter().map(|e| e.topic).collect();
        assert_eq!(topics, ["/tasks/start", "/tasks/exit"]);
        bytes.truncate(bytes.len() - 2);
        std::fs::write(&path, bytes).unwrap();
        assert_eq!(read(&path).unwrap().len(), 1);
        assert!(read(&dir.path().join("missing")).unwrap().is_empty());
    }
}
