//! The local image store of the `peapod` CLI's embedded mode: images imported from
//! archives or pulled from registries, unpacked once into directories that overlayfs
//! stacks into a container's rootfs.
//!
//! Layout under the store root (`/var/lib/peapod/images` for the CLI; created mode 0700,
//! like containerd's root, because layers hold setuid binaries host users must not reach):
//!
//! - `blobs/sha256/<hex>`: content-addressed manifests, configs and layer archives. Every
//!   blob is checked against its digest (and its descriptor's size) before it is renamed
//!   into place, so a file there is always complete and correct.
//! - `layers/<diff-id hex>/`: each layer unpacked once, shared by every image that uses it,
//!   named by its diff-id (the digest of the uncompressed tar, which the image config
//!   lists in `rootfs.diff_ids`, lowest layer first) and checked against it.
//! - `index.json`: image names (normalized references) → manifest digest.
//! - `tmp/`: staging for downloads, archive extraction and unpacking; on the same
//!   filesystem as the rest, so publishing is one atomic `rename(2)`.
//! - `gc.lock`, `index.lock`: `flock(2)` locks (see below).
//!
//! **Whiteouts.** An OCI layer deletes a lower file with an empty `.wh.<name>` entry and
//! hides a whole lower directory with `<dir>/.wh..wh..opq` (OCI image spec, `layer.md`,
//! "Whiteouts"). overlayfs spells the same things differently
//! (`Documentation/filesystems/overlayfs.rst`): a whiteout is a character device 0:0, an
//! opaque directory carries the xattr `trusted.overlay.opaque=y`. Layers are translated
//! while unpacking, so stacking the layer directories as overlay `lowerdir`s gives the
//! image's filesystem. Other `.wh..wh.` entries (AUFS bookkeeping) are dropped, and so are
//! `trusted.overlay.*` xattrs carried by the archive: an image must not forge overlay
//! metadata.
//!
//! **Concurrency.** Several processes may use one store. Content is staged in `tmp/` and
//! renamed into place; a rename that loses a race to an identical blob or layer is fine
//! (content-addressed). Imports and pulls hold `gc.lock` shared for their whole run;
//! [`Store::remove`] holds it exclusive, so garbage collection never deletes what an
//! import is about to reference, and may clear `tmp/`. `index.json` is rewritten (temp
//! file + rename) under `index.lock`, so readers see either the old or the new index.
//! Lock order: `gc.lock`, then `index.lock`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{lchown, DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use futures_util::StreamExt;
use nix::fcntl::{Flock, FlockArg};
use nix::sys::stat::{makedev, mknod, Mode, SFlag};
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::manifest::{ImageIndexEntry, OciDescriptor, OciImageIndex, OciImageManifest};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use sandbox::RootfsMount;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar";
const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

/// The manifest media types a pull asks for: single-platform manifests and indexes.
const PULL_MEDIA_TYPES: &[&str] = &[OCI_MANIFEST, DOCKER_MANIFEST, OCI_INDEX, DOCKER_MANIFEST_LIST];

/// Annotation naming an image with its full reference (containerd's `ctr export`, and the
/// test harness's archives).
const ANNOTATION_IMAGE_NAME: &str = "io.containerd.image.name";
/// OCI's reference-name annotation: a tag, or a full reference.
const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";

/// overlayfs marks an opaque directory with this xattr, value `y`.
const OVERLAY_OPAQUE_XATTR: &str = "trusted.overlay.opaque";
/// PAX header prefix under which tar carries extended attributes.
const PAX_XATTR_PREFIX: &str = "SCHILY.xattr.";
/// How deep image indexes may nest (an index pointing at an index ...).
const MAX_INDEX_DEPTH: usize = 4;
/// Concurrent blob downloads per pull.
const PULL_CONCURRENCY: usize = 4;

/// An image store operation that failed, naming the reference or path and the cause.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The name is not a valid image reference (Docker's reference grammar).
    #[error("invalid image reference {reference:?}: {cause}")]
    InvalidReference {
        /// The reference as given.
        reference: String,
        /// What is wrong with it.
        cause: oci_client::ParseError,
    },
    /// The image does not exist: not in the store (resolve, remove), or not in the registry
    /// (pull: unknown repository, tag or digest, or an anonymous pull was refused).
    /// kubelet calls this `ErrImagePull`.
    #[error("ErrImagePull: {reference}: {reason}")]
    NotFound {
        /// The normalized reference.
        reference: String,
        /// Where it was looked up and what was answered.
        reason: String,
    },
    /// A registry request failed for another reason than a missing image (connection
    /// refused, TLS, server error, malformed answer).
    #[error("ErrImagePull: {reference}: pull from {registry}: {}", sandbox::error::chain(.cause))]
    Registry {
        /// The normalized reference.
        reference: String,
        /// The registry host (`host[:port]`).
        registry: String,
        /// The client's error.
        cause: OciDistributionError,
    },
    /// Downloading a blob failed mid-stream.
    #[error("ErrImagePull: {reference}: download {digest}: {}", sandbox::error::chain(.cause))]
    Download {
        /// The normalized reference.
        reference: String,
        /// The blob being downloaded.
        digest: String,
        /// The transfer error.
        cause: io::Error,
    },
    /// An image index lists no manifest for this host's platform.
    #[error("ErrImagePull: {reference}: no manifest for {platform} in the image index (it has: {available})")]
    NoPlatform {
        /// The normalized reference.
        reference: String,
        /// This host's platform, `os/arch`.
        platform: String,
        /// The platforms the index lists.
        available: String,
    },
    /// A filesystem operation on the store or on an input file failed.
    #[error("{op} {path}: {cause}")]
    Io {
        /// What was being done: `create`, `read`, `write`, `rename`, `remove`...
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        cause: io::Error,
    },
    /// Taking a store lock (`flock(2)`) failed.
    #[error("lock {path}: {cause}")]
    Lock {
        /// The lock file.
        path: PathBuf,
        /// The cause.
        cause: nix::Error,
    },
    /// Content does not match its descriptor: wrong digest or size (a corrupt download or
    /// archive, or a diff-id that does not match the unpacked layer).
    #[error("{what}: content does not match: expected {expected}, got {actual}")]
    Mismatch {
        /// The blob or layer.
        what: String,
        /// The digest or size the descriptor promises.
        expected: String,
        /// What the content gives.
        actual: String,
    },
    /// An archive, manifest, index or config is malformed or inconsistent.
    #[error("{what}: {reason}")]
    Invalid {
        /// The document or archive, e.g. `import /x.tar: index.json`.
        what: String,
        /// What is wrong.
        reason: String,
    },
    /// A JSON document could not be parsed.
    #[error("parse {what}: {cause}")]
    Json {
        /// The document.
        what: String,
        /// The parser's error.
        cause: serde_json::Error,
    },
    /// A feature the store does not implement (zstd layers, sha512 digests...).
    #[error("{what}: unsupported {feature}")]
    Unsupported {
        /// Where it was met.
        what: String,
        /// What is not supported.
        feature: String,
    },
    /// Unpacking one entry of a layer failed.
    #[error("unpack layer {layer}: {entry}: {cause}")]
    Unpack {
        /// The layer's blob digest.
        layer: String,
        /// The entry's path in the layer.
        entry: String,
        /// The cause.
        cause: io::Error,
    },
    /// [`Store::remove`] was refused: a container uses the image.
    #[error("image {name} is in use by a container: remove the container first")]
    InUse {
        /// The normalized name.
        name: String,
    },
}

type Result<T> = std::result::Result<T, ImageError>;

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> ImageError + 'a {
    move |cause| ImageError::Io {
        op,
        path: path.to_path_buf(),
        cause,
    }
}

fn invalid(what: impl Into<String>, reason: impl Into<String>) -> ImageError {
    ImageError::Invalid {
        what: what.into(),
        reason: reason.into(),
    }
}

fn parse_json<T: serde::de::DeserializeOwned>(bytes: &[u8], what: impl Into<String>) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|cause| ImageError::Json {
        what: what.into(),
        cause,
    })
}

/// Normalizes an image reference the way Docker and containerd do: the default registry
/// `docker.io`, the `library/` namespace for official images, the `latest` tag when neither
/// tag nor digest is given (`busybox` → `docker.io/library/busybox:latest`, `foo/bar` →
/// `docker.io/foo/bar:latest`, `localhost:5000/x` → `localhost:5000/x:latest`); a digest
/// (`@sha256:...`) is kept. Fails with [`ImageError::InvalidReference`] naming the input.
pub fn normalize(name: &str) -> Result<String> {
    parse_reference(name).map(|r| r.whole())
}

fn parse_reference(name: &str) -> Result<Reference> {
    Reference::try_from(name).map_err(|cause| ImageError::InvalidReference {
        reference: name.to_string(),
        cause,
    })
}

/// This host's platform in OCI (Go) terms, `("linux", "amd64")` on x86_64.
pub fn host_platform() -> (&'static str, &'static str) {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        "loongarch64" => "loong64",
        other => other,
    };
    ("linux", arch)
}

