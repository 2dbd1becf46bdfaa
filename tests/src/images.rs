//! OCI images for the containerd and CRI suites, built from Debian's static busybox on this
//! machine: nothing is downloaded.
//!
//! Two images, one uncompressed layer each:
//!
//! - [`BUSYBOX_IMAGE`]: `/bin/busybox`, one symlink per applet, `/etc/passwd`,
//!   `/etc/group`, the usual empty directories; `Cmd ["sh"]`, `Env PATH=...`, like the
//!   upstream busybox image; and `/bin/syscall-probe`, the tests' static
//!   `peapod-syscall-probe` (`make probe`), for the system calls busybox cannot make
//!   (`keyctl`, `userfaultfd`, `io_uring_setup`).
//! - [`PAUSE_IMAGE`]: the pod sandbox image (containerd's `sandbox_image`): only `/pause`,
//!   peapod's static `peapod-pause` (`make pause`), which sleeps until SIGTERM or SIGINT
//!   and exits 0, reaping zombies meanwhile.
//!
//! Both are written as one OCI image-layout tarball (`oci-layout`, `index.json`,
//! `blobs/sha256/...`) whose index names them with `io.containerd.image.name`, so
//! `ctr images import` registers both full references from one file. The archive is built
//! once per test process and cached on disk under the cargo target dir, keyed by the
//! busybox, pause and probe binaries' digests; concurrent processes write it atomically (temp file + rename).

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use anyhow::{ensure, Context, Result};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::BUSYBOX;

/// The busybox image: `sh` by default.
pub const BUSYBOX_IMAGE: &str = "docker.io/peapod/busybox:test";
/// The same busybox image under the name the examples' `image: busybox` normalises to.
pub const BUSYBOX_ALIAS: &str = "docker.io/library/busybox:latest";
/// The pod sandbox ("pause") image: `peapod-pause`, sleeping until SIGTERM/SIGINT.
pub const PAUSE_IMAGE: &str = "docker.io/peapod/pause:test";
/// `PATH` in the images' config.
pub const IMAGE_PATH_ENV: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Bumped whenever the archive's content changes, so stale caches are not reused.
const FORMAT: &str = "peapod-test-images/2";

const MEDIA_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const MEDIA_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const MEDIA_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";

/// A content-addressed blob of the layout.
struct Blob {
    digest: String,
    bytes: Vec<u8>,
}

impl Blob {
    fn new(bytes: Vec<u8>) -> Self {
        Self {
            digest: format!("sha256:{:x}", Sha256::digest(&bytes)),
            bytes,
        }
    }

    fn json(value: &serde_json::Value) -> Self {
        Self::new(serde_json::to_vec(value).expect("JSON values serialize"))
    }

    fn descriptor(&self, media_type: &str) -> serde_json::Value {
        json!({ "mediaType": media_type, "digest": self.digest, "size": self.bytes.len() })
    }
}

/// The OCI image-layout tarball holding [`BUSYBOX_IMAGE`] and [`PAUSE_IMAGE`], built on
/// first use in this process (or reused from the on-disk cache) and shared afterwards.
pub fn archive() -> Result<&'static Path> {
    static ARCHIVE: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    ARCHIVE
        .get_or_init(|| cached_archive().map_err(|e| format!("{e:#}")))
        .as_deref()
        .map_err(|e| anyhow::anyhow!("building the test images: {e}"))
}

/// Where the cache lives: `<cargo target dir>/peapod-test-images`, found from this test
/// binary's path (`target/<profile>/deps/<bin>`); the temp dir when run from elsewhere.
fn cache_dir() -> PathBuf {
    crate::containerd::target_profile_dir()
        .ok()
        .and_then(|profile| profile.parent().map(Path::to_path_buf))
        .unwrap_or_else(std::env::temp_dir)
        .join("peapod-test-images")
}

