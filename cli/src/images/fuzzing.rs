//! Entry points for the fuzz targets (`peapod_tests::fuzz`): the store's parsers and its
//! layer unpacker, reachable without a store, a registry or an archive around them.
//! Everything here runs the same code an import or a pull runs on the same bytes.

use std::path::Path;

use oci_client::manifest::{ImageIndexEntry, OciImageIndex, OciImageManifest};

use super::layer::{check_bytes, sha256_hex, unpack_layer as unpack};
use super::reference::{annotated_name, is_index_document, no_platform, normalize, platform_string, select_platform};
use super::{parse_json, ImageConfig, Result};

/// The cap on a fuzzed layer's uncompressed stream, in bytes: small, so a stream that
/// decompresses to gigabytes stops early, as [`super::DEFAULT_MAX_LAYER_SIZE`] stops a
/// real one.
pub const LAYER_LIMIT: u64 = 16 << 20;

/// Unpacks the layer `input` (a tar stream, gzip-compressed or not) into `dest`, an
/// existing directory, as an import or a pull does; returns the diff-id.
///
/// Errors: those of an import's unpack ([`super::ImageError::Unpack`] naming the entry,
/// [`super::ImageError::TooLarge`] past [`LAYER_LIMIT`]...).
pub fn unpack_layer(input: &[u8], dest: &Path) -> Result<String> {
    unpack(input, dest, "fuzz", Some(LAYER_LIMIT))
}

/// Reads `bytes` as each document an image is made of, as the store reads them: an index
/// (OCI layout `index.json` or a manifest list: names normalized, this platform chosen),
/// an image manifest (descriptor digests turned into blob file names, the bytes checked
/// against a descriptor), and an image config (the diff-ids turned into layer directory
/// names). Returns how many of the three parsed; errors are the store's and are dropped.
pub fn documents(bytes: &[u8]) -> usize {
    let mut parsed = 0;
    let _ = is_index_document(None, bytes);
    if let Ok(index) = parse_json::<OciImageIndex>(bytes, "fuzz: index") {
        parsed += 1;
        for entry in &index.manifests {
            if let Some(name) = annotated_name(entry) {
                let _ = normalize(name);
            }
            let _ = platform_string(entry);
            let _ = is_index_document(Some(&entry.media_type), bytes);
            let _ = sha256_hex(&entry.digest, "fuzz: manifest");
        }
        let entries: Vec<&ImageIndexEntry> = index.manifests.iter().collect();
        if select_platform(&entries).is_none() {
            let _ = no_platform("fuzz", &entries);
        }
    }
    if let Ok(manifest) = parse_json::<OciImageManifest>(bytes, "fuzz: manifest") {
        parsed += 1;
        for desc in std::iter::once(&manifest.config).chain(&manifest.layers) {
            let _ = sha256_hex(&desc.digest, "fuzz: blob");
            let _ = check_bytes(bytes, &desc.digest, desc.size, "fuzz: blob");
        }
    }
    if let Ok(config) = parse_json::<ImageConfig>(bytes, "fuzz: config") {
        parsed += 1;
        for d in &config.rootfs.diff_ids {
            let _ = sha256_hex(d, "fuzz: layer diff-id");
        }
    }
    parsed
}