/// One image of the store, as [`Store::list`] shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImageInfo {
    /// The normalized name, e.g. `docker.io/library/busybox:latest`.
    pub name: String,
    /// The manifest digest, `sha256:<hex>`.
    pub digest: String,
    /// Bytes of the image's blobs: manifest, config and (as stored, possibly compressed)
    /// layers.
    pub size: u64,
    /// The config's `created` timestamp (RFC 3339), when it has one.
    pub created: Option<String>,
}

/// A resolved image: what the CLI needs to build a container's spec and rootfs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Image {
    /// The normalized name.
    pub name: String,
    /// The manifest digest, `sha256:<hex>`.
    pub digest: String,
    /// `config.Entrypoint`.
    pub entrypoint: Vec<String>,
    /// `config.Cmd`.
    pub cmd: Vec<String>,
    /// `config.Env`, `KEY=value`.
    pub env: Vec<String>,
    /// `config.WorkingDir`, when set.
    pub working_dir: Option<String>,
    /// `config.User` (`uid`, `uid:gid`, or names to look up in the rootfs), when set.
    pub user: Option<String>,
    /// `config.StopSignal` (`SIGTERM`, `15`...), when set.
    pub stop_signal: Option<String>,
    /// `config.ExposedPorts` keys (`80/tcp`), sorted.
    pub exposed_ports: Vec<String>,
    /// `config.Labels`.
    pub labels: BTreeMap<String, String>,
    /// The unpacked layer directories, lowest first.
    pub layers: Vec<PathBuf>,
}

impl Image {
    /// The mount that builds this image's rootfs with a writable layer: overlayfs with the
    /// layers as `lowerdir` (top-most first, as overlayfs wants), `upper` as `upperdir`
    /// and `work` as `workdir`. overlayfs accepts a single lower layer when an upper is
    /// given; `upper` and `work` must be empty directories on one filesystem, and `work`
    /// must not be inside `upper`. For an image without layers it binds `upper` itself.
    ///
    /// The overlay options must fit in one page (4096 bytes) of mount data: about 40
    /// layers under `/var/lib/peapod/images`.
    pub fn rootfs_mount(&self, upper: &Path, work: &Path) -> RootfsMount {
        if self.layers.is_empty() {
            return RootfsMount {
                fstype: "bind".into(),
                source: upper.display().to_string(),
                options: vec!["rbind".into()],
            };
        }
        let lower: Vec<String> = self.layers.iter().rev().map(|l| l.display().to_string()).collect();
        RootfsMount {
            fstype: "overlay".into(),
            source: "overlay".into(),
            options: vec![
                format!("lowerdir={}", lower.join(":")),
                format!("upperdir={}", upper.display()),
                format!("workdir={}", work.display()),
            ],
        }
    }
}

/// What the images of an index reference: blob and layer names (hex digests).
struct Referenced {
    blobs: BTreeSet<String>,
    layers: BTreeSet<String>,
}

/// The index file: names → manifest digest.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Index {
    #[serde(default)]
    images: BTreeMap<String, IndexEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct IndexEntry {
    digest: String,
}

/// The parts of an image config (OCI image spec `config.md`, Docker's image JSON) the store
/// and the CLI use; everything optional is read leniently.
#[derive(Debug, Default, Deserialize)]
struct ImageConfig {
    #[serde(default)]
    created: Option<String>,
    #[serde(default)]
    config: Option<RuntimeConfig>,
    rootfs: RootFs,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RuntimeConfig {
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    exposed_ports: Option<BTreeMap<String, serde_json::Value>>,
    #[serde(default)]
    env: Option<Vec<String>>,
    #[serde(default)]
    entrypoint: Option<Vec<String>>,
    #[serde(default)]
    cmd: Option<Vec<String>>,
    #[serde(default)]
    working_dir: Option<String>,
    #[serde(default)]
    labels: Option<BTreeMap<String, String>>,
    #[serde(default)]
    stop_signal: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct RootFs {
    #[serde(default)]
    diff_ids: Vec<String>,
}

/// One entry of a `docker save` archive's `manifest.json`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerArchiveManifest {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

/// The hex part of a `sha256:<64 hex>` digest, refusing anything else: digests come from
/// untrusted documents and become file names.
fn sha256_hex<'a>(digest: &'a str, what: &str) -> Result<&'a str> {
    match digest.split_once(':') {
        Some(("sha256", hex)) if hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) => {
            Ok(hex)
        }
        Some((alg @ ("sha384" | "sha512"), _)) => Err(ImageError::Unsupported {
            what: what.to_string(),
            feature: format!("digest algorithm {alg} ({digest})"),
        }),
        _ => Err(invalid(what, format!("malformed digest {digest:?}"))),
    }
}

fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(bytes))
}

/// `Read` adapter that hashes everything read through it.
struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    len: u64,
}

impl<R: Read> HashingReader<R> {
    fn new(inner: R) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            len: 0,
        }
    }

    fn digest(self) -> String {
        format!("sha256:{:x}", self.hasher.finalize())
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
}

/// The digest and length of a file's content.
fn hash_file(path: &Path) -> Result<(String, u64)> {
    let file = File::open(path).map_err(io_err("open", path))?;
    let mut reader = HashingReader::new(file);
    io::copy(&mut reader, &mut io::sink()).map_err(io_err("read", path))?;
    let len = reader.len;
    Ok((reader.digest(), len))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Compression {
    None,
    Gzip,
    Zstd,
    Other(&'static str),
}

/// Compression of a layer or archive from its first bytes: media types lie (a docker
/// archive's `layer.tar` may be gzip), magic numbers do not.
fn compression(magic: &[u8]) -> Compression {
    match magic {
        [0x1f, 0x8b, ..] => Compression::Gzip,
        [0x28, 0xb5, 0x2f, 0xfd, ..] => Compression::Zstd,
        [b'B', b'Z', b'h', ..] => Compression::Other("bzip2"),
        [0xfd, b'7', b'z', b'X', b'Z', 0x00, ..] => Compression::Other("xz"),
        _ => Compression::None,
    }
}

/// A decompressing reader for a (possibly gzip-compressed) tar stream.
fn decompressed<'a, R: Read + 'a>(input: R, what: &str) -> Result<Box<dyn Read + 'a>> {
    let mut input = BufReader::new(input);
    let magic = input.fill_buf().map_err(io_err("read", Path::new(what)))?.to_vec();
    match compression(&magic) {
        Compression::None => Ok(Box::new(input)),
        Compression::Gzip => Ok(Box::new(flate2::read::MultiGzDecoder::new(input))),
        Compression::Zstd => Err(ImageError::Unsupported {
            what: what.to_string(),
            feature: "compression zstd".into(),
        }),
        Compression::Other(name) => Err(ImageError::Unsupported {
            what: what.to_string(),
            feature: format!("compression {name}"),
        }),
    }
}

/// An archive path made relative and free of `.` and `..`: `None` when it would climb out
/// of the archive's root. The root itself is the empty path.
fn clean_path(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(part) => out.push(part),
            Component::CurDir | Component::RootDir => {}
            Component::ParentDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

/// What a layer entry means for overlayfs, from its name (OCI image spec, `layer.md`,
/// "Whiteouts").
#[derive(Debug, PartialEq, Eq)]
enum Whiteout {
    /// An ordinary entry.
    None,
    /// `<dir>/.wh..wh..opq`: `dir` hides everything below it in lower layers.
    Opaque(PathBuf),
    /// `<dir>/.wh.<name>`: `<dir>/<name>` is deleted from lower layers.
    Delete(PathBuf),
    /// Other `.wh..wh.` entries: AUFS bookkeeping (`.wh..wh.plnk`, `.wh..wh.aufs`), dropped.
    Ignore,
}

fn classify(rel: &Path) -> Whiteout {
    let Some(name) = rel.file_name() else {
        return Whiteout::None;
    };
    let name = name.as_bytes();
    let parent = rel.parent().unwrap_or(Path::new(""));
    if name == b".wh..wh..opq" {
        Whiteout::Opaque(parent.to_path_buf())
    } else if name.starts_with(b".wh..wh.") || name == b".wh." {
        Whiteout::Ignore
    } else if let Some(target) = name.strip_prefix(b".wh.") {
        Whiteout::Delete(parent.join(OsStr::from_bytes(target)))
    } else {
        Whiteout::None
    }
}

/// Creates the directory `rel` under `root` and its parents (mode 0755, like Docker) and
/// returns its full path, refusing to go through anything that is not a real directory:
/// a symlink planted by an earlier entry must not lead outside `root`.
fn ensure_dirs(root: &Path, rel: &Path) -> io::Result<PathBuf> {
    let mut path = root.to_path_buf();
    for c in rel.components() {
        path.push(c);
        match fs::symlink_metadata(&path) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{} is not a directory", path.display()),
                ))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::DirBuilder::new().mode(0o755).create(&path)?;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(path)
}

/// [`ensure_dirs`] for `rel`'s parent; returns the full path of `rel`.
fn ensure_parent(root: &Path, rel: &Path) -> io::Result<PathBuf> {
    ensure_dirs(root, rel.parent().unwrap_or(Path::new("")))?;
    Ok(root.join(rel))
}

/// Removes whatever is at `path` (not following symlinks); nothing there is fine.
fn remove_existing(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

fn header_owner(header: &tar::Header) -> io::Result<(u32, u32)> {
    let id = |v: u64| u32::try_from(v).map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "uid/gid out of range"));
    Ok((id(header.uid()?)?, id(header.gid()?)?))
}

