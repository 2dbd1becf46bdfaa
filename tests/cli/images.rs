//! The local image store (`peapod::images`) against the real kernel: the harness's OCI
//! archive and hand-made OCI and docker archives imported into temp stores, rootfs
//! stacked with overlayfs through `sandbox::rootfs::mount_rootfs_layers`, pulls from a
//! private `docker-registry` that `skopeo` fills, and garbage collection on remove.

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use peapod::images::{host_platform, Image, ImageError, Store};
use peapod_tests::images::{archive, BUSYBOX_ALIAS, BUSYBOX_IMAGE, IMAGE_PATH_ENV, PAUSE_IMAGE};
use sandbox::rootfs::{mount_rootfs_layers, unmount_all};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::pods::{delete_and_check, logs, uid_of, Cli, Mode};

const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// Env vars that make this binary an importer child (see [`run_import_child_if_requested`]).
const CHILD_STORE: &str = "_PEAPOD_TEST_IMPORT_STORE";
const CHILD_ARCHIVE: &str = "_PEAPOD_TEST_IMPORT_ARCHIVE";

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(bytes))
}

fn hex(digest: &str) -> &str {
    digest.strip_prefix("sha256:").unwrap_or(digest)
}

/// A temp dir holding a store, checked for leftovers (mounts, staging) by [`Fixture::check_clean`].
struct Fixture {
    dir: tempfile::TempDir,
    store: Store,
}

impl Fixture {
    fn new() -> Result<Self> {
        let dir = tempfile::Builder::new().prefix("peapod-images-").tempdir()?;
        let store = Store::open(&dir.path().join("store"))?;
        Ok(Self { dir, store })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Entries in a store subdirectory (`blobs/sha256`, `layers`, `tmp`).
    fn count(&self, sub: &str) -> Result<usize> {
        Ok(fs::read_dir(self.store.root().join(sub))?.count())
    }

    fn blob_exists(&self, digest: &str) -> bool {
        self.store.root().join("blobs/sha256").join(hex(digest)).is_file()
    }

    /// Nothing mounted under the fixture, no staging left in the store's `tmp/`.
    fn check_clean(&self) -> Result<()> {
        let mounts = mounts_under(self.path())?;
        ensure!(mounts.is_empty(), "mounts left behind: {mounts:?}");
        ensure!(
            self.count("tmp")? == 0,
            "staging left in tmp/: {:?}",
            ls(&self.store.root().join("tmp"))?
        );
        Ok(())
    }
}

fn ls(dir: &Path) -> Result<Vec<String>> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .with_context(|| format!("list {}", dir.display()))?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<std::io::Result<_>>()?;
    names.sort();
    Ok(names)
}

/// Mount points at or below `dir`, from `/proc/self/mountinfo`.
fn mounts_under(dir: &Path) -> Result<Vec<String>> {
    let info = fs::read_to_string("/proc/self/mountinfo")?;
    let prefix = dir.to_string_lossy().into_owned();
    Ok(info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| *m == prefix || m.starts_with(&format!("{prefix}/")))
        .map(str::to_string)
        .collect())
}

/// A rootfs mounted from an image on `<fixture>/<name>/rootfs`, with its upper and work
/// dirs; unmounted on drop (and checked by [`Rootfs::unmount`]).
struct Rootfs {
    target: PathBuf,
    upper: PathBuf,
}

impl Rootfs {
    fn mount(image: &Image, parent: &Path, name: &str) -> Result<Self> {
        let base = parent.join(name);
        let (target, upper, work) = (base.join("rootfs"), base.join("upper"), base.join("work"));
        for d in [&target, &upper, &work] {
            fs::create_dir_all(d)?;
        }
        let mount = image.rootfs_mount(&upper, &work);
        mount_rootfs_layers(std::slice::from_ref(&mount), &target)
            .with_context(|| format!("mount {mount:?} on {}", target.display()))?;
        Ok(Self { target, upper })
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.target.join(rel)
    }

    fn unmount(self) -> Result<()> {
        unmount_all(&self.target)?;
        ensure!(
            mounts_under(&self.target)?.is_empty(),
            "{} still mounted",
            self.target.display()
        );
        Ok(())
    }
}

impl Drop for Rootfs {
    fn drop(&mut self) {
        let _ = unmount_all(&self.target);
    }
}

/// A layer tarball built entry by entry (deterministic: mtime fixed, numeric owners).
struct Layer {
    builder: tar::Builder<Vec<u8>>,
}

impl Layer {
    fn new() -> Self {
        Self {
            builder: tar::Builder::new(Vec::new()),
        }
    }

    fn header(kind: tar::EntryType, mode: u32, uid: u64, gid: u64, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(uid);
        h.set_gid(gid);
        h.set_size(size);
        h.set_mtime(1_700_000_000);
        h
    }

    fn dir(mut self, path: &str, mode: u32) -> Result<Self> {
        let mut h = Self::header(tar::EntryType::Directory, mode, 0, 0, 0);
        self.builder.append_data(&mut h, format!("{path}/"), std::io::empty())?;
        Ok(self)
    }

    fn file(self, path: &str, mode: u32, data: &[u8]) -> Result<Self> {
        self.owned_file(path, mode, 0, 0, data)
    }

    fn owned_file(mut self, path: &str, mode: u32, uid: u64, gid: u64, data: &[u8]) -> Result<Self> {
        let mut h = Self::header(tar::EntryType::Regular, mode, uid, gid, data.len() as u64);
        self.builder.append_data(&mut h, path, data)?;
        Ok(self)
    }

    fn symlink(mut self, path: &str, target: &str) -> Result<Self> {
        let mut h = Self::header(tar::EntryType::Symlink, 0o777, 0, 0, 0);
        self.builder.append_link(&mut h, path, target)?;
        Ok(self)
    }

    fn hardlink(mut self, path: &str, target: &str) -> Result<Self> {
        let mut h = Self::header(tar::EntryType::Link, 0o644, 0, 0, 0);
        self.builder.append_link(&mut h, path, target)?;
        Ok(self)
    }

    fn finish(self) -> Result<Vec<u8>> {
        Ok(self.builder.into_inner()?)
    }
}

fn append_file(tar: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8]) -> Result<()> {
    let mut h = tar::Header::new_gnu();
    h.set_mode(0o644);
    h.set_size(data.len() as u64);
    tar.append_data(&mut h, path, data)?;
    Ok(())
}

/// `gzip -n`: compressed the way registries and docker store layers.
fn gzip(data: &[u8]) -> Result<Vec<u8>> {
    let mut child = Command::new("gzip")
        .args(["-n", "-c"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("run gzip")?;
    let mut stdin = child.stdin.take().context("gzip stdin")?;
    let data = data.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&data));
    let out = child.wait_with_output()?;
    writer.join().map_err(|_| anyhow::anyhow!("gzip writer panicked"))??;
    ensure!(out.status.success(), "gzip: {}", out.status);
    Ok(out.stdout)
}

/// An OCI image layout under construction: blobs and `index.json` entries.
#[derive(Default)]
struct Layout {
    blobs: BTreeMap<String, Vec<u8>>,
    index: Vec<Value>,
}

impl Layout {
    fn blob(&mut self, media_type: &str, bytes: Vec<u8>) -> Value {
        let digest = sha256(&bytes);
        let desc = json!({ "mediaType": media_type, "digest": digest, "size": bytes.len() });
        self.blobs.insert(digest, bytes);
        desc
    }

