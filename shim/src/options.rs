//! Runtime options: what containerd hands `start` besides its flags, and what `-info`
//! echoes back.
//!
//! The options are a protobuf `Any`; which message it holds depends on who configured
//! the task, not on peapod:
//!
//! - `containerd.runc.v1.Options`: containerd 2.x's Go client (`WithShimCgroup` fills
//!   these for any runtime), and 1.6's for `io.containerd.runc.*` runtimes.
//! - `containerd.linux.runc.CreateOptions`: containerd 1.6's Go client `WithShimCgroup`
//!   for a runtime that is not runc's, such as peapod (1.6.20 `task_opts_unix.go`).
//! - `runtimeoptions.v1.Options`: containerd's CRI plugin for a runtime type that is
//!   neither runc's nor runhcs's (`GenerateRuntimeOptions`): the runtime's `options` table
//!   of containerd's config as TOML in `ConfigBody`, or a TOML file in `ConfigPath`
//!   (`ctr run --runtime-config-path` sends only the path). peapod reads `ShimCgroup` from
//!   that TOML, under the name runc's options give it (go-toml matches keys to Go field
//!   names without regard to case, so `shimcgroup` works too).
//!
//! Any other message is not peapod's to interpret and is ignored, as runc's shim ignores
//! options it cannot decode. Only `ShimCgroup` is used: the cgroup the shim daemon is
//! moved into (a path below the cgroup root, e.g. `/containerd/shim`), as runc's shim does.

use std::path::PathBuf;

use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::Message;
use containerd_shim_protos::shim::oci::Options as RuncOptions;
use containerd_shim_protos::types::introspection::{RuntimeInfo, RuntimeVersion};
use proto::wire::runctypes::CreateOptions as LegacyRuncOptions;
use proto::wire::runtimeoptions::Options as CriOptions;

/// The runtime name peapod's `-info` reports (containerd's `runtime_type`).
pub const RUNTIME_NAME: &str = "io.containerd.peapod.v2";

/// Type names (the part of an `Any` type URL after its last `/`) of the options peapod reads.
pub mod type_names {
    /// containerd's runc options (`api/types/runc/options/oci.proto`).
    pub const RUNC: &str = "containerd.runc.v1.Options";
    /// containerd 1.6's legacy runc create options (`runtime/linux/runctypes`).
    pub const LEGACY_RUNC: &str = "containerd.linux.runc.CreateOptions";
    /// CRI's options for other runtimes (`api/types/runtimeoptions/v1`).
    pub const CRI: &str = "runtimeoptions.v1.Options";
}

/// Runtime options that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum OptionsError {
    /// The `Any` names a message peapod reads, but its bytes do not decode as it.
    #[error("runtime options {type_url}: the bytes do not decode as that message")]
    Decode {
        /// The `Any`'s type URL.
        type_url: String,
        /// Cause.
        #[source]
        source: containerd_shim_protos::protobuf::Error,
    },
    /// `ConfigPath` names a file that cannot be read.
    #[error("runtime options: read ConfigPath {}", path.display())]
    ReadConfig {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The TOML (from `ConfigBody` or `ConfigPath`) does not parse, or `ShimCgroup` in it
    /// is not a string.
    #[error("runtime options: {origin}: {reason}")]
    Toml {
        /// `ConfigBody`, or `ConfigPath <file>`.
        origin: String,
        /// What is wrong, with the parser's position.
        reason: String,
    },
}

/// The runtime options peapod uses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuntimeOptions {
    /// The cgroup the shim daemon moves into (`ShimCgroup`), relative to the cgroup root.
    pub shim_cgroup: Option<String>,
}

/// The type name of `any`: its type URL after the last `/` (containerd's typeurl writes
/// bare names, Go's `anypb` `type.googleapis.com/<name>`; both match).
pub fn type_name(any: &Any) -> &str {
    any.type_url.rsplit('/').next().unwrap_or_default()
}

/// True when `any` holds one of the messages peapod reads ([`type_names`]).
pub fn is_known(any: &Any) -> bool {
    matches!(
        type_name(any),
        type_names::RUNC | type_names::LEGACY_RUNC | type_names::CRI
    )
}

