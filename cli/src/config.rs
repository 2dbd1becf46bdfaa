//! ConfigMaps and Secrets given beside the Pod (`peapod run -f` with several documents, or
//! several files), and what kubelet makes of them for a container's environment:
//! `env[].valueFrom.configMapKeyRef` / `secretKeyRef` and `envFrom`
//! (`pkg/kubelet/kubelet_pods.go`, `makeEnvironmentVariables`).
//!
//! The plan keeps the references ([`EnvValue::Key`], [`EnvFrom`]) so that it can be made
//! again from the manifest alone (CRI mode rebuilds it from the sandbox's annotation);
//! [`resolve_env`] turns them into values right before a pod runs.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};

use sandbox::pod::Role;

use crate::manifest::{ContainerPlan, EnvValue, ManifestError, PodPlan};

/// Where a reference points: a ConfigMap or a Secret, by name, in the pod's namespace.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ConfigSource {
    /// A ConfigMap's `data`.
    ConfigMap(String),
    /// A Secret's `data` and `stringData`.
    Secret(String),
}

impl ConfigSource {
    /// kubelet's words for it: `ConfigMap`, `Secret`.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            ConfigSource::ConfigMap(_) => "ConfigMap",
            ConfigSource::Secret(_) => "Secret",
        }
    }

    /// The object's name.
    pub fn name(&self) -> &str {
        match self {
            ConfigSource::ConfigMap(n) | ConfigSource::Secret(n) => n,
        }
    }

    /// kubelet's "not found" for it (its object managers' `configmap "x" not found`).
    pub(crate) fn not_found(&self) -> String {
        format!("{} {:?} not found", self.kind().to_lowercase(), self.name())
    }
}

/// One `envFrom` entry: every key of a ConfigMap or Secret as a variable, after `prefix`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EnvFrom {
    /// `prefix`, put before each key (may be empty).
    pub prefix: String,
    /// The object.
    pub source: ConfigSource,
    /// `optional`: a missing object adds nothing instead of failing the container.
    pub optional: bool,
}

/// The ConfigMaps and Secrets a pod can use: those given with it, in its namespace.
#[derive(Debug, Clone, Default)]
pub struct ConfigObjects {
    namespace: String,
    config_maps: BTreeMap<String, BTreeMap<String, String>>,
    /// ConfigMaps' `binaryData`, by ConfigMap name (volumes only: kubelet reads `data`
    /// alone for the environment).
    binary_data: BTreeMap<String, BTreeMap<String, Vec<u8>>>,
    secrets: BTreeMap<String, BTreeMap<String, Vec<u8>>>,
    /// Each Secret's `type` (`Opaque` when not given, as the API server defaults it).
    secret_types: BTreeMap<String, String>,
}

impl ConfigObjects {
    /// None yet, for a pod in `namespace`.
    pub fn new(namespace: &str) -> ConfigObjects {
        ConfigObjects {
            namespace: namespace.to_string(),
            ..Default::default()
        }
    }

