//! Images before a pod runs, as kubelet's image manager makes sure of them
//! (`pkg/kubelet/images/image_manager.go`, `EnsureImageExists`, and
//! `pkg/kubelet/kuberuntime/kuberuntime_image.go`, `PullImage`):
//!
//! - `imagePullPolicy` is defaulted as the API server defaults it
//!   (`pkg/apis/core/v1/defaults.go`, `SetDefaults_Container`): `Always` for the tag
//!   `latest` or no tag and no digest, `IfNotPresent` otherwise;
//! - an image is pulled when its policy is `Always`, or it is missing and its policy is
//!   `IfNotPresent` (`shouldPullImage`); missing with `Never` is `ErrImageNeverPull`
//!   (`Container image "…" is not present with pull policy of Never`);
//! - credentials come from the pod's `imagePullSecrets`
//!   (`pkg/credentialprovider/secrets`, `MakeDockerKeyring`): each names a
//!   `kubernetes.io/dockerconfigjson` (or legacy `kubernetes.io/dockercfg`) Secret given
//!   with the pod; the entries matching the image's repository are tried in turn, and a
//!   pull without a match is anonymous.
//!
//! peapod differs from kubelet in when, not what: every distinct image of the pod is
//! made sure of once, before any container of the pod exists (kubelet pulls as it starts
//! each container). An image that cannot be had leaves the pod waiting for it with
//! kubelet's reasons and back-off ([`crate::pullbackoff`]) in embedded mode; the CLI's
//! CRI mode refuses the run instead ([`crate::crimode`]).
//! A missing pull Secret is kubelet's warning ("the image pull may not succeed") and the
//! pull goes on without it; a Secret of another type, without its key, or whose config
//! is not valid fails the run naming `spec.imagePullSecrets[i]` (kubelet skips other
//! types silently and fails the pull on a bad config). Only pull Secrets give
//! credentials: kubelet's node-wide config files (`config.json`) and credential provider
//! plugins are not read.

use serde::{Deserialize, Serialize};

use crate::config::ConfigObjects;
use crate::images::auth::{parse_docker_config_json, parse_dockercfg, repository_of, AuthConfig, DockerKeyring};
use crate::images::{ImageError, Store};
use crate::manifest::{ManifestError, PodPlan};
use crate::podstatus::PodEvent;

/// A container's `imagePullPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum PullPolicy {
    /// Pull every time the pod runs.
    Always,
    /// Pull when the image is missing.
    #[default]
    IfNotPresent,
    /// Never pull: a missing image fails the container (`ErrImageNeverPull`).
    Never,
}

impl PullPolicy {
    /// The API server's default for `image` as written (`SetDefaults_Container`, the tag
    /// as `parsers.ParseImageName` finds it): `Always` when the tag is `latest`, or when
    /// there is neither tag nor digest (`busybox`, `busybox:latest`,
    /// `busybox:latest@sha256:…`); `IfNotPresent` for any other tag or a digest alone
    /// (`nginx:1.21`, `busybox@sha256:…`).
    pub fn default_for(image: &str) -> PullPolicy {
        let (name, digest) = match image.split_once('@') {
            Some((n, _)) => (n, true),
            None => (image, false),
        };
        let tag = name.rfind(':').map(|i| &name[i + 1..]).filter(|t| !t.contains('/'));
        match (tag, digest) {
            (Some("latest"), _) | (None, false) => PullPolicy::Always,
            _ => PullPolicy::IfNotPresent,
        }
    }