fn cached_archive() -> Result<PathBuf> {
    let busybox = fs::read(BUSYBOX).with_context(|| format!("read {BUSYBOX} (Debian package busybox-static)"))?;
    let pause_path = pause_binary()?;
    let pause = fs::read(&pause_path).with_context(|| format!("read {}", pause_path.display()))?;
    let probe_path = probe_binary()?;
    let probe = fs::read(&probe_path).with_context(|| format!("read {}", probe_path.display()))?;
    let mut key = Sha256::new();
    key.update(FORMAT);
    key.update(&busybox);
    key.update(&pause);
    key.update(&probe);
    let key = format!("{:x}", key.finalize());
    let dir = cache_dir();
    let path = dir.join(format!("images-{}.tar", &key[..16]));
    if path.exists() {
        return Ok(path);
    }
    fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    let mut tmp = tempfile::NamedTempFile::new_in(&dir)?;
    tmp.write_all(&build_archive(&busybox, &busybox_applets()?, &pause, &probe)?)?;
    tmp.persist(&path)
        .with_context(|| format!("write {}", path.display()))?;
    Ok(path)
}

/// The applets [`BUSYBOX`] provides (`busybox --list`), sorted.
pub fn busybox_applets() -> Result<Vec<String>> {
    let list = Command::new(BUSYBOX)
        .arg("--list")
        .output()
        .with_context(|| format!("run {BUSYBOX} --list (Debian package busybox-static)"))?;
    ensure!(list.status.success(), "{BUSYBOX} --list: {}", list.status);
    let mut applets: Vec<String> = String::from_utf8_lossy(&list.stdout)
        .lines()
        .filter(|a| !a.is_empty() && *a != "busybox" && !a.contains('/'))
        .map(str::to_string)
        .collect();
    applets.sort();
    applets.dedup();
    ensure!(applets.iter().any(|a| a == "sh"), "{BUSYBOX} has no sh applet");
    Ok(applets)
}

/// The OCI image-layout tarball for both images, in memory, from the bytes of a static
/// busybox binary and the applet names to link to it in `/bin`, the pause binary and the
/// syscall probe.
pub fn build_archive(busybox: &[u8], applets: &[String], pause: &[u8], probe: &[u8]) -> Result<Vec<u8>> {
    let busybox_layer = Blob::new(rootfs_layer(busybox, applets, probe)?);
    let pause_layer = Blob::new(pause_layer(pause)?);
    let (os, arch) = oci_platform();
    let config = |layer: &Blob, process: serde_json::Value| {
        let mut config = json!({ "Env": [IMAGE_PATH_ENV], "WorkingDir": "/" });
        config
            .as_object_mut()
            .expect("object")
            .extend(process.as_object().expect("object").clone());
        Blob::json(&json!({
            "architecture": arch,
            "os": os,
            "config": config,
            "rootfs": { "type": "layers", "diff_ids": [layer.digest] },
            "history": [{ "created_by": "peapod-tests" }],
        }))
    };
    let images = [
        (
            BUSYBOX_IMAGE,
            &busybox_layer,
            config(&busybox_layer, json!({ "Cmd": ["sh"] })),
        ),
        (
            BUSYBOX_ALIAS,
            &busybox_layer,
            config(&busybox_layer, json!({ "Cmd": ["sh"] })),
        ),
        (
            PAUSE_IMAGE,
            &pause_layer,
            config(
                &pause_layer,
                json!({ "Entrypoint": ["/pause"], "StopSignal": "SIGTERM" }),
            ),
        ),
    ];

    let mut blobs = BTreeMap::new();
    let mut manifests = Vec::new();
    for (name, layer, config) in images {
        let manifest = Blob::json(&json!({
            "schemaVersion": 2,
            "mediaType": MEDIA_MANIFEST,
            "config": config.descriptor(MEDIA_CONFIG),
            "layers": [layer.descriptor(MEDIA_LAYER)],
        }));
        let mut descriptor = manifest.descriptor(MEDIA_MANIFEST);
        descriptor["platform"] = json!({ "os": os, "architecture": arch });
        descriptor["annotations"] = json!({
            // containerd's archive importer takes the full name from here ...
            "io.containerd.image.name": name,
            // ... and other OCI tools the tag from here.
            "org.opencontainers.image.ref.name": name.rsplit_once(':').map_or("latest", |(_, tag)| tag),
        });
        manifests.push(descriptor);
        blobs.insert(config.digest.clone(), config.bytes);
        blobs.insert(manifest.digest.clone(), manifest.bytes);
    }
    for layer in [busybox_layer, pause_layer] {
        blobs.insert(layer.digest.clone(), layer.bytes);
    }
    let index =
        json!({ "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": manifests });

    let mut tar = TarWriter::new();
    tar.file("oci-layout", 0o644, br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    tar.file("index.json", 0o644, &serde_json::to_vec(&index)?)?;
    tar.dir("blobs", 0o755)?;
    tar.dir("blobs/sha256", 0o755)?;
    for (digest, bytes) in &blobs {
        let hex = digest.strip_prefix("sha256:").expect("sha256 digest");
        tar.file(&format!("blobs/sha256/{hex}"), 0o644, bytes)?;
    }
    tar.finish()
}

/// The image platform of this machine in OCI (Go) terms; the busybox binary is the host's.
fn oci_platform() -> (&'static str, &'static str) {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    };
    ("linux", arch)
}