impl RuntimeOptions {
    /// Reads the options in `any` (see the module docs for which messages). An unknown
    /// message yields no options. Errors: [`OptionsError`] naming the message, file or
    /// TOML at fault.
    pub fn from_any(any: &Any) -> Result<Self, OptionsError> {
        let decode = |source| OptionsError::Decode {
            type_url: any.type_url.clone(),
            source,
        };
        let shim_cgroup = match type_name(any) {
            type_names::RUNC => RuncOptions::parse_from_bytes(&any.value).map_err(decode)?.shim_cgroup,
            type_names::LEGACY_RUNC => {
                LegacyRuncOptions::parse_from_bytes(&any.value)
                    .map_err(decode)?
                    .shim_cgroup
            }
            type_names::CRI => {
                let cri = CriOptions::parse_from_bytes(&any.value).map_err(decode)?;
                let (origin, text) = if cri.config_path.is_empty() {
                    let text = String::from_utf8(cri.config_body).map_err(|e| OptionsError::Toml {
                        origin: "ConfigBody".into(),
                        reason: e.to_string(),
                    })?;
                    ("ConfigBody".to_string(), text)
                } else {
                    let path = PathBuf::from(&cri.config_path);
                    let text = std::fs::read_to_string(&path).map_err(|source| OptionsError::ReadConfig {
                        path: path.clone(),
                        source,
                    })?;
                    (format!("ConfigPath {}", path.display()), text)
                };
                shim_cgroup_from_toml(&text).map_err(|reason| OptionsError::Toml { origin, reason })?
            }
            _ => return Ok(Self::default()),
        };
        Ok(Self {
            shim_cgroup: Some(shim_cgroup).filter(|c| !c.is_empty()),
        })
    }
}

/// `ShimCgroup` (any case) at the top level of the TOML `text`; empty when absent.
fn shim_cgroup_from_toml(text: &str) -> Result<String, String> {
    let doc: toml_edit::DocumentMut = text.parse().map_err(|e: toml_edit::TomlError| e.to_string())?;
    let Some((key, item)) = doc
        .as_table()
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("ShimCgroup"))
    else {
        return Ok(String::new());
    };
    item.as_str()
        .map(str::to_string)
        .ok_or_else(|| format!("{key} is not a string"))
}

/// What `-info` prints (protobuf `containerd.types.RuntimeInfo`), for the options `any`
/// read from stdin: peapod's runtime name and version, and the options echoed back when
/// peapod reads them (runc's shim echoes its parsed options). No OCI `features`: containerd
/// then treats the runtime as not supporting idmapped mounts and CRI user namespaces.
pub fn runtime_info(any: Option<&Any>) -> RuntimeInfo {
    let mut info = RuntimeInfo::new();
    info.name = RUNTIME_NAME.to_string();
    let mut version = RuntimeVersion::new();
    version.version = env!("CARGO_PKG_VERSION").to_string();
    info.version = Some(version).into();
    if let Some(any) = any.filter(|a| is_known(a)) {
        info.options = Some(any.clone()).into();
    }
    info
}

#[cfg(test)]
mod tests {
    use super::*;

    fn any(type_url: &str, msg: &dyn containerd_shim_protos::protobuf::MessageDyn) -> Any {
        let mut a = Any::new();
        a.type_url = type_url.to_string();
        a.value = msg.write_to_bytes_dyn().unwrap();
        a
    }

    #[test]
    fn shim_cgroup_comes_from_runc_options_of_containerd_2_clients() {
        let mut o = RuncOptions::new();
        o.shim_cgroup = "/containerd/shim".into();
        o.binary_name = "runc".into();
        let opts = RuntimeOptions::from_any(&any("containerd.runc.v1.Options", &o)).unwrap();
        assert_eq!(opts.shim_cgroup.as_deref(), Some("/containerd/shim"));
        // Go's anypb prefix matches too.
        let a = any("type.googleapis.com/containerd.runc.v1.Options", &o);
        assert_eq!(RuntimeOptions::from_any(&a).unwrap(), opts);
    }

