//! Volumes kubelet fills with files: `configMap`, `secret`, `downwardAPI` and `projected`
//! (kubelet's `pkg/volume/{configmap,secret,downwardapi,projected}`), in three steps:
//!
//! 1. [`plan_volume`] checks a volume as the API server does
//!    (`pkg/apis/core/validation`: `validateKeyToPath`, `validateDownwardAPIVolumeFile`,
//!    `validateProjectionSources`): item paths relative, without a `..` element or NUL, not
//!    starting with `..` (kubelet's own `..data` lives there), keys valid ConfigMap keys,
//!    modes within 0..=0777, no two items writing the same path. The plan keeps the
//!    references, not the data, so it can be made again from the manifest (CRI mode
//!    rebuilds it from the sandbox's annotation).
//! 2. [`resolve`] makes each volume's payload from the ConfigMaps and Secrets given with
//!    the pod, as kubelet's `MakePayload`/`CollectData` do: no `items` projects every key
//!    at `defaultMode` (0644 when unset); a missing object or key fails the run with
//!    kubelet's `FailedMount` message naming the volume, unless the reference is
//!    `optional` (then the object adds nothing: an optional missing object is an empty
//!    volume). Downward API values stay field paths until [`set_up`] knows the pod's uid.
//! 3. [`set_up`] writes each volume, before any container of the pod exists, into a
//!    directory of its own, `<pod volumes>/kubernetes.io~<plugin>/<name>` (kubelet's
//!    `/var/lib/kubelet/pods/<uid>/volumes/...`), in kubelet's atomic-writer layout
//!    (`pkg/volume/util/atomic_writer.go`): the files in a timestamped directory
//!    `..2006_01_02_15_04_05.N`, a symlink `..data` to it, and one symlink per top-level
//!    name into `..data`. Secret, downwardAPI and projected volumes are a tmpfs of their
//!    own (kubelet wraps them in a Memory emptyDir: secrets never reach a disk);
//!    configMap volumes are on disk. Containers bind-mount them read-only, always
//!    (kubelet's `makeMounts` since CVE-2017-1002102), so nothing writes there after
//!    [`set_up`]. [`tear_down`] unmounts every mount below the pod's volume directory,
//!    then removes it.
//!
//! Who can reach the files: the pod's volume directory is created 0700 (`sandbox::hostdir`)
//! inside the pod's own 0700 directory, and each volume's directory is created fresh
//! (mkdir fails if it exists) before any container of the pod runs, so no container can
//! have placed a symlink on the way of a write; containers see a volume only through its
//! read-only bind mount. Even so no symlink is followed on the way: the pod's directories
//! are refused when they are links (`sandbox::hostdir::create_private`), the files are
//! written relative to the volume directory's fd without following any link, and
//! [`tear_down`] does not follow a link where the pod's directories should be (a leftover
//! or a planted link would otherwise aim the writes, the chmods, the unmounts and the
//! removal at the host directory it names).

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{DownwardAPIVolumeFile, KeyToPath as ApiKeyToPath, Volume, VolumeProjection};
use serde::{Deserialize, Serialize};

use crate::config::{ConfigObjects, ConfigSource};
use crate::manifest::{ManifestError, PodPlan, VolumeKind};

/// `defaultMode` when the manifest sets none: the API server's default for all four
/// (`ConfigMapVolumeSourceDefaultMode`, `SecretVolumeSourceDefaultMode`,
/// `DownwardAPIVolumeSourceDefaultMode`, `ProjectedVolumeSourceDefaultMode`).
pub const DEFAULT_MODE: u32 = 0o644;

/// Mode of a volume's root and of the directories inside it (the timestamped data
/// directory, item subdirectories): kubelet's 0755 for the data directory.
const DIR_MODE: u32 = 0o755;

/// The atomic writer's link to the current data directory.
const DATA_DIR_LINK: &str = "..data";

/// kubelet's limits on a payload path (`atomic_writer.go` `validatePath`): bytes.
const MAX_PATH_LENGTH: usize = 4096;
/// ... and on each of its elements, bytes.
const MAX_FILE_NAME_LENGTH: usize = 255;

/// The fields of the pod a downwardAPI volume file may hold (`validVolumeDownwardAPIFieldPathExpressions`).
const DOWNWARD_FIELDS: [&str; 5] = [
    "metadata.annotations",
    "metadata.labels",
    "metadata.name",
    "metadata.namespace",
    "metadata.uid",
];

/// The kubelet volume plugin that fills a volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Plugin {
    /// `configMap`.
    ConfigMap,
    /// `secret`.
    Secret,
    /// `downwardAPI`.
    DownwardApi,
    /// `projected`.
    Projected,
}

impl Plugin {
    /// kubelet's directory of the plugin's volumes in a pod's: `kubernetes.io~configmap`,
    /// `kubernetes.io~secret`, `kubernetes.io~downward-api`, `kubernetes.io~projected`.
    pub fn dir_name(self) -> &'static str {
        match self {
            Plugin::ConfigMap => "kubernetes.io~configmap",
            Plugin::Secret => "kubernetes.io~secret",
            Plugin::DownwardApi => "kubernetes.io~downward-api",
            Plugin::Projected => "kubernetes.io~projected",
        }
    }

    /// Whether the volume is a tmpfs: kubelet wraps secret, downwardAPI and projected
    /// volumes in a Memory emptyDir, configMap ones in a disk one.
    pub fn on_tmpfs(self) -> bool {
        self != Plugin::ConfigMap
    }
}

/// One `items` entry of a configMap or secret source (`KeyToPath`), checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyToPath {
    /// The key in the object's data.
    pub key: String,
    /// Where its file goes: relative, cleaned (no empty or `.` elements).
    pub path: String,
    /// `mode` (0..=0777); `None`: the volume's `defaultMode`.
    pub mode: Option<u32>,
}

/// A ConfigMap's or Secret's keys projected as files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectProjection {
    /// The object.
    pub source: ConfigSource,
    /// `items`; empty: every key, as a file named after it.
    pub items: Vec<KeyToPath>,
    /// `optional`: a missing object or key adds nothing.
    pub optional: bool,
    /// The manifest path of this source (`spec.volumes[0].configMap`), for errors.
    pub field: String,
    /// The manifest path of the name it references (`spec.volumes[0].secret.secretName`).
    pub name_field: String,
}

/// One `downwardAPI` item: a field of the pod as a file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DownwardApiFile {
    /// Where its file goes: relative, cleaned.
    pub path: String,
    /// `fieldRef.fieldPath`: `metadata.name`, `.namespace`, `.uid`, `.labels`, `.annotations`, or `metadata.labels['k']` /
    /// `metadata.annotations['k']`.
    pub field_path: String,
    /// `mode`; `None`: the volume's `defaultMode`.
    pub mode: Option<u32>,
}

/// One source of a volume's files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Projection {
    /// A ConfigMap's or a Secret's keys.
    Object(ObjectProjection),
    /// Fields of the pod.
    DownwardApi(Vec<DownwardApiFile>),
}