    /// Adds an image (its layers as stored, and their uncompressed tars for diff-ids) and
    /// returns its manifest descriptor, not yet named in the index.
    fn image(&mut self, layers: &[(&[u8], bool)], arch: &str, config: Value) -> Result<Value> {
        let mut descs = Vec::new();
        let mut diff_ids = Vec::new();
        for (tar, gzipped) in layers {
            diff_ids.push(sha256(tar));
            descs.push(if *gzipped {
                self.blob(OCI_LAYER_GZIP, gzip(tar)?)
            } else {
                self.blob(OCI_LAYER, tar.to_vec())
            });
        }
        let config = self.blob(
            OCI_CONFIG,
            serde_json::to_vec(&json!({
                "created": "2025-01-02T03:04:05Z",
                "architecture": arch,
                "os": "linux",
                "config": config,
                "rootfs": { "type": "layers", "diff_ids": diff_ids },
            }))?,
        );
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": config,
            "layers": descs,
        });
        let mut desc = self.blob(OCI_MANIFEST, serde_json::to_vec(&manifest)?);
        desc["platform"] = json!({ "os": "linux", "architecture": arch });
        Ok(desc)
    }

    fn name(&mut self, mut desc: Value, annotations: Value) {
        desc["annotations"] = annotations;
        self.index.push(desc);
    }

    fn index_json(&self) -> Result<Vec<u8>> {
        Ok(serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": self.index,
        }))?)
    }

    fn tarball(&self) -> Result<Vec<u8>> {
        let mut tar = tar::Builder::new(Vec::new());
        append_file(&mut tar, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        append_file(&mut tar, "index.json", &self.index_json()?)?;
        for (digest, bytes) in &self.blobs {
            append_file(&mut tar, &format!("blobs/sha256/{}", hex(digest)), bytes)?;
        }
        Ok(tar.into_inner()?)
    }
}

/// The two-layer whiteout image: the base layer has files the top layer deletes
/// (`etc/.wh.gone`) or hides (`data/.wh..wh..opq`); the top layer is gzip-compressed.
fn whiteout_layers() -> Result<(Vec<u8>, Vec<u8>)> {
    let base = Layer::new()
        .dir("etc", 0o755)?
        .file("etc/gone", 0o644, b"deleted above\n")?
        .file("etc/kept", 0o644, b"kept\n")?
        .dir("data", 0o700)?
        .file("data/old1", 0o644, b"old\n")?
        .dir("data/sub", 0o755)?
        .file("data/sub/old2", 0o644, b"old\n")?
        .dir("keep", 0o755)?
        .owned_file("keep/file", 0o640, 1000, 2000, b"file\n")?
        .symlink("keep/link", "file")?
        .hardlink("keep/hard", "keep/file")?
        .dir("bin", 0o755)?
        .file("bin/suid", 0o4755, b"#!/bin/true\n")?
        .finish()?;
    let top = Layer::new()
        .file("etc/.wh.gone", 0o644, b"")?
        .dir("data", 0o755)?
        .file("data/.wh..wh..opq", 0o644, b"")?
        .file("data/new", 0o644, b"new\n")?
        .file("keep/added", 0o644, b"added\n")?
        .finish()?;
    Ok((base, top))
}

const WHITEOUT_IMAGE: &str = "example.com/peapod/whiteout:v1";

/// An OCI layout tarball with [`WHITEOUT_IMAGE`], named by `org.opencontainers.image.ref.name`
/// (a full reference), as other tools than containerd write it.
fn whiteout_archive(dir: &Path) -> Result<PathBuf> {
    let (base, top) = whiteout_layers()?;
    let mut layout = Layout::default();
    let desc = layout.image(
        &[(&base, false), (&top, true)],
        host_platform().1,
        json!({ "Cmd": ["/bin/true"] }),
    )?;
    layout.name(desc, json!({ "org.opencontainers.image.ref.name": WHITEOUT_IMAGE }));
    let path = dir.join("whiteout.tar");
    fs::write(&path, layout.tarball()?)?;
    Ok(path)
}

/// A `docker save` archive with two images sharing a layer the way docker writes it (a
/// symlinked `layer.tar`): `dockerimg:v1` (also tagged `example.com/team/dockerimg:v1`,
/// layers A and B, B gzip-compressed) and `dockerimg:v2` (layers A and C).
fn docker_archive(dir: &Path) -> Result<PathBuf> {
    let a = Layer::new()
        .dir("bin", 0o755)?
        .file("bin/app", 0o755, b"#!/bin/sh\necho app\n")?
        .finish()?;
    let b = Layer::new()
        .dir("srv", 0o755)?
        .file("srv/v1", 0o644, b"v1\n")?
        .finish()?;
    let c = Layer::new()
        .dir("srv", 0o755)?
        .file("srv/v2", 0o644, b"v2\n")?
        .finish()?;
    let config = |diff_ids: Vec<String>, tag: &str| {
        json!({
            "architecture": host_platform().1,
            "os": "linux",
            "created": "2024-01-02T03:04:05Z",
            "config": {
                "Entrypoint": ["/bin/app"],
                "Cmd": ["--serve", tag],
                "Env": ["PATH=/bin", "MODE=test"],
                "WorkingDir": "/srv",
                "User": "1000:1000",
                "StopSignal": "SIGQUIT",
                "ExposedPorts": { "8080/tcp": {}, "53/udp": {} },
                "Labels": { "org.example.tag": tag },
            },
            "rootfs": { "type": "layers", "diff_ids": diff_ids },
            "history": [{ "created_by": "peapod-tests" }],
        })
    };
    let v1 = serde_json::to_vec(&config(vec![sha256(&a), sha256(&b)], "v1"))?;
    let v2 = serde_json::to_vec(&config(vec![sha256(&a), sha256(&c)], "v2"))?;
    let manifest = json!([
        {
            "Config": format!("{}.json", hex(&sha256(&v1))),
            "RepoTags": ["dockerimg:v1", "example.com/team/dockerimg:v1"],
            "Layers": ["aaaa/layer.tar", "bbbb/layer.tar"],
        },
        {
            "Config": format!("{}.json", hex(&sha256(&v2))),
            "RepoTags": ["dockerimg:v2"],
            "Layers": ["cccc/layer.tar", "dddd/layer.tar"],
        },
    ]);
    let mut tar = tar::Builder::new(Vec::new());
    append_file(&mut tar, "manifest.json", &serde_json::to_vec(&manifest)?)?;
    append_file(&mut tar, &format!("{}.json", hex(&sha256(&v1))), &v1)?;
    append_file(&mut tar, &format!("{}.json", hex(&sha256(&v2))), &v2)?;
    append_file(&mut tar, "aaaa/layer.tar", &a)?;
    append_file(&mut tar, "bbbb/layer.tar", &gzip(&b)?)?;
    // docker save writes a layer shared by two images once and links the other copy.
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_mode(0o777);
    h.set_size(0);
    tar.append_link(&mut h, "cccc/layer.tar", "../aaaa/layer.tar")?;
    append_file(&mut tar, "dddd/layer.tar", &c)?;
    append_file(&mut tar, "repositories", br#"{"dockerimg":{"v1":"bbbb","v2":"dddd"}}"#)?;
    let path = dir.join("docker.tar");
    fs::write(&path, tar.into_inner()?)?;
    Ok(path)
}

/// `getfattr` (Debian package attr): `trusted.*` xattrs, as root.
fn xattr(path: &Path, name: &str) -> Result<Option<String>> {
    let out = Command::new("getfattr")
        .args(["--absolute-names", "--only-values", "-h", "-n", name])
        .arg(path)
        .output()
        .context("run getfattr (Debian package attr; make deps)")?;
    Ok(out
        .status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned()))
}