/// Unpacks one layer (a tar stream, gzip-compressed or not) into `dest`, translating OCI
/// whiteouts to overlayfs ones and keeping modes (setuid included), ownership, mtimes,
/// symlinks, hard links, device nodes, FIFOs and xattrs. Returns the diff-id: the sha256
/// of the uncompressed stream. `layer` names the layer in errors. Needs root (`chown`,
/// `mknod`, `trusted.*` xattrs).
pub(crate) fn unpack_layer(input: impl Read, dest: &Path, layer: &str) -> Result<String> {
    let unpack_err = |entry: &str| {
        let entry = entry.to_string();
        move |cause: io::Error| ImageError::Unpack {
            layer: layer.to_string(),
            entry,
            cause,
        }
    };
    let mut tar_stream = HashingReader::new(decompressed(input, layer)?);
    let mut dirs = Vec::new();
    {
        let mut archive = tar::Archive::new(&mut tar_stream);
        archive.set_preserve_permissions(true);
        archive.set_preserve_ownerships(true);
        archive.set_preserve_mtime(true);
        archive.set_overwrite(true);
        // xattrs are applied below, without the overlay ones.
        archive.set_unpack_xattrs(false);
        for entry in archive.entries().map_err(unpack_err("<archive>"))? {
            let mut entry = entry.map_err(unpack_err("<archive>"))?;
            let raw = entry.path().map_err(unpack_err("<archive>"))?.into_owned();
            let name = raw.display().to_string();
            let kind = entry.header().entry_type();
            if kind.is_pax_global_extensions() {
                continue;
            }
            let Some(rel) = clean_path(&raw) else {
                return Err(invalid(
                    format!("layer {layer}"),
                    format!("entry {name:?} climbs out of the layer root"),
                ));
            };
            let (uid, gid) = header_owner(entry.header()).map_err(unpack_err(&name))?;
            match classify(&rel) {
                Whiteout::Opaque(dir) => {
                    let dir = ensure_dirs(dest, &dir).map_err(unpack_err(&name))?;
                    xattr::set(&dir, OVERLAY_OPAQUE_XATTR, b"y").map_err(unpack_err(&name))?;
                    continue;
                }
                Whiteout::Delete(target) => {
                    let path = ensure_parent(dest, &target).map_err(unpack_err(&name))?;
                    remove_existing(&path).map_err(unpack_err(&name))?;
                    mknod(&path, SFlag::S_IFCHR, Mode::empty(), makedev(0, 0))
                        .map_err(|e| unpack_err(&name)(io::Error::from(e)))?;
                    lchown(&path, Some(uid), Some(gid)).map_err(unpack_err(&name))?;
                    continue;
                }
                Whiteout::Ignore => continue,
                Whiteout::None => {}
            }
            let mtime = entry.header().mtime().unwrap_or(0);
            let xattrs = pax_xattrs(&mut entry).map_err(unpack_err(&name))?;
            let path = dest.join(&rel);
            if rel.as_os_str().is_empty() {
                // The layer root itself (`./`): its mode and owner become the rootfs's `/`.
                if kind.is_dir() {
                    let mode = entry.header().mode().map_err(unpack_err(&name))?;
                    lchown(dest, Some(uid), Some(gid)).map_err(unpack_err(&name))?;
                    fs::set_permissions(dest, fs::Permissions::from_mode(mode & 0o7777)).map_err(unpack_err(&name))?;
                    dirs.push((path, mtime));
                }
                continue;
            }
            match kind {
                // tar unpacks unknown kinds as regular files: device nodes and FIFOs are ours.
                tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                    let header = entry.header();
                    let sflag = match kind {
                        tar::EntryType::Char => SFlag::S_IFCHR,
                        tar::EntryType::Block => SFlag::S_IFBLK,
                        _ => SFlag::S_IFIFO,
                    };
                    let mode = header.mode().map_err(unpack_err(&name))? & 0o7777;
                    let major = header.device_major().map_err(unpack_err(&name))?.unwrap_or(0);
                    let minor = header.device_minor().map_err(unpack_err(&name))?.unwrap_or(0);
                    let path = ensure_parent(dest, &rel).map_err(unpack_err(&name))?;
                    remove_existing(&path).map_err(unpack_err(&name))?;
                    mknod(
                        &path,
                        sflag,
                        Mode::from_bits_truncate(mode),
                        makedev(u64::from(major), u64::from(minor)),
                    )
                    .map_err(|e| unpack_err(&name)(io::Error::from(e)))?;
                    lchown(&path, Some(uid), Some(gid)).map_err(unpack_err(&name))?;
                    // After chown, which clears setuid/setgid, and past the umask.
                    fs::set_permissions(&path, fs::Permissions::from_mode(mode)).map_err(unpack_err(&name))?;
                }
                _ => {
                    if !entry.unpack_in(dest).map_err(unpack_err(&name))? {
                        return Err(invalid(
                            format!("layer {layer}"),
                            format!("entry {name:?} climbs out of the layer root"),
                        ));
                    }
                }
            }
            if !kind.is_symlink() {
                for (key, value) in xattrs {
                    xattr::set(&path, &key, &value).map_err(unpack_err(&name))?;
                }
            }
            if kind.is_dir() {
                dirs.push((path, mtime));
            }
        }
    }
    // The digest covers the whole stream, end-of-archive blocks and padding included.
    io::copy(&mut tar_stream, &mut io::sink()).map_err(unpack_err("<archive>"))?;
    // Directory mtimes last: creating their entries changed them.
    for (dir, mtime) in dirs.iter().rev() {
        let time = UNIX_EPOCH + Duration::from_secs(*mtime);
        match File::open(dir).and_then(|f| f.set_modified(time)) {
            // Replaced by a later entry of the same layer.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            result => result.map_err(unpack_err(&dir.display().to_string()))?,
        }
    }
    Ok(tar_stream.digest())
}

/// The entry's xattrs (PAX `SCHILY.xattr.<name>` records), without overlayfs's own.
fn pax_xattrs<R: Read>(entry: &mut tar::Entry<'_, R>) -> io::Result<Vec<(String, Vec<u8>)>> {
    let mut out = Vec::new();
    if let Some(extensions) = entry.pax_extensions()? {
        for ext in extensions {
            let ext = ext?;
            let Ok(key) = ext.key() else { continue };
            if let Some(name) = key.strip_prefix(PAX_XATTR_PREFIX) {
                if !name.starts_with("trusted.overlay.") {
                    out.push((name.to_string(), ext.value_bytes().to_vec()));
                }
            }
        }
    }
    Ok(out)
}

/// An import archive extracted into a staging directory: regular files only; links are
/// remembered and resolved inside the staging root, never followed on disk.
struct Staged {
    root: PathBuf,
    /// Archive path → the path it links to (both relative to the archive root).
    links: HashMap<PathBuf, PathBuf>,
    /// The archive, for errors.
    what: String,
}

impl Staged {
    fn extract(file: &Path, root: &Path) -> Result<Self> {
        let what = format!("import {}", file.display());
        let input = File::open(file).map_err(io_err("open", file))?;
        let mut archive = tar::Archive::new(decompressed(input, &what)?);
        let mut links = HashMap::new();
        let read_err = |cause| ImageError::Io {
            op: "read archive",
            path: file.to_path_buf(),
            cause,
        };
        for entry in archive.entries().map_err(read_err)? {
            let mut entry = entry.map_err(read_err)?;
            let raw = entry.path().map_err(read_err)?.into_owned();
            let Some(rel) = clean_path(&raw) else {
                return Err(invalid(
                    &what,
                    format!("entry {:?} climbs out of the archive", raw.display()),
                ));
            };
            if rel.as_os_str().is_empty() {
                continue;
            }
            match entry.header().entry_type() {
                tar::EntryType::Regular | tar::EntryType::Continuous => {
                    let path = ensure_parent(root, &rel).map_err(io_err("create", &root.join(&rel)))?;
                    let mut out = File::create(&path).map_err(io_err("create", &path))?;
                    io::copy(&mut entry, &mut out).map_err(io_err("write", &path))?;
                }
                tar::EntryType::Symlink => {
                    let target = entry.link_name().map_err(read_err)?.unwrap_or_default().into_owned();
                    // Relative to the link's directory; absolute ones to the archive root.
                    let joined = if target.is_absolute() {
                        target
                    } else {
                        rel.parent().unwrap_or(Path::new("")).join(target)
                    };
                    if let Some(target) = normalize_lexically(&joined) {
                        links.insert(rel, target);
                    }
                }
                tar::EntryType::Link => {
                    let target = entry.link_name().map_err(read_err)?.unwrap_or_default().into_owned();
                    if let Some(target) = clean_path(&target) {
                        links.insert(rel, target);
                    }
                }
                _ => {}
            }
        }
        Ok(Self {
            root: root.to_path_buf(),
            links,
            what,
        })
    }

