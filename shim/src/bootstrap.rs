//! What containerd tells `start` beyond its flags, and how `start` answers, for each
//! containerd generation, as containerd's own runc shim of that generation does:
//!
//! | containerd | stdin | environment | answer on stdout |
//! |---|---|---|---|
//! | 1.6 | runtime options as a protobuf `Any`, or nothing | no `MAX_SHIM_VERSION` | the plain address: Task API v2 |
//! | 2.0–2.2 | the same | `MAX_SHIM_VERSION=2` | JSON `{"version":3,"address":…,"protocol":"ttrpc"}`: Task API v3 |
//! | ≥ 2.3 | protobuf `BootstrapParams`, the options one of its `extensions` | the same | protobuf `BootstrapResult` (version 3, address, "ttrpc") |
//!
//! Sources: 1.6.20 `runtime/v2/shim/util.go` `Command` (stdin, no `MAX_SHIM_VERSION`) and
//! `runtime/v2/shim.go` (the answer is the address); 2.1.5 `pkg/shim/util.go` (sets
//! `MAX_SHIM_VERSION=2`, as 1.7 did) and `cmd/containerd-shim-runc-v2/manager`, whose
//! `Start` answers version 3 unconditionally (it ships with its containerd, so it never
//! has to decide; peapod decides by what it is given); 2.3.4 `pkg/shim/util.go`
//! (`BootstrapParams` on stdin), `pkg/shim/shim.go` "start" (reads stdin once, up to
//! 10 MiB, tries `BootstrapParams`, then the bare options) and `core/runtime/v2/shim.go`
//! `parseStartResponse` (protobuf first, then JSON, then the plain address).
//!
//! containerd 1.7 (end of life) also sets `MAX_SHIM_VERSION=2` but refuses version 3, as
//! it refuses runc's 2.x shim; it is not supported.
//!
//! containerd reads the answer with `CombinedOutput`: anything on stderr would corrupt it,
//! so `start` writes nothing there unless it fails.

use std::io::{self, Read};
use std::path::PathBuf;

use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::Message;
use proto::wire::bootstrap::{BootstrapParams, BootstrapResult, LogLevel};

/// Environment variable containerd ≥ 1.7 sets for its shims (always `2`).
pub const MAX_SHIM_VERSION_ENV: &str = "MAX_SHIM_VERSION";

/// The most `start` reads from stdin, as containerd 2.3's Go shims (10 MiB).
pub const STDIN_LIMIT: u64 = 10 << 20;

/// The Task API version peapod answers to containerd 2.x.
pub const TASK_API_V3: i32 = 3;

/// Which containerd runs `start`, as far as the answer it expects goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Generation {
    /// containerd 1.6 (and the peapod CLI's embedded mode): the plain address, Task API v2.
    V1_6,
    /// containerd 2.0–2.2: JSON bootstrap parameters with Task API v3.
    V2Json,
    /// containerd ≥ 2.3: protobuf `BootstrapResult` with Task API v3.
    V2Bootstrap,
}

/// `start`'s input that did not come from its flags.
#[derive(Debug, Clone, PartialEq)]
pub struct StartInput {
    /// Who is asking, hence what to answer.
    pub generation: Generation,
    /// The runtime options, if containerd sent any (see [`crate::options`]).
    pub options: Option<Any>,
    /// Where the shim's socket goes (`BootstrapParams.socket_dir`); `None` means
    /// [`crate::start::SOCKET_ROOT`].
    pub socket_dir: Option<PathBuf>,
    /// containerd's gRPC address from `BootstrapParams` (else the `-address` flag).
    pub grpc_address: Option<String>,
    /// containerd's ttrpc address from `BootstrapParams` (else `$TTRPC_ADDRESS`).
    pub ttrpc_address: Option<String>,
    /// `BootstrapParams` asked for debug or trace logging.
    pub debug: bool,
}

/// What containerd wrote on `start`'s stdin is neither `BootstrapParams` nor an `Any`.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    /// Reading stdin failed.
    #[error("read stdin")]
    Read(#[source] io::Error),
    /// More than [`STDIN_LIMIT`] bytes.
    #[error("stdin holds more than {STDIN_LIMIT} bytes")]
    TooLong,
    /// The bytes decode as neither message.
    #[error("stdin ({len} bytes) is neither containerd 2.3's BootstrapParams nor runtime options (protobuf Any)")]
    Undecodable {
        /// How many bytes.
        len: usize,
        /// Why they are not an `Any`.
        #[source]
        source: containerd_shim_protos::protobuf::Error,
    },
}

/// Reads stdin to its end, up to [`STDIN_LIMIT`] bytes (error beyond). A terminal or
/// `/dev/null` (not a pipe or file) is not read: containerd only ever gives a pipe.
pub fn read_stdin() -> Result<Vec<u8>, BootstrapError> {
    let readable = std::fs::metadata("/proc/self/fd/0").is_ok_and(|m| {
        use std::os::unix::fs::FileTypeExt;
        m.file_type().is_fifo() || m.is_file()
    });
    if !readable {
        return Ok(Vec::new());
    }
    let mut buf = Vec::new();
    io::stdin()
        .lock()
        .take(STDIN_LIMIT + 1)
        .read_to_end(&mut buf)
        .map_err(BootstrapError::Read)?;
    if buf.len() as u64 > STDIN_LIMIT {
        return Err(BootstrapError::TooLong);
    }
    Ok(buf)
}