    /// `imagePullPolicy` at `field`: the value given, or [`PullPolicy::default_for`]
    /// `image`.
    ///
    /// Errors: [`ManifestError::Field`] with the API server's message for another value
    /// (`Unsupported value: "x": supported values: "Always", "IfNotPresent", "Never"`).
    pub fn from_manifest(field: &str, value: Option<&str>, image: &str) -> Result<PullPolicy, ManifestError> {
        match value {
            None | Some("") => Ok(Self::default_for(image)),
            Some("Always") => Ok(PullPolicy::Always),
            Some("IfNotPresent") => Ok(PullPolicy::IfNotPresent),
            Some("Never") => Ok(PullPolicy::Never),
            Some(other) => Err(ManifestError::Field {
                field: field.to_string(),
                reason: format!(
                    "Unsupported value: {other:?}: supported values: \"Always\", \"IfNotPresent\", \"Never\""
                ),
            }),
        }
    }

    /// kubelet's `shouldPullImage`.
    fn should_pull(self, present: bool) -> bool {
        match self {
            PullPolicy::Always => true,
            PullPolicy::IfNotPresent => !present,
            PullPolicy::Never => false,
        }
    }

    /// The policy as the manifest spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            PullPolicy::Always => "Always",
            PullPolicy::IfNotPresent => "IfNotPresent",
            PullPolicy::Never => "Never",
        }
    }
}

/// kubelet's reason for a failed pull.
pub const ERR_IMAGE_PULL: &str = "ErrImagePull";
/// kubelet's reason for a missing image with `imagePullPolicy: Never`.
pub const ERR_IMAGE_NEVER_PULL: &str = "ErrImageNeverPull";

/// One distinct image of a pod (by normalized reference) and the containers that use
/// it, with their policies, in declaration order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageNeed {
    /// The normalized reference.
    pub image: String,
    /// (container, its policy), in declaration order.
    pub containers: Vec<(String, PullPolicy)>,
}

impl ImageNeed {
    /// Whether to pull, given whether the image is present: when any container's policy
    /// says so (the image is pulled once for all of them).
    pub fn should_pull(&self, present: bool) -> bool {
        self.containers.iter().any(|(_, p)| p.should_pull(present))
    }

    /// The container named in errors: the first that asks for the pull, else the first.
    pub fn container(&self, present: bool) -> &str {
        self.containers
            .iter()
            .find(|(_, p)| p.should_pull(present))
            .or(self.containers.first())
            .map_or("", |(c, _)| c)
    }

    /// The repository credentials are looked up for (`docker.io/library/nginx`).
    pub fn repository(&self) -> &str {
        repository_of(&self.image)
    }
}

/// The distinct images of `plan`, in the order their first container is declared.
///
/// Errors: (container, boxed [`ImageError::InvalidReference`]) for a reference that does not
/// parse.
pub fn image_needs(plan: &PodPlan) -> Result<Vec<ImageNeed>, (String, Box<ImageError>)> {
    let mut needs: Vec<ImageNeed> = Vec::new();
    for c in &plan.containers {
        let image = crate::images::normalize(&c.image).map_err(|e| (c.name.clone(), Box::new(e)))?;
        match needs.iter_mut().find(|n| n.image == image) {
            Some(n) => n.containers.push((c.name.clone(), c.image_pull_policy)),
            None => needs.push(ImageNeed {
                image,
                containers: vec![(c.name.clone(), c.image_pull_policy)],
            }),
        }
    }
    Ok(needs)
}