    /// Adds a ConfigMap; `what` names its document in errors.
    ///
    /// Errors: [`ManifestError::Field`] for a missing name, another namespace than the
    /// pod's, a name given twice, or a key of `data` or `binaryData` that is not a valid
    /// ConfigMap key or is in both (the API server's `ValidateConfigMap`).
    pub fn add_config_map(&mut self, what: &str, cm: ConfigMap) -> Result<(), ManifestError> {
        let name = self.check_meta(what, "ConfigMap", &cm.metadata)?;
        if self.config_maps.contains_key(&name) {
            return Err(twice(what, "ConfigMap", &name));
        }
        let data = cm.data.unwrap_or_default();
        let binary: BTreeMap<String, Vec<u8>> = cm
            .binary_data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.0))
            .collect();
        check_keys(what, "ConfigMap", &name, "data", data.keys())?;
        check_keys(what, "ConfigMap", &name, "binaryData", binary.keys())?;
        if let Some(k) = binary.keys().find(|k| data.contains_key(*k)) {
            return Err(field(
                format!("{what}: ConfigMap {name} binaryData[{k}]"),
                "duplicate of key present in data",
            ));
        }
        self.config_maps.insert(name.clone(), data);
        self.binary_data.insert(name, binary);
        Ok(())
    }

    /// Adds a Secret: its `data`, with `stringData` written over it as the API server
    /// merges them. Errors as [`ConfigObjects::add_config_map`] (keys of `data` and
    /// `stringData`).
    pub fn add_secret(&mut self, what: &str, secret: Secret) -> Result<(), ManifestError> {
        let name = self.check_meta(what, "Secret", &secret.metadata)?;
        if self.secrets.contains_key(&name) {
            return Err(twice(what, "Secret", &name));
        }
        let mut data: BTreeMap<String, Vec<u8>> = secret
            .data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.0))
            .collect();
        let string_data = secret.string_data.unwrap_or_default();
        check_keys(what, "Secret", &name, "data", data.keys())?;
        check_keys(what, "Secret", &name, "stringData", string_data.keys())?;
        for (k, v) in string_data {
            data.insert(k, v.into_bytes());
        }
        self.secret_types.insert(
            name.clone(),
            secret
                .type_
                .filter(|t| !t.is_empty())
                .unwrap_or_else(|| "Opaque".into()),
        );
        self.secrets.insert(name, data);
        Ok(())
    }

    /// The pod's namespace.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// Secret `name`: its `type` (`Opaque` when not given) and its data (`data` with
    /// `stringData` merged); `None` when no such Secret was given.
    pub fn secret(&self, name: &str) -> Option<(&str, &BTreeMap<String, Vec<u8>>)> {
        let data = self.secrets.get(name)?;
        Some((self.secret_types.get(name).map_or("Opaque", String::as_str), data))
    }

    fn check_meta(
        &self,
        what: &str,
        kind: &str,
        meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    ) -> Result<String, ManifestError> {
        let name = meta
            .name
            .clone()
            .ok_or_else(|| field(format!("{what}: {kind} metadata.name"), "missing"))?;
        crate::manifest::dns_subdomain(&format!("{what}: {kind} metadata.name"), &name)?;
        let namespace = meta.namespace.as_deref().unwrap_or("default");
        if namespace != self.namespace {
            return Err(field(
                format!("{what}: {kind} {name} metadata.namespace"),
                format!(
                    "{namespace:?}, but the pod is in {:?}: a pod uses ConfigMaps and Secrets of its own namespace",
                    self.namespace
                ),
            ));
        }
        Ok(name)
    }

    /// The keys and values of `source`; `None` when there is no such object.
    fn entries(&self, source: &ConfigSource) -> Option<BTreeMap<&str, &[u8]>> {
        match source {
            ConfigSource::ConfigMap(n) => self
                .config_maps
                .get(n)
                .map(|d| d.iter().map(|(k, v)| (k.as_str(), v.as_bytes())).collect()),
            ConfigSource::Secret(n) => self
                .secrets
                .get(n)
                .map(|d| d.iter().map(|(k, v)| (k.as_str(), v.as_slice())).collect()),
        }
    }

    /// The keys and values `source` projects into a volume (a ConfigMap's `data` and
    /// `binaryData`, a Secret's data); `None` when there is no such object.
    pub(crate) fn files(&self, source: &ConfigSource) -> Option<BTreeMap<&str, &[u8]>> {
        let mut entries = self.entries(source)?;
        if let ConfigSource::ConfigMap(n) = source {
            for (k, v) in self.binary_data.get(n).into_iter().flatten() {
                entries.insert(k.as_str(), v.as_slice());
            }
        }
        Some(entries)
    }

    /// A value as text: a Secret value that is not UTF-8 cannot be an environment variable
    /// (the OCI spec's env is JSON text), an error naming the key.
    fn text(&self, source: &ConfigSource, key: &str, value: &[u8]) -> Result<String, String> {
        String::from_utf8(value.to_vec()).map_err(|_| {
            format!(
                "key {key} of {} {}/{} is not UTF-8 text",
                source.kind(),
                self.namespace,
                source.name()
            )
        })
    }
}