/// The pause image's only layer: `/pause`, peapod's static pause binary.
fn pause_layer(pause: &[u8]) -> Result<Vec<u8>> {
    let mut tar = TarWriter::new();
    tar.file("pause", 0o755, pause)?;
    tar.finish()
}

/// The static `peapod-pause` built by `make pause` (`target/pause/peapod-pause`).
pub fn pause_binary() -> Result<PathBuf> {
    static_binary("peapod-pause", "the static pause binary with `make pause`")
}

/// The static `peapod-syscall-probe` built by `make probe`
/// (`target/pause/peapod-syscall-probe`).
pub fn probe_binary() -> Result<PathBuf> {
    static_binary("peapod-syscall-probe", "the static syscall probe with `make probe`")
}

/// `target/pause/<name>`, where the Makefile puts the static binaries of the test images;
/// the error says how to build it (`how`).
fn static_binary(name: &str, how: &str) -> Result<PathBuf> {
    let target = crate::containerd::target_profile_dir()?
        .parent()
        .map(Path::to_path_buf)
        .context("target dir")?;
    let path = target.join("pause").join(name);
    ensure!(path.exists(), "{} is missing: build {how}", path.display());
    Ok(path)
}

/// The root filesystem layer: busybox, its applets as symlinks in `/bin`, the syscall
/// probe, the files a shell and `id` expect, and the mount points containers get.
fn rootfs_layer(busybox: &[u8], applets: &[String], probe: &[u8]) -> Result<Vec<u8>> {
    let mut tar = TarWriter::new();
    for (dir, mode) in [
        ("bin", 0o755),
        ("dev", 0o755),
        ("etc", 0o755),
        ("home", 0o755),
        ("proc", 0o555),
        ("root", 0o700),
        ("run", 0o755),
        ("sys", 0o555),
        ("tmp", 0o1777),
        ("usr", 0o755),
        ("usr/bin", 0o755),
        ("usr/sbin", 0o755),
        ("var", 0o755),
        ("var/tmp", 0o1777),
    ] {
        tar.dir(dir, mode)?;
    }
    tar.file("bin/busybox", 0o755, busybox)?;
    tar.file("bin/syscall-probe", 0o755, probe)?;
    for applet in applets {
        tar.symlink(&format!("bin/{applet}"), "busybox")?;
    }
    tar.file(
        "etc/passwd",
        0o644,
        b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/home:/bin/false\n",
    )?;
    tar.file("etc/group", 0o644, b"root:x:0:\nnogroup:x:65534:\n")?;
    tar.finish()
}

/// One entry of a crafted layer, written byte for byte: names and link targets are
/// not checked or cleaned (the tar crate's own `append_*` refuse `..`), so tests can hand
/// an unpacker what an attacker would.
#[derive(Debug, Clone)]
pub struct RawEntry {
    /// The entry type (`tar::EntryType::Regular`, `Symlink`, `Link`, `Directory`...).
    pub kind: tar::EntryType,
    /// The name as stored (at most 100 bytes: no GNU long-name records).
    pub name: String,
    /// The link target for symlinks and hard links (at most 100 bytes).
    pub link: String,
    /// Permission bits.
    pub mode: u32,
    /// Modification time, seconds since the epoch.
    pub mtime: u64,
    /// The content of a regular file.
    pub data: Vec<u8>,
    /// PAX `SCHILY.xattr.<name>` records written before the entry.
    pub xattrs: Vec<(String, Vec<u8>)>,
}

