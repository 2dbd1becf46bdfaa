//! The bodies of peapod's fuzz targets, one function per target taking the fuzzer's bytes.
//!
//! `fuzz/fuzz_targets/<name>.rs` (cargo-fuzz, nightly, `make fuzz`) calls
//! `peapod_tests::fuzz::<name>`, and this module's unit test feeds every file of
//! `fuzz/corpus/<name>/` and `fuzz/regressions/<name>/` to the same function on the stable
//! toolchain without libFuzzer (`make unit-test`), so the fuzzer and the replay cannot
//! drift apart. A target fails by panicking: on a panic in the code under test, or on a
//! property it asserts (an unpacked layer wrote outside its directory, a planned pod's
//! annotations are refused by the shim that reads them).
//!
//! Each target drives the entry point the real caller uses on the same bytes: the CLI's
//! manifest parser and planner, the shim's spec loader and validator, the shim's request
//! checks (`shim::checks`) on each decoded Task and Sandbox API request, and so on.

use std::collections::HashMap;
use std::path::Path;

use containerd_shim_protos::api;
use containerd_shim_protos::protobuf::Message;
use containerd_shim_protos::sandbox_api::CreateSandboxRequest;

/// A target's body: panics on a failure, returns otherwise.
pub type Target = fn(&[u8]);

/// The targets, by the name of their corpus directory and fuzz target.
pub const TARGETS: &[(&str, Target)] = &[
    ("manifest", manifest),
    ("oci_spec", oci_spec),
    ("annotations", annotations),
    ("layer", layer),
    ("image_documents", image_documents),
    ("cri_log", cri_log),
    ("event_log", event_log),
    ("task_request", task_request),
    ("pod_sandbox", pod_sandbox),
    ("bootstrap", bootstrap),
];

/// A node's memory for planning, in bytes (8 GiB): `oom_score_adj` depends on it.
const MEMORY_CAPACITY: u64 = 8 << 30;

/// A Pod manifest (YAML, perhaps with ConfigMaps and Secrets as more documents) through
/// the CLI: [`peapod::manifest::parse_all`], [`peapod::manifest::plan`], then
/// [`peapod::config::resolve_env`], after which no reference may be left unresolved, and
/// [`peapod::volumes::resolve`], whose every file path must stay inside its volume
/// (relative, no `..` element, not kubelet's reserved `..` names). A
/// planned pod's annotations must be accepted by the shim
/// that reads them ([`proto::annotations::pod_config`] for the sandbox,
/// [`proto::annotations::Member::from_annotations`] for each container).
pub fn manifest(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(manifests) = peapod::manifest::parse_all(&[("fuzz.yaml".into(), text.into())]) else {
        return;
    };
    let Ok(plan) = peapod::manifest::plan(&manifests.pod, MEMORY_CAPACITY) else {
        return;
    };
    if let Ok(resolved) = peapod::config::resolve_env(&plan, &manifests.config) {
        for c in &resolved.containers {
            assert!(c.env_from.is_empty(), "envFrom left after resolve_env");
            for (name, v) in &c.env {
                assert!(
                    !matches!(v, peapod::manifest::EnvValue::Key { .. }),
                    "{name}: a reference left after resolve_env"
                );
            }
        }
    }
    if let Ok(volumes) = peapod::volumes::resolve(&plan, &manifests.config) {
        for (volume, payload) in &volumes.0 {
            for path in payload.keys() {
                let inside = !path.is_empty()
                    && !path.starts_with('/')
                    && !path.starts_with("..")
                    && path.split('/').all(|e| !e.is_empty() && e != "." && e != "..");
                assert!(inside, "volume {volume}: file {path:?} would leave the volume");
            }
        }
    }
    let sandbox = plan.sandbox_annotations();
    if let Err(e) = proto::annotations::pod_config(&sandbox) {
        panic!("the shim refuses the sandbox annotations the CLI planned: {e}: {sandbox:?}");
    }
    for c in &plan.containers {
        let mut a = plan.container_annotations(c);
        a.insert(proto::annotations::SANDBOX_ID.into(), "fuzz-sandbox".into());
        a.insert(
            proto::annotations::CONTAINER_TYPE.into(),
            proto::annotations::CONTAINER_TYPE_CONTAINER.into(),
        );
        if let Err(e) = proto::annotations::Member::from_annotations(&c.name, &a) {
            panic!(
                "the shim refuses the annotations the CLI planned for {}: {e}: {a:?}",
                c.name
            );
        }
    }
}