/// The credentials of `plan`'s `imagePullSecrets`, read from the Secrets in `objects`,
/// and the warnings to show (one per missing Secret: the pull goes on without it).
///
/// Errors: [`ManifestError::Field`] naming `spec.imagePullSecrets[i]` for a Secret of
/// another type, without its key (`.dockerconfigjson`, `.dockercfg`), or whose config
/// is not valid JSON of Docker's shape (the cause never quotes a credential).
pub fn pull_credentials(
    plan: &PodPlan,
    objects: &ConfigObjects,
) -> Result<(DockerKeyring, Vec<String>), ManifestError> {
    let mut keyring = DockerKeyring::default();
    let mut warnings = Vec::new();
    for (i, name) in plan.image_pull_secrets.iter().enumerate() {
        let field = format!("spec.imagePullSecrets[{i}]");
        let fail = |reason: String| ManifestError::Field {
            field: field.clone(),
            reason,
        };
        let what = format!("Secret {}/{name}", objects.namespace());
        let Some((kind, data)) = objects.secret(name) else {
            warnings.push(format!(
                "warning: {field}: secret {name:?} not found: pulling without it (as kubelet does: the image pull may not succeed)"
            ));
            continue;
        };
        let (key, parse): (&str, ConfigParser) = match kind {
            "kubernetes.io/dockerconfigjson" => (".dockerconfigjson", parse_docker_config_json),
            "kubernetes.io/dockercfg" => (".dockercfg", parse_dockercfg),
            other => {
                return Err(fail(format!(
                    "{what} is of type {other:?}: a pull secret is of type kubernetes.io/dockerconfigjson or kubernetes.io/dockercfg"
                )))
            }
        };
        let bytes = data
            .get(key)
            .ok_or_else(|| fail(format!("{what} (type {kind}) has no key {key}")))?;
        let entries = parse(bytes).map_err(|why| fail(format!("{what}: {key}: {why}")))?;
        keyring.add(entries);
    }
    Ok((keyring, warnings))
}

/// A Docker config parser: [`parse_docker_config_json`] or [`parse_dockercfg`].
type ConfigParser = fn(&[u8]) -> Result<Vec<(String, AuthConfig)>, String>;

/// kubelet's reason while it waits out the back-off after a failed pull.
pub const IMAGE_PULL_BACK_OFF: &str = "ImagePullBackOff";

/// Why the images of a pod could not be looked at (embedded mode): what no retry mends.
/// A pull that fails, or a missing image with `Never`, is no error but an
/// [`ImageWait`].
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    /// A container's image reference is not valid.
    #[error("container {container}")]
    ImageReference {
        /// The container.
        container: String,
        /// Cause (boxed: image errors are large).
        #[source]
        source: Box<ImageError>,
    },
    /// Whether the store holds an image could not be told.
    #[error("container {container}: image {image}: read the image store")]
    Store {
        /// The container.
        container: String,
        /// The normalized reference.
        image: String,
        /// Cause.
        #[source]
        source: Box<ImageError>,
    },
}

/// An image a pod waits for: its containers are Waiting with kubelet's `reason`
/// ([`ERR_IMAGE_PULL`], [`IMAGE_PULL_BACK_OFF`], [`ERR_IMAGE_NEVER_PULL`]) and `message`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageWait {
    /// The normalized reference.
    pub image: String,
    /// The containers that use it, in declaration order; the first is the one named in
    /// the CLI's warning (the one whose policy asked for the pull).
    pub containers: Vec<String>,
    /// kubelet's waiting reason.
    pub reason: String,
    /// kubelet's waiting message: the pull's error, `Back-off pulling image "<ref>"`, or
    /// `Container image "<ref>" is not present with pull policy of Never`.
    pub message: String,
}

impl ImageWait {
    /// Whether a pull may mend it: not for `Never`, where only the image's arrival in the
    /// store does (kubelet checks again at each sync).
    pub fn pulls(&self) -> bool {
        self.reason != ERR_IMAGE_NEVER_PULL
    }

    /// What the CLI warns when its pod waits: the container, kubelet's event sentence and
    /// the cause (`container app: Failed to pull image "<ref>": ErrImagePull: …`).
    pub fn warning(&self) -> String {
        let container = self.containers.first().map_or("", String::as_str);
        if self.pulls() {
            format!(
                "container {container}: Failed to pull image {:?}: {}",
                self.image, self.message
            )
        } else {
            format!("container {container}: {ERR_IMAGE_NEVER_PULL}: {}", self.message)
        }
    }
}