    #[test]
    fn shim_cgroup_comes_from_containerd_1_6_legacy_create_options() {
        let mut o = LegacyRuncOptions::new();
        o.shim_cgroup = "/containerd/shim".into();
        o.io_uid = 1000;
        let a = any("containerd.linux.runc.CreateOptions", &o);
        // Field 9, not runc.v1's field 3: decoding it as the newer message would miss it.
        assert!(RuncOptions::parse_from_bytes(&a.value).unwrap().shim_cgroup.is_empty());
        let opts = RuntimeOptions::from_any(&a).unwrap();
        assert_eq!(opts.shim_cgroup.as_deref(), Some("/containerd/shim"));
    }

    #[test]
    fn shim_cgroup_comes_from_cri_toml_body_or_config_file() {
        // go-toml v2 writes literal strings, as containerd's CRI marshals the options table.
        let mut o = CriOptions::new();
        o.config_body = b"ShimCgroup = '/peapod/shims'\nOther = 1\n".to_vec();
        let opts = RuntimeOptions::from_any(&any("runtimeoptions.v1.Options", &o)).unwrap();
        assert_eq!(opts.shim_cgroup.as_deref(), Some("/peapod/shims"));

        o.config_body = b"shimcgroup = \"/lower\"".to_vec();
        let opts = RuntimeOptions::from_any(&any("runtimeoptions.v1.Options", &o)).unwrap();
        assert_eq!(opts.shim_cgroup.as_deref(), Some("/lower"));

        o.config_body = b"Other = 'x'".to_vec();
        assert_eq!(
            RuntimeOptions::from_any(&any("runtimeoptions.v1.Options", &o)).unwrap(),
            RuntimeOptions::default()
        );

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("peapod.toml");
        std::fs::write(&file, "ShimCgroup = \"/from/file\"\n").unwrap();
        let mut o = CriOptions::new();
        o.config_path = file.to_string_lossy().into_owned();
        o.config_body = b"ShimCgroup = '/ignored'".to_vec();
        let opts = RuntimeOptions::from_any(&any("runtimeoptions.v1.Options", &o)).unwrap();
        assert_eq!(opts.shim_cgroup.as_deref(), Some("/from/file"));
    }

    #[test]
    fn bad_options_fail_naming_what_is_wrong() {
        let mut o = CriOptions::new();
        o.config_body = b"ShimCgroup = 3".to_vec();
        let err = RuntimeOptions::from_any(&any("runtimeoptions.v1.Options", &o)).unwrap_err();
        assert!(err.to_string().contains("ShimCgroup is not a string"), "{err}");

        o.config_body = b"ShimCgroup = ".to_vec();
        let err = RuntimeOptions::from_any(&any("runtimeoptions.v1.Options", &o)).unwrap_err();
        assert!(err.to_string().contains("ConfigBody"), "{err}");

        let mut o = CriOptions::new();
        o.config_path = "/nonexistent/peapod.toml".into();
        let err = RuntimeOptions::from_any(&any("runtimeoptions.v1.Options", &o)).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/peapod.toml"), "{err}");

        let mut a = Any::new();
        a.type_url = "containerd.runc.v1.Options".into();
        a.value = vec![0x1a, 0x10, b'x'];
        let err = RuntimeOptions::from_any(&a).unwrap_err();
        assert!(err.to_string().contains("containerd.runc.v1.Options"), "{err}");
    }

    #[test]
    fn unknown_options_are_ignored() {
        let mut a = Any::new();
        a.type_url = "io.example.Options".into();
        a.value = vec![0xff, 0xff];
        assert_eq!(RuntimeOptions::from_any(&a).unwrap(), RuntimeOptions::default());
    }

    #[test]
    fn info_names_peapod_and_echoes_options_it_reads() {
        let info = runtime_info(None);
        assert_eq!(info.name, "io.containerd.peapod.v2");
        assert_eq!(info.version.version, env!("CARGO_PKG_VERSION"));
        assert!(info.options.is_none() && info.features.is_none());
        let mut o = RuncOptions::new();
        o.shim_cgroup = "/x".into();
        let a = any("containerd.runc.v1.Options", &o);
        assert_eq!(runtime_info(Some(&a)).options.unwrap(), a);
        let mut other = Any::new();
        other.type_url = "io.example.Options".into();
        assert!(runtime_info(Some(&other)).options.is_none());
    }
}
