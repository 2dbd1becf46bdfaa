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
//!
//! Modules: `reference` (names, platforms), `archive` (importing tarballs), `registry`
//! (pulling), `auth` (registry credentials and the authentication handshake), `layer` (digests, decompression, unpacking with whiteouts), `store` (the
//! store's blobs, layers, index, locks and garbage collection).

mod archive;
pub mod auth;
pub mod fuzzing;
mod layer;
mod reference;
mod registry;
mod store;

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};

use oci_client::errors::OciDistributionError;
use sandbox::RootfsMount;
use serde::{Deserialize, Serialize};

use layer::*;
use reference::*;

pub use reference::{host_platform, normalize};
pub use store::Store;

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

/// The largest manifest, index or image config read, in bytes: 4 MiB, containerd's
/// `MaxManifestSize` (`core/remotes/docker/resolver.go`, spelled `4 * 1048 * 1048` there).
/// These documents are read whole into memory; a real one is a few KiB.
pub const MAX_DOCUMENT_SIZE: u64 = 4 << 20;

/// Where [`MAX_DOCUMENT_SIZE`] comes from, for errors.
const MANIFEST_LIMIT_SOURCE: &str = "containerd's manifest size limit";

/// The default cap on one layer's uncompressed size, in bytes: 32 GiB. containerd has no
/// such cap; a gzip bomb of a few MiB can then fill the store's filesystem. Real layers
/// reach a few GiB uncompressed (CUDA and ML framework images), so 32 GiB stops a bomb
/// long before most disks fill without refusing them. `--max-layer-size` /
/// `$PEAPOD_MAX_LAYER_SIZE` on `peapod image import` and `pull` change it.
pub const DEFAULT_MAX_LAYER_SIZE: u64 = 32 << 30;