/// A configMap, secret, downwardAPI or projected volume, checked: one source for the first
/// three, `sources` in order for projected (a later source's file replaces an earlier one
/// of the same path, as kubelet merges the payloads).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PopulatedVolume {
    /// Which plugin.
    pub plugin: Plugin,
    /// `defaultMode` (0..=0777), [`DEFAULT_MODE`] when unset.
    pub default_mode: u32,
    /// Where the files come from.
    pub sources: Vec<Projection>,
    /// The volume's manifest path (`spec.volumes[2]`), for errors.
    pub field: String,
}

fn field(f: impl Into<String>, reason: impl Into<String>) -> ManifestError {
    ManifestError::Field {
        field: f.into(),
        reason: reason.into(),
    }
}

/// Checks `mode` (an item's `mode` or a volume's `defaultMode`) at field `f`: 0..=0777.
///
/// Errors: the API server's "must be a number between 0 and 0777 (octal), both inclusive".
pub fn check_mode(f: &str, mode: Option<i32>) -> Result<Option<u32>, ManifestError> {
    match mode {
        None => Ok(None),
        Some(m) => u32::try_from(m).ok().filter(|m| *m <= 0o777).map(Some).ok_or_else(|| {
            field(
                f,
                format!("{m}: must be a number between 0 and 0777 (octal), both inclusive"),
            )
        }),
    }
}

/// Checks that `key` (at field `f`) is a valid ConfigMap and Secret key (apimachinery's
/// `IsConfigMapKey`): at most 253 of `[-._a-zA-Z0-9]`, not `.` or `..`, not starting with
/// `..`. Such a key is one safe file name.
///
/// Errors: [`ManifestError::Field`] with the API server's message.
pub fn check_key(f: &str, key: &str) -> Result<(), ManifestError> {
    let bad = |why: &str| Err(field(f, format!("{key:?}: {why}")));
    if key.is_empty() {
        return bad("Required value");
    }
    if key.len() > 253 {
        return bad("must be no more than 253 characters");
    }
    if !key.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b)) {
        return bad(
            "a valid config key must consist of alphanumeric characters, '-', '_' or '.' \
             (e.g. 'key.name', or 'KEY_NAME', or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')",
        );
    }
    match key {
        "." => bad("must not be '.'"),
        ".." => bad("must not be '..'"),
        k if k.starts_with("..") => bad("must not start with '..'"),
        _ => Ok(()),
    }
}

/// Checks an item's `path` at field `f` as the API server (`ValidateLocalNonReservedPath`)
/// and kubelet's atomic writer (`validatePath`) do, and returns it cleaned (`path.Clean`:
/// no empty or `.` elements): not empty, relative, no `..` element, not starting with `..`
/// (kubelet's reserved names), no NUL byte (which no file name can hold), at most 4096
/// bytes with elements of at most 255.
///
/// Errors: [`ManifestError::Field`] naming the rule.
pub fn check_path(f: &str, path: &str) -> Result<String, ManifestError> {
    let bad = |why: &str| Err(field(f, format!("{path:?}: {why}")));
    if path.is_empty() {
        return bad("Required value");
    }
    if path.starts_with('/') {
        return bad("must be a relative path");
    }
    if path.split('/').any(|e| e == "..") {
        return bad("must not contain '..'");
    }
    // The API server lets NUL through (JSON and YAML can carry it) and kubelet's write then
    // fails with EINVAL; the kernel takes a path only up to its first NUL.
    if path.contains('\0') {
        return bad("must not contain NUL");
    }
    if path.len() > MAX_PATH_LENGTH {
        return bad("must be no more than 4096 bytes");
    }
    let elements: Vec<&str> = path.split('/').filter(|e| !e.is_empty() && *e != ".").collect();
    if elements.iter().any(|e| e.len() > MAX_FILE_NAME_LENGTH) {
        return bad("each element must be no more than 255 bytes");
    }
    match elements.first() {
        None => bad("must name a file in the volume, not the volume itself"),
        Some(first) if first.starts_with("..") => bad("must not start with '..'"),
        Some(_) => Ok(elements.join("/")),
    }
}

/// Whether `s` is a Kubernetes qualified name (label keys, annotation keys): an optional
/// DNS-subdomain prefix and `/`, then at most 63 of `[-._a-zA-Z0-9]` starting and ending
/// alphanumeric (apimachinery's `IsQualifiedName`).
fn is_qualified_name(s: &str) -> bool {
    let (prefix, name) = match s.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, s),
    };
    let name_ok = !name.is_empty()
        && name.len() <= 63
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
        && name.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && name.bytes().last().is_some_and(|b| b.is_ascii_alphanumeric());
    name_ok && prefix.is_none_or(|p| crate::manifest::dns_subdomain("", p).is_ok())
}

/// `metadata.labels['k']` → (`metadata.labels`, `k`): apimachinery's
/// `SplitMaybeSubscriptedPath`.
fn subscript(field_path: &str) -> Option<(&str, &str)> {
    let inner = field_path.strip_suffix("']")?;
    let (path, key) = inner.split_once("['")?;
    (!path.is_empty()).then_some((path, key))
}

/// Checks a downwardAPI `fieldRef.fieldPath` at field `f`: one of the pod's fields a
/// volume may hold, or a label or annotation by key.
fn check_field_path(f: &str, fp: &str) -> Result<(), ManifestError> {
    if let Some((path, key)) = subscript(fp) {
        return match path {
            "metadata.labels" | "metadata.annotations" if is_qualified_name(key) => Ok(()),
            "metadata.labels" | "metadata.annotations" => Err(field(
                f,
                format!("{fp:?}: invalid key subscript: {key:?} is not a qualified name"),
            )),
            _ => Err(field(
                f,
                format!("{fp:?}: fieldPath {path:?} does not support a subscript"),
            )),
        };
    }
    if DOWNWARD_FIELDS.contains(&fp) {
        return Ok(());
    }
    Err(field(
        f,
        format!(
            "Unsupported value: {fp:?}: supported values: {} (and labels or annotations by key)",
            DOWNWARD_FIELDS.join(", ")
        ),
    ))
}

/// The paths a volume's items write, for the duplicate check.
#[derive(Default)]
struct Targets(BTreeMap<String, String>);

impl Targets {
    /// Adds `path` (cleaned) written by field `f`. Errors: another item writes the same path,
    /// or a path inside it or one it is inside (a file cannot be a directory too).
    fn add(&mut self, f: &str, path: &str) -> Result<(), ManifestError> {
        for (other, by) in &self.0 {
            let nested = other.starts_with(&format!("{path}/")) || path.starts_with(&format!("{other}/"));
            if other == path || nested {
                return Err(field(
                    f,
                    format!(
                        "{path:?}: conflicting duplicate paths: {by} writes {other:?}{}",
                        if nested {
                            ", so one of them would be both a file and a directory"
                        } else {
                            ""
                        }
                    ),
                ));
            }
        }
        self.0.insert(path.to_string(), f.to_string());
        Ok(())
    }
}

/// `items` of a configMap or secret source at `f`, checked.
fn key_to_paths(
    f: &str,
    items: Option<&[ApiKeyToPath]>,
    targets: &mut Targets,
) -> Result<Vec<KeyToPath>, ManifestError> {
    let mut out = Vec::new();
    for (i, kp) in items.unwrap_or_default().iter().enumerate() {
        let item = format!("{f}.items[{i}]");
        check_key(&format!("{item}.key"), &kp.key)?;
        let path = check_path(&format!("{item}.path"), &kp.path)?;
        let mode = check_mode(&format!("{item}.mode"), kp.mode)?;
        targets.add(&format!("{item}.path"), &path)?;
        out.push(KeyToPath {
            key: kp.key.clone(),
            path,
            mode,
        });
    }
    Ok(out)
}