/// The harness's busybox and pause images: imported, resolved, busybox's rootfs mounted
/// from its single layer and a shell run in it with chroot; a write lands in the upper dir.
pub fn oci_archive_imports_and_busybox_mounts_from_its_layer() -> Result<()> {
    let f = Fixture::new()?;
    let names = f.store.import(archive()?)?;
    ensure!(
        names == [BUSYBOX_IMAGE, BUSYBOX_ALIAS, PAUSE_IMAGE],
        "imported {names:?}"
    );

    let busybox = f.store.resolve("peapod/busybox:test")?;
    ensure!(busybox.name == BUSYBOX_IMAGE, "{busybox:?}");
    ensure!(busybox.cmd == ["sh"] && busybox.entrypoint.is_empty(), "{busybox:?}");
    ensure!(busybox.env == [IMAGE_PATH_ENV], "{busybox:?}");
    ensure!(busybox.working_dir.as_deref() == Some("/"), "{busybox:?}");
    ensure!(busybox.layers.len() == 1, "{busybox:?}");
    let pause = f.store.resolve(PAUSE_IMAGE)?;
    ensure!(pause.entrypoint == ["/pause"], "{pause:?}");
    ensure!(pause.stop_signal.as_deref() == Some("SIGTERM"), "{pause:?}");
    ensure!(f.count("layers")? == 2 && f.count("blobs/sha256")? == 6);

    let layer = &busybox.layers[0];
    let meta = fs::metadata(layer)?;
    ensure!(meta.mode() & 0o7777 == 0o755, "layer root mode {:o}", meta.mode());
    ensure!(
        fs::metadata(layer.join("tmp"))?.mode() & 0o7777 == 0o1777,
        "tmp lost its sticky bit"
    );

    let rootfs = Rootfs::mount(&busybox, f.path(), "c1")?;
    let bin = fs::metadata(rootfs.path("bin/busybox"))?;
    ensure!(bin.is_file() && bin.mode() & 0o777 == 0o755, "bin/busybox: {bin:?}");
    ensure!(bin.len() == fs::metadata(peapod_tests::BUSYBOX)?.len());
    ensure!(fs::read_link(rootfs.path("bin/sh"))? == Path::new("busybox"));
    let out = Command::new("chroot")
        .arg(&rootfs.target)
        .args(["/bin/sh", "-c", "echo hello > /hello; cat /hello; id -u"])
        .output()?;
    ensure!(
        out.status.success() && out.stdout == b"hello\n0\n",
        "chroot sh: {out:?}"
    );
    ensure!(fs::read(rootfs.upper.join("hello"))? == b"hello\n");
    ensure!(!layer.join("hello").exists(), "a write reached the image layer");
    rootfs.unmount()?;
    f.check_clean()
}

/// A two-layer image whose top layer deletes a file and makes a directory opaque: on disk
/// the top layer holds a 0:0 character device and `trusted.overlay.opaque=y`; through
/// overlayfs the file is gone and the directory shows only the top layer's entries.
/// Modes (setuid), owners, symlinks and hard links survive.
pub fn whiteouts_in_an_upper_layer_hide_lower_files() -> Result<()> {
    let f = Fixture::new()?;
    let archive = whiteout_archive(f.path())?;
    ensure!(f.store.import(&archive)? == [WHITEOUT_IMAGE]);
    let image = f.store.resolve(WHITEOUT_IMAGE)?;
    ensure!(image.layers.len() == 2, "{image:?}");
    let (base, top) = (&image.layers[0], &image.layers[1]);

    // The translation, on disk.
    let gone = fs::symlink_metadata(top.join("etc/gone"))?;
    ensure!(
        gone.file_type().is_char_device() && gone.rdev() == 0,
        "etc/gone in the top layer is not a 0:0 whiteout: {gone:?}"
    );
    ensure!(!top.join("etc/.wh.gone").exists() && !top.join("data/.wh..wh..opq").exists());
    ensure!(xattr(&top.join("data"), "trusted.overlay.opaque")?.as_deref() == Some("y"));
    ensure!(xattr(&base.join("data"), "trusted.overlay.opaque")?.is_none());
    let file = fs::symlink_metadata(base.join("keep/file"))?;
    let hard = fs::symlink_metadata(base.join("keep/hard"))?;
    ensure!(file.ino() == hard.ino() && file.nlink() == 2, "hard link lost");
    ensure!((file.uid(), file.gid(), file.mode() & 0o7777) == (1000, 2000, 0o640));
    ensure!(fs::symlink_metadata(base.join("bin/suid"))?.mode() & 0o7777 == 0o4755);
    ensure!(fs::metadata(base.join("data"))?.mode() & 0o7777 == 0o700);
    ensure!(fs::metadata(top.join("data"))?.mode() & 0o7777 == 0o755);
    ensure!(fs::metadata(top.join("keep/added")).is_ok());

    // The result, through overlayfs.
    let rootfs = Rootfs::mount(&image, f.path(), "c1")?;
    ensure!(!rootfs.path("etc/gone").exists(), "whiteout did not hide etc/gone");
    ensure!(fs::read(rootfs.path("etc/kept"))? == b"kept\n");
    ensure!(
        ls(&rootfs.path("data"))? == ["new"],
        "opaque data/: {:?}",
        ls(&rootfs.path("data"))?
    );
    ensure!(fs::metadata(rootfs.path("data"))?.mode() & 0o7777 == 0o755);
    ensure!(ls(&rootfs.path("keep"))? == ["added", "file", "hard", "link"]);
    ensure!(fs::read_link(rootfs.path("keep/link"))? == Path::new("file"));
    ensure!(fs::read(rootfs.path("keep/link"))? == b"file\n");
    let file = fs::metadata(rootfs.path("keep/file"))?;
    ensure!((file.uid(), file.gid(), file.mode() & 0o7777) == (1000, 2000, 0o640));
    ensure!(fs::metadata(rootfs.path("bin/suid"))?.mode() & 0o7777 == 0o4755);
    // Deleting through the overlay writes a whiteout in the upper dir, not the layer.
    fs::remove_file(rootfs.path("etc/kept"))?;
    ensure!(base.join("etc/kept").exists(), "a delete reached the image layer");
    rootfs.unmount()?;
    f.check_clean()
}

/// A `docker save` archive: every RepoTag imported, the config the CLI needs read back,
/// the symlinked shared layer unpacked once and used by both images.
pub fn docker_archive_imports_with_its_config_and_shared_layers() -> Result<()> {
    let f = Fixture::new()?;
    let archive = docker_archive(f.path())?;
    let names = f.store.import(&archive)?;
    ensure!(
        names
            == [
                "docker.io/library/dockerimg:v1",
                "example.com/team/dockerimg:v1",
                "docker.io/library/dockerimg:v2"
            ],
        "imported {names:?}"
    );
    let v1 = f.store.resolve("dockerimg:v1")?;
    ensure!(v1.entrypoint == ["/bin/app"] && v1.cmd == ["--serve", "v1"], "{v1:?}");
    ensure!(v1.env == ["PATH=/bin", "MODE=test"], "{v1:?}");
    ensure!(v1.working_dir.as_deref() == Some("/srv") && v1.user.as_deref() == Some("1000:1000"));
    ensure!(v1.stop_signal.as_deref() == Some("SIGQUIT"));
    ensure!(v1.exposed_ports == ["53/udp", "8080/tcp"], "{v1:?}");
    ensure!(v1.labels.get("org.example.tag").map(String::as_str) == Some("v1"));
    let also_v1 = f.store.resolve("example.com/team/dockerimg:v1")?;
    ensure!(also_v1.digest == v1.digest, "two tags of one image, two manifests");
    let v2 = f.store.resolve("docker.io/library/dockerimg:v2")?;
    ensure!(v1.layers[0] == v2.layers[0], "shared layer unpacked twice");
    ensure!(v1.layers[1] != v2.layers[1]);
    ensure!(
        f.count("layers")? == 3,
        "layers: {:?}",
        ls(&f.store.root().join("layers"))?
    );

    let rootfs = Rootfs::mount(&v1, f.path(), "c1")?;
    ensure!(fs::read(rootfs.path("srv/v1"))? == b"v1\n" && !rootfs.path("srv/v2").exists());
    ensure!(fs::metadata(rootfs.path("bin/app"))?.mode() & 0o777 == 0o755);
    rootfs.unmount()?;

    let listed = f.store.list()?;
    let entry = listed
        .iter()
        .find(|i| i.name == "docker.io/library/dockerimg:v1")
        .context("v1 not listed")?;
    ensure!(entry.created.as_deref() == Some("2024-01-02T03:04:05Z"), "{entry:?}");
    ensure!(entry.digest == v1.digest && entry.size > 0);
    f.check_clean()
}