impl RawEntry {
    /// A regular file.
    pub fn file(name: &str, data: &[u8]) -> Self {
        Self {
            kind: tar::EntryType::Regular,
            name: name.into(),
            link: String::new(),
            mode: 0o644,
            mtime: 1_000_000_000,
            data: data.to_vec(),
            xattrs: Vec::new(),
        }
    }

    /// A directory (the name gets its trailing `/`).
    pub fn dir(name: &str, mode: u32) -> Self {
        Self {
            kind: tar::EntryType::Directory,
            name: format!("{}/", name.trim_end_matches('/')),
            mode,
            ..Self::file(name, b"")
        }
    }

    /// A symlink to `target`.
    pub fn symlink(name: &str, target: &str) -> Self {
        Self {
            kind: tar::EntryType::Symlink,
            link: target.into(),
            mode: 0o777,
            ..Self::file(name, b"")
        }
    }

    /// A hard link to `target`.
    pub fn hardlink(name: &str, target: &str) -> Self {
        Self {
            kind: tar::EntryType::Link,
            link: target.into(),
            ..Self::file(name, b"")
        }
    }
}

/// A layer tarball of `entries`, written as they are (see [`RawEntry`]).
pub fn raw_layer(entries: &[RawEntry]) -> Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    for e in entries {
        if !e.xattrs.is_empty() {
            let mut records = Vec::new();
            for (key, value) in &e.xattrs {
                let body = [format!("SCHILY.xattr.{key}=").as_bytes(), value, b"\n"].concat();
                // "<len> <body>", where len counts itself too.
                let mut len = body.len() + 2;
                while format!("{len} ").len() + body.len() != len {
                    len = format!("{len} ").len() + body.len();
                }
                records.extend_from_slice(format!("{len} ").as_bytes());
                records.extend_from_slice(&body);
            }
            let mut h = tar::Header::new_ustar();
            h.set_entry_type(tar::EntryType::XHeader);
            h.set_size(records.len() as u64);
            h.set_mode(0o644);
            h.set_path("PaxHeader")?;
            h.set_cksum();
            builder.append(&h, &records[..])?;
        }
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(e.kind);
        h.set_mode(e.mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(e.mtime);
        h.set_size(e.data.len() as u64);
        let old = h.as_old_mut();
        ensure!(e.name.len() <= old.name.len(), "entry name {:?} too long", e.name);
        ensure!(e.link.len() <= old.linkname.len(), "link {:?} too long", e.link);
        old.name[..e.name.len()].copy_from_slice(e.name.as_bytes());
        old.linkname[..e.link.len()].copy_from_slice(e.link.as_bytes());
        h.set_cksum();
        builder.append(&h, &e.data[..])?;
    }
    Ok(builder.into_inner()?)
}

