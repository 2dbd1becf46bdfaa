//! Importing image archives: OCI image layout tarballs and `docker save` tarballs, staged
//! in the store's `tmp/` and checked blob by blob.

use super::*;

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use nix::fcntl::FlockArg;
use oci_client::manifest::{ImageIndexEntry, OciDescriptor, OciImageIndex, OciImageManifest};
use serde::Deserialize;

/// One entry of a `docker save` archive's `manifest.json`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct DockerArchiveManifest {
    pub(super) config: String,
    #[serde(default)]
    pub(super) repo_tags: Option<Vec<String>>,
    pub(super) layers: Vec<String>,
}

/// An import archive extracted into a staging directory: regular files only; links are
/// remembered and resolved inside the staging root, never followed on disk.
pub(super) struct Staged {
    pub(super) root: PathBuf,
    /// Archive path → the path it links to (both relative to the archive root).
    pub(super) links: HashMap<PathBuf, PathBuf>,
    /// The archive, for errors.
    pub(super) what: String,
}

impl Staged {
    pub(super) fn extract(file: &Path, root: &Path) -> Result<Self> {
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
    pub(super) fn path(&self, rel: &Path) -> Result<PathBuf> {
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

    /// Reads a JSON document of the archive (`index.json`, `manifest.json`, a config), at
    /// most [`MAX_DOCUMENT_SIZE`] bytes.
    pub(super) fn read(&self, rel: &str) -> Result<Vec<u8>> {
        let path = self.path(Path::new(rel))?;
        let file = File::open(&path).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                invalid(&self.what, format!("{rel} is missing"))
            } else {
                ImageError::Io {
                    op: "read",
                    path: path.clone(),
                    cause: e,
                }
            }
        })?;
        read_document(file, MAX_DOCUMENT_SIZE, &format!("{}: {rel}", self.what), &path)
    }

    pub(super) fn exists(&self, rel: &str) -> bool {
        self.path(Path::new(rel)).map(|p| p.is_file()).unwrap_or(false)
    }

    /// The staged blob an OCI layout holds for `digest` (`blobs/<alg>/<hex>`).
    pub(super) fn blob(&self, digest: &str) -> Result<PathBuf> {
        let hex = sha256_hex(digest, &self.what)?;
        let path = self.path(&Path::new("blobs/sha256").join(hex))?;
        if !path.is_file() {
            return Err(invalid(&self.what, format!("blob {digest} is missing")));
        }
        Ok(path)
    }
}

impl Store {
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

    pub(super) fn import_locked(&self, file: &Path) -> Result<Vec<(String, Option<String>)>> {
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

    pub(super) fn import_oci_layout(&self, staged: &Staged) -> Result<Vec<(String, String)>> {
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
    pub(super) fn import_oci_target(
        &self,
        staged: &Staged,
        media_type: Option<&str>,
        digest: &str,
        size: i64,
        name: &str,
        depth: usize,
    ) -> Result<String> {
        let what = format!("{}: manifest {digest}", staged.what);
        if u64::try_from(size).is_ok_and(|s| s > MAX_DOCUMENT_SIZE) {
            return Err(ImageError::TooLarge {
                what: format!("{what} ({size} bytes by its descriptor)"),
                limit: MAX_DOCUMENT_SIZE,
                knob: MANIFEST_LIMIT_SOURCE,
            });
        }
        let path = staged.blob(digest)?;
        let file = File::open(&path).map_err(io_err("read", &path))?;
        let bytes = read_document(file, MAX_DOCUMENT_SIZE, &what, &path)?;
        check_bytes(&bytes, digest, size, &what)?;
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

    pub(super) fn import_docker_archive(&self, staged: &Staged) -> Result<Vec<(String, String)>> {
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
}