/// A private registry (Debian's `docker-registry`) on a free loopback port, with its
/// storage and config in a temp dir; stopped and reaped on drop.
struct Registry {
    dir: tempfile::TempDir,
    child: Child,
    port: u16,
    /// `user:password` of its htpasswd Basic auth, when it has one.
    creds: Option<String>,
}

impl Registry {
    fn start() -> Result<Self> {
        Self::start_with(None)
    }

    /// A registry that wants HTTP Basic auth for `user:password` (`auth: htpasswd`, a
    /// bcrypt entry made by `htpasswd` from apache2-utils): anything else is 401 with
    /// `WWW-Authenticate: Basic realm="peapod-test"`.
    fn start_with(creds: Option<(&str, &str)>) -> Result<Self> {
        let dir = tempfile::Builder::new().prefix("peapod-registry-").tempdir()?;
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let config = dir.path().join("config.yml");
        let mut auth = String::new();
        if let Some((user, password)) = creds {
            let htpasswd = dir.path().join("htpasswd");
            let out = Command::new("htpasswd")
                .args(["-Bbn", user, password])
                .output()
                .context("run htpasswd (Debian package apache2-utils; make deps)")?;
            ensure!(
                out.status.success(),
                "htpasswd: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            fs::write(&htpasswd, &out.stdout)?;
            auth = format!(
                "auth:\n  htpasswd:\n    realm: peapod-test\n    path: {}\n",
                htpasswd.display()
            );
        }
        fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  \
                 delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n{auth}",
                dir.path().join("data").display()
            ),
        )?;
        let log = fs::File::create(dir.path().join("registry.log"))?;
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("start docker-registry (Debian package docker-registry; make deps)")?;
        let mut registry = Self {
            dir,
            child,
            port,
            creds: creds.map(|(u, p)| format!("{u}:{p}")),
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            // 401: up, and asking for credentials.
            if registry.get("/v2/").is_ok_and(|status| status == 200 || status == 401) {
                return Ok(registry);
            }
            if let Some(status) = registry.child.try_wait()? {
                bail!("docker-registry exited ({status}): {}", registry.log());
            }
            ensure!(
                Instant::now() < deadline,
                "docker-registry not ready: {}",
                registry.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// The HTTP status of a GET.
    fn get(&self, path: &str) -> Result<u16> {
        Ok(self.request(path)?.0)
    }

    /// A GET accepting manifests and indexes: status, headers (lowercase names), body.
    fn request(&self, path: &str) -> Result<(u16, BTreeMap<String, String>, Vec<u8>)> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        write!(
            s,
            "GET {path} HTTP/1.0\r\nHost: {}\r\nAccept: {OCI_MANIFEST}, {OCI_INDEX}, \
             application/vnd.docker.distribution.manifest.v2+json, \
             application/vnd.docker.distribution.manifest.list.v2+json\r\n\r\n",
            self.host()
        )?;
        let mut answer = Vec::new();
        s.read_to_end(&mut answer)?;
        let split = answer
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .context("no end of HTTP headers")?;
        let head = String::from_utf8_lossy(&answer[..split]).into_owned();
        let mut lines = head.lines();
        let status = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|c| c.parse().ok())
            .context("no HTTP status")?;
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        Ok((status, headers, answer[split + 4..].to_vec()))
    }

    /// The digest the registry gives `repo:reference`, and the document.
    fn manifest(&self, repo: &str, reference: &str) -> Result<(String, Value)> {
        let (status, headers, body) = self.request(&format!("/v2/{repo}/manifests/{reference}"))?;
        ensure!(status == 200, "manifest {repo}:{reference}: HTTP {status}");
        let digest = headers
            .get("docker-content-digest")
            .cloned()
            .unwrap_or_else(|| sha256(&body));
        Ok((digest, serde_json::from_slice(&body)?))
    }

    /// `skopeo copy` from an OCI layout directory into this registry.
    fn push(&self, layout: &Path, reference: &str, repo: &str, all: bool) -> Result<()> {
        let mut cmd = Command::new("skopeo");
        cmd.args(["--insecure-policy", "copy", "--dest-tls-verify=false"]);
        if let Some(creds) = &self.creds {
            cmd.arg(format!("--dest-creds={creds}"));
        }
        if all {
            cmd.arg("--all");
        }
        let out = cmd
            .arg(format!("oci:{}:{reference}", layout.display()))
            .arg(format!("docker://{}/{repo}", self.host()))
            .output()
            .context("run skopeo (Debian package skopeo; make deps)")?;
        ensure!(
            out.status.success(),
            "skopeo copy {reference} to {repo}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.child.wait();
    }
}

/// The harness's archive unpacked as an OCI layout directory skopeo can read, its index
/// reduced to two unambiguous references: `busybox` (the busybox manifest) and `multi`,
/// an image index with busybox for this host's platform and a decoy manifest for
/// another. Returns the busybox manifest digest.
fn registry_layout(dir: &Path) -> Result<String> {
    tar::Archive::new(fs::File::open(archive()?)?).unpack(dir)?;
    let index: Value = serde_json::from_slice(&fs::read(dir.join("index.json"))?)?;
    let busybox = index["manifests"]
        .as_array()
        .context("index.json manifests")?
        .iter()
        .find(|m| m["annotations"]["io.containerd.image.name"] == BUSYBOX_IMAGE)
        .context("no busybox in the harness archive")?
        .clone();
    let digest = busybox["digest"].as_str().context("digest")?.to_string();
    let manifest: Value = serde_json::from_slice(&fs::read(dir.join("blobs/sha256").join(hex(&digest)))?)?;
    let write_blob = |bytes: Vec<u8>| -> Result<(String, usize)> {
        let digest = sha256(&bytes);
        fs::write(dir.join("blobs/sha256").join(hex(&digest)), &bytes)?;
        Ok((digest, bytes.len()))
    };
    // The decoy: same layer, a config for another architecture.
    let (os, arch) = host_platform();
    let other = if arch == "arm64" { "amd64" } else { "arm64" };
    let config: Value = serde_json::from_slice(&fs::read(
        dir.join("blobs/sha256")
            .join(hex(manifest["config"]["digest"].as_str().context("config")?)),
    )?)?;
    let mut decoy_config = config.clone();
    decoy_config["architecture"] = json!(other);
    let (config_digest, config_size) = write_blob(serde_json::to_vec(&decoy_config)?)?;
    let mut decoy = manifest.clone();
    decoy["config"]["digest"] = json!(config_digest);
    decoy["config"]["size"] = json!(config_size);
    let (decoy_digest, decoy_size) = write_blob(serde_json::to_vec(&decoy)?)?;
    let nested = json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            { "mediaType": OCI_MANIFEST, "digest": decoy_digest, "size": decoy_size,
              "platform": { "os": os, "architecture": other } },
            { "mediaType": OCI_MANIFEST, "digest": digest, "size": busybox["size"],
              "platform": { "os": os, "architecture": arch } },
        ],
    });
    let (nested_digest, nested_size) = write_blob(serde_json::to_vec(&nested)?)?;
    let mut busybox = busybox;
    busybox["annotations"] = json!({ "org.opencontainers.image.ref.name": "busybox" });
    let index = json!({
        "schemaVersion": 2,
        "manifests": [
            busybox,
            { "mediaType": OCI_INDEX, "digest": nested_digest, "size": nested_size,
              "annotations": { "org.opencontainers.image.ref.name": "multi" } },
        ],
    });
    fs::write(dir.join("index.json"), serde_json::to_vec(&index)?)?;
    Ok(digest)
}

