//! Image names and platforms: references normalized as Docker and containerd do, and
//! the platform chosen from an image index (this host's).

use super::*;

use oci_client::manifest::ImageIndexEntry;
use oci_client::Reference;

/// Normalizes an image reference the way Docker and containerd do: the default registry
/// `docker.io`, the `library/` namespace for official images, the `latest` tag when neither
/// tag nor digest is given (`busybox` → `docker.io/library/busybox:latest`, `foo/bar` →
/// `docker.io/foo/bar:latest`, `localhost:5000/x` → `localhost:5000/x:latest`); a digest
/// (`@sha256:...`) is kept. Fails with [`ImageError::InvalidReference`] naming the input.
pub fn normalize(name: &str) -> Result<String> {
    parse_reference(name).map(|r| r.whole())
}

pub(super) fn parse_reference(name: &str) -> Result<Reference> {
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

pub(super) fn is_index_media_type(media_type: &str) -> bool {
    media_type == OCI_INDEX || media_type == DOCKER_MANIFEST_LIST
}

/// Whether a manifest document is an index, from its media type or, when absent, its shape.
pub(super) fn is_index_document(media_type: Option<&str>, bytes: &[u8]) -> bool {
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

pub(super) fn platform_string(entry: &ImageIndexEntry) -> String {
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
pub(super) fn select_platform<'a>(entries: &[&'a ImageIndexEntry]) -> Option<&'a ImageIndexEntry> {
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
pub(super) fn annotated_name(entry: &ImageIndexEntry) -> Option<&str> {
    let annotations = entry.annotations.as_ref()?;
    if let Some(name) = annotations.get(ANNOTATION_IMAGE_NAME) {
        return Some(name);
    }
    annotations
        .get(ANNOTATION_REF_NAME)
        .map(String::as_str)
        .filter(|n| n.contains(['/', ':', '@']))
}

pub(super) fn no_platform(name: &str, entries: &[&ImageIndexEntry]) -> ImageError {
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