fn field(f: impl Into<String>, reason: impl Into<String>) -> ManifestError {
    ManifestError::Field {
        field: f.into(),
        reason: reason.into(),
    }
}

/// Checks the keys of `map` (`data`, `binaryData`, `stringData`) of object `kind name`
/// given in `what` as the API server does ([`crate::volumes::check_key`]): they become
/// file names in volumes.
fn check_keys<'a>(
    what: &str,
    kind: &str,
    name: &str,
    map: &str,
    keys: impl Iterator<Item = &'a String>,
) -> Result<(), ManifestError> {
    for k in keys {
        crate::volumes::check_key(&format!("{what}: {kind} {name} {map}[{k}]"), k)?;
    }
    Ok(())
}

fn twice(what: &str, kind: &str, name: &str) -> ManifestError {
    field(format!("{what}: {kind} {name}"), "given twice")
}

/// kubelet's `CreateContainerConfigError`, the reason a container cannot be made from
/// its references.
pub const CREATE_CONTAINER_CONFIG_ERROR: &str = "CreateContainerConfigError";

/// Whether `name` is a C-style environment variable name as the API server checks
/// envFrom keys (`IsEnvVarName`: `[-._a-zA-Z][-._a-zA-Z0-9]*`).
fn is_env_var_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || "-._".contains(c))
        && chars.all(|c| c.is_ascii_alphanumeric() || "-._".contains(c))
}

/// The manifest path of `plan.containers[index]`: `spec.initContainers[i]` for init
/// containers and sidecars, else `spec.containers[i]` (the plan keeps declaration order).
fn container_path(plan: &PodPlan, index: usize) -> String {
    let is_init = |c: &ContainerPlan| matches!(c.role, Role::Init | Role::Sidecar);
    let c = &plan.containers[index];
    let before = plan.containers[..index]
        .iter()
        .filter(|o| is_init(o) == is_init(c))
        .count();
    if is_init(c) {
        format!("spec.initContainers[{before}]")
    } else {
        format!("spec.containers[{before}]")
    }
}

