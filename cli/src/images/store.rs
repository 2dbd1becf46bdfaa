//! The store itself: blobs, unpacked layers and the name index under one root, its locks,
//! and listing, resolving and removing images with garbage collection.

use super::*;

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use oci_client::manifest::OciImageManifest;

/// A local image store rooted at a directory; see the module docs for its layout.
#[derive(Clone)]
pub struct Store {
    pub(super) root: PathBuf,
    pub(super) progress: Option<Progress>,
    /// The cap on a layer's uncompressed size, bytes; `None`: no cap.
    pub(super) max_layer_size: Option<u64>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (creating, mode 0700) the store at `root`; an existing root that group or
    /// others can reach is made 0700 (layers hold setuid binaries and device nodes, as
    /// containerd's do under its 0700 root). The root must not contain `:` or `,`, which
    /// separate overlay mount options. Layers are capped at [`DEFAULT_MAX_LAYER_SIZE`]
    /// uncompressed ([`Store::with_max_layer_size`]).
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
        let mode = fs::metadata(&root).map_err(io_err("stat", &root))?.permissions().mode();
        if mode & 0o077 != 0 {
            fs::set_permissions(&root, fs::Permissions::from_mode(mode & 0o7700)).map_err(io_err("chmod", &root))?;
        }
        Ok(Self {
            root,
            progress: None,
            max_layer_size: Some(DEFAULT_MAX_LAYER_SIZE),
        })
    }

    /// Caps each layer's uncompressed size at `limit` bytes (`None`: no cap). An import or
    /// pull with a larger layer fails with [`ImageError::TooLarge`] naming the layer, and
    /// unpacking stops at the limit.
    pub fn with_max_layer_size(mut self, limit: Option<u64>) -> Self {
        self.max_layer_size = limit;
        self
    }

    /// Reports downloads and layer unpacking to `progress` (`"unpacking layer 2/3 …"`).
    pub fn with_progress(mut self, progress: Progress) -> Self {
        self.progress = Some(progress);
        self
    }

    pub(super) fn report(&self, message: &str) {
        if let Some(p) = &self.progress {
            p(message);
        }
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    pub(super) fn tmp(&self) -> PathBuf {
        self.root.join("tmp")
    }

    pub(super) fn blob_path(&self, digest: &str) -> Result<PathBuf> {
        Ok(self.root.join("blobs/sha256").join(sha256_hex(digest, "blob")?))
    }

    pub(super) fn layer_path(&self, diff_id: &str) -> Result<PathBuf> {
        Ok(self.root.join("layers").join(sha256_hex(diff_id, "layer diff-id")?))
    }

    pub(super) fn temp_dir(&self, prefix: &str) -> Result<tempfile::TempDir> {
        tempfile::Builder::new()
            .prefix(prefix)
            .tempdir_in(self.tmp())
            .map_err(io_err("create a staging directory in", &self.tmp()))
    }

    /// Takes `gc.lock` or `index.lock`, blocking; released when the guard drops.
    pub(super) fn lock(&self, name: &str, arg: FlockArg) -> Result<Option<Flock<File>>> {
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

    pub(super) fn read_index(&self) -> Result<Index> {
        let path = self.root.join("index.json");
        match fs::read(&path) {
            Ok(bytes) => parse_json(&bytes, path.display().to_string()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Index::default()),
            Err(e) => Err(io_err("read", &path)(e)),
        }
    }

    /// Writes a file atomically: a synced temp file in `tmp/`, renamed onto `dest`.
    pub(super) fn write_atomic(&self, dest: &Path, bytes: &[u8]) -> Result<()> {
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
    pub(super) fn update_index<T>(&self, f: impl FnOnce(&mut Index) -> Result<T>) -> Result<T> {
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

    pub(super) fn has_blob(&self, digest: &str) -> Result<bool> {
        Ok(self.blob_path(digest)?.is_file())
    }

    /// Reads a document blob (manifest, index, config), at most [`MAX_DOCUMENT_SIZE`].
    pub(super) fn read_blob(&self, digest: &str) -> Result<Vec<u8>> {
        let path = self.blob_path(digest)?;
        let file = File::open(&path).map_err(io_err("read", &path))?;
        read_document(file, MAX_DOCUMENT_SIZE, &format!("blob {digest}"), &path)
    }

    /// Stores `bytes` as the blob `digest`, checking it matches.
    pub(super) fn put_blob_bytes(&self, bytes: &[u8], digest: &str, what: &str) -> Result<()> {
        let dest = self.blob_path(digest)?;
        check_digest(bytes, digest, what)?;
        if dest.is_file() {
            return Ok(());
        }
        self.write_atomic(&dest, bytes)
    }

    /// Moves a staged file (in `tmp/`) into the blob store as `digest`, after checking its
    /// content and, when given, its size. A blob already present is kept.
    pub(super) fn put_blob_file(&self, staged: &Path, digest: &str, size: Option<u64>, what: &str) -> Result<()> {
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

    pub(super) fn read_manifest(&self, digest: &str) -> Result<(Vec<u8>, OciImageManifest)> {
        let bytes = self.read_blob(digest)?;
        let manifest = parse_json(&bytes, format!("manifest {digest}"))?;
        Ok((bytes, manifest))
    }

    pub(super) fn read_config(&self, manifest: &OciImageManifest) -> Result<ImageConfig> {
        let digest = &manifest.config.digest;
        parse_json(&self.read_blob(digest)?, format!("image config {digest}"))
    }

    /// Unpacks the layer blob `blob` into `layers/<diff-id>` unless it is there already,
    /// checking the uncompressed content against `diff_id`.
    pub(super) fn ensure_layer(&self, blob: &str, diff_id: &str) -> Result<()> {
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
        // On error the staging directory (and what was unpacked) goes with `staging`.
        let actual = unpack_layer(input, &rootfs, blob, self.max_layer_size)?;
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
    pub(super) fn unpack_image(&self, manifest: &OciImageManifest, config: &ImageConfig, name: &str) -> Result<()> {
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

    /// After an import or pull (its `gc.lock` released): when it failed, or replaced the
    /// image a name pointed at, collects what is left unreferenced (blobs of a failed
    /// import, the old image) if no other import or pull runs; otherwise a later remove
    /// will. The import's or pull's own error wins over a collection error.
    pub(super) fn after<T: AsRef<[(String, Option<String>)]>>(&self, result: Result<T>) -> Result<T> {
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
    pub(super) fn record(&self, images: &[(String, String)]) -> Result<Vec<(String, Option<String>)>> {
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
    pub(super) fn collect_if_idle(&self) -> Result<()> {
        if let Some(_gc) = self.lock("gc.lock", FlockArg::LockExclusiveNonblock)? {
            let referenced = self.referenced(&self.read_index()?)?;
            self.collect_garbage(&referenced)?;
        }
        Ok(())
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
    pub(super) fn referenced(&self, index: &Index) -> Result<Referenced> {
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
    pub(super) fn collect_garbage(&self, referenced: &Referenced) -> Result<()> {
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