/// An OCI image-layout tarball holding one image `name` (named by
/// `io.containerd.image.name`) for this machine's platform, with `layers` (uncompressed
/// tars, lowest first) and `Cmd ["sh"]`. `manifest_padding` bytes of annotation make the
/// manifest that much larger (for size-limit tests).
pub fn single_image_archive(name: &str, layers: &[Vec<u8>], manifest_padding: usize) -> Result<Vec<u8>> {
    let (os, arch) = oci_platform();
    let layer_blobs: Vec<Blob> = layers.iter().map(|l| Blob::new(l.clone())).collect();
    let config = Blob::json(&json!({
        "architecture": arch,
        "os": os,
        "config": { "Env": [IMAGE_PATH_ENV], "Cmd": ["sh"] },
        "rootfs": { "type": "layers", "diff_ids": layer_blobs.iter().map(|b| b.digest.clone()).collect::<Vec<_>>() },
    }));
    let mut manifest = json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_MANIFEST,
        "config": config.descriptor(MEDIA_CONFIG),
        "layers": layer_blobs.iter().map(|b| b.descriptor(MEDIA_LAYER)).collect::<Vec<_>>(),
    });
    if manifest_padding > 0 {
        manifest["annotations"] = json!({ "org.example.padding": "x".repeat(manifest_padding) });
    }
    let manifest = Blob::json(&manifest);
    let mut descriptor = manifest.descriptor(MEDIA_MANIFEST);
    descriptor["platform"] = json!({ "os": os, "architecture": arch });
    descriptor["annotations"] = json!({ "io.containerd.image.name": name });
    let index = json!({ "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [descriptor] });
    let mut tar = TarWriter::new();
    tar.file("oci-layout", 0o644, br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    tar.file("index.json", 0o644, &serde_json::to_vec(&index)?)?;
    tar.dir("blobs", 0o755)?;
    tar.dir("blobs/sha256", 0o755)?;
    let mut blobs = BTreeMap::new();
    for b in layer_blobs.iter().chain([&config, &manifest]) {
        blobs.insert(b.digest.clone(), &b.bytes);
    }
    for (digest, bytes) in blobs {
        let hex = digest.strip_prefix("sha256:").expect("sha256 digest");
        tar.file(&format!("blobs/sha256/{hex}"), 0o644, bytes)?;
    }
    tar.finish()
}

/// A deterministic tar writer: root-owned entries, mtime 0, so equal inputs give equal
/// digests.
struct TarWriter {
    builder: tar::Builder<Vec<u8>>,
}

impl TarWriter {
    fn new() -> Self {
        let mut builder = tar::Builder::new(Vec::new());
        builder.mode(tar::HeaderMode::Deterministic);
        Self { builder }
    }

    fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h
    }

    fn dir(&mut self, path: &str, mode: u32) -> Result<()> {
        let mut h = Self::header(tar::EntryType::Directory, mode, 0);
        self.builder
            .append_data(&mut h, format!("{path}/"), std::io::empty())
            .with_context(|| format!("tar: dir {path}"))
    }

    fn file(&mut self, path: &str, mode: u32, data: &[u8]) -> Result<()> {
        let mut h = Self::header(tar::EntryType::Regular, mode, data.len() as u64);
        self.builder
            .append_data(&mut h, path, data)
            .with_context(|| format!("tar: file {path}"))
    }

    fn symlink(&mut self, path: &str, target: &str) -> Result<()> {
        let mut h = Self::header(tar::EntryType::Symlink, 0o777, 0);
        self.builder
            .append_link(&mut h, path, target)
            .with_context(|| format!("tar: symlink {path}"))
    }

    fn finish(self) -> Result<Vec<u8>> {
        Ok(self.builder.into_inner()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archive_is_an_oci_layout_naming_both_images() {
        let applets = vec!["sh".to_string(), "sleep".to_string()];
        let bytes = build_archive(
            b"not really busybox",
            &applets,
            b"not really pause",
            b"not really a probe",
        )
        .unwrap();
        let mut names = BTreeMap::new();
        for entry in tar::Archive::new(&bytes[..]).entries().unwrap() {
            let mut entry = entry.unwrap();
            let path = entry.path().unwrap().to_string_lossy().into_owned();
            let mut data = Vec::new();
            std::io::Read::read_to_end(&mut entry, &mut data).unwrap();
            names.insert(path, data);
        }
        let index: serde_json::Value = serde_json::from_slice(&names["index.json"]).unwrap();
        let refs: Vec<&str> = index["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["annotations"]["io.containerd.image.name"].as_str().unwrap())
            .collect();
        assert_eq!(refs, [BUSYBOX_IMAGE, BUSYBOX_ALIAS, PAUSE_IMAGE]);
        // Every descriptor's digest matches its blob.
        for m in index["manifests"].as_array().unwrap() {
            let hex = m["digest"].as_str().unwrap().strip_prefix("sha256:").unwrap();
            let blob = &names[&format!("blobs/sha256/{hex}")];
            assert_eq!(format!("{:x}", Sha256::digest(blob)), hex);
            assert_eq!(m["size"].as_u64().unwrap(), blob.len() as u64);
        }
        // Deterministic: same input, same bytes.
        assert_eq!(
            bytes,
            build_archive(
                b"not really busybox",
                &applets,
                b"not really pause",
                b"not really a probe"
            )
            .unwrap()
        );
    }
}
