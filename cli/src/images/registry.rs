//! Pulling from registries (OCI distribution API, through `oci-client`): manifests,
//! indexes and layers, each checked against its digest.

use super::auth::{authorize, AuthConfig, Authorization};
use super::*;

use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use futures_util::StreamExt;
use nix::fcntl::FlockArg;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciEnvelope, OciErrorCode};
use oci_client::manifest::{ImageIndexEntry, OciDescriptor, OciImageIndex, OciImageManifest};
use oci_client::RegistryOperation;
use oci_client::{Client, Reference};

/// What a pull downloaded: the image manifest (its digest and bytes) and config.
pub(super) struct Fetched {
    pub(super) manifest: OciImageManifest,
    pub(super) digest: String,
    pub(super) bytes: Vec<u8>,
    pub(super) config: ImageConfig,
}

/// The host part of `host[:port]` (`[::1]:5000` → `[::1]`).
pub(super) fn registry_host(registry: &str) -> &str {
    if registry.starts_with('[') {
        return registry
            .split_once(']')
            .map_or(registry, |(h, _)| &registry[..=h.len()]);
    }
    registry.rsplit_once(':').map_or(registry, |(h, _)| h)
}

pub(super) fn is_loopback(host: &str) -> bool {
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
pub(super) fn registry_error(reference: &str, registry: &str, cause: OciDistributionError) -> ImageError {
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
            Some("pull access denied (401 Unauthorized): the repository does not exist or needs credentials")
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

impl Store {
    /// Pulls `reference` from its registry anonymously: [`Store::pull_with`] without
    /// credentials.
    pub fn pull(&self, reference: &str, insecure_hosts: &[String]) -> Result<String> {
        self.pull_with(reference, insecure_hosts, None)
    }

    /// Pulls `reference` from its registry and stores it under its normalized name, which
    /// it returns. With `auth`, the registry's handshake uses it (Basic, or a bearer token
    /// from the registry's token endpoint: see [`super::auth`]); without, the pull is
    /// anonymous. Plain http is used for loopback registries (`localhost`,
    /// `127.0.0.0/8`, `[::1]`) and for the hosts in `insecure_hosts` (`host` or `host:port`),
    /// https otherwise. From an index, this host's platform (`linux/amd64` here) is taken.
    /// Blobs already in the store are not downloaded again. A missing repository, tag or
    /// digest fails with [`ImageError::NotFound`] (`ErrImagePull: <ref>: ...`).
    pub fn pull_with(&self, reference: &str, insecure_hosts: &[String], auth: Option<&AuthConfig>) -> Result<String> {
        let name = normalize(reference)?;
        let image = parse_reference(&name)?;
        let registry = image.resolve_registry().to_string();
        let host = registry_host(&registry);
        let insecure = is_loopback(host) || insecure_hosts.iter().any(|h| h == &registry || h == host);
        self.after(self.pull_locked(&image, &name, &registry, insecure, auth))?;
        Ok(name)
    }

    pub(super) fn pull_locked(
        &self,
        image: &Reference,
        name: &str,
        registry: &str,
        insecure: bool,
        auth: Option<&AuthConfig>,
    ) -> Result<Vec<(String, Option<String>)>> {
        {
            let _gc = self.lock("gc.lock", FlockArg::LockShared)?;
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(io_err("start the pull runtime for", Path::new(name)))?;
            let fetched = runtime.block_on(self.fetch(image, name, registry, insecure, auth))?;
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
    async fn fetch(
        &self,
        image: &Reference,
        name: &str,
        registry: &str,
        insecure: bool,
        auth: Option<&AuthConfig>,
    ) -> Result<Fetched> {
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
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(30))
            .read_timeout(Duration::from_secs(120))
            .build()
            .map_err(|e| registry_err(e.into()))?;
        let scheme = if insecure { "http" } else { "https" };
        let authorization = authorize(&http, scheme, registry, image.repository(), auth)
            .await
            .map_err(registry_err)?;
        // The blobs come through oci-client: the same authorization (a bearer token as
        // is; Basic credentials once its own `/v2/` probe meets the Basic challenge).
        client
            .auth(image, &authorization.registry_auth(), RegistryOperation::Pull)
            .await
            .map_err(registry_err)?;
        let bytes = get_manifest(&http, scheme, image, &authorization)
            .await
            .map_err(|e| e.into_image_error(name, registry))?;
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
            let what = format!("{name}: manifest {}", entry.digest);
            if u64::try_from(entry.size).is_ok_and(|s| s > MAX_DOCUMENT_SIZE) {
                return Err(ImageError::TooLarge {
                    what: format!("{what} ({} bytes by its descriptor)", entry.size),
                    limit: MAX_DOCUMENT_SIZE,
                    knob: MANIFEST_LIMIT_SOURCE,
                });
            }
            let next = get_manifest(
                &http,
                scheme,
                &image.clone_with_digest(entry.digest.clone()),
                &authorization,
            )
            .await
            .map_err(|e| e.into_image_error(&what, registry))?;
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
        let what = format!("{name}: blob {}", desc.digest);
        let Ok(size) = u64::try_from(desc.size) else {
            return Err(invalid(&what, format!("negative size {} in its descriptor", desc.size)));
        };
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
        let mut received = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|cause| ImageError::Download {
                reference: name.to_string(),
                digest: desc.digest.clone(),
                cause,
            })?;
            received += chunk.len() as u64;
            // Stop at the first byte past the descriptor's size: the content cannot match.
            if received > size {
                return Err(ImageError::Mismatch {
                    what: format!("{what} (download stopped)"),
                    expected: format!("{size} bytes"),
                    actual: format!("at least {received} bytes"),
                });
            }
            tmp.write_all(&chunk).map_err(io_err("write", tmp.path()))?;
        }
        self.put_blob_file(tmp.path(), &desc.digest, Some(size), &what)
    }
}

/// Why [`get_manifest`] failed.
pub(super) enum ManifestError {
    /// The registry answered with an error, or the request failed.
    Registry(OciDistributionError),
    /// More than [`MAX_DOCUMENT_SIZE`] bytes came.
    TooLarge,
}

impl ManifestError {
    fn into_image_error(self, what: &str, registry: &str) -> ImageError {
        match self {
            Self::Registry(cause) => registry_error(what, registry, cause),
            Self::TooLarge => ImageError::TooLarge {
                what: format!("{what}: manifest from registry {registry}"),
                limit: MAX_DOCUMENT_SIZE,
                knob: MANIFEST_LIMIT_SOURCE,
            },
        }
    }
}

/// `GET /v2/<repository>/manifests/<tag or digest>` (OCI distribution spec, "Pulling
/// manifests"), reading at most [`MAX_DOCUMENT_SIZE`] bytes of the body (containerd's
/// `MaxManifestSize`): a larger answer is dropped mid-stream. Error answers map as
/// oci-client maps them (401 → `UnauthorizedError`, a JSON error envelope →
/// `RegistryError`, else `ServerError`), their bodies read to 64 KiB.
pub(super) async fn get_manifest(
    http: &reqwest::Client,
    scheme: &str,
    image: &Reference,
    authorization: &Authorization,
) -> std::result::Result<Vec<u8>, ManifestError> {
    let url = format!(
        "{scheme}://{}/v2/{}/manifests/{}{}",
        image.resolve_registry(),
        image.repository(),
        image.digest().or(image.tag()).unwrap_or("latest"),
        image.namespace().map(|ns| format!("?ns={ns}")).unwrap_or_default(),
    );
    let mut request = http
        .get(&url)
        .header(reqwest::header::ACCEPT, PULL_MEDIA_TYPES.join(", "));
    if let Some(header) = authorization.header() {
        request = request.header(reqwest::header::AUTHORIZATION, header);
    }
    let mut response = request.send().await.map_err(|e| ManifestError::Registry(e.into()))?;
    let status = response.status();
    let limit = if status.is_success() {
        MAX_DOCUMENT_SIZE
    } else {
        64 << 10
    };
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| ManifestError::Registry(e.into()))? {
        if (body.len() + chunk.len()) as u64 > limit {
            if status.is_success() {
                return Err(ManifestError::TooLarge);
            }
            break;
        }
        body.extend_from_slice(&chunk);
    }
    match status {
        reqwest::StatusCode::OK => Ok(body),
        reqwest::StatusCode::UNAUTHORIZED => {
            Err(ManifestError::Registry(OciDistributionError::UnauthorizedError { url }))
        }
        s if s.is_client_error() => Err(ManifestError::Registry(
            match serde_json::from_slice::<OciEnvelope>(&body) {
                Ok(envelope) => OciDistributionError::RegistryError { envelope, url },
                Err(_) => OciDistributionError::ServerError {
                    code: s.as_u16(),
                    url,
                    message: String::from_utf8_lossy(&body).into_owned(),
                },
            },
        )),
        s => Err(ManifestError::Registry(OciDistributionError::ServerError {
            code: s.as_u16(),
            url,
            message: String::from_utf8_lossy(&body).into_owned(),
        })),
    }
}