/// `items` of a downwardAPI source at `f`, checked; `resourceFieldRef` is refused by name.
fn downward_files(
    f: &str,
    items: Option<&[DownwardAPIVolumeFile]>,
    targets: &mut Targets,
) -> Result<Vec<DownwardApiFile>, ManifestError> {
    let mut out = Vec::new();
    for (i, item) in items.unwrap_or_default().iter().enumerate() {
        let base = format!("{f}.items[{i}]");
        let path = check_path(&format!("{base}.path"), &item.path)?;
        let mode = check_mode(&format!("{base}.mode"), item.mode)?;
        let field_path = match (&item.field_ref, &item.resource_field_ref) {
            (Some(_), Some(_)) => {
                return Err(field(
                    base,
                    "fieldRef and resourceFieldRef can not be specified simultaneously",
                ))
            }
            (None, None) => return Err(field(base, "one of fieldRef or resourceFieldRef is required")),
            (None, Some(_)) => {
                return Err(field(
                    format!("{base}.resourceFieldRef"),
                    "not supported by peapod yet (only fieldRef)",
                ))
            }
            (Some(r), None) => {
                if r.api_version.as_deref().is_some_and(|v| !v.is_empty() && v != "v1") {
                    return Err(field(
                        format!("{base}.fieldRef.apiVersion"),
                        format!("{:?}: only v1", r.api_version.as_deref().unwrap_or_default()),
                    ));
                }
                check_field_path(&format!("{base}.fieldRef.fieldPath"), &r.field_path)?;
                r.field_path.clone()
            }
        };
        targets.add(&format!("{base}.path"), &path)?;
        out.push(DownwardApiFile { path, field_path, mode });
    }
    Ok(out)
}

/// A configMap or secret source: its object name (required), items and `optional`.
fn object(
    f: &str,
    name_key: &str,
    source: fn(String) -> ConfigSource,
    name: Option<&str>,
    items: Option<&[ApiKeyToPath]>,
    optional: Option<bool>,
    targets: &mut Targets,
) -> Result<Projection, ManifestError> {
    let name_field = format!("{f}.{name_key}");
    let name = name
        .filter(|n| !n.is_empty())
        .ok_or_else(|| field(&name_field, "Required value"))?;
    Ok(Projection::Object(ObjectProjection {
        source: source(name.to_string()),
        items: key_to_paths(f, items, targets)?,
        optional: optional == Some(true),
        field: f.to_string(),
        name_field,
    }))
}

/// One `projected.sources[j]` at `f`: exactly one of configMap, secret or downwardAPI;
/// serviceAccountToken and clusterTrustBundle are refused by name (no API server issues
/// tokens or holds bundles here).
fn projection(f: &str, p: &VolumeProjection, targets: &mut Targets) -> Result<Projection, ManifestError> {
    let VolumeProjection {
        cluster_trust_bundle,
        config_map,
        downward_api,
        secret,
        service_account_token,
    } = p;
    if service_account_token.is_some() {
        return Err(field(
            format!("{f}.serviceAccountToken"),
            "not supported by peapod: there is no API server to issue service account tokens",
        ));
    }
    if cluster_trust_bundle.is_some() {
        return Err(field(
            format!("{f}.clusterTrustBundle"),
            "not supported by peapod: there is no API server holding ClusterTrustBundles",
        ));
    }
    match (config_map, secret, downward_api) {
        (Some(c), None, None) => object(
            &format!("{f}.configMap"),
            "name",
            ConfigSource::ConfigMap,
            Some(&c.name),
            c.items.as_deref(),
            c.optional,
            targets,
        ),
        (None, Some(s), None) => object(
            &format!("{f}.secret"),
            "name",
            ConfigSource::Secret,
            Some(&s.name),
            s.items.as_deref(),
            s.optional,
            targets,
        ),
        (None, None, Some(d)) => Ok(Projection::DownwardApi(downward_files(
            &format!("{f}.downwardAPI"),
            d.items.as_deref(),
            targets,
        )?)),
        (None, None, None) => Err(field(f, "must specify a source type")),
        _ => Err(field(f, "may not specify more than 1 source type")),
    }
}

/// The volume at manifest path `path` (`spec.volumes[i]`) if it is a configMap, secret,
/// downwardAPI or projected one, checked; `None` for other kinds.
///
/// Errors: [`ManifestError::Field`] naming the field that breaks a rule (see the module
/// doc), or a projected source peapod refuses.
pub fn plan_volume(path: &str, v: &Volume) -> Result<Option<PopulatedVolume>, ManifestError> {
    let mut targets = Targets::default();
    let (plugin, f, default_mode, sources) = if let Some(c) = &v.config_map {
        let f = format!("{path}.configMap");
        let src = object(
            &f,
            "name",
            ConfigSource::ConfigMap,
            Some(&c.name),
            c.items.as_deref(),
            c.optional,
            &mut targets,
        )?;
        (Plugin::ConfigMap, f, c.default_mode, vec![src])
    } else if let Some(s) = &v.secret {
        let f = format!("{path}.secret");
        let src = object(
            &f,
            "secretName",
            ConfigSource::Secret,
            s.secret_name.as_deref(),
            s.items.as_deref(),
            s.optional,
            &mut targets,
        )?;
        (Plugin::Secret, f, s.default_mode, vec![src])
    } else if let Some(d) = &v.downward_api {
        let f = format!("{path}.downwardAPI");
        let files = downward_files(&f, d.items.as_deref(), &mut targets)?;
        (
            Plugin::DownwardApi,
            f,
            d.default_mode,
            vec![Projection::DownwardApi(files)],
        )
    } else if let Some(p) = &v.projected {
        let f = format!("{path}.projected");
        let mut sources = Vec::new();
        for (j, src) in p.sources.iter().flatten().enumerate() {
            sources.push(projection(&format!("{f}.sources[{j}]"), src, &mut targets)?);
        }
        (Plugin::Projected, f, p.default_mode, sources)
    } else {
        return Ok(None);
    };
    Ok(Some(PopulatedVolume {
        plugin,
        default_mode: check_mode(&format!("{f}.defaultMode"), default_mode)?.unwrap_or(DEFAULT_MODE),
        sources,
        field: path.to_string(),
    }))
}

/// What goes into one file of a volume.
#[derive(Clone, PartialEq, Eq)]
pub enum FileData {
    /// Bytes from a ConfigMap or Secret.
    Bytes(Vec<u8>),
    /// A downwardAPI field path, resolved by [`set_up`] (the uid is known only then).
    Field(String),
}

impl std::fmt::Debug for FileData {
    // Secret values stay out of logs and panics.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FileData::Bytes(b) => write!(f, "Bytes(<{} bytes>)", b.len()),
            FileData::Field(p) => write!(f, "Field({p:?})"),
        }
    }
}

/// One file of a volume (kubelet's `volumeutil.FileProjection`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileProjection {
    /// Its content.
    pub data: FileData,
    /// Its mode (0..=0777).
    pub mode: u32,
}

/// A volume's files by path (relative, cleaned, checked).
pub type Payload = BTreeMap<String, FileProjection>;