/// What making sure of a pod's images came to.
#[derive(Debug, Clone, Default)]
pub struct Pulled {
    /// The images still missing, in the order their first container is declared; empty
    /// when the pod can start.
    pub waiting: Vec<ImageWait>,
    /// kubelet's image events, oldest first (`Pulling`, `Pulled`, `Failed`,
    /// `ErrImageNeverPull`; `pkg/kubelet/images/image_manager.go`).
    pub events: Vec<PodEvent>,
}

/// kubelet's event (`From: kubelet`), now.
fn event(warning: bool, reason: &str, message: String) -> PodEvent {
    PodEvent {
        time: jiff::Timestamp::now(),
        warning,
        reason: reason.to_string(),
        message,
    }
}

/// Embedded mode: makes sure `store` holds every image of `plan` as its policies ask,
/// pulling (http for loopback registries) with the credentials `keyring` gives for each
/// image's repository, tried in turn; reports `pulling image <ref>` to `progress` (the
/// store reports downloads and unpacking to its own). Each distinct image is checked and
/// pulled once. An image that cannot be had is an [`ImageWait`] (`ErrImagePull` with the
/// last credentials' error, or `ErrImageNeverPull`); the others are still made sure of,
/// as kubelet makes sure of each container's.
///
/// Errors: [`PullError`] for a reference that does not parse or a store that cannot be
/// read; nothing is left in the store by a failed pull beyond complete, verified blobs.
pub fn ensure_images(
    store: &Store,
    plan: &PodPlan,
    keyring: &DockerKeyring,
    progress: &dyn Fn(&str),
) -> Result<Pulled, PullError> {
    let needs = image_needs(plan).map_err(|(container, source)| PullError::ImageReference { container, source })?;
    let mut out = Pulled::default();
    for need in needs {
        let present = match store.resolve(&need.image) {
            Ok(_) => true,
            Err(ImageError::NotFound { .. }) => false,
            Err(ImageError::Invalid { .. }) => false,
            Err(e) => {
                return Err(PullError::Store {
                    container: need.container(false).to_string(),
                    image: need.image.clone(),
                    source: Box::new(e),
                })
            }
        };
        let mut containers: Vec<String> = need.containers.iter().map(|(c, _)| c.clone()).collect();
        // The container that asked for the pull is named first.
        let first = need.container(present).to_string();
        containers.retain(|c| *c != first);
        containers.insert(0, first);
        let mut wait = |reason: &str, message: String| {
            out.waiting.push(ImageWait {
                image: need.image.clone(),
                containers: containers.clone(),
                reason: reason.to_string(),
                message,
            })
        };
        if !need.should_pull(present) {
            if present {
                out.events.push(event(
                    false,
                    "Pulled",
                    format!("Container image {:?} already present on machine", need.image),
                ));
            } else {
                let message = format!(
                    "Container image {:?} is not present with pull policy of Never",
                    need.image
                );
                out.events.push(event(true, ERR_IMAGE_NEVER_PULL, message.clone()));
                out.events
                    .push(event(true, "Failed", format!("Error: {ERR_IMAGE_NEVER_PULL}")));
                wait(ERR_IMAGE_NEVER_PULL, message);
            }
            continue;
        }
        progress(&format!("pulling image {}", need.image));
        out.events
            .push(event(false, "Pulling", format!("Pulling image {:?}", need.image)));
        let began = std::time::Instant::now();
        let creds = keyring.lookup(need.repository());
        let mut last = None;
        let attempts: Vec<Option<&AuthConfig>> = if creds.is_empty() {
            vec![None]
        } else {
            creds.iter().map(Some).collect()
        };
        for auth in attempts {
            match store.pull_with(&need.image, &[], auth) {
                Ok(_) => {
                    last = None;
                    break;
                }
                Err(e) => last = Some(e),
            }
        }
        match last {
            None => {
                let took = began.elapsed().as_secs_f64();
                out.events.push(event(
                    false,
                    "Pulled",
                    format!(
                        "Successfully pulled image {:?} in {took:.3}s ({took:.3}s including waiting)",
                        need.image
                    ),
                ))
            }
            Some(e) => {
                let message = sandbox::error::chain(&e);
                out.events.push(event(
                    true,
                    "Failed",
                    format!("Failed to pull image {:?}: {message}", need.image),
                ));
                out.events
                    .push(event(true, "Failed", format!("Error: {ERR_IMAGE_PULL}")));
                wait(ERR_IMAGE_PULL, message);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{parse_all, plan};

    #[test]
    fn policies_default_as_the_api_server_defaults_them() {
        let d = format!("sha256:{}", "a".repeat(64));
        for (image, want) in [
            ("busybox", PullPolicy::Always),
            ("busybox:latest", PullPolicy::Always),
            ("docker.io/library/busybox:latest", PullPolicy::Always),
            ("127.0.0.1:5000/x/y", PullPolicy::Always),
            ("127.0.0.1:5000/x/y:v1", PullPolicy::IfNotPresent),
            ("nginx:1.21", PullPolicy::IfNotPresent),
            (&*format!("busybox@{d}"), PullPolicy::IfNotPresent),
            (&*format!("busybox:1.36@{d}"), PullPolicy::IfNotPresent),
            (&*format!("busybox:latest@{d}"), PullPolicy::Always),
        ] {
            assert_eq!(PullPolicy::default_for(image), want, "{image}");
        }
        assert_eq!(
            PullPolicy::from_manifest("f", Some("Never"), "busybox").unwrap(),
            PullPolicy::Never
        );
        let err = PullPolicy::from_manifest("spec.containers[0].imagePullPolicy", Some("always"), "x")
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "spec.containers[0].imagePullPolicy: Unsupported value: \"always\": supported values: \"Always\", \"IfNotPresent\", \"Never\""
        );
    }

    fn manifests(yaml: &str) -> (PodPlan, ConfigObjects) {
        let m = parse_all(&[("pod.yaml".into(), yaml.into())]).unwrap();
        (plan(&m.pod, 8 << 30).unwrap(), m.config)
    }

    const POD: &str = "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  imagePullSecrets: [{name: regcred}]\n  initContainers: [{name: i, image: 'busybox:1.36', imagePullPolicy: Never}]\n  containers:\n  - {name: a, image: 'docker.io/library/busybox:1.36'}\n  - {name: b, image: '127.0.0.1:5000/app'}\n";

    #[test]
    fn distinct_images_are_pulled_once_as_any_container_asks() {
        let (plan, _) = manifests(POD);
        let needs = image_needs(&plan).unwrap();
        assert_eq!(needs.len(), 2);
        assert_eq!(needs[0].image, "docker.io/library/busybox:1.36");
        assert_eq!(
            needs[0].containers,
            [
                ("i".to_string(), PullPolicy::Never),
                ("a".to_string(), PullPolicy::IfNotPresent)
            ]
        );
        // Missing: a pulls it for both, and is named.
        assert!(needs[0].should_pull(false));
        assert_eq!(needs[0].container(false), "a");
        assert!(!needs[0].should_pull(true));
        assert_eq!(needs[1].containers, [("b".to_string(), PullPolicy::Always)]);
        assert!(needs[1].should_pull(true));
        assert_eq!(needs[1].repository(), "127.0.0.1:5000/app");
        let never = ImageNeed {
            image: "x".into(),
            containers: vec![("c".into(), PullPolicy::Never)],
        };
        assert!(!never.should_pull(false) && never.container(false) == "c");
    }

    #[test]
    fn pull_secrets_give_credentials_or_fail_by_field() {
        let secret = |ty: &str, data: &str| {
            format!(
                "apiVersion: v1\nkind: Secret\nmetadata: {{name: regcred}}\ntype: {ty}\nstringData: {data}\n---\n{POD}"
            )
        };
        let json =
            r#"{".dockerconfigjson": '{"auths": {"127.0.0.1:5000": {"username": "alice", "password": "s3cret"}}}'}"#;
        let (plan, objects) = manifests(&secret("kubernetes.io/dockerconfigjson", json));
        let (keyring, warnings) = pull_credentials(&plan, &objects).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        let found = keyring.lookup("127.0.0.1:5000/app");
        assert_eq!(found.len(), 1);
        assert_eq!(
            (found[0].username.as_str(), found[0].password.as_str()),
            ("alice", "s3cret")
        );
        assert!(keyring.lookup("docker.io/library/busybox").is_empty());
        let legacy = r#"{".dockercfg": '{"127.0.0.1:5000": {"auth": "dTpw"}}'}"#;
        let (plan, objects) = manifests(&secret("kubernetes.io/dockercfg", legacy));
        let (keyring, _) = pull_credentials(&plan, &objects).unwrap();
        assert_eq!(keyring.lookup("127.0.0.1:5000/app")[0].username, "u");
        // A missing Secret is a warning; the pull goes on anonymously.
        let (plan, objects) = manifests(POD);
        let (keyring, warnings) = pull_credentials(&plan, &objects).unwrap();
        assert!(keyring.is_empty());
        assert_eq!(warnings.len(), 1);
        assert!(
            warnings[0].starts_with("warning: spec.imagePullSecrets[0]: secret \"regcred\" not found"),
            "{warnings:?}"
        );
        for (ty, data, want) in [
            (
                "Opaque",
                json,
                "spec.imagePullSecrets[0]: Secret default/regcred is of type \"Opaque\"",
            ),
            (
                "kubernetes.io/dockerconfigjson",
                "{other: x}",
                "spec.imagePullSecrets[0]: Secret default/regcred (type kubernetes.io/dockerconfigjson) has no key .dockerconfigjson",
            ),
            (
                "kubernetes.io/dockerconfigjson",
                "{.dockerconfigjson: 'not json'}",
                "spec.imagePullSecrets[0]: Secret default/regcred: .dockerconfigjson: not a Docker config",
            ),
        ] {
            let (plan, objects) = manifests(&secret(ty, data));
            let err = pull_credentials(&plan, &objects).unwrap_err().to_string();
            assert!(err.starts_with(want), "{err}");
            assert!(!err.contains("s3cret"), "{err}");
        }
    }

    #[test]
    fn never_with_a_missing_image_is_err_image_never_pull() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("store")).unwrap();
        // Only Never: nothing is pulled, the first container is named.
        let pod = POD
            .replace(
                "{name: a, image: 'docker.io/library/busybox:1.36'}",
                "{name: a, image: 'busybox:1.36', imagePullPolicy: Never}",
            )
            .replace("  - {name: b, image: '127.0.0.1:5000/app'}\n", "");
        let (plan, _) = manifests(&pod);
        let pulled = ensure_images(&store, &plan, &DockerKeyring::default(), &|_| {
            panic!("a pull was tried")
        })
        .unwrap();
        assert_eq!(pulled.waiting.len(), 1, "{pulled:?}");
        let wait = &pulled.waiting[0];
        assert_eq!(
            (wait.reason.as_str(), &wait.containers[..]),
            (ERR_IMAGE_NEVER_PULL, &["i".to_string(), "a".to_string()][..])
        );
        assert!(!wait.pulls());
        assert_eq!(
            wait.warning(),
            "container i: ErrImageNeverPull: Container image \"docker.io/library/busybox:1.36\" is not present with pull policy of Never"
        );
        let reasons: Vec<&str> = pulled.events.iter().map(|e| e.reason.as_str()).collect();
        assert_eq!(reasons, [ERR_IMAGE_NEVER_PULL, "Failed"]);
        assert_eq!(pulled.events[1].message, "Error: ErrImageNeverPull");
    }
}