    /// The staged file for an archive path, resolving links inside the archive.
    fn path(&self, rel: &Path) -> Result<PathBuf> {
        let Some(rel) = clean_path(rel) else {
            return Err(invalid(
                &self.what,
                format!("path {:?} climbs out of the archive", rel.display()),
            ));
        };
        let mut hops = 0;
        let mut pending: Vec<_> = rel.components().map(|c| c.as_os_str().to_owned()).collect();
        pending.reverse();
        let mut current = PathBuf::new();
        while let Some(part) = pending.pop() {
            current.push(part);
            if let Some(target) = self.links.get(&current) {
                hops += 1;
                if hops > 16 {
                    return Err(invalid(
                        &self.what,
                        format!("too many links resolving {}", rel.display()),
                    ));
                }
                let mut rest: Vec<_> = target.components().map(|c| c.as_os_str().to_owned()).collect();
                rest.reverse();
                pending.extend(rest);
                current = PathBuf::new();
            }
        }
        Ok(self.root.join(current))
    }

    fn read(&self, rel: &str) -> Result<Vec<u8>> {
        let path = self.path(Path::new(rel))?;
        fs::read(&path).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                invalid(&self.what, format!("{rel} is missing"))
            } else {
                ImageError::Io {
                    op: "read",
                    path,
                    cause: e,
                }
            }
        })
    }

    fn exists(&self, rel: &str) -> bool {
        self.path(Path::new(rel)).map(|p| p.is_file()).unwrap_or(false)
    }

    /// The staged blob an OCI layout holds for `digest` (`blobs/<alg>/<hex>`).
    fn blob(&self, digest: &str) -> Result<PathBuf> {
        let hex = sha256_hex(digest, &self.what)?;
        let path = self.path(&Path::new("blobs/sha256").join(hex))?;
        if !path.is_file() {
            return Err(invalid(&self.what, format!("blob {digest} is missing")));
        }
        Ok(path)
    }
}

/// Resolves `.` and `..` in a path without touching the disk; `None` when it climbs out.
fn normalize_lexically(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            Component::CurDir | Component::RootDir | Component::Prefix(_) => {}
        }
    }
    Some(out)
}

fn is_index_media_type(media_type: &str) -> bool {
    media_type == OCI_INDEX || media_type == DOCKER_MANIFEST_LIST
}

/// Whether a manifest document is an index, from its media type or, when absent, its shape.
fn is_index_document(media_type: Option<&str>, bytes: &[u8]) -> bool {
    if let Some(mt) = media_type.filter(|mt| !mt.is_empty()) {
        return is_index_media_type(mt);
    }
    serde_json::from_slice::<serde_json::Value>(bytes)
        .ok()
        .and_then(|v| {
            v.get("mediaType")
                .and_then(|m| m.as_str())
                .map(is_index_media_type)
                .or_else(|| Some(v.get("manifests").is_some()))
        })
        .unwrap_or(false)
}

fn platform_string(entry: &ImageIndexEntry) -> String {
    entry
        .platform
        .as_ref()
        .map(|p| match &p.variant {
            Some(v) => format!("{}/{}/{v}", p.os, p.architecture),
            None => format!("{}/{}", p.os, p.architecture),
        })
        .unwrap_or_else(|| "unknown".into())
}

/// The entry for this host's platform (`linux/<arch>`); an entry without a platform when
/// none matches, as for single-image archives.
fn select_platform<'a>(entries: &[&'a ImageIndexEntry]) -> Option<&'a ImageIndexEntry> {
    let (os, arch) = host_platform();
    entries
        .iter()
        .find(|e| {
            e.platform
                .as_ref()
                .is_some_and(|p| p.os.to_string() == os && p.architecture.to_string() == arch)
        })
        .or_else(|| entries.iter().find(|e| e.platform.is_none()))
        .copied()
}

/// The name an OCI layout's index gives a manifest: `io.containerd.image.name`, else
/// `org.opencontainers.image.ref.name` when it is a reference rather than a bare tag.
fn annotated_name(entry: &ImageIndexEntry) -> Option<&str> {
    let annotations = entry.annotations.as_ref()?;
    if let Some(name) = annotations.get(ANNOTATION_IMAGE_NAME) {
        return Some(name);
    }
    annotations
        .get(ANNOTATION_REF_NAME)
        .map(String::as_str)
        .filter(|n| n.contains(['/', ':', '@']))
}

/// What a pull downloaded: the image manifest (its digest and bytes) and config.
struct Fetched {
    manifest: OciImageManifest,
    digest: String,
    bytes: Vec<u8>,
    config: ImageConfig,
}

/// Progress of long steps (downloads, layer unpacking), as one-line messages.
pub type Progress = std::sync::Arc<dyn Fn(&str) + Send + Sync>;