/// Every populated volume's payload, by volume name.
#[derive(Debug, Clone, Default)]
pub struct ResolvedVolumes(pub BTreeMap<String, Payload>);

/// The payload of each configMap, secret, downwardAPI and projected volume of `plan`,
/// from `objects` (see the module doc for kubelet's rules).
///
/// Errors: [`ManifestError::Field`] naming the reference, with kubelet's reason and
/// message: `spec.volumes[0].configMap.name: FailedMount: MountVolume.SetUp failed for
/// volume "cfg" : configmap "x" not found`, `spec.volumes[0].secret.items[1].key:
/// FailedMount: ... : references non-existent secret key: k`; a key projected as a file
/// that another source's path needs as a directory.
pub fn resolve(plan: &PodPlan, objects: &ConfigObjects) -> Result<ResolvedVolumes, ManifestError> {
    let mut out = BTreeMap::new();
    for (name, kind) in &plan.volumes {
        let VolumeKind::Populated(v) = kind else { continue };
        let failed = |f: &str, why: String| {
            field(
                f,
                format!("FailedMount: MountVolume.SetUp failed for volume {name:?} : {why}"),
            )
        };
        let mut payload = Payload::new();
        for source in &v.sources {
            match source {
                Projection::Object(o) => {
                    let entries = match objects.files(&o.source) {
                        Some(e) => e,
                        None if o.optional => continue,
                        None => return Err(failed(&o.name_field, o.source.not_found())),
                    };
                    if o.items.is_empty() {
                        for (key, value) in &entries {
                            payload.insert(
                                key.to_string(),
                                FileProjection {
                                    data: FileData::Bytes(value.to_vec()),
                                    mode: v.default_mode,
                                },
                            );
                        }
                    }
                    for (i, item) in o.items.iter().enumerate() {
                        let Some(value) = entries.get(item.key.as_str()) else {
                            if o.optional {
                                continue;
                            }
                            let why = match o.source {
                                ConfigSource::ConfigMap(_) => "configmap references non-existent config key",
                                ConfigSource::Secret(_) => "references non-existent secret key",
                            };
                            return Err(failed(
                                &format!("{}.items[{i}].key", o.field),
                                format!("{why}: {}", item.key),
                            ));
                        };
                        payload.insert(
                            item.path.clone(),
                            FileProjection {
                                data: FileData::Bytes(value.to_vec()),
                                mode: item.mode.unwrap_or(v.default_mode),
                            },
                        );
                    }
                }
                Projection::DownwardApi(files) => {
                    for file in files {
                        payload.insert(
                            file.path.clone(),
                            FileProjection {
                                data: FileData::Field(file.field_path.clone()),
                                mode: file.mode.unwrap_or(v.default_mode),
                            },
                        );
                    }
                }
            }
        }
        // A key projected under its own name can collide with another source's directory;
        // kubelet's writer would fail half-way, here the run fails before anything exists.
        for path in payload.keys() {
            let dir = format!("{path}/");
            if let Some((inner, _)) = payload.range(dir.clone()..).next().filter(|(k, _)| k.starts_with(&dir)) {
                return Err(failed(
                    &v.field,
                    format!("{path:?} is a file, but {inner:?} needs it to be a directory"),
                ));
            }
        }
        out.insert(name.clone(), payload);
    }
    Ok(ResolvedVolumes(out))
}

/// kubelet's `fieldpath.FormatMap`: `key="value"` lines in key order, each value quoted
/// as Go's `%q` ([`go_quote`]), no newline after the last.
pub fn format_map(m: &BTreeMap<String, String>) -> String {
    m.iter()
        .map(|(k, v)| format!("{k}={}", go_quote(v)))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Whether Go's `strconv.IsPrint` holds for `c`: letters, marks, numbers, punctuation,
/// symbols and the ASCII space. Without Unicode's category tables this takes every
/// character as printable except the controls, every space or separator other than
/// U+0020, the format characters (Cf), private use and noncharacters; unassigned code
/// points (printed escaped by Go) are taken as printable.
fn go_is_print(c: char) -> bool {
    if c == ' ' {
        return true;
    }
    if c.is_control() || c.is_whitespace() {
        return false;
    }
    let u = u32::from(c);
    let format = matches!(
        u,
        0xAD | 0x600..=0x605
            | 0x61C
            | 0x6DD
            | 0x70F
            | 0x890..=0x891
            | 0x8E2
            | 0x180E
            | 0x200B..=0x200F
            | 0x202A..=0x202E
            | 0x2060..=0x2064
            | 0x2066..=0x206F
            | 0xFEFF
            | 0xFFF9..=0xFFFB
            | 0x110BD
            | 0x110CD
            | 0x13430..=0x1343F
            | 0x1BCA0..=0x1BCA3
            | 0x1D173..=0x1D17A
            | 0xE0001
            | 0xE0020..=0xE007F
    );
    let private_use = matches!(u, 0xE000..=0xF8FF | 0xF0000..=0xFFFFD | 0x100000..=0x10FFFD);
    let nonchar = (0xFDD0..=0xFDEF).contains(&u) || (u & 0xFFFE) == 0xFFFE;
    !(format || private_use || nonchar)
}

/// `s` quoted as Go's `strconv.Quote` (`%q`): in double quotes, `"` and `\` escaped,
/// `\a \b \f \n \r \t \v` for those controls, `\xNN` for other ASCII controls and DEL,
/// `\uNNNN` / `\UNNNNNNNN` for other characters Go does not print (`strconv.IsPrint`, approximated).
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if go_is_print(c) => out.push(c),
            '\x07' => out.push_str("\\a"),
            '\x08' => out.push_str("\\b"),
            '\x0c' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\x0b' => out.push_str("\\v"),
            c if u32::from(c) < 0x20 || c == '\x7f' => out.push_str(&format!("\\x{:02x}", u32::from(c))),
            c if u32::from(c) < 0x10000 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push_str(&format!("\\U{:08x}", u32::from(c))),
        }
    }
    out.push('"');
    out
}

/// The value of downwardAPI field path `fp` for the pod of `plan` with uid `uid`, as
/// kubelet's `fieldpath.ExtractFieldPathAsString`: labels and annotations as
/// [`format_map`], one of them by key (empty when absent).
pub fn field_value(plan: &PodPlan, uid: &str, fp: &str) -> String {
    if let Some((path, key)) = subscript(fp) {
        let map = match path {
            "metadata.labels" => &plan.labels,
            "metadata.annotations" => &plan.annotations,
            _ => return String::new(),
        };
        return map.get(key).cloned().unwrap_or_default();
    }
    match fp {
        "metadata.name" => plan.name.clone(),
        "metadata.namespace" => plan.namespace.clone(),
        "metadata.uid" => uid.to_string(),
        "metadata.labels" => format_map(&plan.labels),
        "metadata.annotations" => format_map(&plan.annotations),
        _ => String::new(),
    }
}