/// A non-loopback address of this host (the source address towards a TEST-NET address;
/// no packet is sent), for a pull that must use https.
fn non_loopback_address() -> Result<std::net::IpAddr> {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0")?;
    socket
        .connect("192.0.2.1:9")
        .context("no route to pick a non-loopback address from")?;
    let ip = socket.local_addr()?.ip();
    ensure!(
        !ip.is_loopback() && !ip.is_unspecified(),
        "no non-loopback address: {ip}"
    );
    Ok(ip)
}

/// Pulls over plain http from a private registry on loopback: a single-platform image and
/// an index (the host's platform is taken), blobs checked and layers unpacked as for an
/// import; unknown tags and repositories are `ErrImagePull` errors, and so is a registry
/// that is not there (over https for a non-loopback host).
pub fn pull_from_a_local_registry_picks_the_host_platform() -> Result<()> {
    let f = Fixture::new()?;
    let registry = Registry::start()?;
    let layout = f.path().join("layout");
    registry_layout(&layout)?;
    registry.push(&layout, "busybox", "peapod/busybox:test", false)?;
    registry.push(&layout, "multi", "peapod/multi:test", true)?;
    let host = registry.host();
    // skopeo compresses the layers on the way in: the registry's digests are not the
    // archive's, and the pull goes through gzip.
    let (busybox_digest, manifest) = registry.manifest("peapod/busybox", "test")?;
    ensure!(
        manifest["layers"][0]["mediaType"]
            .as_str()
            .is_some_and(|m| m.ends_with("gzip")),
        "{manifest}"
    );
    let (_, index) = registry.manifest("peapod/multi", "test")?;
    let for_host = |arch: &str| -> Result<String> {
        index["manifests"]
            .as_array()
            .context("multi is not an index")?
            .iter()
            .find(|m| m["platform"]["architecture"] == arch)
            .and_then(|m| m["digest"].as_str())
            .map(str::to_string)
            .with_context(|| format!("no {arch} in {index}"))
    };
    let multi_digest = for_host(host_platform().1)?;
    let decoy_digest = for_host(if host_platform().1 == "arm64" { "amd64" } else { "arm64" })?;
    ensure!(multi_digest != decoy_digest);

    let name = f.store.pull(&format!("{host}/peapod/busybox:test"), &[])?;
    ensure!(name == format!("{host}/peapod/busybox:test"), "pulled {name}");
    let image = f.store.resolve(&name)?;
    ensure!(image.digest == busybox_digest, "{image:?}");
    ensure!(image.cmd == ["sh"] && image.layers.len() == 1, "{image:?}");
    ensure!(image.layers[0].join("bin/busybox").is_file());

    let multi = f.store.pull(&format!("{host}/peapod/multi:test"), &[])?;
    let image = f.store.resolve(&multi)?;
    ensure!(
        image.digest == multi_digest,
        "the index's {} manifest was not chosen: {image:?}",
        host_platform().1
    );
    // By digest, too.
    let by_digest = f.store.pull(&format!("{host}/peapod/busybox@{busybox_digest}"), &[])?;
    ensure!(f.store.resolve(&by_digest)?.digest == busybox_digest);
    ensure!(
        f.count("layers")? == 1 && f.count("blobs/sha256")? == 3,
        "pulls stored duplicates"
    );

    let rootfs = Rootfs::mount(&image, f.path(), "c1")?;
    let out = Command::new("chroot")
        .arg(&rootfs.target)
        .args(["/bin/echo", "pulled"])
        .output()?;
    ensure!(out.status.success() && out.stdout == b"pulled\n", "{out:?}");
    rootfs.unmount()?;

    for missing in [
        format!("{host}/peapod/busybox:nope"),
        format!("{host}/peapod/nothing:test"),
    ] {
        match f.store.pull(&missing, &[]) {
            Err(e @ ImageError::NotFound { .. }) => {
                let msg = e.to_string();
                ensure!(msg.starts_with(&format!("ErrImagePull: {missing}: ")), "{msg}");
            }
            other => bail!("pull {missing}: {other:?}"),
        }
    }
    let listed: Vec<String> = f.store.list()?.into_iter().map(|i| i.name).collect();
    ensure!(listed.len() == 3, "{listed:?}");

    drop(registry);
    // Nothing listens any more: a connection error, not a panic, nor a NotFound.
    let gone = f.store.pull(&format!("{host}/peapod/busybox:test"), &[]);
    ensure!(
        matches!(&gone, Err(e @ ImageError::Registry { .. })
            if e.to_string().starts_with("ErrImagePull: ") && e.to_string().contains("refused")),
        "{gone:?}"
    );
    // A non-loopback host is pulled over https unless listed as insecure.
    let closed = TcpListener::bind("0.0.0.0:0")?.local_addr()?.port();
    let remote = format!("{}:{closed}/peapod/busybox:test", non_loopback_address()?);
    match f.store.pull(&remote, &[]) {
        Err(e @ ImageError::Registry { .. }) => ensure!(e.to_string().contains("https://"), "{e}"),
        other => bail!("pull {remote}: {other:?}"),
    }
    let host_only = remote.split(':').next().unwrap_or_default().to_string();
    match f.store.pull(&remote, &[host_only]) {
        Err(e @ ImageError::Registry { .. }) => ensure!(e.to_string().contains("http://"), "{e}"),
        other => bail!("pull {remote} (insecure): {other:?}"),
    }
    f.check_clean()
}

/// What the CLI shows for an image that is nowhere: `ErrImagePull: <ref>: ...` from
/// resolve, remove and pull, and a clear error for a malformed name.
pub fn missing_images_fail_with_err_image_pull() -> Result<()> {
    let f = Fixture::new()?;
    let err = f.store.resolve("nosuchimage").unwrap_err();
    ensure!(
        err.to_string()
            .starts_with("ErrImagePull: docker.io/library/nosuchimage:latest: "),
        "{err}"
    );
    ensure!(matches!(
        f.store.remove("nosuchimage", &|_| false),
        Err(ImageError::NotFound { .. })
    ));
    let err = f.store.pull("Not/A:Valid:Name", &[]).unwrap_err();
    ensure!(
        matches!(err, ImageError::InvalidReference { .. }) && err.to_string().contains("\"Not/A:Valid:Name\""),
        "{err}"
    );
    f.check_clean()
}