/// Decodes `stdin` given the value of `$MAX_SHIM_VERSION` (`None` when unset).
///
/// `BootstrapParams` is recognised when the bytes decode as it and carry what only
/// containerd ≥ 2.3 writes (its version, one of its addresses, an extension or a socket
/// dir): an `Any` also decodes as `BootstrapParams` (its type URL and value fill fields 1
/// and 2, `instance_id` and `namespace`), but never has those. Otherwise the bytes are the
/// bare runtime options (`Any`), or nothing.
pub fn parse(stdin: &[u8], max_shim_version: Option<&str>) -> Result<StartInput, BootstrapError> {
    if let Ok(params) = BootstrapParams::parse_from_bytes(stdin) {
        if is_bootstrap(&params) {
            return Ok(from_params(params));
        }
    }
    let options = if stdin.is_empty() {
        None
    } else {
        let any = Any::parse_from_bytes(stdin).map_err(|source| BootstrapError::Undecodable {
            len: stdin.len(),
            source,
        })?;
        Some(any).filter(|a| !a.type_url.is_empty())
    };
    Ok(StartInput {
        generation: if max_shim_version.is_some() {
            Generation::V2Json
        } else {
            Generation::V1_6
        },
        options,
        socket_dir: None,
        grpc_address: None,
        ttrpc_address: None,
        debug: false,
    })
}

fn is_bootstrap(p: &BootstrapParams) -> bool {
    !p.containerd_version.is_empty()
        || !p.containerd_grpc_address.is_empty()
        || !p.containerd_ttrpc_address.is_empty()
        || !p.extensions.is_empty()
        || p.socket_dir.is_some()
}

fn from_params(params: BootstrapParams) -> StartInput {
    let debug = params.log_level.value() <= LogLevel::LOG_LEVEL_DEBUG as i32;
    let nonempty = |s: String| Some(s).filter(|s| !s.is_empty());
    // The first extension holding options peapod reads; else the first one (containerd
    // adds exactly one: the task's runtime options).
    let mut anys: Vec<Any> = params
        .extensions
        .into_iter()
        .filter_map(|e| e.value.into_option())
        .collect();
    let known = anys.iter().position(crate::options::is_known).unwrap_or(0);
    let options = (!anys.is_empty()).then(|| anys.swap_remove(known));
    StartInput {
        generation: Generation::V2Bootstrap,
        options,
        socket_dir: params.socket_dir.filter(|d| !d.is_empty()).map(PathBuf::from),
        grpc_address: nonempty(params.containerd_grpc_address),
        ttrpc_address: nonempty(params.containerd_ttrpc_address),
        debug,
    }
}

/// The bytes `start` prints for `address` (`unix://…`) to a containerd of `generation`.
pub fn answer(generation: Generation, address: &str) -> Vec<u8> {
    match generation {
        Generation::V1_6 => address.as_bytes().to_vec(),
        // Field order and names of Go's `shim.BootstrapParams` JSON.
        Generation::V2Json => format!(
            "{{\"version\":{TASK_API_V3},\"address\":{},\"protocol\":\"ttrpc\"}}",
            serde_json::Value::from(address)
        )
        .into_bytes(),
        Generation::V2Bootstrap => {
            let mut result = BootstrapResult::new();
            result.version = TASK_API_V3;
            result.address = address.to_string();
            result.protocol = "ttrpc".to_string();
            result.write_to_bytes().unwrap_or_default()
        }
    }
}

#[cfg(test)]
mod tests {
    use containerd_shim_protos::shim::oci::Options as RuncOptions;
    use proto::wire::bootstrap::Extension;

    use super::*;

    const ADDRESS: &str = "unix:///run/containerd/s/0123abcd";

    fn runc_options(cgroup: &str) -> Any {
        let mut o = RuncOptions::new();
        o.shim_cgroup = cgroup.into();
        let mut a = Any::new();
        a.type_url = "containerd.runc.v1.Options".into();
        a.value = o.write_to_bytes().unwrap();
        a
    }

    /// `BootstrapParams` as containerd 2.3.4's `shim.Command` fills them for "start".
    fn params_2_3(options: Option<Any>, socket_dir: Option<&str>) -> BootstrapParams {
        let mut p = BootstrapParams::new();
        p.instance_id = "pod1".into();
        p.namespace = "k8s.io".into();
        p.log_level = LogLevel::LOG_LEVEL_INFO.into();
        p.containerd_version = "v2.3.4".into();
        p.containerd_grpc_address = "/run/containerd/containerd.sock".into();
        p.containerd_ttrpc_address = "/run/containerd/containerd.sock.ttrpc".into();
        p.containerd_binary = "/usr/local/bin/containerd".into();
        if let Some(any) = options {
            let mut e = Extension::new();
            e.value = Some(any).into();
            p.extensions.push(e);
        }
        p.socket_dir = socket_dir.map(str::to_string);
        p
    }