/// Where the layer cap is set, for errors.
const LAYER_LIMIT_SOURCE: &str = "--max-layer-size, $PEAPOD_MAX_LAYER_SIZE";

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
    /// A manifest, index, config, blob or layer is larger than the store accepts: its
    /// descriptor says so, or more bytes came than the limit (reading stopped there).
    #[error("{what}: larger than the limit of {limit} bytes ({knob}): refused")]
    TooLarge {
        /// The document, blob or layer (with its digest).
        what: String,
        /// The limit, in bytes.
        limit: u64,
        /// The limit's source: the option that sets it, or containerd's rule.
        knob: &'static str,
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

/// Progress of long steps (downloads, layer unpacking), as one-line messages.
pub type Progress = std::sync::Arc<dyn Fn(&str) + Send + Sync>;

#[cfg(test)]
mod tests {
    use super::registry::{is_loopback, registry_host};
    use super::*;
    use oci_client::manifest::ImageIndexEntry;
    use std::fs;

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
        // A whiteout names an entry of its directory, never the directory or its parent.
        for bad in ["a/.wh.", "a/.wh..", ".wh...", "a/b/.wh..."] {
            assert_eq!(classify(Path::new(bad)), Whiteout::Invalid, "{bad}");
        }
        // Only the file name counts.
        assert_eq!(classify(Path::new(".wh.x/y")), Whiteout::None);
    }

    /// A layer tar of `(name, type, data)` entries, names written as they are.
    fn raw_tar(entries: &[(&str, tar::EntryType, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, kind, data) in entries {
            let mut h = tar::Header::new_ustar();
            h.set_entry_type(*kind);
            h.set_mode(0o755);
            h.set_size(data.len() as u64);
            // Our own ids, so unpacking needs no privilege.
            h.set_uid(nix::unistd::getuid().as_raw().into());
            h.set_gid(nix::unistd::getgid().as_raw().into());
            h.set_mtime(0);
            h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
            h.set_cksum();
            b.append(&h, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn a_dotdot_whiteout_does_not_delete_the_layer_parent() {
        // `.wh...` names `..`: before the fix it removed the layer directory's parent
        // (here the sentinel beside it) with remove_dir_all.
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("rootfs");
        fs::create_dir(&dest).unwrap();
        fs::write(dir.path().join("sentinel"), "keep").unwrap();
        let layer = raw_tar(&[
            ("a", tar::EntryType::Regular, b"a"),
            (".wh...", tar::EntryType::Regular, b""),
        ]);
        let err = unpack_layer(&layer[..], &dest, "sha256:test", None).unwrap_err();
        assert!(err.to_string().contains("whiteout entry \".wh...\""), "{err}");
        assert_eq!(fs::read_to_string(dir.path().join("sentinel")).unwrap(), "keep");
    }

    /// A reader that counts what was taken from it.
    struct Counting<'a>(&'a [u8], std::rc::Rc<std::cell::Cell<usize>>);

    impl std::io::Read for Counting<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = std::io::Read::read(&mut self.0, buf)?;
            self.1.set(self.1.get() + n);
            Ok(n)
        }
    }

    #[test]
    fn layers_over_the_cap_stop_at_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("rootfs");
        fs::create_dir(&dest).unwrap();
        let big = vec![7u8; 8 << 20];
        let layer = raw_tar(&[("big", tar::EntryType::Regular, &big)]);
        let read = std::rc::Rc::new(std::cell::Cell::new(0));
        let err = unpack_layer(Counting(&layer, read.clone()), &dest, "sha256:big", Some(1 << 20)).unwrap_err();
        assert!(matches!(err, ImageError::TooLarge { limit: 1048576, .. }), "{err}");
        let msg = err.to_string();
        assert!(
            msg.contains("layer sha256:big") && msg.contains("--max-layer-size"),
            "{msg}"
        );
        // Stopped at the limit (plus the reader's buffer), not after reading all 8 MiB.
        assert!(read.get() < 2 << 20, "read {} bytes", read.get());
        let written = fs::metadata(dest.join("big")).map(|m| m.len()).unwrap_or(0);
        assert!(written <= 1 << 20, "wrote {written} bytes");
        // Under the cap it unpacks.
        let dest2 = dir.path().join("rootfs2");
        fs::create_dir(&dest2).unwrap();
        let small = raw_tar(&[("small", tar::EntryType::Regular, b"x")]);
        unpack_layer(&small[..], &dest2, "sha256:small", Some(1 << 20)).unwrap();
        assert_eq!(fs::read(dest2.join("small")).unwrap(), b"x");
    }

    #[test]
    fn documents_over_4_mib_are_refused() {
        let doc = vec![b' '; (4 << 20) + 1];
        let err = read_document(&doc[..], MAX_DOCUMENT_SIZE, "manifest x", Path::new("x")).unwrap_err();
        assert!(
            err.to_string()
                .contains("manifest x: larger than the limit of 4194304 bytes"),
            "{err}"
        );
        assert_eq!(
            read_document(&doc[1..], MAX_DOCUMENT_SIZE, "m", Path::new("x"))
                .unwrap()
                .len(),
            4 << 20
        );
    }

    /// A fake registry on loopback: `/v2/` answers 200; a manifest by tag answers `manifest`
    /// (or, when `None`, an endless body); any blob answers an endless body. Each
    /// connection is closed after its answer. Returns `host:port`.
    fn fake_registry(manifest: Option<Vec<u8>>) -> String {
        use std::io::{BufRead, BufReader, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let mut line = String::new();
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                reader.read_line(&mut line).unwrap_or_default();
                let path = line.split(' ').nth(1).unwrap_or_default().to_string();
                while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                    line.clear();
                }
                let head = "HTTP/1.1 200 OK\r\nConnection: close\r\n\
                            Content-Type: application/vnd.oci.image.manifest.v1+json\r\n";
                let _ = match (&manifest, path.contains("/manifests/")) {
                    _ if path == "/v2/" => write!(stream, "{head}Content-Length: 0\r\n\r\n"),
                    (Some(m), true) => {
                        write!(stream, "{head}Content-Length: {}\r\n\r\n", m.len()).and_then(|()| stream.write_all(m))
                    }
                    _ => write!(stream, "{head}\r\n").and_then(|()| loop {
                        stream.write_all(&[b' '; 64 << 10])?;
                    }),
                };
            }
        });
        addr
    }

    #[test]
    fn pulls_stop_at_the_manifest_limit_and_the_blob_size() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("store")).unwrap();
        let host = fake_registry(None);
        let err = store.pull(&format!("{host}/x/endless:v1"), &[]).unwrap_err();
        assert!(
            matches!(
                err,
                ImageError::TooLarge {
                    limit: MAX_DOCUMENT_SIZE,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("manifest from registry"), "{err}");
        // A manifest whose config blob is 10 bytes by its descriptor, served endless.
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": { "mediaType": "application/vnd.oci.image.config.v1+json",
                        "digest": format!("sha256:{}", "a".repeat(64)), "size": 10 },
            "layers": [],
        }))
        .unwrap();
        let host = fake_registry(Some(manifest));
        let err = store.pull(&format!("{host}/x/blob:v1"), &[]).unwrap_err();
        assert!(err.to_string().contains("download stopped"), "{err}");
        assert!(err.to_string().contains("expected 10 bytes"), "{err}");
        for sub in ["blobs/sha256", "layers", "tmp"] {
            assert_eq!(
                fs::read_dir(dir.path().join("store").join(sub)).unwrap().count(),
                0,
                "{sub}"
            );
        }
    }

    /// A fake registry on loopback behind Docker's token protocol, serving one image
    /// `x/app:v1` (one layer with `/hello`): `/v2/`, manifests and blobs answer 401 with
    /// `WWW-Authenticate: Bearer realm=<this>/token,service=fake` unless the request has
    /// `Authorization: Bearer T`; `GET /token` gives `{"token": "T"}` for Basic
    /// `alice:s3cret` and scope `repository:x/app:pull`, `POST /token` gives
    /// `{"access_token": "T"}` for the refresh token `R`; anything else is 401 `bad
    /// credentials`. Returns `host:port` and every (path, Authorization) it saw.
    #[allow(clippy::type_complexity)]
    fn fake_token_registry() -> (String, std::sync::Arc<std::sync::Mutex<Vec<(String, String)>>>) {
        use std::io::{BufRead, BufReader, Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let layer = raw_tar(&[("hello", tar::EntryType::Regular, b"hi\n")]);
        let layer_digest = sha256_digest(&layer);
        let (os, arch) = host_platform();
        let config = serde_json::to_vec(&serde_json::json!({
            "architecture": arch, "os": os, "config": {"Cmd": ["/hello"]},
            "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
        }))
        .unwrap();
        let config_digest = sha256_digest(&config);
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": config_digest, "size": config.len()},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                        "digest": layer_digest, "size": layer.len()}],
        }))
        .unwrap();
        let blobs: BTreeMap<String, Vec<u8>> = [(layer_digest, layer), (config_digest, config)].into();
        let (thread_addr, thread_seen) = (addr.clone(), seen.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                reader.read_line(&mut line).unwrap_or_default();
                let mut parts = line.split(' ');
                let method = parts.next().unwrap_or_default().to_string();
                let target = parts.next().unwrap_or_default().to_string();
                let (mut auth, mut length) = (String::new(), 0usize);
                loop {
                    let mut header = String::new();
                    if reader.read_line(&mut header).unwrap_or(0) <= 2 {
                        break;
                    }
                    let (k, v) = header.split_once(':').unwrap_or_default();
                    match k.to_ascii_lowercase().as_str() {
                        "authorization" => auth = v.trim().to_string(),
                        "content-length" => length = v.trim().parse().unwrap_or(0),
                        _ => {}
                    }
                }
                let mut body = vec![0; length];
                reader.read_exact(&mut body).unwrap_or_default();
                let body = String::from_utf8_lossy(&body).into_owned();
                let (path, query) = target.split_once('?').unwrap_or((&target, ""));
                thread_seen.lock().unwrap().push((path.to_string(), auth.clone()));
                let scope = query.contains("scope=repository%3Ax%2Fapp%3Apull")
                    || body.contains("scope=repository%3Ax%2Fapp%3Apull");
                let answer: (u16, Vec<u8>) = match (method.as_str(), path) {
                    ("GET", "/token")
                        if scope
                            && query.contains("service=fake")
                            && auth == super::auth::basic_header("alice", "s3cret") =>
                    {
                        (200, br#"{"token": "T"}"#.to_vec())
                    }
                    ("POST", "/token")
                        if scope && body.contains("grant_type=refresh_token") && body.contains("refresh_token=R") =>
                    {
                        (200, br#"{"access_token": "T"}"#.to_vec())
                    }
                    (_, "/token") => (401, b"bad credentials".to_vec()),
                    _ if auth != "Bearer T" => (401, Vec::new()),
                    ("GET", "/v2/") => (200, Vec::new()),
                    ("GET", "/v2/x/app/manifests/v1") => (200, manifest.clone()),
                    ("GET", p) => match p.strip_prefix("/v2/x/app/blobs/").and_then(|d| blobs.get(d)) {
                        Some(b) => (200, b.clone()),
                        None => (404, Vec::new()),
                    },
                    _ => (404, Vec::new()),
                };
                let challenge = if answer.0 == 401 && path != "/token" {
                    format!("WWW-Authenticate: Bearer realm=\"http://{thread_addr}/token\",service=\"fake\"\r\n")
                } else {
                    String::new()
                };
                let _ = write!(
                    stream,
                    "HTTP/1.1 {} X\r\nConnection: close\r\nContent-Type: {OCI_MANIFEST}\r\n{challenge}Content-Length: {}\r\n\r\n",
                    answer.0,
                    answer.1.len()
                )
                .and_then(|()| stream.write_all(&answer.1));
            }
        });
        (addr, seen)
    }

    #[test]
    fn bearer_token_flow_pulls_with_pull_secret_credentials() {
        let (host, seen) = fake_token_registry();
        let image = format!("{host}/x/app:v1");
        let alice = auth::AuthConfig {
            username: "alice".into(),
            password: "s3cret".into(),
            ..Default::default()
        };
        // Basic credentials at the token endpoint; the token on every registry request,
        // blobs (through oci-client) included.
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("store")).unwrap();
        store.pull_with(&image, &[], Some(&alice)).unwrap();
        let pulled = store.resolve(&image).unwrap();
        assert_eq!(fs::read(pulled.layers[0].join("hello")).unwrap(), b"hi\n");
        let seen = std::mem::take(&mut *seen.lock().unwrap());
        let blobs: Vec<_> = seen.iter().filter(|(p, _)| p.contains("/blobs/")).collect();
        assert_eq!(blobs.len(), 2, "{seen:?}");
        assert!(blobs.iter().all(|(_, a)| a == "Bearer T"), "{seen:?}");
        assert!(
            seen.iter()
                .any(|(p, a)| p == "/v2/x/app/manifests/v1" && a == "Bearer T"),
            "{seen:?}"
        );
        // An identity token: the OAuth2 refresh-token exchange.
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("store")).unwrap();
        let identity = auth::AuthConfig {
            identity_token: "R".into(),
            ..Default::default()
        };
        store.pull_with(&image, &[], Some(&identity)).unwrap();
        // A registry token goes to the registry as is.
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("store")).unwrap();
        let token = auth::AuthConfig {
            registry_token: "T".into(),
            ..Default::default()
        };
        store.pull_with(&image, &[], Some(&token)).unwrap();
        // Wrong credentials, and none: the token endpoint's refusal, named, and nothing
        // stored; the password is not in the message.
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("store")).unwrap();
        let wrong = auth::AuthConfig {
            password: "wrong-pw".into(),
            ..alice
        };
        for auth in [Some(&wrong), None] {
            let err = store.pull_with(&image, &[], auth).unwrap_err().to_string();
            assert!(
                err.starts_with(&format!("ErrImagePull: {image}: pull from {host}")),
                "{err}"
            );
            assert!(
                err.contains(&format!(
                    "token endpoint http://{host}/token: 401 Unauthorized: bad credentials"
                )),
                "{err}"
            );
            assert!(!err.contains("wrong-pw"), "{err}");
        }
        assert!(store.list().unwrap().is_empty());
        assert_eq!(fs::read_dir(dir.path().join("store/blobs/sha256")).unwrap().count(), 0);
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
