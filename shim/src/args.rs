//! Command-line flags of a shim v2 binary, exactly as containerd passes them (Go `flag`
//! syntax: `-name value`, `-name=value`, `--name`, bare booleans), then an optional action:
//! `start`, `delete`, or none to serve.
//!
//! containerd 1.6 runs `containerd-shim-peapod-v2 -namespace k8s.io -address
//! /run/containerd/containerd.sock -publish-binary /usr/bin/containerd -id <id> start`
//! with the bundle as working directory (`-bundle` is passed too by newer releases).
//! containerd ≥ 2.2 also runs `containerd-shim-peapod-v2 -info` (runtime options on stdin,
//! protobuf `RuntimeInfo` on stdout) to introspect the runtime.
//! Model: rust-extensions `crates/shim/src/args.rs`.

use std::path::PathBuf;

/// Parsed flags.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Flags {
    /// containerd namespace (`-namespace`), e.g. `k8s.io`.
    pub namespace: String,
    /// Task id (`-id`).
    pub id: String,
    /// containerd's gRPC socket path (`-address`).
    pub address: String,
    /// containerd binary for the legacy publish path (`-publish-binary`); unused: events
    /// go to `TTRPC_ADDRESS`.
    pub publish_binary: String,
    /// Bundle directory (`-bundle`); defaults to the working directory.
    pub bundle: Option<PathBuf>,
    /// Debug logging (`-debug`).
    pub debug: bool,
    /// `-v` / `--version`.
    pub version: bool,
    /// `-info`: print the runtime's `RuntimeInfo` and exit (containerd 2.x's introspection).
    pub info: bool,
    /// `start`, `delete`, or empty to serve.
    pub action: String,
}

/// A flag containerd's contract does not know, or one missing its value.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ArgsError {
    /// Unknown `-flag`.
    #[error("unknown flag {0}")]
    Unknown(String),
    /// `-flag` at the end without a value.
    #[error("flag {0} needs a value")]
    MissingValue(String),
    /// More than one action word.
    #[error("unexpected argument {0:?} after action {1:?}")]
    Extra(String, String),
}

/// Parses `args` (without the program name).
pub fn parse<I: IntoIterator<Item = String>>(args: I) -> Result<Flags, ArgsError> {
    let mut flags = Flags::default();
    let mut it = args.into_iter();
    while let Some(arg) = it.next() {
        let Some(stripped) = arg.strip_prefix('-') else {
            if !flags.action.is_empty() {
                return Err(ArgsError::Extra(arg, flags.action));
            }
            flags.action = arg;
            continue;
        };
        let stripped = stripped.strip_prefix('-').unwrap_or(stripped);
        let (name, inline) = match stripped.split_once('=') {
            Some((n, v)) => (n.to_string(), Some(v.to_string())),
            None => (stripped.to_string(), None),
        };
        match name.as_str() {
            "debug" => flags.debug = inline.as_deref().is_none_or(|v| v == "true" || v == "1"),
            "v" | "version" => flags.version = true,
            "info" => flags.info = inline.as_deref().is_none_or(|v| v == "true" || v == "1"),
            "namespace" | "id" | "address" | "publish-binary" | "bundle" => {
                let value = match inline {
                    Some(v) => v,
                    None => it.next().ok_or_else(|| ArgsError::MissingValue(arg.clone()))?,
                };
                match name.as_str() {
                    "namespace" => flags.namespace = value,
                    "id" => flags.id = value,
                    "address" => flags.address = value,
                    "publish-binary" => flags.publish_binary = value,
                    _ => flags.bundle = Some(PathBuf::from(value)),
                }
            }
            _ => return Err(ArgsError::Unknown(arg)),
        }
    }
    Ok(flags)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Result<Flags, ArgsError> {
        parse(args.iter().map(|s| s.to_string()))
    }

    #[test]
    fn containerd_1_6_start_line_parses() {
        let f = p(&[
            "-namespace",
            "k8s.io",
            "-address",
            "/run/containerd/containerd.sock",
            "-publish-binary",
            "/usr/bin/containerd",
            "-id",
            "abc",
            "-debug",
            "start",
        ])
        .unwrap();
        assert_eq!(f.namespace, "k8s.io");
        assert_eq!(f.address, "/run/containerd/containerd.sock");
        assert_eq!(f.id, "abc");
        assert!(f.debug);
        assert_eq!(f.action, "start");
    }

    #[test]
    fn inline_values_double_dashes_and_errors() {
        let f = p(&["--id=x", "-bundle=/b", "delete"]).unwrap();
        assert_eq!(
            (f.id.as_str(), f.bundle.as_deref()),
            ("x", Some(std::path::Path::new("/b")))
        );
        assert!(p(&["-v"]).unwrap().version);
        assert!(p(&["-info"]).unwrap().info);
        assert_eq!(p(&["-nope"]), Err(ArgsError::Unknown("-nope".into())));
        assert_eq!(p(&["-id"]), Err(ArgsError::MissingValue("-id".into())));
        assert!(matches!(p(&["start", "delete"]), Err(ArgsError::Extra(..))));
    }
}