    #[test]
    fn containerd_1_6_gives_options_or_nothing_and_gets_the_plain_address() {
        let input = parse(&[], None).unwrap();
        assert_eq!(input.generation, Generation::V1_6);
        assert_eq!(input.options, None);
        let any = runc_options("/shim");
        let input = parse(&any.write_to_bytes().unwrap(), None).unwrap();
        assert_eq!((input.generation, input.options), (Generation::V1_6, Some(any)));
        assert_eq!(answer(Generation::V1_6, ADDRESS), ADDRESS.as_bytes());
    }

    #[test]
    fn containerd_2_0_to_2_2_gets_json_version_3() {
        let any = runc_options("/shim");
        let input = parse(&any.write_to_bytes().unwrap(), Some("2")).unwrap();
        assert_eq!(input.generation, Generation::V2Json);
        assert_eq!(input.options, Some(any));
        assert_eq!(input.socket_dir, None);
        assert_eq!(parse(&[], Some("2")).unwrap().generation, Generation::V2Json);

        let out = answer(Generation::V2Json, ADDRESS);
        assert_eq!(
            String::from_utf8(out.clone()).unwrap(),
            format!("{{\"version\":3,\"address\":\"{ADDRESS}\",\"protocol\":\"ttrpc\"}}")
        );
        // What containerd 2.1.5's parseStartResponse unmarshals into shim.BootstrapParams.
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["version"], 3);
        assert_eq!(v["address"], ADDRESS);
        assert_eq!(v["protocol"], "ttrpc");
    }

    #[test]
    fn containerd_2_3_gives_bootstrap_params_and_gets_a_protobuf_result() {
        let any = runc_options("/containerd/shim");
        let bytes = params_2_3(Some(any.clone()), Some("/run/ctrd-s"))
            .write_to_bytes()
            .unwrap();
        let input = parse(&bytes, Some("2")).unwrap();
        assert_eq!(input.generation, Generation::V2Bootstrap);
        assert_eq!(input.options, Some(any));
        assert_eq!(input.socket_dir, Some(PathBuf::from("/run/ctrd-s")));
        assert_eq!(input.grpc_address.as_deref(), Some("/run/containerd/containerd.sock"));
        assert_eq!(
            input.ttrpc_address.as_deref(),
            Some("/run/containerd/containerd.sock.ttrpc")
        );
        assert!(!input.debug);

        let out = answer(Generation::V2Bootstrap, ADDRESS);
        let result = BootstrapResult::parse_from_bytes(&out).unwrap();
        assert_eq!(
            (result.version, result.address.as_str(), result.protocol.as_str()),
            (3, ADDRESS, "ttrpc")
        );
        // containerd tries protobuf first: the JSON or plain answers must not be taken
        // for a BootstrapResult by accident (they are not valid protobuf).
        assert!(BootstrapResult::parse_from_bytes(&answer(Generation::V2Json, ADDRESS)).is_err());
    }

    #[test]
    fn containerd_2_3_without_options_or_socket_dir_and_at_debug_level() {
        let mut p = params_2_3(None, None);
        p.log_level = LogLevel::LOG_LEVEL_TRACE.into();
        let input = parse(&p.write_to_bytes().unwrap(), Some("2")).unwrap();
        assert_eq!(input.generation, Generation::V2Bootstrap);
        assert_eq!((input.options, input.socket_dir), (None, None));
        assert!(input.debug);
    }

    #[test]
    fn an_options_any_that_also_decodes_as_bootstrap_params_stays_options() {
        let any = runc_options("/containerd/shim");
        let bytes = any.write_to_bytes().unwrap();
        // The pitfall: the Any's fields 1 and 2 read as instance_id and namespace.
        let p = BootstrapParams::parse_from_bytes(&bytes).unwrap();
        assert_eq!(p.instance_id, "containerd.runc.v1.Options");
        let input = parse(&bytes, Some("2")).unwrap();
        assert_eq!(input.generation, Generation::V2Json);
        assert_eq!(input.options, Some(any));
    }

    #[test]
    fn the_known_extension_is_chosen_among_several() {
        let mut p = params_2_3(None, None);
        for any in [
            {
                let mut a = Any::new();
                a.type_url = "containerd.io/nri.v1.PluginConfig".into();
                a
            },
            runc_options("/x"),
        ] {
            let mut e = Extension::new();
            e.value = Some(any).into();
            p.extensions.push(e);
        }
        let input = parse(&p.write_to_bytes().unwrap(), None).unwrap();
        assert_eq!(input.options, Some(runc_options("/x")));
    }

    #[test]
    fn garbage_on_stdin_fails_start() {
        let err = parse(&[0xff, 0xff, 0xff], Some("2")).unwrap_err();
        assert!(matches!(err, BootstrapError::Undecodable { len: 3, .. }), "{err}");
    }
}