/// A local image store rooted at a directory; see the module docs for its layout.
#[derive(Clone)]
pub struct Store {
    root: PathBuf,
    progress: Option<Progress>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (creating, mode 0700) the store at `root`. The root must not contain `:` or
    /// `,`, which separate overlay mount options.
    pub fn open(root: &Path) -> Result<Self> {
        let root = if root.is_absolute() {
            root.to_path_buf()
        } else {
            std::env::current_dir().map_err(io_err("resolve", root))?.join(root)
        };
        if root.to_string_lossy().contains([':', ',']) {
            return Err(invalid(
                format!("image store {}", root.display()),
                "the path contains ':' or ',', which overlay mount options cannot carry",
            ));
        }
        for dir in [
            root.clone(),
            root.join("blobs/sha256"),
            root.join("layers"),
            root.join("tmp"),
        ] {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir)
                .map_err(io_err("create", &dir))?;
        }
        Ok(Self { root, progress: None })
    }

    /// Reports downloads and layer unpacking to `progress` (`"unpacking layer 2/3 …"`).
    pub fn with_progress(mut self, progress: Progress) -> Self {
        self.progress = Some(progress);
        self
    }

    fn report(&self, message: &str) {
        if let Some(p) = &self.progress {
            p(message);
        }
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn tmp(&self) -> PathBuf {
        self.root.join("tmp")
    }

    fn blob_path(&self, digest: &str) -> Result<PathBuf> {
        Ok(self.root.join("blobs/sha256").join(sha256_hex(digest, "blob")?))
    }

    fn layer_path(&self, diff_id: &str) -> Result<PathBuf> {
        Ok(self.root.join("layers").join(sha256_hex(diff_id, "layer diff-id")?))
    }

    fn temp_dir(&self, prefix: &str) -> Result<tempfile::TempDir> {
        tempfile::Builder::new()
            .prefix(prefix)
            .tempdir_in(self.tmp())
            .map_err(io_err("create a staging directory in", &self.tmp()))
    }

    /// Takes `gc.lock` or `index.lock`, blocking; released when the guard drops.
    fn lock(&self, name: &str, arg: FlockArg) -> Result<Option<Flock<File>>> {
        let path = self.root.join(name);
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(io_err("open", &path))?;
        loop {
            match Flock::lock(file, arg) {
                Ok(lock) => return Ok(Some(lock)),
                Err((f, nix::Error::EINTR)) => file = f,
                Err((_, nix::Error::EWOULDBLOCK)) if matches!(arg, FlockArg::LockExclusiveNonblock) => return Ok(None),
                Err((_, cause)) => return Err(ImageError::Lock { path, cause }),
            }
        }
    }

    fn read_index(&self) -> Result<Index> {
        let path = self.root.join("index.json");
        match fs::read(&path) {
            Ok(bytes) => parse_json(&bytes, path.display().to_string()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Index::default()),
            Err(e) => Err(io_err("read", &path)(e)),
        }
    }

    /// Writes a file atomically: a synced temp file in `tmp/`, renamed onto `dest`.
    fn write_atomic(&self, dest: &Path, bytes: &[u8]) -> Result<()> {
        let mut tmp = tempfile::Builder::new()
            .prefix("write-")
            .tempfile_in(self.tmp())
            .map_err(io_err("create a temp file in", &self.tmp()))?;
        tmp.write_all(bytes).map_err(io_err("write", tmp.path()))?;
        tmp.as_file().sync_all().map_err(io_err("sync", tmp.path()))?;
        fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o644)).map_err(io_err("chmod", tmp.path()))?;
        tmp.persist(dest).map_err(|e| io_err("rename onto", dest)(e.error))?;
        Ok(())
    }

    /// Read-modify-write of the index under `index.lock`.
    fn update_index<T>(&self, f: impl FnOnce(&mut Index) -> Result<T>) -> Result<T> {
        let _lock = self.lock("index.lock", FlockArg::LockExclusive)?;
        let mut index = self.read_index()?;
        let out = f(&mut index)?;
        let bytes = serde_json::to_vec_pretty(&index).map_err(|cause| ImageError::Json {
            what: "index".into(),
            cause,
        })?;
        self.write_atomic(&self.root.join("index.json"), &bytes)?;
        Ok(out)
    }

    fn has_blob(&self, digest: &str) -> Result<bool> {
        Ok(self.blob_path(digest)?.is_file())
    }

    fn read_blob(&self, digest: &str) -> Result<Vec<u8>> {
        let path = self.blob_path(digest)?;
        fs::read(&path).map_err(io_err("read", &path))
    }

    /// Stores `bytes` as the blob `digest`, checking it matches.
    fn put_blob_bytes(&self, bytes: &[u8], digest: &str, what: &str) -> Result<()> {
        let dest = self.blob_path(digest)?;
        let actual = sha256_digest(bytes);
        if actual != digest {
            return Err(ImageError::Mismatch {
                what: what.to_string(),
                expected: digest.to_string(),
                actual,
            });
        }
        if dest.is_file() {
            return Ok(());
        }
        self.write_atomic(&dest, bytes)
    }

    /// Moves a staged file (in `tmp/`) into the blob store as `digest`, after checking its
    /// content and, when given, its size. A blob already present is kept.
    fn put_blob_file(&self, staged: &Path, digest: &str, size: Option<u64>, what: &str) -> Result<()> {
        let dest = self.blob_path(digest)?;
        if dest.is_file() {
            return Ok(());
        }
        let (actual, len) = hash_file(staged)?;
        if let Some(size) = size.filter(|s| *s != len) {
            return Err(ImageError::Mismatch {
                what: what.to_string(),
                expected: format!("{size} bytes"),
                actual: format!("{len} bytes"),
            });
        }
        if actual != digest {
            return Err(ImageError::Mismatch {
                what: what.to_string(),
                expected: digest.to_string(),
                actual,
            });
        }
        File::open(staged)
            .and_then(|f| f.sync_all())
            .map_err(io_err("sync", staged))?;
        fs::set_permissions(staged, fs::Permissions::from_mode(0o644)).map_err(io_err("chmod", staged))?;
        fs::rename(staged, &dest).map_err(io_err("rename into the store", staged))
    }

    fn read_manifest(&self, digest: &str) -> Result<(Vec<u8>, OciImageManifest)> {
        let bytes = self.read_blob(digest)?;
        let manifest = parse_json(&bytes, format!("manifest {digest}"))?;
        Ok((bytes, manifest))
    }

    fn read_config(&self, manifest: &OciImageManifest) -> Result<ImageConfig> {
        let digest = &manifest.config.digest;
        parse_json(&self.read_blob(digest)?, format!("image config {digest}"))
    }

    /// Unpacks the layer blob `blob` into `layers/<diff-id>` unless it is there already,
    /// checking the uncompressed content against `diff_id`.
    fn ensure_layer(&self, blob: &str, diff_id: &str) -> Result<()> {
        let dest = self.layer_path(diff_id)?;
        if dest.is_dir() {
            return Ok(());
        }
        let source = self.blob_path(blob)?;
        let staging = self.temp_dir("layer-")?;
        // A fresh 0755 root: the top layer's root directory becomes the container's `/`.
        let rootfs = staging.path().join("rootfs");
        fs::DirBuilder::new()
            .mode(0o755)
            .create(&rootfs)
            .map_err(io_err("create", &rootfs))?;
        fs::set_permissions(&rootfs, fs::Permissions::from_mode(0o755)).map_err(io_err("chmod", &rootfs))?;
        let input = File::open(&source).map_err(io_err("open", &source))?;
        let actual = unpack_layer(input, &rootfs, blob)?;
        if actual != diff_id {
            return Err(ImageError::Mismatch {
                what: format!("layer {blob} (uncompressed)"),
                expected: diff_id.to_string(),
                actual,
            });
        }
        // Written files must be on disk before the layer becomes visible.
        File::open(&rootfs)
            .map_err(io_err("open", &rootfs))
            .and_then(|f| nix::unistd::syncfs(&f).map_err(|e| io_err("syncfs", &rootfs)(e.into())))?;
        match fs::rename(&rootfs, &dest) {
            Ok(()) => Ok(()),
            // Another process unpacked the same layer first: same content.
            Err(_) if dest.is_dir() => Ok(()),
            Err(e) => Err(io_err("rename into the store", &rootfs)(e)),
        }
    }

    /// Unpacks every layer of an image whose blobs are all in the store.
    fn unpack_image(&self, manifest: &OciImageManifest, config: &ImageConfig, name: &str) -> Result<()> {
        let diff_ids = &config.rootfs.diff_ids;
        if diff_ids.len() != manifest.layers.len() {
            return Err(invalid(
                format!("image {name}"),
                format!(
                    "the manifest lists {} layers but the config {} diff_ids",
                    manifest.layers.len(),
                    diff_ids.len()
                ),
            ));
        }
        let total = manifest.layers.len();
        for (i, (layer, diff_id)) in manifest.layers.iter().zip(diff_ids).enumerate() {
            if !self.layer_path(diff_id)?.is_dir() {
                let short = layer.digest.trim_start_matches("sha256:").get(..12).unwrap_or_default();
                self.report(&format!(
                    "{name}: unpacking layer {}/{total} {short} ({:.1} MB)",
                    i + 1,
                    layer.size as f64 / 1e6
                ));
            }
            if layer.media_type.contains("zstd") {
                return Err(ImageError::Unsupported {
                    what: format!("image {name}: layer {}", layer.digest),
                    feature: format!("media type {}", layer.media_type),
                });
            }
            self.ensure_layer(&layer.digest, diff_id)?;
        }
        Ok(())
    }

    /// Imports an image archive: an OCI image layout tarball (`oci-layout`, `index.json`,
    /// `blobs/`; images named by their `io.containerd.image.name` annotation, or by
    /// `org.opencontainers.image.ref.name` when that is a full reference) or a `docker save`
    /// tarball (`manifest.json` with `RepoTags`), either possibly gzip-compressed. Where an
    /// index lists several platforms, this host's is taken. Every blob is checked against
    /// its digest and every layer against its diff-id. Returns the normalized names
    /// imported; a name already present now points at the imported image.
    pub fn import(&self, file: &Path) -> Result<Vec<String>> {
        let imported = self.after(self.import_locked(file))?;
        Ok(imported.into_iter().map(|(name, _)| name).collect())
    }

    fn import_locked(&self, file: &Path) -> Result<Vec<(String, Option<String>)>> {
        let _gc = self.lock("gc.lock", FlockArg::LockShared)?;
        let staging = self.temp_dir("import-")?;
        let staged = Staged::extract(file, staging.path())?;
        let mut images = Vec::new();
        if staged.exists("index.json") {
            images = self.import_oci_layout(&staged)?;
        }
        if images.is_empty() && staged.exists("manifest.json") {
            images = self.import_docker_archive(&staged)?;
        }
        if images.is_empty() {
            return Err(invalid(
                format!("import {}", file.display()),
                if staged.exists("index.json") || staged.exists("manifest.json") {
                    "no named image: expected io.containerd.image.name or org.opencontainers.image.ref.name \
                     annotations in index.json, or RepoTags in manifest.json"
                } else {
                    "neither an OCI image layout (index.json) nor a docker archive (manifest.json)"
                },
            ));
        }
        self.record(&images)
    }

    /// After an import or pull (its `gc.lock` released): when it failed, or replaced the
    /// image a name pointed at, collects what is left unreferenced (blobs of a failed
    /// import, the old image) if no other import or pull runs; otherwise a later remove
    /// will. The import's or pull's own error wins over a collection error.
    fn after<T: AsRef<[(String, Option<String>)]>>(&self, result: Result<T>) -> Result<T> {
        let collect = match &result {
            Ok(changed) => changed.as_ref().iter().any(|(_, old)| old.is_some()),
            Err(_) => true,
        };
        if collect {
            let collected = self.collect_if_idle();
            if result.is_ok() {
                collected?;
            }
        }
        result
    }

    /// Points each name at its manifest digest; returns the names with the digest they
    /// pointed at before, if it differed.
    fn record(&self, images: &[(String, String)]) -> Result<Vec<(String, Option<String>)>> {
        self.update_index(|index| {
            let mut out = Vec::new();
            for (name, digest) in images {
                let old = index.images.insert(name.clone(), IndexEntry { digest: digest.clone() });
                if !out.iter().any(|(n, _)| n == name) {
                    out.push((name.clone(), old.map(|e| e.digest).filter(|d| d != digest)));
                }
            }
            Ok(out)
        })
    }

    /// Collects garbage if `gc.lock` is free (no import, pull or remove running).
    fn collect_if_idle(&self) -> Result<()> {
        if let Some(_gc) = self.lock("gc.lock", FlockArg::LockExclusiveNonblock)? {
            let referenced = self.referenced(&self.read_index()?)?;
            self.collect_garbage(&referenced)?;
        }
        Ok(())
    }

    fn import_oci_layout(&self, staged: &Staged) -> Result<Vec<(String, String)>> {
        let what = format!("{}: index.json", staged.what);
        let index: OciImageIndex = parse_json(&staged.read("index.json")?, &what)?;
        let mut by_name: BTreeMap<String, Vec<&ImageIndexEntry>> = BTreeMap::new();
        let mut order = Vec::new();
        for entry in &index.manifests {
            if let Some(name) = annotated_name(entry) {
                let name = normalize(name)?;
                if !by_name.contains_key(&name) {
                    order.push(name.clone());
                }
                by_name.entry(name).or_default().push(entry);
            }
        }
        let mut images = Vec::new();
        for name in order {
            let entries = &by_name[&name];
            let entry = select_platform(entries).ok_or_else(|| ImageError::NoPlatform {
                reference: name.clone(),
                platform: format!("{}/{}", host_platform().0, host_platform().1),
                available: entries
                    .iter()
                    .map(|e| platform_string(e))
                    .collect::<Vec<_>>()
                    .join(", "),
            })?;
            let digest =
                self.import_oci_target(staged, Some(&entry.media_type), &entry.digest, entry.size, &name, 0)?;
            images.push((name, digest));
        }
        Ok(images)
    }

    /// Imports the manifest (or, through an index, this platform's manifest) `digest` of an
    /// OCI layout; returns the image manifest's digest.
    fn import_oci_target(
        &self,
        staged: &Staged,
        media_type: Option<&str>,
        digest: &str,
        size: i64,
        name: &str,
        depth: usize,
    ) -> Result<String> {
        let path = staged.blob(digest)?;
        let bytes = fs::read(&path).map_err(io_err("read", &path))?;
        check_bytes(&bytes, digest, size, &format!("{}: manifest {digest}", staged.what))?;
        if is_index_document(media_type, &bytes) {
            if depth >= MAX_INDEX_DEPTH {
                return Err(invalid(
                    &staged.what,
                    format!("image indexes nest deeper than {MAX_INDEX_DEPTH}"),
                ));
            }
            let index: OciImageIndex = parse_json(&bytes, format!("{}: index {digest}", staged.what))?;
            let entries: Vec<&ImageIndexEntry> = index.manifests.iter().collect();
            let entry = select_platform(&entries).ok_or_else(|| no_platform(name, &entries))?;
            return self.import_oci_target(
                staged,
                Some(&entry.media_type),
                &entry.digest,
                entry.size,
                name,
                depth + 1,
            );
        }
        let manifest: OciImageManifest = parse_json(&bytes, format!("{}: manifest {digest}", staged.what))?;
        for desc in std::iter::once(&manifest.config).chain(&manifest.layers) {
            if self.has_blob(&desc.digest)? {
                continue;
            }
            let blob = staged.blob(&desc.digest)?;
            self.put_blob_file(
                &blob,
                &desc.digest,
                u64::try_from(desc.size).ok(),
                &format!("{}: blob {}", staged.what, desc.digest),
            )?;
        }
        let config = self.read_config(&manifest)?;
        self.unpack_image(&manifest, &config, name)?;
        self.put_blob_bytes(&bytes, digest, &format!("{}: manifest {digest}", staged.what))?;
        Ok(digest.to_string())
    }

    fn import_docker_archive(&self, staged: &Staged) -> Result<Vec<(String, String)>> {
        let what = format!("{}: manifest.json", staged.what);
        let entries: Vec<DockerArchiveManifest> = parse_json(&staged.read("manifest.json")?, &what)?;
        // Archive path → its descriptor, for layers listed by several images.
        let mut stored: HashMap<PathBuf, OciDescriptor> = HashMap::new();
        let mut images = Vec::new();
        for entry in entries {
            let names = entry
                .repo_tags
                .iter()
                .flatten()
                .map(|t| normalize(t))
                .collect::<Result<Vec<_>>>()?;
            if names.is_empty() {
                continue;
            }
            let config_bytes = staged.read(&entry.config)?;
            let config_digest = sha256_digest(&config_bytes);
            self.put_blob_bytes(
                &config_bytes,
                &config_digest,
                &format!("{what}: config {}", entry.config),
            )?;
            let config: ImageConfig = parse_json(&config_bytes, format!("{what}: config {}", entry.config))?;
            let mut layers = Vec::new();
            for layer in &entry.layers {
                let path = staged.path(Path::new(layer))?;
                if let Some(desc) = stored.get(&path) {
                    layers.push(desc.clone());
                    continue;
                }
                if !path.is_file() {
                    return Err(invalid(&what, format!("layer {layer} is missing")));
                }
                let (digest, size) = hash_file(&path)?;
                let mut magic = [0u8; 6];
                let n = File::open(&path)
                    .and_then(|mut f| f.read(&mut magic))
                    .map_err(io_err("read", &path))?;
                let media_type = match compression(&magic[..n]) {
                    Compression::Gzip => DOCKER_LAYER_GZIP,
                    _ => DOCKER_LAYER,
                };
                self.put_blob_file(&path, &digest, Some(size), &format!("{what}: layer {layer}"))?;
                let desc = OciDescriptor {
                    media_type: media_type.into(),
                    digest,
                    size: i64::try_from(size).unwrap_or(i64::MAX),
                    ..Default::default()
                };
                stored.insert(path, desc.clone());
                layers.push(desc);
            }
            // The manifest `docker save` does not carry, written as containerd does.
            let manifest = OciImageManifest {
                schema_version: 2,
                media_type: Some(DOCKER_MANIFEST.into()),
                config: OciDescriptor {
                    media_type: DOCKER_CONFIG.into(),
                    digest: config_digest,
                    size: i64::try_from(config_bytes.len()).unwrap_or(i64::MAX),
                    ..Default::default()
                },
                layers,
                ..Default::default()
            };
            let bytes = serde_json::to_vec(&manifest).map_err(|cause| ImageError::Json {
                what: format!("{what}: synthesized manifest"),
                cause,
            })?;
            let digest = sha256_digest(&bytes);
            self.unpack_image(&manifest, &config, &names[0])?;
            self.put_blob_bytes(&bytes, &digest, &format!("{what}: manifest"))?;
            images.extend(names.into_iter().map(|n| (n, digest.clone())));
        }
        Ok(images)
    }

    /// Pulls `reference` from its registry (anonymously) and stores it under its normalized
    /// name, which it returns. Plain http is used for loopback registries (`localhost`,
    /// `127.0.0.0/8`, `[::1]`) and for the hosts in `insecure_hosts` (`host` or `host:port`),
    /// https otherwise. From an index, this host's platform (`linux/amd64` here) is taken.
    /// Blobs already in the store are not downloaded again. A missing repository, tag or
    /// digest fails with [`ImageError::NotFound`] (`ErrImagePull: <ref>: ...`).
    pub fn pull(&self, reference: &str, insecure_hosts: &[String]) -> Result<String> {
        let name = normalize(reference)?;
        let image = parse_reference(&name)?;
        let registry = image.resolve_registry().to_string();
        let host = registry_host(&registry);
        let insecure = is_loopback(host) || insecure_hosts.iter().any(|h| h == &registry || h == host);
        self.after(self.pull_locked(&image, &name, &registry, insecure))?;
        Ok(name)
    }

    fn pull_locked(
        &self,
        image: &Reference,
        name: &str,
        registry: &str,
        insecure: bool,
    ) -> Result<Vec<(String, Option<String>)>> {
        {
            let _gc = self.lock("gc.lock", FlockArg::LockShared)?;
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(io_err("start the pull runtime for", Path::new(name)))?;
            let fetched = runtime.block_on(self.fetch(image, name, registry, insecure))?;
            // No runtime thread outlives the pull: the CLI may fork afterwards.
            drop(runtime);
            self.unpack_image(&fetched.manifest, &fetched.config, name)?;
            self.put_blob_bytes(&fetched.bytes, &fetched.digest, &format!("{name}: manifest"))?;
            self.record(&[(name.to_string(), fetched.digest)])
        }
    }

    /// Downloads the manifest (through an index if needed), config and layer blobs of an
    /// image. The manifest itself is stored last, by the caller, once its layers are
    /// unpacked: a manifest in the store means a complete image.
    async fn fetch(&self, image: &Reference, name: &str, registry: &str, insecure: bool) -> Result<Fetched> {
        // reqwest is built without a default crypto provider; install ring's (a no-op when
        // one is installed already).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let registry_err = |cause| registry_error(name, registry, cause);
        let client = Client::try_from(ClientConfig {
            protocol: if insecure {
                ClientProtocol::Http
            } else {
                ClientProtocol::Https
            },
            connect_timeout: Some(Duration::from_secs(30)),
            read_timeout: Some(Duration::from_secs(120)),
            ..Default::default()
        })
        .map_err(registry_err)?;
        let auth = RegistryAuth::Anonymous;
        let (bytes, _) = client
            .pull_manifest_raw(image, &auth, PULL_MEDIA_TYPES)
            .await
            .map_err(registry_err)?;
        let mut digest = sha256_digest(&bytes);
        if let Some(expected) = image.digest() {
            check_bytes(&bytes, expected, -1, &format!("{name}: manifest"))?;
        }
        let mut bytes = bytes.to_vec();
        let mut depth = 0;
        while is_index_document(None, &bytes) {
            depth += 1;
            if depth > MAX_INDEX_DEPTH {
                return Err(invalid(
                    name,
                    format!("image indexes nest deeper than {MAX_INDEX_DEPTH}"),
                ));
            }
            let index: OciImageIndex = parse_json(&bytes, format!("{name}: index {digest}"))?;
            let entries: Vec<&ImageIndexEntry> = index.manifests.iter().collect();
            let entry = select_platform(&entries).ok_or_else(|| no_platform(name, &entries))?;
            let (next, _) = client
                .pull_manifest_raw(&image.clone_with_digest(entry.digest.clone()), &auth, PULL_MEDIA_TYPES)
                .await
                .map_err(registry_err)?;
            check_bytes(
                &next,
                &entry.digest,
                entry.size,
                &format!("{name}: manifest {}", entry.digest),
            )?;
            digest = entry.digest.clone();
            bytes = next.to_vec();
        }
        let manifest: OciImageManifest = parse_json(&bytes, format!("{name}: manifest {digest}"))?;
        let mut blobs: Vec<&OciDescriptor> = std::iter::once(&manifest.config).chain(&manifest.layers).collect();
        // Images may list one layer twice (empty layers): download it once.
        let mut seen = BTreeSet::new();
        blobs.retain(|d| seen.insert(d.digest.clone()));
        let mut downloads = futures_util::stream::iter(blobs)
            .map(|desc| self.download(&client, image, name, desc))
            .buffer_unordered(PULL_CONCURRENCY);
        while let Some(done) = downloads.next().await {
            done?;
        }
        drop(downloads);
        let config = self.read_config(&manifest)?;
        Ok(Fetched {
            manifest,
            digest,
            bytes,
            config,
        })
    }

    /// Downloads one blob into `tmp/`, checks it, and moves it into the store.
    async fn download(&self, client: &Client, image: &Reference, name: &str, desc: &OciDescriptor) -> Result<()> {
        if self.has_blob(&desc.digest)? {
            return Ok(());
        }
        let short = desc.digest.trim_start_matches("sha256:").get(..12).unwrap_or_default();
        self.report(&format!(
            "{name}: downloading {short} ({:.1} MB)",
            desc.size as f64 / 1e6
        ));
        let registry = image.resolve_registry();
        let mut stream = client
            .pull_blob_stream(image, desc)
            .await
            .map_err(|cause| registry_error(name, registry, cause))?;
        let mut tmp = tempfile::Builder::new()
            .prefix("download-")
            .tempfile_in(self.tmp())
            .map_err(io_err("create a temp file in", &self.tmp()))?;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|cause| ImageError::Download {
                reference: name.to_string(),
                digest: desc.digest.clone(),
                cause,
            })?;
            tmp.write_all(&chunk).map_err(io_err("write", tmp.path()))?;
        }
        self.put_blob_file(
            tmp.path(),
            &desc.digest,
            u64::try_from(desc.size).ok(),
            &format!("{name}: blob {}", desc.digest),
        )
    }

    /// The images in the store, by name.
    pub fn list(&self) -> Result<Vec<ImageInfo>> {
        let index = self.read_index()?;
        let mut out = Vec::new();
        for (name, entry) in index.images {
            let (bytes, manifest) = self.read_manifest(&entry.digest)?;
            let config = self.read_config(&manifest)?;
            let blobs: i64 = std::iter::once(&manifest.config)
                .chain(&manifest.layers)
                .map(|d| d.size.max(0))
                .sum();
            out.push(ImageInfo {
                name,
                digest: entry.digest,
                size: bytes.len() as u64 + u64::try_from(blobs).unwrap_or(0),
                created: config.created,
            });
        }
        Ok(out)
    }

    /// The image `name` (normalized first): its config and unpacked layers. Fails with
    /// [`ImageError::NotFound`] when the store does not hold it.
    pub fn resolve(&self, name: &str) -> Result<Image> {
        let name = normalize(name)?;
        let index = self.read_index()?;
        let Some(entry) = index.images.get(&name) else {
            return Err(ImageError::NotFound {
                reference: name,
                reason: "not in the local image store (pull or import it first)".into(),
            });
        };
        let (_, manifest) = self.read_manifest(&entry.digest)?;
        let config = self.read_config(&manifest)?;
        let layers = config
            .rootfs
            .diff_ids
            .iter()
            .map(|d| self.layer_path(d))
            .collect::<Result<Vec<_>>>()?;
        if let Some(missing) = layers.iter().find(|l| !l.is_dir()) {
            return Err(invalid(
                format!("image {name}"),
                format!(
                    "layer {} is missing from the store: import or pull it again",
                    missing.display()
                ),
            ));
        }
        let c = config.config.unwrap_or_default();
        Ok(Image {
            name,
            digest: entry.digest.clone(),
            entrypoint: c.entrypoint.unwrap_or_default(),
            cmd: c.cmd.unwrap_or_default(),
            env: c.env.unwrap_or_default(),
            working_dir: c.working_dir.filter(|w| !w.is_empty()),
            user: c.user.filter(|u| !u.is_empty()),
            stop_signal: c.stop_signal.filter(|s| !s.is_empty()),
            exposed_ports: c.exposed_ports.unwrap_or_default().into_keys().collect(),
            labels: c.labels.unwrap_or_default(),
            layers,
        })
    }

    /// Removes the name `name` (normalized first), then deletes the blobs and unpacked
    /// layers no remaining image uses, and leftovers of interrupted imports in `tmp/`.
    /// Refused with [`ImageError::InUse`] when `in_use(<normalized name>)` says a container
    /// uses the image (the CLI answers from its container records); waits for running
    /// imports and pulls to finish. A name the store does not hold fails with
    /// [`ImageError::NotFound`].
    pub fn remove(&self, name: &str, in_use: &dyn Fn(&str) -> bool) -> Result<()> {
        let name = normalize(name)?;
        let _gc = self.lock("gc.lock", FlockArg::LockExclusive)?;
        if in_use(&name) {
            return Err(ImageError::InUse { name });
        }
        let referenced = self.update_index(|index| {
            if index.images.remove(&name).is_none() {
                return Err(ImageError::NotFound {
                    reference: name.clone(),
                    reason: "not in the local image store".into(),
                });
            }
            // Fail before writing if a remaining image cannot be read: collecting
            // without knowing what it references could delete its content.
            self.referenced(index)
        })?;
        self.collect_garbage(&referenced)
    }

    /// The blobs and layers (hex digests) the images of `index` reference.
    fn referenced(&self, index: &Index) -> Result<Referenced> {
        let mut blobs = BTreeSet::new();
        let mut layers = BTreeSet::new();
        for entry in index.images.values() {
            let (_, manifest) = self.read_manifest(&entry.digest)?;
            let config = self.read_config(&manifest)?;
            blobs.insert(sha256_hex(&entry.digest, "manifest")?.to_string());
            for desc in std::iter::once(&manifest.config).chain(&manifest.layers) {
                blobs.insert(sha256_hex(&desc.digest, "blob")?.to_string());
            }
            for diff_id in &config.rootfs.diff_ids {
                layers.insert(sha256_hex(diff_id, "layer diff-id")?.to_string());
            }
        }
        Ok(Referenced { blobs, layers })
    }

    /// Deletes the blobs and layers not `referenced`, and `tmp/`'s content. Needs
    /// `gc.lock` exclusive: no import or pull is staging anything.
    fn collect_garbage(&self, referenced: &Referenced) -> Result<()> {
        let Referenced { blobs, layers } = referenced;
        let blob_dir = self.root.join("blobs/sha256");
        for entry in fs::read_dir(&blob_dir).map_err(io_err("list", &blob_dir))? {
            let entry = entry.map_err(io_err("list", &blob_dir))?;
            if !blobs.contains(entry.file_name().to_string_lossy().as_ref()) {
                fs::remove_file(entry.path()).map_err(io_err("remove", &entry.path()))?;
            }
        }
        let layer_dir = self.root.join("layers");
        for entry in fs::read_dir(&layer_dir).map_err(io_err("list", &layer_dir))? {
            let entry = entry.map_err(io_err("list", &layer_dir))?;
            if !layers.contains(entry.file_name().to_string_lossy().as_ref()) {
                // Out of `layers/` in one rename, so a half-deleted layer is never visible.
                let doomed = self.temp_dir("remove-")?;
                let target = doomed.path().join("layer");
                fs::rename(entry.path(), &target).map_err(io_err("rename out of the store", &entry.path()))?;
                fs::remove_dir_all(&target).map_err(io_err("remove", &target))?;
            }
        }
        let tmp = self.tmp();
        for entry in fs::read_dir(&tmp).map_err(io_err("list", &tmp))? {
            let entry = entry.map_err(io_err("list", &tmp))?;
            remove_existing(&entry.path()).map_err(io_err("remove", &entry.path()))?;
        }
        Ok(())
    }
}