/// The plan with every container's environment resolved against `objects`, as kubelet
/// makes it: `envFrom` entries first, in order (keys in sorted order, each after its
/// prefix; keys that are not variable names are skipped, as kubelet skips them with an
/// `InvalidEnvironmentVariableNames` event), then `env` in order; a later variable of
/// the same name replaces an earlier one in place. Optional references to a missing
/// object or key add nothing. Afterwards no [`EnvValue::Key`] and no `envFrom` is left.
///
/// Errors: [`ManifestError::Field`] naming the reference (`spec.containers[0].env[1]
/// .valueFrom.secretKeyRef`) with kubelet's reason and message
/// (`CreateContainerConfigError: couldn't find key k in ConfigMap default/x`,
/// `… secret "s" not found`).
pub fn resolve_env(plan: &PodPlan, objects: &ConfigObjects) -> Result<PodPlan, ManifestError> {
    let mut out = plan.clone();
    for (i, c) in out.containers.iter_mut().enumerate() {
        let path = container_path(plan, i);
        let fail = |f: String, why: String| field(f, format!("{CREATE_CONTAINER_CONFIG_ERROR}: {why}"));
        let mut vars: Vec<(String, EnvValue)> = Vec::new();
        let mut set = |name: String, value: EnvValue| match vars.iter_mut().find(|(n, _)| *n == name) {
            Some(slot) => slot.1 = value,
            None => vars.push((name, value)),
        };
        for (j, from) in c.env_from.iter().enumerate() {
            let f = format!(
                "{path}.envFrom[{j}].{}",
                match from.source {
                    ConfigSource::ConfigMap(_) => "configMapRef",
                    ConfigSource::Secret(_) => "secretRef",
                }
            );
            match objects.entries(&from.source) {
                None if from.optional => {}
                None => return Err(fail(f, from.source.not_found())),
                Some(entries) => {
                    for (key, value) in entries {
                        let name = format!("{}{key}", from.prefix);
                        if is_env_var_name(&name) {
                            let value = objects
                                .text(&from.source, key, value)
                                .map_err(|why| fail(f.clone(), why))?;
                            set(name, EnvValue::Literal(value));
                        }
                    }
                }
            }
        }
        for (j, (name, value)) in c.env.iter().enumerate() {
            let EnvValue::Key { source, key, optional } = value else {
                set(name.clone(), value.clone());
                continue;
            };
            let f = format!(
                "{path}.env[{j}].valueFrom.{}",
                match source {
                    ConfigSource::ConfigMap(_) => "configMapKeyRef",
                    ConfigSource::Secret(_) => "secretKeyRef",
                }
            );
            let entries = match objects.entries(source) {
                None if *optional => continue,
                None => return Err(fail(f, source.not_found())),
                Some(entries) => entries,
            };
            match entries.get(key.as_str()) {
                Some(v) => {
                    let value = objects.text(source, key, v).map_err(|why| fail(f, why))?;
                    set(name.clone(), EnvValue::Literal(value));
                }
                None if *optional => {}
                None => {
                    return Err(fail(
                        f,
                        format!(
                            "couldn't find key {key} in {} {}/{}",
                            source.kind(),
                            objects.namespace,
                            source.name()
                        ),
                    ))
                }
            }
        }
        c.env = vars;
        c.env_from.clear();
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{parse_all, plan};

    fn resolved(yaml: &str) -> Result<Vec<(String, EnvValue)>, ManifestError> {
        let m = parse_all(&[("pod.yaml".into(), yaml.into())])?;
        let p = plan(&m.pod, 8 << 30)?;
        let r = resolve_env(&p, &m.config)?;
        assert!(r.containers.iter().all(|c| c.env_from.is_empty()));
        Ok(r.containers[0].env.clone())
    }

    const OBJECTS: &str = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cm}\ndata: {A: '1', B: '2', 1bad: x}\n---\napiVersion: v1\nkind: Secret\nmetadata: {name: s}\ndata: {pw: czNjcjN0, bin: /w==}\nstringData: {user: admin}\n---\n";

    fn pod(container: &str) -> String {
        format!("{OBJECTS}apiVersion: v1\nkind: Pod\nmetadata: {{name: p}}\nspec:\n  containers:\n  - {{name: c, image: busybox, {container}}}\n")
    }

    fn lit(n: &str, v: &str) -> (String, EnvValue) {
        (n.into(), EnvValue::Literal(v.into()))
    }

    #[test]
    fn env_from_comes_first_and_env_overrides_it_in_place() {
        let env = resolved(&pod(
            "envFrom: [{configMapRef: {name: cm}}, {prefix: S_, secretRef: {name: s, optional: true}}], env: [{name: A, value: over}, {name: K, valueFrom: {secretKeyRef: {name: s, key: user}}}, {name: N, valueFrom: {fieldRef: {fieldPath: metadata.name}}}]",
        ));
        // 1bad is not a variable name and is skipped; S_bin is not UTF-8 text, so the
        // whole secretRef fails, optional or not.
        let err = env.unwrap_err().to_string();
        assert!(err.contains("spec.containers[0].envFrom[1].secretRef"), "{err}");
        assert!(err.contains("key bin of Secret default/s is not UTF-8 text"), "{err}");
        let env = resolved(&pod(
            "envFrom: [{configMapRef: {name: cm}}, {prefix: X_, configMapRef: {name: gone, optional: true}}], env: [{name: A, value: over}, {name: K, valueFrom: {secretKeyRef: {name: s, key: user}}}, {name: P, valueFrom: {secretKeyRef: {name: s, key: pw}}}, {name: N, valueFrom: {fieldRef: {fieldPath: metadata.name}}}, {name: O, valueFrom: {configMapKeyRef: {name: cm, key: nope, optional: true}}}]",
        ))
        .unwrap();
        assert_eq!(
            env,
            vec![
                lit("A", "over"),
                lit("B", "2"),
                lit("K", "admin"),
                lit("P", "s3cr3t"),
                ("N".into(), EnvValue::Field("metadata.name".into())),
            ]
        );
    }

    #[test]
    fn missing_objects_and_keys_are_kubelets_create_container_config_error() {
        let cases = [
            (
                "env: [{name: A, valueFrom: {configMapKeyRef: {name: cm, key: Z}}}]",
                "spec.containers[0].env[0].valueFrom.configMapKeyRef: CreateContainerConfigError: couldn't find key Z in ConfigMap default/cm",
            ),
            (
                "env: [{name: A, value: x}, {name: B, valueFrom: {secretKeyRef: {name: gone, key: k}}}]",
                "spec.containers[0].env[1].valueFrom.secretKeyRef: CreateContainerConfigError: secret \"gone\" not found",
            ),
            (
                "envFrom: [{configMapRef: {name: gone}}]",
                "spec.containers[0].envFrom[0].configMapRef: CreateContainerConfigError: configmap \"gone\" not found",
            ),
            (
                "env: [{name: A, valueFrom: {configMapKeyRef: {name: cm, key: A}, fieldRef: {fieldPath: metadata.name}}}]",
                "spec.containers[0].env[0].valueFrom: exactly one of",
            ),
        ];
        for (container, want) in cases {
            let err = resolved(&pod(container)).unwrap_err().to_string();
            assert!(err.starts_with(want), "{err}");
        }
    }

    #[test]
    fn documents_hold_one_pod_and_objects_of_its_namespace() {
        let parse = |yaml: &str| {
            parse_all(&[("f.yaml".into(), yaml.into())])
                .map(|_| ())
                .unwrap_err()
                .to_string()
        };
        let err = parse(OBJECTS);
        assert!(err.contains("no Pod"), "{err}");
        let two = format!(
            "{}---\n{}",
            pod("env: []"),
            "apiVersion: v1\nkind: Pod\nmetadata: {name: q}\n"
        );
        let err = parse(&two);
        assert!(err.contains("2 Pods (f.yaml: document 3, f.yaml: document 4)"), "{err}");
        let err =
            parse(&pod("env: []").replace("metadata: {name: cm}", "metadata: {name: cm, namespace: kube-system}"));
        assert!(
            err.contains("f.yaml: document 1: ConfigMap cm metadata.namespace"),
            "{err}"
        );
        let err = parse(&format!("{OBJECTS}{}", pod("env: []")));
        assert!(err.contains("document 3: ConfigMap cm: given twice"), "{err}");
        // Keys become file names in volumes: the API server's rules.
        let err = parse(&pod("env: []").replace("data: {A: '1'", "data: {'../x': '1'"));
        assert!(
            err.contains("f.yaml: document 1: ConfigMap cm data[../x]: \"../x\": a valid config key"),
            "{err}"
        );
        let err = parse(&pod("env: []").replace("stringData: {user: admin}", "stringData: {..user: admin}"));
        assert!(
            err.contains("Secret s stringData[..user]: \"..user\": must not start with '..'"),
            "{err}"
        );
        let err = parse(&pod("env: []").replace("data: {A: '1',", "binaryData: {B: /w==}\ndata: {A: '1',"));
        assert!(
            err.contains("ConfigMap cm binaryData[B]: duplicate of key present in data"),
            "{err}"
        );
        let err = parse(&pod("env: []").replace("kind: Secret", "kind: Deployment"));
        assert!(
            err.contains("f.yaml: document 2: kind: \"Deployment\" is not supported"),
            "{err}"
        );
        // Across files, as several -f.
        let m = parse_all(&[
            ("a.yaml".into(), OBJECTS.into()),
            ("b.yaml".into(), pod("env: []").replace(OBJECTS, "")),
        ])
        .unwrap();
        assert_eq!(m.pod.metadata.name.as_deref(), Some("p"));
    }
}