/// `list` shows every name with digest, size and creation time; `remove` refuses an image
/// in use, drops a name, and collects only what no remaining image references, until the
/// store is empty.
pub fn list_and_remove_collect_unused_blobs_and_layers() -> Result<()> {
    let f = Fixture::new()?;
    f.store.import(archive()?)?;
    f.store.import(&docker_archive(f.path())?)?;
    f.store.import(&whiteout_archive(f.path())?)?;
    let listed = f.store.list()?;
    let names: Vec<&str> = listed.iter().map(|i| i.name.as_str()).collect();
    ensure!(
        names
            == [
                BUSYBOX_ALIAS,
                "docker.io/library/dockerimg:v1",
                "docker.io/library/dockerimg:v2",
                BUSYBOX_IMAGE,
                PAUSE_IMAGE,
                "example.com/peapod/whiteout:v1",
                "example.com/team/dockerimg:v1",
            ],
        "{names:?}"
    );
    for info in &listed {
        let image = f.store.resolve(&info.name)?;
        ensure!(info.digest == image.digest);
        // Size: the manifest, config and layer blobs as stored.
        let manifest: Value =
            serde_json::from_slice(&fs::read(f.store.root().join("blobs/sha256").join(hex(&info.digest)))?)?;
        let mut size = fs::metadata(f.store.root().join("blobs/sha256").join(hex(&info.digest)))?.len();
        for d in std::iter::once(&manifest["config"]).chain(manifest["layers"].as_array().context("layers")?) {
            size += fs::metadata(
                f.store
                    .root()
                    .join("blobs/sha256")
                    .join(hex(d["digest"].as_str().context("digest")?)),
            )?
            .len();
        }
        ensure!(info.size == size, "{info:?}: size {size}");
        // The harness's configs carry no creation time; the others do.
        let harness = [BUSYBOX_IMAGE, BUSYBOX_ALIAS, PAUSE_IMAGE].contains(&info.name.as_str());
        ensure!(info.created.is_some() != harness, "{info:?}");
    }
    // 2 harness + 3 docker + 2 whiteout layers; blobs: 2×3 + (2 configs + 3 layers + 2 manifests) + 4.
    ensure!(f.count("layers")? == 7, "{:?}", ls(&f.store.root().join("layers"))?);
    ensure!(
        f.count("blobs/sha256")? == 17,
        "{:?}",
        ls(&f.store.root().join("blobs/sha256"))?
    );

    let busybox = f.store.resolve(BUSYBOX_IMAGE)?;
    let err = f
        .store
        .remove("peapod/busybox:test", &|name| name == BUSYBOX_IMAGE)
        .unwrap_err();
    ensure!(matches!(err, ImageError::InUse { .. }), "{err}");
    ensure!(f.store.resolve(BUSYBOX_IMAGE).is_ok(), "an image in use was removed");

    f.store.remove("peapod/busybox:test", &|_| false)?;
    ensure!(matches!(
        f.store.resolve(BUSYBOX_IMAGE),
        Err(ImageError::NotFound { .. })
    ));
    // The harness names the same image twice: its content goes with the last name.
    ensure!(
        f.blob_exists(&busybox.digest),
        "busybox collected while {BUSYBOX_ALIAS} names it"
    );
    f.store.remove(BUSYBOX_ALIAS, &|_| false)?;
    ensure!(
        !f.blob_exists(&busybox.digest) && !busybox.layers[0].exists(),
        "busybox not collected"
    );
    ensure!(f.store.resolve(PAUSE_IMAGE)?.layers[0].is_dir(), "pause lost its layer");

    // Two names, one image: the content stays until the last name goes.
    let v1 = f.store.resolve("dockerimg:v1")?;
    f.store.remove("dockerimg:v1", &|_| false)?;
    ensure!(f.blob_exists(&v1.digest) && v1.layers.iter().all(|l| l.is_dir()));
    f.store.remove("example.com/team/dockerimg:v1", &|_| false)?;
    ensure!(!f.blob_exists(&v1.digest) && !v1.layers[1].exists(), "v1 not collected");
    ensure!(v1.layers[0].is_dir(), "the layer v2 shares was collected");

    for name in ["dockerimg:v2", PAUSE_IMAGE, WHITEOUT_IMAGE] {
        f.store.remove(name, &|_| false)?;
    }
    ensure!(f.store.list()?.is_empty());
    ensure!(f.count("layers")? == 0, "{:?}", ls(&f.store.root().join("layers"))?);
    ensure!(
        f.count("blobs/sha256")? == 0,
        "{:?}",
        ls(&f.store.root().join("blobs/sha256"))?
    );
    f.check_clean()
}

/// Child mode for [`concurrent_imports_do_not_corrupt_the_store`]: import one archive into
/// one store and exit.
pub fn run_import_child_if_requested() {
    let (Some(store), Some(archive)) = (std::env::var_os(CHILD_STORE), std::env::var_os(CHILD_ARCHIVE)) else {
        return;
    };
    let result = Store::open(Path::new(&store)).and_then(|s| s.import(Path::new(&archive)));
    match result {
        Ok(names) => {
            println!("{}", names.join(" "));
            std::process::exit(0);
        }
        Err(e) => {
            eprintln!("import: {e}");
            std::process::exit(1);
        }
    }
}