/// Checks a document against its descriptor's digest and (when not negative) size.
fn check_bytes(bytes: &[u8], digest: &str, size: i64, what: &str) -> Result<()> {
    if let Ok(size) = u64::try_from(size) {
        if size != bytes.len() as u64 {
            return Err(ImageError::Mismatch {
                what: what.to_string(),
                expected: format!("{size} bytes"),
                actual: format!("{} bytes", bytes.len()),
            });
        }
    }
    sha256_hex(digest, what)?;
    let actual = sha256_digest(bytes);
    if actual != digest {
        return Err(ImageError::Mismatch {
            what: what.to_string(),
            expected: digest.to_string(),
            actual,
        });
    }
    Ok(())
}

fn no_platform(name: &str, entries: &[&ImageIndexEntry]) -> ImageError {
    let (os, arch) = host_platform();
    ImageError::NoPlatform {
        reference: name.to_string(),
        platform: format!("{os}/{arch}"),
        available: entries
            .iter()
            .map(|e| platform_string(e))
            .collect::<Vec<_>>()
            .join(", "),
    }
}

/// The host part of `host[:port]` (`[::1]:5000` → `[::1]`).
fn registry_host(registry: &str) -> &str {
    if registry.starts_with('[') {
        return registry
            .split_once(']')
            .map_or(registry, |(h, _)| &registry[..=h.len()]);
    }
    registry.rsplit_once(':').map_or(registry, |(h, _)| h)
}