/// A failed step of setting up or tearing down a pod's populated volumes, naming the path.
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    /// A directory could not be created (one that exists already is refused: a volume's
    /// directory is always fresh).
    #[error("create {}", path.display())]
    Create {
        /// The directory.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The volume's tmpfs could not be mounted.
    #[error("mount a tmpfs on {}", path.display())]
    MountTmpfs {
        /// The volume's directory.
        path: PathBuf,
        /// Cause.
        #[source]
        source: nix::Error,
    },
    /// A file of the volume could not be written or given its mode.
    #[error("write {}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A symlink of the atomic-writer layout could not be made.
    #[error("symlink {} -> {target}", path.display())]
    Symlink {
        /// The link.
        path: PathBuf,
        /// What it points to.
        target: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// `..data_tmp` could not be renamed to `..data`.
    #[error("rename {} to {}", from.display(), to.display())]
    Rename {
        /// The temporary link.
        from: PathBuf,
        /// `..data`.
        to: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The pod's volume directory could not be resolved, or the mount table not read.
    #[error("read {}", path.display())]
    Read {
        /// The directory or `/proc/self/mountinfo`.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A mount below the pod's volume directory could not be unmounted.
    #[error("unmount {}", path.display())]
    Unmount {
        /// The mount point.
        path: PathBuf,
        /// Cause (boxed: rootfs errors are large).
        #[source]
        source: Box<sandbox::rootfs::RootfsError>,
    },
    /// Something is still mounted below the directory after unmounting: it is not removed
    /// (removing would reach into the mount).
    #[error("{} is still mounted", path.display())]
    StillMounted {
        /// The mount point.
        path: PathBuf,
    },
    /// The pod's volume directory could not be removed.
    #[error("remove {}", path.display())]
    Remove {
        /// The directory.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

/// The host directory of volume `name` filled by `plugin`, in the pod's volume directory
/// `pod_volumes`: `<pod_volumes>/kubernetes.io~<plugin>/<name>`.
pub fn volume_dir(pod_volumes: &Path, plugin: Plugin, name: &str) -> PathBuf {
    pod_volumes.join(plugin.dir_name()).join(name)
}

/// Creates directory `path` with `mode` (applied with chmod, whatever the umask); it must
/// not exist yet.
fn fresh_dir(path: &Path, mode: u32) -> Result<(), VolumeError> {
    let err = |source| VolumeError::Create {
        path: path.to_path_buf(),
        source,
    };
    fs::DirBuilder::new().mode(mode).create(path).map_err(err)?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(err)
}

/// Writes every configMap, secret, downwardAPI and projected volume of `plan` under
/// `pod_volumes` (created 0700; see [`volume_dir`]), with the payloads of `resolved`
/// (downwardAPI fields resolved for `uid`): each volume's directory created fresh (0755),
/// a tmpfs of `tmpfs_bytes` (`nosuid,nodev,mode=0755`) mounted on it for secret,
/// downwardAPI and projected volumes, then kubelet's atomic-writer layout (module doc).
/// Call before any container of the pod exists.
///
/// Errors: the first step that failed, naming its path; what was made stays for
/// [`tear_down`] to remove.
pub fn set_up(
    pod_volumes: &Path,
    plan: &PodPlan,
    resolved: &ResolvedVolumes,
    uid: &str,
    tmpfs_bytes: u64,
) -> Result<(), VolumeError> {
    let private = |path: &Path| {
        sandbox::hostdir::create_private(path).map_err(|source| VolumeError::Create {
            path: path.to_path_buf(),
            source,
        })
    };
    let empty = Payload::new();
    for (name, kind) in &plan.volumes {
        let VolumeKind::Populated(v) = kind else { continue };
        private(pod_volumes)?;
        let dir = volume_dir(pod_volumes, v.plugin, name);
        private(dir.parent().unwrap_or(pod_volumes))?;
        fresh_dir(&dir, DIR_MODE)?;
        if v.plugin.on_tmpfs() {
            let data = format!("mode={DIR_MODE:o},size={tmpfs_bytes}");
            nix::mount::mount(
                Some("tmpfs"),
                &dir,
                Some("tmpfs"),
                nix::mount::MsFlags::MS_NOSUID | nix::mount::MsFlags::MS_NODEV,
                Some(data.as_str()),
            )
            .map_err(|source| VolumeError::MountTmpfs {
                path: dir.clone(),
                source,
            })?;
        }
        let payload = resolved.0.get(name).unwrap_or(&empty);
        write_payload(&dir, payload, &|fp| field_value(plan, uid, fp).into_bytes())?;
    }
    Ok(())
}

/// kubelet's `AtomicWriter.Write` into a fresh volume directory `dir`: the files into a
/// new `..<UTC time>.<ns>` directory (0755; subdirectories 0755; each file with its mode,
/// set with chmod), `..data_tmp` → that directory renamed to `..data`, and one symlink
/// `<name>` → `..data/<name>` per top-level name. `field` gives a downwardAPI field's bytes.
///
/// Every step is relative to an fd of `dir`, one path element at a time, never following
/// a symlink (`O_NOFOLLOW`, and files `O_EXCL`): nothing is written outside `dir`, whatever
/// is found there, and an item path of up to 4096 bytes works wherever `dir` is (kubelet's
/// writer, which joins full paths, fails with ENAMETOOLONG past `PATH_MAX`).
fn write_payload(dir: &Path, payload: &Payload, field: &dyn Fn(&str) -> Vec<u8>) -> Result<(), VolumeError> {
    use nix::fcntl::{openat, renameat, OFlag};
    use nix::sys::stat::{fchmod, mkdirat, Mode};
    let dir_mode = Mode::from_bits_truncate(DIR_MODE);
    let open_dir = |at: &dyn std::os::fd::AsFd, name: &str| {
        openat(
            at.as_fd(),
            name,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
    };
    // A new directory `name` in `at`, 0755 whatever the umask; `Ok(false)` if one exists.
    let new_dir = |at: &dyn std::os::fd::AsFd, name: &str| -> nix::Result<bool> {
        match mkdirat(at.as_fd(), name, dir_mode) {
            Ok(()) => fchmod(open_dir(at, name)?, dir_mode).map(|()| true),
            Err(nix::errno::Errno::EEXIST) => Ok(false),
            Err(e) => Err(e),
        }
    };
    let create = |path: PathBuf| move |e: nix::errno::Errno| VolumeError::Create { path, source: e.into() };
    let vol = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(dir)
        .map_err(|source| VolumeError::Create {
            path: dir.to_path_buf(),
            source,
        })?;
    let now = jiff::Timestamp::now();
    let ts_name = format!("..{}.{}", now.strftime("%Y_%m_%d_%H_%M_%S"), now.subsec_nanosecond());
    let ts_dir = dir.join(&ts_name);
    if !new_dir(&vol, &ts_name).map_err(create(ts_dir.clone()))? {
        return Err(create(ts_dir)(nix::errno::Errno::EEXIST));
    }
    let ts = open_dir(&vol, &ts_name).map_err(create(ts_dir.clone()))?;
    for (path, file) in payload {
        let full = ts_dir.join(path);
        let (parents, name) = path.rsplit_once('/').unwrap_or(("", path));
        let mut at = ts.try_clone().map_err(|source| VolumeError::Create {
            path: ts_dir.clone(),
            source,
        })?;
        let mut walked = ts_dir.clone();
        for element in parents.split('/').filter(|e| !e.is_empty()) {
            walked.push(element);
            new_dir(&at, element).map_err(create(walked.clone()))?;
            at = open_dir(&at, element).map_err(create(walked.clone()))?;
        }
        let bytes = match &file.data {
            FileData::Bytes(b) => b.clone(),
            FileData::Field(fp) => field(fp),
        };
        let write_err = |source| VolumeError::Write {
            path: full.clone(),
            source,
        };
        let mode = Mode::from_bits_truncate(file.mode);
        let fd = openat(
            &at,
            name,
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            mode,
        )
        .map_err(|e| write_err(e.into()))?;
        let mut f = fs::File::from(fd);
        std::io::Write::write_all(&mut f, &bytes).map_err(write_err)?;
        fchmod(&f, mode).map_err(|e| write_err(e.into()))?;
    }
    let symlink = |target: &str, name: &str| {
        nix::unistd::symlinkat(target, &vol, name).map_err(|e| VolumeError::Symlink {
            path: dir.join(name),
            target: target.to_string(),
            source: e.into(),
        })
    };
    symlink(&ts_name, "..data_tmp")?;
    renameat(&vol, "..data_tmp", &vol, DATA_DIR_LINK).map_err(|e| VolumeError::Rename {
        from: dir.join("..data_tmp"),
        to: dir.join(DATA_DIR_LINK),
        source: e.into(),
    })?;
    let top: std::collections::BTreeSet<&str> = payload.keys().filter_map(|p| p.split('/').next()).collect();
    for name in top {
        symlink(&format!("{DATA_DIR_LINK}/{name}"), name)?;
    }
    Ok(())
}

/// `\NNN` octal escapes of `/proc/self/mountinfo` undone (a space is `\040`).
fn unescape_octal(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b
            .get(i + 1..i + 4)
            .filter(|d| b[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match octal {
            Some(d) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            None => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The mount points of `mountinfo` (the text of `/proc/self/mountinfo`) at or below `dir`,
/// deepest first (so each unmount finds its own mount on top).
pub fn mounts_under(mountinfo: &str, dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape_octal(p)))
        .filter(|p| p.starts_with(dir))
        .collect();
    out.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    out.dedup();
    out
}

const MOUNTINFO: &str = "/proc/self/mountinfo";

fn read_mountinfo() -> Result<String, VolumeError> {
    fs::read_to_string(MOUNTINFO).map_err(|source| VolumeError::Read {
        path: PathBuf::from(MOUNTINFO),
        source,
    })
}

/// Removes the pod's volume directory `pod_volumes`: every mount at or below it unmounted
/// first (the secret, downwardAPI and projected tmpfs, found in `/proc/self/mountinfo`,
/// so also those of a run that failed half-way), then the directory removed. Already gone
/// is fine; idempotent. When `pod_volumes` or the pod's directory above it is a symlink,
/// nothing is done (nothing is followed; the caller removes the link with the pod's
/// directory).
///
/// Errors: an unmount failed, something is still mounted there (nothing is removed then),
/// or the removal failed.
pub fn tear_down(pod_volumes: &Path) -> Result<(), VolumeError> {
    // The pod's directory and its volume directory are the runtime's own and never links
    // ([`set_up`] refuses them). One found there (a leftover, or planted) is not followed:
    // the unmounts and the removal would reach the host directory it names. The caller's
    // removal of the pod's directory takes the link itself away.
    for p in [Some(pod_volumes), pod_volumes.parent()].into_iter().flatten() {
        match fs::symlink_metadata(p) {
            Ok(m) if m.file_type().is_symlink() => return Ok(()),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(source) => {
                return Err(VolumeError::Read {
                    path: p.to_path_buf(),
                    source,
                })
            }
        }
    }
    let dir = match fs::canonicalize(pod_volumes) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(VolumeError::Read {
                path: pod_volumes.to_path_buf(),
                source,
            })
        }
    };
    for m in mounts_under(&read_mountinfo()?, &dir) {
        sandbox::rootfs::unmount_all(&m).map_err(|source| VolumeError::Unmount {
            path: m.clone(),
            source: Box::new(source),
        })?;
    }
    if let Some(m) = mounts_under(&read_mountinfo()?, &dir).into_iter().next() {
        return Err(VolumeError::StillMounted { path: m });
    }
    match fs::remove_dir_all(&dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(VolumeError::Remove { path: dir, source }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{parse_all, plan};

    const OBJECTS: &str = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cm}\ndata: {a.conf: A, b: B}\nbinaryData: {bin: /w==}\n---\napiVersion: v1\nkind: Secret\nmetadata: {name: s}\ndata: {pw: czNjcjN0}\nstringData: {user: admin}\n---\n";

    fn pod(volumes: &str) -> String {
        format!(
            "{OBJECTS}apiVersion: v1\nkind: Pod\nmetadata: {{name: p, labels: {{app: web, tier: \"a \\\"b\\\"\"}}, annotations: {{n: \"x\\ty\"}}}}\nspec:\n  volumes: {volumes}\n  containers:\n  - {{name: c, image: busybox}}\n"
        )
    }

    fn planned(volumes: &str) -> Result<(PodPlan, ConfigObjects), ManifestError> {
        let m = parse_all(&[("pod.yaml".into(), pod(volumes))])?;
        Ok((plan(&m.pod, 8 << 30)?, m.config))
    }

    fn resolved(volumes: &str) -> Result<(PodPlan, ResolvedVolumes), ManifestError> {
        let (p, objects) = planned(volumes)?;
        let r = resolve(&p, &objects)?;
        Ok((p, r))
    }

    fn err(volumes: &str) -> String {
        match resolved(volumes) {
            Ok(_) => panic!("{volumes} was accepted"),
            Err(e) => e.to_string(),
        }
    }

    fn files(r: &ResolvedVolumes, v: &str) -> Vec<(String, u32)> {
        r.0[v].iter().map(|(p, f)| (p.clone(), f.mode)).collect()
    }

    #[test]
    fn paths_are_relative_without_dotdot_and_unique() {
        for (path, why) in [
            ("", "Required value"),
            ("/etc/x", "must be a relative path"),
            ("a/../b", "must not contain '..'"),
            ("..", "must not contain '..'"),
            ("..data", "must not start with '..'"),
            ("./..x/y", "must not start with '..'"),
            (".", "not the volume itself"),
            ("x\0y", "must not contain NUL"),
            ("./", "not the volume itself"),
        ] {
            let e = check_path("f", path).unwrap_err().to_string();
            assert!(e.starts_with("f: ") && e.contains(why), "{path:?}: {e}");
        }
        assert!(check_path("f", &"a".repeat(256)).is_err());
        assert_eq!(check_path("f", "./a//b/./c").unwrap(), "a/b/c");
        assert_eq!(check_path("f", ".hidden/x..y").unwrap(), ".hidden/x..y");
        // Each violation names its field, in a plain volume and in a projected source.
        let e = err("[{name: v, configMap: {name: cm, items: [{key: a.conf, path: ok}, {key: b, path: ../x}]}}]");
        assert!(
            e.starts_with("spec.volumes[0].configMap.items[1].path: \"../x\": must not contain '..'"),
            "{e}"
        );
        let e = err("[{name: v, projected: {sources: [{configMap: {name: cm, items: [{key: b, path: x}]}}, {secret: {name: s, items: [{key: pw, path: ./x}]}}]}}]");
        assert!(
            e.starts_with("spec.volumes[0].projected.sources[1].secret.items[0].path: \"x\": conflicting duplicate paths: spec.volumes[0].projected.sources[0].configMap.items[0].path"),
            "{e}"
        );
        let e = err("[{name: v, downwardAPI: {items: [{path: a, fieldRef: {fieldPath: metadata.name}}, {path: a/b, fieldRef: {fieldPath: metadata.uid}}]}}]");
        assert!(
            e.starts_with("spec.volumes[0].downwardAPI.items[1].path: \"a/b\": conflicting duplicate paths"),
            "{e}"
        );
        let e = err("[{name: v, secret: {secretName: s, items: [{key: '../pw', path: p}]}}]");
        assert!(
            e.starts_with("spec.volumes[0].secret.items[0].key: \"../pw\": a valid config key"),
            "{e}"
        );
        let e = err("[{name: v, secret: {secretName: s, items: [{key: ..pw, path: p}]}}]");
        assert!(e.contains("must not start with '..'"), "{e}");
        let e = err("[{name: v, secret: {items: [{key: pw, path: p}]}}]");
        assert!(
            e.starts_with("spec.volumes[0].secret.secretName: Required value"),
            "{e}"
        );
    }

    #[test]
    fn modes_default_to_0644_and_items_override_them() {
        let (_, r) = resolved(
            "[{name: c, configMap: {name: cm, defaultMode: 0440, items: [{key: a.conf, path: conf/a.conf}, {key: b, path: b, mode: 0600}]}}, {name: s, secret: {secretName: s}}]",
        )
        .unwrap();
        assert_eq!(files(&r, "c"), [("b".into(), 0o600), ("conf/a.conf".into(), 0o440)]);
        // No items: every key (binaryData too for a ConfigMap), at the default 0644.
        assert_eq!(files(&r, "s"), [("pw".into(), 0o644), ("user".into(), 0o644)]);
        assert_eq!(r.0["s"]["pw"].data, FileData::Bytes(b"s3cr3t".to_vec()));
        let (_, r) = resolved("[{name: c, configMap: {name: cm, defaultMode: 256}}]").unwrap();
        assert_eq!(
            r.0["c"]["bin"],
            FileProjection {
                data: FileData::Bytes(vec![0xff]),
                mode: 0o400
            }
        );
        for (v, f) in [
            (
                "[{name: c, configMap: {name: cm, defaultMode: 512}}]",
                "spec.volumes[0].configMap.defaultMode",
            ),
            (
                "[{name: c, secret: {secretName: s, items: [{key: pw, path: p, mode: -1}]}}]",
                "spec.volumes[0].secret.items[0].mode",
            ),
            (
                "[{name: c, projected: {defaultMode: 01000, sources: []}}]",
                "spec.volumes[0].projected.defaultMode",
            ),
        ] {
            let e = err(v);
            assert!(
                e.starts_with(&format!("{f}: ")) && e.contains("between 0 and 0777"),
                "{e}"
            );
        }
    }

    #[test]
    fn missing_objects_and_keys_fail_the_mount_unless_optional() {
        for (v, want) in [
            (
                "[{name: cfg, configMap: {name: gone}}]",
                "spec.volumes[0].configMap.name: FailedMount: MountVolume.SetUp failed for volume \"cfg\" : configmap \"gone\" not found",
            ),
            (
                "[{name: cfg, configMap: {name: cm, items: [{key: b, path: b}, {key: nope, path: n}]}}]",
                "spec.volumes[0].configMap.items[1].key: FailedMount: MountVolume.SetUp failed for volume \"cfg\" : configmap references non-existent config key: nope",
            ),
            (
                "[{name: sec, secret: {secretName: s, items: [{key: nope, path: n}]}}]",
                "spec.volumes[0].secret.items[0].key: FailedMount: MountVolume.SetUp failed for volume \"sec\" : references non-existent secret key: nope",
            ),
            (
                "[{name: all, projected: {sources: [{secret: {name: gone}}]}}]",
                "spec.volumes[0].projected.sources[0].secret.name: FailedMount: MountVolume.SetUp failed for volume \"all\" : secret \"gone\" not found",
            ),
        ] {
            assert_eq!(err(v), want);
        }
        // Optional: a missing object is an empty volume, a missing key is skipped.
        let (_, r) = resolved(
            "[{name: a, configMap: {name: gone, optional: true}}, {name: b, secret: {secretName: s, optional: true, items: [{key: nope, path: n}, {key: user, path: u}]}}, {name: c, projected: {sources: [{configMap: {name: gone, optional: true}}, {secret: {name: s, items: [{key: user, path: u}]}}]}}]",
        )
        .unwrap();
        assert!(r.0["a"].is_empty());
        assert_eq!(files(&r, "b"), [("u".into(), 0o644)]);
        assert_eq!(files(&r, "c"), [("u".into(), 0o644)]);
        // A key under its own name where another source needs a directory.
        let e = err("[{name: v, projected: {sources: [{configMap: {name: cm}}, {downwardAPI: {items: [{path: b/x, fieldRef: {fieldPath: metadata.name}}]}}]}}]");
        assert!(
            e.starts_with("spec.volumes[0]: FailedMount:") && e.contains("\"b\" is a file"),
            "{e}"
        );
    }

    #[test]
    fn downward_api_files_hold_the_pods_fields_as_kubelet_formats_them() {
        let (p, r) = resolved(
            "[{name: info, downwardAPI: {defaultMode: 0400, items: [{path: labels, fieldRef: {fieldPath: metadata.labels}}, {path: annotations, fieldRef: {fieldPath: metadata.annotations}, mode: 0444}, {path: name, fieldRef: {apiVersion: v1, fieldPath: metadata.name}}, {path: app, fieldRef: {fieldPath: \"metadata.labels['app']\"}}, {path: id/uid, fieldRef: {fieldPath: metadata.uid}}]}}]",
        )
        .unwrap();
        assert_eq!(
            files(&r, "info"),
            [
                ("annotations".into(), 0o444),
                ("app".into(), 0o400),
                ("id/uid".into(), 0o400),
                ("labels".into(), 0o400),
                ("name".into(), 0o400)
            ]
        );
        assert_eq!(
            field_value(&p, "u-1", "metadata.labels"),
            "app=\"web\"\ntier=\"a \\\"b\\\"\""
        );
        assert_eq!(field_value(&p, "u-1", "metadata.annotations"), "n=\"x\\ty\"");
        assert_eq!(field_value(&p, "u-1", "metadata.labels['app']"), "web");
        assert_eq!(field_value(&p, "u-1", "metadata.labels['none']"), "");
        assert_eq!(field_value(&p, "u-1", "metadata.uid"), "u-1");
        assert_eq!(field_value(&p, "u-1", "metadata.namespace"), "default");
        // Go's %q.
        assert_eq!(go_quote("plain ü ✓"), "\"plain ü ✓\"");
        assert_eq!(
            go_quote("\u{7}\u{8}\u{c}\n\r\t\u{b}\u{1}\u{7f}"),
            "\"\\a\\b\\f\\n\\r\\t\\v\\x01\\x7f\""
        );
        assert_eq!(
            go_quote("\u{85}\u{a0}\u{200b}\u{feff}\u{e000}\u{10fffd}"),
            "\"\\u0085\\u00a0\\u200b\\ufeff\\ue000\\U0010fffd\""
        );
        assert_eq!(go_quote("\"\\"), "\"\\\"\\\\\"");
        assert_eq!(format_map(&BTreeMap::new()), "");
        for (item, f) in [
            (
                "{path: ip, fieldRef: {fieldPath: status.podIP}}",
                "spec.volumes[0].downwardAPI.items[0].fieldRef.fieldPath",
            ),
            (
                "{path: n, fieldRef: {fieldPath: \"metadata.name['x']\"}}",
                "spec.volumes[0].downwardAPI.items[0].fieldRef.fieldPath",
            ),
            (
                "{path: n, fieldRef: {fieldPath: \"metadata.labels['-x']\"}}",
                "spec.volumes[0].downwardAPI.items[0].fieldRef.fieldPath",
            ),
            (
                "{path: n, fieldRef: {apiVersion: v2, fieldPath: metadata.name}}",
                "spec.volumes[0].downwardAPI.items[0].fieldRef.apiVersion",
            ),
            (
                "{path: cpu, resourceFieldRef: {resource: limits.cpu}}",
                "spec.volumes[0].downwardAPI.items[0].resourceFieldRef",
            ),
            ("{path: n}", "spec.volumes[0].downwardAPI.items[0]"),
        ] {
            let e = err(&format!("[{{name: v, downwardAPI: {{items: [{item}]}}}}]"));
            assert!(e.starts_with(&format!("{f}: ")), "{item}: {e}");
        }
        for (src, f) in [
            (
                "{serviceAccountToken: {path: t}}",
                "spec.volumes[0].projected.sources[0].serviceAccountToken",
            ),
            (
                "{clusterTrustBundle: {path: b, name: x}}",
                "spec.volumes[0].projected.sources[0].clusterTrustBundle",
            ),
            (
                "{configMap: {name: cm}, secret: {name: s}}",
                "spec.volumes[0].projected.sources[0]",
            ),
            ("{}", "spec.volumes[0].projected.sources[0]"),
        ] {
            let e = err(&format!("[{{name: v, projected: {{sources: [{src}]}}}}]"));
            assert!(e.starts_with(&format!("{f}: ")), "{src}: {e}");
        }
    }

    #[test]
    fn the_atomic_writer_layout_links_data_to_a_timestamped_dir() {
        let dir = tempfile::tempdir().unwrap();
        let vol = dir.path().join("v");
        fresh_dir(&vol, DIR_MODE).unwrap();
        let mut payload = Payload::new();
        payload.insert(
            "conf/a".into(),
            FileProjection {
                data: FileData::Bytes(b"A".to_vec()),
                mode: 0o440,
            },
        );
        payload.insert(
            "conf/b".into(),
            FileProjection {
                data: FileData::Bytes(b"B".to_vec()),
                mode: 0o600,
            },
        );
        payload.insert(
            "name".into(),
            FileProjection {
                data: FileData::Field("metadata.name".into()),
                mode: 0o644,
            },
        );
        write_payload(&vol, &payload, &|fp| format!("<{fp}>").into_bytes()).unwrap();
        let mut names: Vec<String> = fs::read_dir(&vol)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names.len(), 4, "{names:?}");
        assert_eq!(&names[1..], ["..data", "conf", "name"]);
        assert!(names[0].starts_with("..20"), "{names:?}");
        assert_eq!(fs::read_link(vol.join("..data")).unwrap(), Path::new(&names[0]));
        assert_eq!(fs::read_link(vol.join("conf")).unwrap(), Path::new("..data/conf"));
        let mode = |p: &str| fs::metadata(vol.join(p)).unwrap().permissions().mode() & 0o7777;
        assert_eq!(
            (mode("conf/a"), mode("conf/b"), mode("name"), mode("conf")),
            (0o440, 0o600, 0o644, 0o755)
        );
        assert_eq!(fs::read_to_string(vol.join("name")).unwrap(), "<metadata.name>");
        // A volume directory is always fresh.
        assert!(matches!(fresh_dir(&vol, DIR_MODE), Err(VolumeError::Create { .. })));
        tear_down(dir.path()).unwrap();
        assert!(!dir.path().exists());
        tear_down(dir.path()).unwrap();
    }

    #[test]
    fn the_writer_takes_paths_past_path_max_and_follows_no_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let vol = dir.path().join("v");
        fresh_dir(&vol, DIR_MODE).unwrap();
        // 4095 bytes, valid for the API server and kubelet: past PATH_MAX once joined to
        // the volume's directory.
        let long = vec!["l".repeat(255); 16].join("/");
        assert_eq!(check_path("f", &long).unwrap(), long);
        let mut payload = Payload::new();
        payload.insert(
            long.clone(),
            FileProjection {
                data: FileData::Bytes(b"L".to_vec()),
                mode: 0o640,
            },
        );
        write_payload(&vol, &payload, &|_| Vec::new()).unwrap();
        let mut at = fs::File::open(vol.join(DATA_DIR_LINK)).unwrap();
        for e in long.split('/') {
            let next = nix::fcntl::openat(&at, e, nix::fcntl::OFlag::O_RDONLY, nix::sys::stat::Mode::empty()).unwrap();
            at = fs::File::from(next);
        }
        let mut text = String::new();
        std::io::Read::read_to_string(&mut at, &mut text).unwrap();
        assert_eq!(text, "L");
        assert_eq!(at.metadata().unwrap().permissions().mode() & 0o7777, 0o640);
        // A volume directory that is a symlink is not written through.
        let target = dir.path().join("target");
        fs::create_dir(&target).unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(matches!(
            write_payload(&link, &payload, &|_| Vec::new()),
            Err(VolumeError::Create { .. })
        ));
        assert_eq!(fs::read_dir(&target).unwrap().count(), 0);
        // Nor is tear_down: the link's target stays, the link is left to the caller.
        tear_down(&link).unwrap();
        assert!(target.is_dir() && link.symlink_metadata().is_ok());
        let pod = dir.path().join("pod");
        std::os::unix::fs::symlink(&target, &pod).unwrap();
        fs::create_dir(target.join("volumes")).unwrap();
        tear_down(&pod.join("volumes")).unwrap();
        assert!(target.join("volumes").is_dir());
    }

    #[test]
    fn mounts_under_a_dir_are_found_deepest_first() {
        let info = "\
22 1 8:1 / / rw - ext4 /dev/sda1 rw
30 22 0:40 / /var/lib/peapod/pods/p/volumes/kubernetes.io~secret/s rw - tmpfs tmpfs rw
31 22 0:41 / /var/lib/peapod/pods/p/volumes/kubernetes.io~projected/my\\040vol rw - tmpfs tmpfs rw
32 30 0:42 / /var/lib/peapod/pods/p/volumes/kubernetes.io~secret/s/x rw - tmpfs tmpfs rw
33 22 0:43 / /var/lib/peapod/pods/p/volumesX rw - tmpfs tmpfs rw
";
        let found = mounts_under(info, Path::new("/var/lib/peapod/pods/p/volumes"));
        assert_eq!(
            found,
            [
                PathBuf::from("/var/lib/peapod/pods/p/volumes/kubernetes.io~secret/s/x"),
                PathBuf::from("/var/lib/peapod/pods/p/volumes/kubernetes.io~secret/s"),
                PathBuf::from("/var/lib/peapod/pods/p/volumes/kubernetes.io~projected/my vol"),
            ]
        );
    }
}