/// Several processes importing the same archives into one store at once (atomic renames,
/// flock'ed index): all succeed, and the store holds each blob and layer once, complete.
pub fn concurrent_imports_do_not_corrupt_the_store() -> Result<()> {
    let f = Fixture::new()?;
    let docker = docker_archive(f.path())?;
    let exe = std::env::current_exe()?;
    let children: Vec<(Child, &Path)> = (0..6)
        .map(|i| {
            let archive: &Path = if i % 2 == 0 { archive()? } else { &docker };
            let child = Command::new(&exe)
                .env(CHILD_STORE, f.store.root())
                .env(CHILD_ARCHIVE, archive)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()?;
            Ok((child, archive))
        })
        .collect::<Result<_>>()?;
    for (child, archive) in children {
        let out = child.wait_with_output()?;
        ensure!(
            out.status.success(),
            "import {} failed: {}",
            archive.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let listed = f.store.list()?;
    ensure!(listed.len() == 6, "{listed:?}");
    for info in &listed {
        let image = f.store.resolve(&info.name)?;
        ensure!(image.layers.iter().all(|l| l.is_dir()), "{image:?}");
    }
    ensure!(f.count("layers")? == 5, "{:?}", ls(&f.store.root().join("layers"))?);
    ensure!(
        f.count("blobs/sha256")? == 6 + 7,
        "{:?}",
        ls(&f.store.root().join("blobs/sha256"))?
    );
    // Every blob is whole: its name is its digest.
    for name in ls(&f.store.root().join("blobs/sha256"))? {
        let bytes = fs::read(f.store.root().join("blobs/sha256").join(&name))?;
        ensure!(hex(&sha256(&bytes)) == name, "blob {name} is corrupt");
    }
    let rootfs = Rootfs::mount(&f.store.resolve(BUSYBOX_IMAGE)?, f.path(), "c1")?;
    ensure!(rootfs.path("bin/busybox").is_file());
    rootfs.unmount()?;
    f.check_clean()
}

/// Bad input fails with an error naming it, and leaves no image, blob, layer or staging
/// behind: a missing file, a file that is no archive, a layer whose content does not match
/// its digest, a config whose diff-id does not match its layer, an archive without names.
pub fn corrupt_archives_fail_and_leave_nothing() -> Result<()> {
    let f = Fixture::new()?;
    let missing = f.path().join("missing.tar");
    let err = f.store.import(&missing).unwrap_err();
    ensure!(err.to_string().contains(&*missing.to_string_lossy()), "{err}");

    let garbage = f.path().join("garbage.tar");
    fs::write(&garbage, vec![0x42u8; 4096])?;
    let err = f.store.import(&garbage).unwrap_err();
    ensure!(err.to_string().contains(&*garbage.to_string_lossy()), "{err}");

    let (base, top) = whiteout_layers()?;
    // A layer blob whose content is not what its digest says.
    let mut layout = Layout::default();
    let desc = layout.image(&[(&base, false)], host_platform().1, json!({}))?;
    layout.name(desc, json!({ "io.containerd.image.name": "example.com/bad/blob:v1" }));
    let layer = sha256(&base);
    layout.blobs.insert(layer.clone(), top.clone());
    let path = f.path().join("bad-blob.tar");
    fs::write(&path, layout.tarball()?)?;
    let err = f.store.import(&path).unwrap_err();
    ensure!(
        matches!(err, ImageError::Mismatch { .. }) && err.to_string().contains(&layer),
        "{err}"
    );

    // A config whose diff-id is not its layer's.
    let mut layout = Layout::default();
    let desc = layout.image(&[(&base, true)], host_platform().1, json!({}))?;
    let manifest: Value = serde_json::from_slice(&layout.blobs[desc["digest"].as_str().context("digest")?])?;
    let config_digest = manifest["config"]["digest"].as_str().context("config")?.to_string();
    let mut config: Value = serde_json::from_slice(&layout.blobs[&config_digest])?;
    config["rootfs"]["diff_ids"] = json!([sha256(&top)]);
    let new_config = layout.blob(OCI_CONFIG, serde_json::to_vec(&config)?);
    let mut manifest = manifest;
    manifest["config"] = new_config;
    let desc = layout.blob(OCI_MANIFEST, serde_json::to_vec(&manifest)?);
    layout.name(desc, json!({ "io.containerd.image.name": "example.com/bad/diffid:v1" }));
    let path = f.path().join("bad-diffid.tar");
    fs::write(&path, layout.tarball()?)?;
    let err = f.store.import(&path).unwrap_err();
    ensure!(
        matches!(err, ImageError::Mismatch { .. }) && err.to_string().contains("uncompressed"),
        "{err}"
    );

    // No name: a bare tag in ref.name does not say which repository.
    let mut layout = Layout::default();
    let desc = layout.image(&[(&base, false)], host_platform().1, json!({}))?;
    layout.name(desc, json!({ "org.opencontainers.image.ref.name": "v1" }));
    let path = f.path().join("unnamed.tar");
    fs::write(&path, layout.tarball()?)?;
    let err = f.store.import(&path).unwrap_err();
    ensure!(err.to_string().contains("no named image"), "{err}");

    // A failed import collects the blobs it had stored already.
    ensure!(f.store.list()?.is_empty());
    ensure!(f.count("layers")? == 0, "{:?}", ls(&f.store.root().join("layers"))?);
    ensure!(
        f.count("blobs/sha256")? == 0,
        "{:?}",
        ls(&f.store.root().join("blobs/sha256"))?
    );
    f.check_clean()
}

/// A pod of two containers running `image` (one pull for both), with
/// `imagePullPolicy: <policy>` on both when given, and `spec` lines (pull secrets)
/// after `documents` (Secrets) in the same file.
fn pulled_pod(name: &str, image: &str, policy: Option<&str>, documents: &str, spec: &str) -> String {
    let policy = policy.map(|p| format!(", imagePullPolicy: {p}")).unwrap_or_default();
    format!(
        "{documents}apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  terminationGracePeriodSeconds: 1\n{spec}  containers:\n  \
         - {{name: app, image: '{image}'{policy}, command: [sh, -c, 'echo pulled-ok; trap \"exit 0\" TERM; sleep 3600 & wait']}}\n  \
         - {{name: side, image: '{image}'{policy}, command: [sh, -c, 'trap \"exit 0\" TERM; sleep 3600 & wait']}}\n"
    )
}

/// `peapod run -f` of `yaml` (written into the CLI's dir).
fn run_yaml(cli: &Cli, yaml: &str) -> Result<std::process::Output> {
    let file = cli.dir.path().join("pod.yaml");
    fs::write(&file, yaml)?;
    cli.run(&["run", "-f", file.to_str().context("path")?])
}

/// Runs `yaml`'s pod `name`, checks its app printed `pulled-ok`, then deletes it and checks
/// nothing is left. Returns the run's stderr.
fn run_and_delete(cli: &Cli, name: &str, yaml: &str, check: impl FnOnce(&str) -> Result<()>) -> Result<String> {
    let out = run_yaml(cli, yaml)?;
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    ensure!(out.status.success(), "run {name}: {}: {err}", out.status);
    let uid = uid_of(cli, name)?;
    let result = cli
        .wait_for("the app's output", || {
            Ok(logs(cli, name, "app")?.contains("pulled-ok").then_some(()))
        })
        .and_then(|()| check(&uid));
    let deleted = delete_and_check(cli, name, &uid);
    result?;
    deleted?;
    Ok(err)
}

/// `run` of `yaml`, whose pod `name` cannot have an image: stderr names each of `want`.
/// Embedded mode does what kubelet does: the run succeeds, the pod exists without its
/// containers, which wait with kubelet's reason until `get`'s STATUS is `status` (the
/// container's waiting reason; `ErrImagePull` turns into `ImagePullBackOff` a second
/// after the failure), an image puller process waits out the back-off; `delete` then
/// ends it and leaves nothing. CRI mode makes sure of the images before the sandbox
/// exists: the run is refused and creates nothing. Returns the run's stderr.
fn assert_waits_for_image(cli: &Cli, name: &str, yaml: &str, want: &[&str], status: &str) -> Result<String> {
    let out = run_yaml(cli, yaml)?;
    if cli.mode() == Mode::Cri {
        return cli.assert_refused(&out, want);
    }
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    ensure!(out.status.success(), "run {name}: {}: {err}", out.status);
    let uid = uid_of(cli, name)?;
    let checked = (|| -> Result<()> {
        for w in want {
            ensure!(err.contains(w), "want {w:?} in: {err}");
        }
        cli.wait_for(&format!("{name}'s STATUS {status}"), || {
            let (ready, shown, _) = cli.row(name)?;
            ensure!(ready.starts_with("0/"), "READY {ready}");
            Ok((shown == status).then_some(()))
        })?;
        let pod = cli.pod_json(name)?;
        ensure!(pod["status"]["phase"] == "Pending", "{pod:#}");
        ensure!(
            !crate::pods::pullers_of(cli, name).is_empty(),
            "no image puller runs for {name}"
        );
        Ok(())
    })();
    let deleted = delete_and_check(cli, name, &uid);
    checked?;
    deleted?;
    Ok(err)
}

/// `peapod run` pulls as kubelet's image manager does (issue 15): an image only in a
/// registry is not pulled with `imagePullPolicy: Never` (kubelet's `ErrImageNeverPull`
/// message; the pod waits for it, see [`assert_waits_for_image`]), pulled once for the
/// two containers that use it by the default `IfNotPresent` (a tag other than `latest`),
/// with `image pull`'s progress on stderr; with the registry stopped, `IfNotPresent`
/// runs the image it has without asking, and `Always` fails with `ErrImagePull` naming
/// the container.
pub fn run_pulls_images_as_their_pull_policies_ask(mode: Mode) -> Result<()> {
    let cli = Cli::new(mode)?;
    let layout = tempfile::tempdir()?;
    registry_layout(layout.path())?;
    let registry = Registry::start()?;
    registry.push(layout.path(), "busybox", "peapod/pulled:v1", false)?;
    let image = format!("{}/peapod/pulled:v1", registry.host());

    assert_waits_for_image(
        &cli,
        "pulled",
        &pulled_pod("pulled", &image, Some("Never"), "", ""),
        &[&format!(
            "container app: ErrImageNeverPull: Container image \"{image}\" is not present with pull policy of Never"
        )],
        "ErrImageNeverPull",
    )?;

    let err = run_and_delete(&cli, "pulled", &pulled_pod("pulled", &image, None, "", ""), |_| Ok(()))?;
    let pulls = err.matches(&format!("pulled: pulling image {image}")).count();
    ensure!(pulls == 1, "want one pull for both containers, saw {pulls}: {err}");
    if mode == Mode::Embedded {
        // `peapod image pull`'s own progress lines.
        ensure!(
            err.contains(&format!("{image}: downloading ")),
            "no download progress: {err}"
        );
        let listed = cli.ok(&["image", "ls"])?;
        ensure!(listed.contains(&image), "{image} not in the store: {listed}");
    }

    drop(registry);
    let err = run_and_delete(
        &cli,
        "pulled",
        &pulled_pod("pulled", &image, Some("IfNotPresent"), "", ""),
        |_| Ok(()),
    )?;
    ensure!(
        !err.contains("pulling image"),
        "IfNotPresent pulled a present image: {err}"
    );

    assert_waits_for_image(
        &cli,
        "pulled",
        &pulled_pod("pulled", &image, Some("Always"), "", ""),
        &["container app: ", "ErrImagePull", &image],
        "ImagePullBackOff",
    )?;
    Ok(())
}

/// `imagePullSecrets` (issue 15): a registry with htpasswd Basic auth refuses a pull
/// without credentials with its 401, named; a missing Secret is kubelet's warning and the
/// same 401; a Secret of another type is refused by field; a
/// `kubernetes.io/dockerconfigjson` Secret in the same file lets the pod run, and its
/// credentials show nowhere: not in `get -o yaml`/`-o json`, `describe`, nor (embedded)
/// any file of the pod's state and data.
pub fn pull_secrets_authenticate_to_a_registry(mode: Mode) -> Result<()> {
    use base64::Engine as _;
    const PASSWORD: &str = "s3cret-pw";
    let cli = Cli::new(mode)?;
    let layout = tempfile::tempdir()?;
    registry_layout(layout.path())?;
    let registry = Registry::start_with(Some(("alice", PASSWORD)))?;
    registry.push(layout.path(), "busybox", "peapod/private:v1", false)?;
    let image = format!("{}/peapod/private:v1", registry.host());
    let pull_secret = "  imagePullSecrets: [{name: regcred}]\n";

    // The registry's 401, as each puller words it: peapod's client and containerd 1.6 name
    // the status; containerd 2.x's resolver answers the Basic challenge itself and says it
    // has no credentials.
    let unauthorized = |err: &str| -> Result<()> {
        ensure!(
            err.contains("401 Unauthorized") || err.contains("no basic auth credentials"),
            "want the registry's 401 in: {err}"
        );
        Ok(())
    };
    unauthorized(&assert_waits_for_image(
        &cli,
        "private",
        &pulled_pod("private", &image, None, "", ""),
        &["container app", &image],
        "ImagePullBackOff",
    )?)?;
    unauthorized(&assert_waits_for_image(
        &cli,
        "private",
        &pulled_pod("private", &image, None, "", pull_secret),
        &["warning: spec.imagePullSecrets[0]: secret \"regcred\" not found"],
        "ImagePullBackOff",
    )?)?;

    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let auth = b64(&format!("alice:{PASSWORD}"));
    let config = format!(r#"{{"auths": {{"http://{}": {{"auth": "{auth}"}}}}}}"#, registry.host());
    let secret = |kind: &str| {
        format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: regcred}}\ntype: {kind}\ndata:\n  .dockerconfigjson: {}\n---\n",
            b64(&config)
        )
    };
    let out = run_yaml(
        &cli,
        &pulled_pod("private", &image, None, &secret("Opaque"), pull_secret),
    )?;
    cli.assert_refused(
        &out,
        &["spec.imagePullSecrets[0]: Secret default/regcred is of type \"Opaque\""],
    )?;

    let yaml = pulled_pod(
        "private",
        &image,
        None,
        &secret("kubernetes.io/dockerconfigjson"),
        pull_secret,
    );
    let secrets = [PASSWORD.to_string(), auth.clone(), b64(&config)];
    run_and_delete(&cli, "private", &yaml, |_| {
        for args in [
            &["get", "pod", "private", "-o", "yaml"][..],
            &["get", "pod", "private", "-o", "json"],
            &["describe", "pod", "private"],
        ] {
            let shown = cli.ok(args)?;
            for s in &secrets {
                ensure!(
                    !shown.contains(s.as_str()),
                    "peapod {args:?} shows a credential: {shown}"
                );
            }
        }
        if mode == Mode::Embedded {
            for dir in [cli.state(), cli.root().join("pods")] {
                for file in files_under(&dir)? {
                    let bytes = fs::read(&file).unwrap_or_default();
                    let text = String::from_utf8_lossy(&bytes);
                    for s in &secrets {
                        ensure!(!text.contains(s.as_str()), "{} holds a credential", file.display());
                    }
                }
            }
        }
        Ok(())
    })?;
    Ok(())
}