/// The bundle specs are validated in: `/`, so a relative `root.path` naming a host
/// directory (`tmp`) resolves and validation goes on past the root's existence.
const BUNDLE: &str = "/";

/// A bundle's `config.json` as the shim's Create reads it: [`sandbox::spec::parse_config`],
/// [`sandbox::spec::validate`], the seccomp profile compiled
/// ([`sandbox::seccomp::compile_uncached`]), and the task's pod membership from its
/// annotations ([`shim::checks::create_member`]).
pub fn oci_spec(data: &[u8]) {
    let Ok(spec) = sandbox::spec::parse_config(Path::new("config.json"), data) else {
        return;
    };
    let _ = shim::checks::create_member("fuzz", &spec);
    if sandbox::spec::validate("fuzz", Path::new(BUNDLE), &spec).is_err() {
        return;
    }
    if let Some(profile) = spec.linux().as_ref().and_then(|l| l.seccomp().as_ref()) {
        let _ = sandbox::seccomp::compile_uncached(profile);
    }
}

/// Annotations from bytes: one per line, `key=value` (the key up to the first `=`).
fn annotation_map(data: &[u8]) -> HashMap<String, String> {
    String::from_utf8_lossy(data)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// peapod's annotations (`key=value` lines) as the shim reads them: a sandbox's pod
/// configuration ([`proto::annotations::pod_config`]), a task's membership
/// ([`proto::annotations::Member::from_annotations`]), and the grace period of Update.
pub fn annotations(data: &[u8]) {
    let a = annotation_map(data);
    let _ = proto::annotations::pod_config(&a);
    let _ = proto::annotations::Member::from_annotations("fuzz", &a);
    let _ = proto::annotations::role(&a);
    if let Some(g) = a.get(proto::annotations::GRACE_PERIOD) {
        let _ = proto::annotations::parse_grace_seconds(g);
    }
}

/// Lists `dir`'s entries' names, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("list {}: {e}", dir.display()))
        .map(|e| {
            e.expect("read a directory entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    v.sort();
    v
}

/// An image layer (a tar stream, maybe gzipped) unpacked as an import unpacks it
/// ([`peapod::images::fuzzing::unpack_layer`]) into `<tmp>/a/b/layer`, beside
/// `<tmp>/a/b/sentinel` and `<tmp>/a/outside/sentinel`. Whatever the entries say (`..`,
/// absolute names, symlinks then entries through them, hard links, whiteouts), nothing
/// changes outside `layer`: each level holds what it held, the sentinels keep their
/// content and no hard link is made to them.
pub fn layer(data: &[u8]) {
    let tmp = tempfile::tempdir().expect("make a temp dir");
    let a = tmp.path().join("a");
    let b = a.join("b");
    let dest = b.join("layer");
    std::fs::create_dir_all(&dest).expect("make the layer dir");
    std::fs::create_dir_all(a.join("outside")).expect("make the outside dir");
    let sentinels = [b.join("sentinel"), a.join("outside/sentinel")];
    for s in &sentinels {
        std::fs::write(s, b"sentinel").expect("write a sentinel");
    }
    let _ = peapod::images::fuzzing::unpack_layer(data, &dest);
    assert_eq!(names(tmp.path()), ["a"], "the layer wrote beside a/ ");
    assert_eq!(names(&a), ["b", "outside"], "the layer wrote into a/");
    assert_eq!(
        names(&a.join("outside")),
        ["sentinel"],
        "the layer wrote into a/outside/"
    );
    assert_eq!(names(&b), ["layer", "sentinel"], "the layer wrote beside itself");
    for s in &sentinels {
        let meta = std::fs::symlink_metadata(s).unwrap_or_else(|e| panic!("{}: {e}", s.display()));
        assert!(meta.is_file(), "{} was replaced", s.display());
        assert_eq!(
            std::os::unix::fs::MetadataExt::nlink(&meta),
            1,
            "{} was hard-linked",
            s.display()
        );
        assert_eq!(
            std::fs::read(s).expect("read a sentinel"),
            b"sentinel",
            "{} changed",
            s.display()
        );
    }
    // An unprivileged replay cannot remove what sits in a directory unpacked without
    // write permission: give them all back.
    if !nix::unistd::geteuid().is_root() {
        writable(&dest);
    }
}

/// Makes `dir` and every directory under it (symlinks not followed) `u+rwx`.
fn writable(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            writable(&e.path());
        }
    }
}

/// An image document (index, manifest, config) as the store reads one
/// ([`peapod::images::fuzzing::documents`]).
pub fn image_documents(data: &[u8]) {
    peapod::images::fuzzing::documents(data);
}

/// A CRI log file as `peapod logs` reads it ([`proto::crilog::Lines::feed`]): the first
/// byte picks `--timestamps` and a `--since`/`--until` window, the rest is the file.
/// Besides not panicking, the reader never consumes more than it was given.
pub fn cri_log(data: &[u8]) {
    let Some((&flags, log)) = data.split_first() else {
        return;
    };
    let at = |s: &str| s.parse::<jiff::Timestamp>().ok();
    let opts = proto::crilog::Options {
        timestamps: flags & 1 != 0,
        since: (flags & 2 != 0).then(|| at("2016-10-06T00:17:09Z")).flatten(),
        until: (flags & 4 != 0).then(|| at("2030-01-01T00:00:00Z")).flatten(),
    };
    let mut lines = proto::crilog::Lines::new(opts);
    let mut out = Vec::new();
    let consumed = lines.feed(log, &mut out).unwrap_or(0);
    assert!(
        consumed <= log.len() as u64,
        "consumed {consumed} of {} bytes",
        log.len()
    );
    if let Ok(text) = std::str::from_utf8(log) {
        for line in text.lines() {
            let _ = proto::crilog::parse(line);
        }
    }
}

/// An embedded-mode event log as the CLI reads it ([`proto::eventlog::decode`]); every
/// envelope read encodes again.
pub fn event_log(data: &[u8]) {
    for e in proto::eventlog::decode(data) {
        proto::eventlog::encode(&e).expect("a decoded envelope encodes");
    }
}

/// A ttrpc request as the shim's Task and Sandbox API handlers receive it: the first byte
/// picks the request type, the rest is its protobuf encoding; each decoded request goes
/// through the checks its handler runs before it touches any task (`shim::checks`).
/// Requests whose handlers check nothing beyond a task lookup are only decoded.
pub fn task_request(data: &[u8]) {
    let Some((&which, msg)) = data.split_first() else {
        return;
    };
    fn decode<M: Message>(msg: &[u8]) -> Option<M> {
        M::parse_from_bytes(msg).ok()
    }
    match which % 16 {
        0 => {
            if let Some(r) = decode::<api::CreateTaskRequest>(msg) {
                let _ = shim::checks::create_task(&r);
            }
        }
        1 => {
            if let Some(r) = decode::<api::ExecProcessRequest>(msg) {
                let _ = shim::checks::exec_process(&r);
            }
        }
        2 => {
            if let Some(r) = decode::<api::KillRequest>(msg) {
                let _ = shim::checks::kill_signal(&r);
            }
        }
        3 => {
            if let Some(r) = decode::<api::UpdateTaskRequest>(msg) {
                let _ = shim::checks::update_task(&r);
            }
        }
        4 => {
            if let Some(r) = decode::<CreateSandboxRequest>(msg) {
                let _ = shim::checks::create_sandbox(&r);
            }
        }
        5 => drop(decode::<api::StartRequest>(msg)),
        6 => drop(decode::<api::DeleteRequest>(msg)),
        7 => drop(decode::<api::WaitRequest>(msg)),
        8 => drop(decode::<api::StateRequest>(msg)),
        9 => drop(decode::<api::ResizePtyRequest>(msg)),
        10 => drop(decode::<api::CloseIORequest>(msg)),
        11 => drop(decode::<api::PidsRequest>(msg)),
        12 => drop(decode::<api::StatsRequest>(msg)),
        13 => drop(decode::<api::ConnectRequest>(msg)),
        14 => drop(decode::<api::PauseRequest>(msg)),
        _ => drop(decode::<api::ShutdownRequest>(msg)),
    }
}

/// CRI's `PodSandboxConfig` (protobuf) as the Sandbox API's CreateSandbox reads it from its
/// options ([`proto::podsandbox::PodSandbox::from_options`]), with and without a network
/// namespace path; a config that reads is then merged with its annotations as
/// CreateSandbox merges them ([`shim::checks::create_sandbox`]).
pub fn pod_sandbox(data: &[u8]) {
    let url = format!("type.googleapis.com/{}", proto::podsandbox::TYPE_URL);
    let none = HashMap::new();
    for netns in ["", "/var/run/netns/fuzz"] {
        if proto::podsandbox::PodSandbox::from_options(&url, data, netns, &none).is_err() {
            continue;
        }
        let req = CreateSandboxRequest {
            sandbox_id: "fuzz".into(),
            netns_path: netns.into(),
            options: Some(containerd_shim_protos::protobuf::well_known_types::any::Any {
                type_url: url.clone(),
                value: data.to_vec(),
                ..Default::default()
            })
            .into(),
            ..Default::default()
        };
        let _ = shim::checks::create_sandbox(&req);
    }
}

/// The shim's `start` stdin as [`shim::bootstrap::parse`] reads it (containerd 2.3's
/// `BootstrapParams`, or runtime options alone, with and without `$MAX_SHIM_VERSION`),
/// then the runtime options it carries ([`shim::options::RuntimeOptions::from_any`]) and
/// the answer written back ([`shim::bootstrap::answer`]).
pub fn bootstrap(data: &[u8]) {
    for max in [None, Some("3")] {
        let Ok(input) = shim::bootstrap::parse(data, max) else {
            continue;
        };
        if let Some(any) = &input.options {
            let _ = shim::options::RuntimeOptions::from_any(any);
            let _ = shim::options::runtime_info(Some(any));
        }
        let _ = shim::bootstrap::answer(input.generation, "unix:///run/fuzz.sock");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The corpus the fuzzer kept (`fuzz/corpus/<target>/`, minimized) and the inputs
    /// that once failed (`fuzz/regressions/<target>/`), fed to each target: none panics.
    #[test]
    fn every_corpus_and_regression_input_replays() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
        let started = std::time::Instant::now();
        let mut total = 0;
        for (name, target) in TARGETS {
            let mut n = 0;
            for kind in ["corpus", "regressions"] {
                let dir = root.join(kind).join(name);
                let Ok(entries) = std::fs::read_dir(&dir) else {
                    assert!(kind == "regressions", "{}: missing", dir.display());
                    continue;
                };
                for e in entries {
                    let path = e.expect("read a corpus entry").path();
                    let data = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                    let r = std::panic::catch_unwind(|| target(&data));
                    assert!(r.is_ok(), "{name}: {} panics", path.display());
                    n += 1;
                }
            }
            assert!(n > 0, "{name}: no corpus: run `make fuzz`");
            total += n;
        }
        eprintln!("replayed {total} inputs in {:?}", started.elapsed());
    }
}