fn is_loopback(host: &str) -> bool {
    if host == "localhost" {
        return true;
    }
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_loopback())
}

/// Maps a registry client error: a missing repository, tag or digest (or an anonymous
/// pull refused, which is how Docker Hub answers for a repository that does not exist)
/// becomes [`ImageError::NotFound`].
fn registry_error(reference: &str, registry: &str, cause: OciDistributionError) -> ImageError {
    let reason = match &cause {
        OciDistributionError::ImageManifestNotFoundError(_) => Some("manifest not found"),
        OciDistributionError::RegistryError { envelope, .. } => envelope.errors.iter().find_map(|e| match e.code {
            OciErrorCode::ManifestUnknown => Some("manifest unknown"),
            OciErrorCode::NameUnknown => Some("repository unknown"),
            OciErrorCode::NotFound => Some("not found"),
            _ => None,
        }),
        OciDistributionError::ServerError { code: 404, .. } => Some("not found"),
        OciDistributionError::UnauthorizedError { .. } => {
            Some("pull access denied: the repository does not exist or needs credentials")
        }
        _ => None,
    };
    match reason {
        Some(reason) => ImageError::NotFound {
            reference: reference.to_string(),
            reason: format!("{reason} in registry {registry} ({cause})"),
        },
        None => ImageError::Registry {
            reference: reference.to_string(),
            registry: registry.to_string(),
            cause,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_normalize_like_docker() {
        let digest = format!("sha256:{}", "a".repeat(64));
        for (input, want) in [
            ("busybox", "docker.io/library/busybox:latest".to_string()),
            ("busybox:1.36", "docker.io/library/busybox:1.36".to_string()),
            ("foo/bar", "docker.io/foo/bar:latest".to_string()),
            ("docker.io/busybox", "docker.io/library/busybox:latest".to_string()),
            (
                "index.docker.io/library/busybox",
                "docker.io/library/busybox:latest".to_string(),
            ),
            ("localhost:5000/x", "localhost:5000/x:latest".to_string()),
            ("localhost/x:v1", "localhost/x:v1".to_string()),
            (
                "127.0.0.1:5000/peapod/busybox:test",
                "127.0.0.1:5000/peapod/busybox:test".to_string(),
            ),
            ("quay.io/a/b/c:t", "quay.io/a/b/c:t".to_string()),
            (
                &*format!("busybox@{digest}"),
                format!("docker.io/library/busybox@{digest}"),
            ),
            (
                &*format!("busybox:1@{digest}"),
                format!("docker.io/library/busybox:1@{digest}"),
            ),
        ] {
            assert_eq!(normalize(input).unwrap(), want, "{input}");
        }
    }

    #[test]
    fn invalid_references_are_refused_with_their_name() {
        for bad in ["", "Busybox", "busy box", "a:b:c", "busybox@sha256:abc", "-x/y", "x/"] {
            let err = normalize(bad).unwrap_err();
            assert!(matches!(err, ImageError::InvalidReference { .. }), "{bad}: {err}");
            assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
        }
    }

    #[test]
    fn whiteout_names_translate_to_overlay_operations() {
        assert_eq!(classify(Path::new("etc/passwd")), Whiteout::None);
        assert_eq!(
            classify(Path::new("etc/.wh.passwd")),
            Whiteout::Delete(PathBuf::from("etc/passwd"))
        );
        assert_eq!(classify(Path::new(".wh.tmp")), Whiteout::Delete(PathBuf::from("tmp")));
        assert_eq!(
            classify(Path::new("var/.wh..wh..opq")),
            Whiteout::Opaque(PathBuf::from("var"))
        );
        assert_eq!(classify(Path::new(".wh..wh..opq")), Whiteout::Opaque(PathBuf::new()));
        assert_eq!(classify(Path::new(".wh..wh.plnk/123")), Whiteout::None);
        assert_eq!(classify(Path::new(".wh..wh.plnk")), Whiteout::Ignore);
        assert_eq!(classify(Path::new("a/.wh.")), Whiteout::Ignore);
        // Only the file name counts.
        assert_eq!(classify(Path::new(".wh.x/y")), Whiteout::None);
    }

    #[test]
    fn archive_paths_stay_inside_the_root() {
        assert_eq!(clean_path(Path::new("./a/./b/")), Some(PathBuf::from("a/b")));
        assert_eq!(clean_path(Path::new("/etc/passwd")), Some(PathBuf::from("etc/passwd")));
        assert_eq!(clean_path(Path::new("./")), Some(PathBuf::new()));
        assert_eq!(clean_path(Path::new("a/../../b")), None);
        assert_eq!(normalize_lexically(Path::new("a/b/../c")), Some(PathBuf::from("a/c")));
        assert_eq!(normalize_lexically(Path::new("a/../../c")), None);
    }

    #[test]
    fn whiteout_parents_never_follow_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("link")).unwrap();
        assert!(ensure_parent(dir.path(), Path::new("link/x")).is_err());
        assert_eq!(
            ensure_parent(dir.path(), Path::new("a/b/c")).unwrap(),
            dir.path().join("a/b/c")
        );
        assert!(dir.path().join("a/b").is_dir());
        assert_eq!(fs::read_dir(outside.path()).unwrap().count(), 0);
    }

    #[test]
    fn digests_become_file_names_only_when_well_formed() {
        let hex = "0123456789abcdef".repeat(4);
        assert_eq!(sha256_hex(&format!("sha256:{hex}"), "x").unwrap(), hex);
        for bad in [
            "sha256:../../etc/passwd",
            "sha256:ABC",
            "md5:00",
            &format!("sha256:{hex}0"),
        ] {
            assert!(matches!(sha256_hex(bad, "x"), Err(ImageError::Invalid { .. })), "{bad}");
        }
        assert!(matches!(
            sha256_hex(&format!("sha512:{}", "0".repeat(128)), "x"),
            Err(ImageError::Unsupported { .. })
        ));
    }

    fn entry(os: &str, arch: &str) -> ImageIndexEntry {
        serde_json::from_value(serde_json::json!({
            "mediaType": OCI_MANIFEST,
            "digest": format!("sha256:{}", "0".repeat(64)),
            "size": 1,
            "platform": { "os": os, "architecture": arch },
        }))
        .unwrap()
    }

    #[test]
    fn the_host_platform_is_chosen_from_an_index() {
        let (_, arch) = host_platform();
        let other = if arch == "arm64" { "amd64" } else { "arm64" };
        let a = entry("linux", other);
        let b = entry("linux", arch);
        let c = entry("windows", arch);
        assert!(std::ptr::eq(select_platform(&[&a, &c, &b]).unwrap(), &b));
        assert!(select_platform(&[&a, &c]).is_none());
        let err = no_platform("x", &[&a, &c]).to_string();
        assert!(err.starts_with("ErrImagePull: x: no manifest for linux/"), "{err}");
        assert!(err.contains(&format!("linux/{other}, windows/{arch}")), "{err}");
    }

    #[test]
    fn loopback_registries_are_recognised() {
        for (registry, loopback) in [
            ("localhost:5000", true),
            ("127.0.0.1:5000", true),
            ("127.1.2.3", true),
            ("[::1]:5000", true),
            ("index.docker.io", false),
            ("10.0.0.1:5000", false),
        ] {
            assert_eq!(is_loopback(registry_host(registry)), loopback, "{registry}");
        }
    }

    #[test]
    fn overlay_lowerdir_lists_the_top_layer_first() {
        let image = Image {
            name: "x".into(),
            digest: "d".into(),
            entrypoint: vec![],
            cmd: vec![],
            env: vec![],
            working_dir: None,
            user: None,
            stop_signal: None,
            exposed_ports: vec![],
            labels: BTreeMap::new(),
            layers: vec!["/s/layers/bottom".into(), "/s/layers/top".into()],
        };
        let m = image.rootfs_mount(Path::new("/c/upper"), Path::new("/c/work"));
        assert_eq!(m.fstype, "overlay");
        assert_eq!(
            m.options,
            [
                "lowerdir=/s/layers/top:/s/layers/bottom",
                "upperdir=/c/upper",
                "workdir=/c/work"
            ]
        );
    }

    #[test]
    fn missing_images_are_err_image_pull_not_panics() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("store")).unwrap();
        let err = store.resolve("nope").unwrap_err();
        assert!(matches!(err, ImageError::NotFound { .. }));
        assert!(
            err.to_string()
                .starts_with("ErrImagePull: docker.io/library/nope:latest: "),
            "{err}"
        );
        assert!(matches!(
            store.remove("nope", &|_| false),
            Err(ImageError::NotFound { .. })
        ));
        assert!(store.list().unwrap().is_empty());
    }

    #[test]
    fn a_corrupt_blob_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("store")).unwrap();
        let err = store
            .put_blob_bytes(b"hello", &format!("sha256:{}", "0".repeat(64)), "test blob")
            .unwrap_err();
        assert!(matches!(err, ImageError::Mismatch { .. }), "{err}");
        assert_eq!(fs::read_dir(dir.path().join("store/blobs/sha256")).unwrap().count(), 0);
    }
}