/// A failed pull leaves the pod waiting, as kubelet does (issue 15): `run` succeeds with
/// the pull's error as a warning; the containers are Waiting `ErrImagePull`, then
/// `ImagePullBackOff` with kubelet's message and events, while a puller process waits
/// out the back-off; once the image is in the registry the next attempt (10 s after the
/// failure) pulls it and the pod starts, with `Pulled` among its events, and the puller
/// is gone. An init container waiting for its image shows `Init:ImagePullBackOff`, keeps
/// the app from starting, and `delete` during the back-off ends its puller and leaves
/// nothing. Embedded mode only: the CLI's CRI mode makes sure of the images before the
/// sandbox exists, and refuses the run when it cannot.
pub fn a_failed_pull_backs_off_and_the_pod_starts_once_the_image_is_there() -> Result<()> {
    let cli = Cli::new(Mode::Embedded)?;
    let layout = tempfile::tempdir()?;
    registry_layout(layout.path())?;
    let registry = Registry::start()?;
    let image = format!("{}/peapod/late:v1", registry.host());
    let out = run_yaml(&cli, &pulled_pod("late", &image, None, "", ""))?;
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    ensure!(out.status.success(), "run: {}: {err}", out.status);
    let want = format!("warning: container app: Failed to pull image \"{image}\": ErrImagePull: {image}: ");
    ensure!(err.contains(&want), "want {want:?} in: {err}");
    let uid = uid_of(&cli, "late")?;
    let checked = (|| -> Result<()> {
        cli.wait_for("STATUS ImagePullBackOff", || {
            Ok((cli.row("late")?.1 == "ImagePullBackOff").then_some(()))
        })?;
        let pod = cli.pod_json("late")?;
        for s in pod["status"]["containerStatuses"]
            .as_array()
            .context("containerStatuses")?
        {
            let waiting = &s["state"]["waiting"];
            ensure!(
                waiting["reason"] == "ImagePullBackOff"
                    && waiting["message"] == format!("Back-off pulling image \"{image}\""),
                "{s:#}"
            );
        }
        let d = cli.ok(&["describe", "pod", "late"])?;
        for want in [
            format!("Pulling image \"{image}\""),
            format!("Failed to pull image \"{image}\": ErrImagePull"),
            "Error: ErrImagePull".to_string(),
            format!("Back-off pulling image \"{image}\""),
            "Error: ImagePullBackOff".to_string(),
        ] {
            ensure!(d.contains(&want), "describe lacks {want:?}:\n{d}");
        }
        ensure!(!crate::pods::pullers_of(&cli, "late").is_empty(), "no puller runs");
        registry.push(layout.path(), "busybox", "peapod/late:v1", false)?;
        cli.wait_for("the app to run once its image is there", || {
            Ok(logs(&cli, "late", "app")?.contains("pulled-ok").then_some(()))
        })?;
        cli.wait_for("READY 2/2", || Ok((cli.row("late")?.0 == "2/2").then_some(())))?;
        let d = cli.ok(&["describe", "pod", "late"])?;
        let want = format!("Successfully pulled image \"{image}\" in ");
        ensure!(d.contains(&want), "describe lacks {want:?}:\n{d}");
        cli.wait_for("the puller to exit", || {
            Ok(crate::pods::pullers_of(&cli, "late").is_empty().then_some(()))
        })?;
        Ok(())
    })();
    let deleted = delete_and_check(&cli, "late", &uid);
    checked?;
    deleted?;

    // An init container's image missing: the pod is initializing, the app waits.
    let never = format!("{}/peapod/never:v1", registry.host());
    let yaml = format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: init-waits}}\nspec:\n  terminationGracePeriodSeconds: 1\n  \
         initContainers: [{{name: setup, image: '{never}', command: ['true']}}]\n  \
         containers: [{{name: app, image: busybox, imagePullPolicy: IfNotPresent, command: [sleep, '3600']}}]\n"
    );
    let out = run_yaml(&cli, &yaml)?;
    ensure!(out.status.success(), "run init-waits: {out:?}");
    let uid = uid_of(&cli, "init-waits")?;
    let checked = cli
        .wait_for("STATUS Init:ImagePullBackOff", || {
            Ok((cli.row("init-waits")?.1 == "Init:ImagePullBackOff").then_some(()))
        })
        .and_then(|()| {
            let pod = cli.pod_json("init-waits")?;
            let app = &pod["status"]["containerStatuses"][0]["state"]["waiting"]["reason"];
            ensure!(app == "PodInitializing", "the app: {pod:#}");
            Ok(())
        });
    let deleted = delete_and_check(&cli, "init-waits", &uid);
    checked?;
    deleted
}

/// Regular files under `dir`, recursively (symlinks not followed; a missing dir has none).
fn files_under(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(entries) = fs::read_dir(&d) else { continue };
        for e in entries {
            let e = e?;
            let kind = e.file_type()?;
            if kind.is_dir() {
                todo.push(e.path());
            } else if kind.is_file() {
                out.push(e.path());
            }
        }
    }
    Ok(out)
}
