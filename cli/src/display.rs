//! What the `peapod` CLI prints about pods, the way kubectl prints them: the `get pods`
//! table (and `-o wide`), `-o yaml|json` (a `v1.Pod`, or a `v1.List` of them), and
//! `describe pod`. The same for embedded and CRI mode: both hand over a [`PodSummary`].

use std::collections::BTreeMap;
use std::fmt::Write as _;

use k8s_openapi::api::core::v1::{ContainerState, ContainerStatus, Pod, PodStatus, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use sandbox::pod::Role;

use crate::manifest::{PodPlan, Resources};
use crate::podstatus::{ready_column, restarts, status_column, PodEvent};

/// One pod as a mode reports it.
#[derive(Debug, Clone)]
pub struct PodSummary {
    /// The checked manifest.
    pub plan: PodPlan,
    /// The manifest as written (`spec` for `-o yaml`), when known.
    pub manifest: Option<Pod>,
    /// `metadata.uid`.
    pub uid: String,
    /// When the pod was created.
    pub created: Option<jiff::Timestamp>,
    /// kubelet's status.
    pub status: PodStatus,
    /// Events, oldest first.
    pub events: Vec<PodEvent>,
    /// `embedded` or the CRI endpoint.
    pub runtime: String,
}

/// kubectl's age format (`duration.HumanDuration`): `45s`, `3m12s`, `25m`, `5h3m`, `14h`,
/// `3d4h`, `12d`, `2y45d`.
pub fn human_duration(d: std::time::Duration) -> String {
    let s = d.as_secs();
    let (m, h, day) = (s / 60, s / 3600, s / 86_400);
    match s {
        0..=119 => format!("{s}s"),
        120..=599 if s.is_multiple_of(60) => format!("{m}m"),
        120..=599 => format!("{m}m{}s", s % 60),
        600..=10_799 => format!("{m}m"),
        10_800..=28_799 if m.is_multiple_of(60) => format!("{h}h"),
        10_800..=28_799 => format!("{h}h{}m", m % 60),
        28_800..=172_799 => format!("{h}h"),
        172_800..=691_199 if h.is_multiple_of(24) => format!("{day}d"),
        172_800..=691_199 => format!("{day}d{}h", h % 24),
        _ if day < 365 * 2 => format!("{day}d"),
        _ => format!("{}y{}d", day / 365, day % 365),
    }
}

fn age(t: Option<jiff::Timestamp>) -> String {
    match t {
        Some(t) => {
            let d = jiff::Timestamp::now().duration_since(t);
            human_duration(std::time::Duration::try_from(d).unwrap_or_default())
        }
        None => "<unknown>".into(),
    }
}

fn node_name() -> String {
    nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "localhost".into())
}

/// The `get pods` table: `NAME READY STATUS RESTARTS AGE IP`; `wide` adds `NODE`,
/// `QOS` and `RUNTIME`.
pub fn table(pods: &[PodSummary], wide: bool) -> String {
    let mut rows = vec![vec![
        "NAME".to_string(),
        "READY".into(),
        "STATUS".into(),
        "RESTARTS".into(),
        "AGE".into(),
        "IP".into(),
    ]];
    if wide {
        rows[0].extend(["NODE".to_string(), "QOS".into(), "RUNTIME".into()]);
    }
    for p in pods {
        let mut row = vec![
            p.plan.name.clone(),
            ready_column(&p.plan, &p.status),
            status_column(&p.plan, &p.status),
            restarts(&p.status).to_string(),
            age(p.created),
            p.status.pod_ip.clone().unwrap_or_else(|| "<none>".into()),
        ];
        if wide {
            row.extend([
                node_name(),
                p.status.qos_class.clone().unwrap_or_default(),
                p.runtime.clone(),
            ]);
        }
        rows.push(row);
    }
    columns(&rows)
}

/// Left-aligned columns three spaces apart, like kubectl's tabwriter.
fn columns(rows: &[Vec<String>]) -> String {
    let n = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..n)
        .map(|i| {
            rows.iter()
                .filter_map(|r| r.get(i))
                .map(|c| c.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for r in rows {
        let mut line = String::new();
        for (i, cell) in r.iter().enumerate() {
            if i + 1 == r.len() {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<w$}   ", w = widths[i]);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// The pod as a `v1.Pod`: the manifest's metadata and spec, with uid, creation time,
/// each container's `imagePullPolicy` defaulted as the API server defaults it, and the
/// observed status.
pub fn to_pod(p: &PodSummary) -> Pod {
    let mut pod = p.manifest.clone().unwrap_or_default();
    let meta = &mut pod.metadata;
    meta.name = Some(p.plan.name.clone());
    meta.namespace = Some(p.plan.namespace.clone());
    meta.uid = Some(p.uid.clone());
    meta.creation_timestamp = p.created.map(Time);
    if let Some(spec) = pod.spec.as_mut() {
        spec.node_name = Some(node_name());
        for c in spec
            .init_containers
            .iter_mut()
            .flatten()
            .chain(spec.containers.iter_mut())
        {
            if c.image_pull_policy.as_deref().is_none_or(str::is_empty) {
                let policy = crate::imagepull::PullPolicy::default_for(c.image.as_deref().unwrap_or_default());
                c.image_pull_policy = Some(policy.as_str().to_string());
            }
        }
    }
    pod.status = Some(p.status.clone());
    pod
}

/// `-o json` or `-o yaml` of `pods`: one `v1.Pod` when `single`, else a `v1.List`.
///
/// Errors: serialisation failures (not expected for these types).
pub fn serialize(pods: &[PodSummary], single: bool, yaml: bool) -> Result<String, String> {
    let value = if single && pods.len() == 1 {
        let mut v = serde_json::to_value(to_pod(&pods[0])).map_err(|e| e.to_string())?;
        if let Some(o) = v.as_object_mut() {
            o.insert("apiVersion".into(), "v1".into());
            o.insert("kind".into(), "Pod".into());
        }
        v
    } else {
        let items: Vec<serde_json::Value> = pods
            .iter()
            .map(|p| {
                let mut v = serde_json::to_value(to_pod(p)).unwrap_or_default();
                if let Some(o) = v.as_object_mut() {
                    o.insert("apiVersion".into(), "v1".into());
                    o.insert("kind".into(), "Pod".into());
                }
                v
            })
            .collect();
        serde_json::json!({"apiVersion": "v1", "kind": "List", "items": items, "metadata": {"resourceVersion": ""}})
    };
    if yaml {
        serde_yaml_ng::to_string(&value).map_err(|e| e.to_string())
    } else {
        serde_json::to_string_pretty(&value)
            .map(|s| s + "\n")
            .map_err(|e| e.to_string())
    }
}

fn time(t: Option<&Time>) -> String {
    t.map_or_else(
        || "<unknown>".into(),
        |t| t.0.strftime("%a, %d %b %Y %H:%M:%S %z").to_string(),
    )
}

fn describe_state(out: &mut String, label: &str, state: &ContainerState) {
    if let Some(r) = &state.running {
        let _ = writeln!(out, "    {label:<16}Running");
        let _ = writeln!(out, "      Started:      {}", time(r.started_at.as_ref()));
    } else if let Some(t) = &state.terminated {
        let _ = writeln!(out, "    {label:<16}Terminated");
        let _ = writeln!(out, "      Reason:       {}", t.reason.as_deref().unwrap_or(""));
        let _ = writeln!(out, "      Exit Code:    {}", t.exit_code);
        let _ = writeln!(out, "      Started:      {}", time(t.started_at.as_ref()));
        let _ = writeln!(out, "      Finished:     {}", time(t.finished_at.as_ref()));
    } else if let Some(w) = &state.waiting {
        let _ = writeln!(out, "    {label:<16}Waiting");
        let _ = writeln!(out, "      Reason:       {}", w.reason.as_deref().unwrap_or(""));
    }
}

/// The resources of container `name` as the manifest wrote them.
fn written_resources<'a>(p: &'a PodSummary, name: &str) -> Option<&'a ResourceRequirements> {
    let spec = p.manifest.as_ref()?.spec.as_ref()?;
    spec.init_containers
        .iter()
        .flatten()
        .chain(&spec.containers)
        .find(|c| c.name == name)?
        .resources
        .as_ref()
}

/// kubectl's `Limits:`/`Requests:` block: each resource as the manifest gave it (`64Mi`,
/// `500m`), in key order (`kubectl describe`'s `describeContainerResource`).
fn describe_quantities(out: &mut String, label: &str, q: Option<&BTreeMap<String, Quantity>>) {
    let Some(q) = q.filter(|q| !q.is_empty()) else {
        return;
    };
    let _ = writeln!(out, "    {label}");
    for (name, value) in q {
        let _ = writeln!(out, "      {:<9}{}", format!("{name}:"), value.0);
    }
}

/// The plan's requests and limits (millicores, bytes), for a record without its manifest.
fn describe_resources(out: &mut String, r: &Resources) {
    if r.cpu_limit.is_some() || r.memory_limit.is_some() {
        let _ = writeln!(out, "    Limits:");
        if let Some(m) = r.cpu_limit {
            let _ = writeln!(out, "      cpu:     {m}m");
        }
        if let Some(b) = r.memory_limit {
            let _ = writeln!(out, "      memory:  {b}");
        }
    }
    if r.cpu_request.is_some() || r.memory_request.is_some() {
        let _ = writeln!(out, "    Requests:");
        if let Some(m) = r.cpu_request {
            let _ = writeln!(out, "      cpu:     {m}m");
        }
        if let Some(b) = r.memory_request {
            let _ = writeln!(out, "      memory:  {b}");
        }
    }
}

/// kubectl's `Port:` and `Host Port:` lines (`describeContainerPorts`,
/// `describeContainerHostPorts`): `80/TCP (http)` and `8080/TCP` per port, `0/TCP` for a
/// port without a host port, `Ports:`/`Host Ports:` when there are several, `<none>`
/// when there is none.
fn describe_ports(out: &mut String, ports: &[crate::hostports::ContainerPort]) {
    let none = |s: String| if s.is_empty() { "<none>".to_string() } else { s };
    let container: Vec<String> = ports
        .iter()
        .map(|p| match p.name.as_str() {
            "" => format!("{}/{}", p.container_port, p.protocol),
            name => format!("{}/{} ({name})", p.container_port, p.protocol),
        })
        .collect();
    let host: Vec<String> = ports
        .iter()
        .map(|p| format!("{}/{}", p.host_port.unwrap_or(0), p.protocol))
        .collect();
    let (port, host_port) = if ports.len() > 1 {
        ("Ports:     ", "Host Ports:")
    } else {
        ("Port:      ", "Host Port: ")
    };
    let _ = writeln!(out, "    {port}     {}", none(container.join(", ")));
    let _ = writeln!(out, "    {host_port}     {}", none(host.join(", ")));
}

fn describe_container(out: &mut String, p: &PodSummary, s: &ContainerStatus) {
    let plan = &p.plan;
    let c = plan.containers.iter().find(|c| c.name == s.name);
    let _ = writeln!(out, "  {}:", s.name);
    if let Some(c) = c {
        if c.role == Role::Sidecar {
            let _ = writeln!(out, "    Restart Policy: Always (sidecar)");
        }
    }
    let _ = writeln!(out, "    Container ID:   {}", s.container_id.as_deref().unwrap_or(""));
    let _ = writeln!(out, "    Image:          {}", s.image);
    if let Some(c) = c {
        if let Some(cmd) = &c.command {
            let _ = writeln!(out, "    Command:        {}", cmd.join(" "));
        }
        if let Some(args) = &c.args {
            let _ = writeln!(out, "    Args:           {}", args.join(" "));
        }
        describe_ports(out, &c.ports);
    }
    if let Some(state) = &s.state {
        describe_state(out, "State:", state);
    }
    if let Some(last) = &s.last_state {
        describe_state(out, "Last State:", last);
    }
    let _ = writeln!(out, "    Ready:          {}", s.ready);
    let _ = writeln!(out, "    Restart Count:  {}", s.restart_count);
    if let Some(c) = c {
        match written_resources(p, &c.name) {
            Some(r) => {
                describe_quantities(out, "Limits:", r.limits.as_ref());
                describe_quantities(out, "Requests:", r.requests.as_ref());
            }
            // A record without its manifest: the plan's numbers.
            None => describe_resources(out, &c.resources),
        }
        // kubectl's probe lines, in its order.
        for (label, probe) in [
            ("Liveness: ", &c.probes.liveness_probe),
            ("Readiness:", &c.probes.readiness_probe),
            ("Startup:  ", &c.probes.startup_probe),
        ] {
            if let Some(probe) = probe {
                let _ = writeln!(out, "    {label}      {}", crate::probes::describe(probe));
            }
        }
        if !c.mounts.is_empty() {
            let _ = writeln!(out, "    Mounts:");
            for m in &c.mounts {
                let mode = if m.read_only { "ro" } else { "rw" };
                let _ = writeln!(out, "      {} from {} ({mode})", m.path, m.volume);
            }
        }
    }
}

/// `describe pod`: metadata, status, IPs, containers (state, reason, exit code, started
/// and finished times), conditions, volumes, QoS class and events.
pub fn describe(p: &PodSummary) -> String {
    let mut out = String::new();
    let st = &p.status;
    let w = &mut out;
    let _ = writeln!(w, "Name:             {}", p.plan.name);
    let _ = writeln!(w, "Namespace:        {}", p.plan.namespace);
    let _ = writeln!(w, "Node:             {}", node_name());
    let _ = writeln!(w, "Runtime:          {}", p.runtime);
    let _ = writeln!(w, "Start Time:       {}", time(st.start_time.as_ref()));
    let labels: Vec<String> = p.plan.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let _ = writeln!(
        w,
        "Labels:           {}",
        if labels.is_empty() {
            "<none>".into()
        } else {
            labels.join("\n                  ")
        }
    );
    let _ = writeln!(w, "UID:              {}", p.uid);
    let _ = writeln!(w, "Status:           {}", st.phase.as_deref().unwrap_or("Unknown"));
    let _ = writeln!(w, "IP:               {}", st.pod_ip.as_deref().unwrap_or(""));
    if let Some(inits) = st.init_container_statuses.as_deref().filter(|s| !s.is_empty()) {
        let _ = writeln!(w, "Init Containers:");
        for s in inits {
            describe_container(w, p, s);
        }
    }
    let _ = writeln!(w, "Containers:");
    for s in st.container_statuses.as_deref().unwrap_or_default() {
        describe_container(w, p, s);
    }
    let _ = writeln!(w, "Conditions:");
    let _ = writeln!(w, "  {:<27}Status", "Type");
    for c in st.conditions.as_deref().unwrap_or_default() {
        let _ = writeln!(w, "  {:<27}{}", c.type_, c.status);
    }
    if !p.plan.volumes.is_empty() {
        let _ = writeln!(w, "Volumes:");
        for (name, v) in &p.plan.volumes {
            let _ = writeln!(w, "  {name}:");
            match v {
                crate::manifest::VolumeKind::EmptyDir(e) => {
                    let _ = writeln!(
                        w,
                        "    Type:       EmptyDir (a temporary directory that shares a pod's lifetime)"
                    );
                    let _ = writeln!(w, "    Medium:     {}", e.medium);
                    let _ = writeln!(w, "    SizeLimit:  {}", e.size_limit.as_deref().unwrap_or("<unset>"));
                }
                crate::manifest::VolumeKind::HostPath { path, kind } => {
                    let _ = writeln!(w, "    Type:          HostPath (bare host directory volume)");
                    let _ = writeln!(w, "    Path:          {path}");
                    let _ = writeln!(w, "    HostPathType:  {kind}");
                }
                crate::manifest::VolumeKind::Populated(v) => describe_populated(w, v),
            }
        }
    }
    let _ = writeln!(w, "QoS Class:        {}", st.qos_class.as_deref().unwrap_or(""));
    if p.events.is_empty() {
        let _ = writeln!(w, "Events:           <none>");
    } else {
        let _ = writeln!(w, "Events:");
        let mut rows = vec![vec![
            "  Type".to_string(),
            "Reason".into(),
            "Age".into(),
            "From".into(),
            "Message".into(),
        ]];
        rows.push(
            rows[0]
                .iter()
                .map(|h| format!("  {}", "-".repeat(h.trim().len())).trim_start().to_string())
                .collect(),
        );
        rows[1][0] = format!("  {}", rows[1][0]);
        for e in &p.events {
            rows.push(vec![
                format!("  {}", if e.warning { "Warning" } else { "Normal" }),
                e.reason.clone(),
                age(Some(e.time)),
                "peapod".into(),
                e.message.clone(),
            ]);
        }
        w.push_str(&columns(&rows));
    }
    out
}

/// `rows` as kubectl's tabwriter prints a block of `key:\tvalue` lines: each key padded
/// to the longest plus two spaces, indented by four.
fn describe_rows(out: &mut String, rows: &[(&str, String)]) {
    let width = rows.iter().map(|(k, _)| k.len() + 1).max().unwrap_or(0) + 2;
    for (k, v) in rows {
        let _ = writeln!(out, "    {:<width$}{v}", format!("{k}:"));
    }
}

/// A configMap, secret, downwardAPI or projected volume as kubectl describes it
/// (`describe.go`: `printConfigMapVolumeSource`, `printSecretVolumeSource`,
/// `printDownwardAPIVolumeSource`, `printProjectedVolumeSource`).
fn describe_populated(out: &mut String, v: &crate::volumes::PopulatedVolume) {
    use crate::config::ConfigSource;
    use crate::volumes::{Plugin, Projection};
    let object = |p: &Projection| match p {
        Projection::Object(o) => Some((o.source.clone(), o.optional)),
        Projection::DownwardApi(_) => None,
    };
    match v.plugin {
        Plugin::ConfigMap | Plugin::Secret => {
            let Some((source, optional)) = v.sources.first().and_then(object) else {
                return;
            };
            let (ty, key) = match source {
                ConfigSource::ConfigMap(_) => ("ConfigMap (a volume populated by a ConfigMap)", "Name"),
                ConfigSource::Secret(_) => ("Secret (a volume populated by a Secret)", "SecretName"),
            };
            describe_rows(
                out,
                &[
                    ("Type", ty.to_string()),
                    (key, source.name().to_string()),
                    ("Optional", optional.to_string()),
                ],
            );
        }
        Plugin::DownwardApi => {
            describe_rows(
                out,
                &[(
                    "Type",
                    "DownwardAPI (a volume populated by information about the pod)".into(),
                )],
            );
            let _ = writeln!(out, "    Items:");
            for p in &v.sources {
                if let Projection::DownwardApi(files) = p {
                    for f in files {
                        let _ = writeln!(out, "      {} -> {}", f.field_path, f.path);
                    }
                }
            }
        }
        Plugin::Projected => {
            let mut rows = vec![(
                "Type",
                "Projected (a volume that contains injected data from multiple sources)".to_string(),
            )];
            for p in &v.sources {
                match object(p) {
                    Some((ConfigSource::Secret(n), optional)) => {
                        rows.push(("SecretName", n));
                        rows.push(("SecretOptionalName", optional.to_string()));
                    }
                    Some((ConfigSource::ConfigMap(n), optional)) => {
                        rows.push(("ConfigMapName", n));
                        rows.push(("ConfigMapOptional", optional.to_string()));
                    }
                    None => rows.push(("DownwardAPI", "true".into())),
                }
            }
            describe_rows(out, &rows);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_like_kubectl() {
        let s = std::time::Duration::from_secs;
        assert_eq!(human_duration(s(45)), "45s");
        assert_eq!(human_duration(s(192)), "3m12s");
        assert_eq!(human_duration(s(25 * 60)), "25m");
        assert_eq!(human_duration(s(5 * 3600 + 180)), "5h3m");
        assert_eq!(human_duration(s(14 * 3600)), "14h");
        assert_eq!(human_duration(s(3 * 86_400 + 4 * 3600)), "3d4h");
        assert_eq!(human_duration(s(12 * 86_400)), "12d");
    }

    #[test]
    fn columns_align() {
        let t = columns(&[
            vec!["NAME".into(), "READY".into()],
            vec!["a-long-name".into(), "1/1".into()],
        ]);
        assert_eq!(t, "NAME          READY\na-long-name   1/1\n");
    }

    #[test]
    fn describe_shows_quantities_as_the_manifest_wrote_them() {
        let yaml = "apiVersion: v1\nkind: Pod\nmetadata: {name: q}\nspec:\n  containers:\n  - name: app\n    image: busybox\n    resources:\n      limits: {memory: 64Mi, cpu: 500m}\n      requests: {cpu: '0.25'}\n";
        let pod = crate::manifest::parse("q.yaml", yaml).unwrap();
        let plan = crate::manifest::plan(&pod, 1 << 34).unwrap();
        let status = PodStatus {
            container_statuses: Some(vec![ContainerStatus {
                name: "app".into(),
                image: "busybox".into(),
                ..Default::default()
            }]),
            ..Default::default()
        };
        let mut p = PodSummary {
            plan,
            manifest: Some(pod),
            uid: "u".into(),
            created: None,
            status,
            events: Vec::new(),
            runtime: "embedded".into(),
        };
        let text = describe(&p);
        assert!(
            text.contains("    Port:           <none>\n    Host Port:      <none>\n"),
            "{text}"
        );
        let limits = "    Limits:\n      cpu:     500m\n      memory:  64Mi\n";
        assert!(text.contains(limits), "{text}");
        assert!(text.contains("    Requests:\n      cpu:     0.25\n"), "{text}");
        // A record without its manifest shows the plan's numbers.
        p.manifest = None;
        let text = describe(&p);
        assert!(
            text.contains("      cpu:     500m\n      memory:  67108864\n"),
            "{text}"
        );
        assert!(text.contains("    Requests:\n      cpu:     250m\n"), "{text}");
    }

    #[test]
    fn describe_shows_populated_volumes_as_kubectl_does() {
        let yaml = "apiVersion: v1\nkind: Pod\nmetadata: {name: q}\nspec:\n  volumes:\n  - {name: cfg, configMap: {name: app-config}}\n  - {name: sec, secret: {secretName: app-secret, optional: true}}\n  - {name: info, downwardAPI: {items: [{path: labels, fieldRef: {fieldPath: metadata.labels}}]}}\n  - {name: all, projected: {sources: [{secret: {name: s}}, {downwardAPI: {items: []}}, {configMap: {name: c, optional: true}}]}}\n  containers: [{name: app, image: busybox}]\n";
        let pod = crate::manifest::parse("q.yaml", yaml).unwrap();
        let p = PodSummary {
            plan: crate::manifest::plan(&pod, 1 << 34).unwrap(),
            manifest: Some(pod),
            uid: "u".into(),
            created: None,
            status: PodStatus::default(),
            events: Vec::new(),
            runtime: "embedded".into(),
        };
        let text = describe(&p);
        for block in [
            "  cfg:\n    Type:      ConfigMap (a volume populated by a ConfigMap)\n    Name:      app-config\n    Optional:  false\n",
            "  sec:\n    Type:        Secret (a volume populated by a Secret)\n    SecretName:  app-secret\n    Optional:    true\n",
            "  info:\n    Type:  DownwardAPI (a volume populated by information about the pod)\n    Items:\n      metadata.labels -> labels\n",
            "  all:\n    Type:                Projected (a volume that contains injected data from multiple sources)\n    SecretName:          s\n    SecretOptionalName:  false\n    DownwardAPI:         true\n    ConfigMapName:       c\n    ConfigMapOptional:   true\n",
        ] {
            assert!(text.contains(block), "{block}\nnot in:\n{text}");
        }
    }

    #[test]
    fn describe_shows_ports_and_host_ports_as_kubectl_does() {
        let ports = |yaml: &str| {
            let pod = crate::manifest::parse("p.yaml", yaml).unwrap();
            crate::manifest::plan(&pod, 1 << 34).unwrap().containers[0]
                .ports
                .clone()
        };
        let mut out = String::new();
        describe_ports(
            &mut out,
            &ports("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: c, image: busybox, ports: [{containerPort: 80, hostPort: 8080}]}]}\n"),
        );
        assert_eq!(out, "    Port:           80/TCP\n    Host Port:      8080/TCP\n");
        out.clear();
        describe_ports(
            &mut out,
            &ports("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: c, image: busybox, ports: [{containerPort: 80, name: http}, {containerPort: 53, protocol: UDP, hostPort: 5353}]}]}\n"),
        );
        assert_eq!(
            out,
            "    Ports:          80/TCP (http), 53/UDP\n    Host Ports:     0/TCP, 5353/UDP\n"
        );
    }

    #[test]
    fn pods_show_image_pull_policies_defaulted_as_the_api_server_does() {
        let yaml = "apiVersion: v1\nkind: Pod\nmetadata: {name: q}\nspec:\n  initContainers: [{name: i, image: 'busybox:1.36'}]\n  containers:\n  - {name: a, image: busybox}\n  - {name: b, image: busybox, imagePullPolicy: Never}\n";
        let pod = crate::manifest::parse("q.yaml", yaml).unwrap();
        let plan = crate::manifest::plan(&pod, 1 << 34).unwrap();
        let p = PodSummary {
            plan,
            manifest: Some(pod),
            uid: "u".into(),
            created: None,
            status: PodStatus::default(),
            events: Vec::new(),
            runtime: "embedded".into(),
        };
        let spec = to_pod(&p).spec.unwrap();
        let policies: Vec<_> = spec
            .init_containers
            .iter()
            .flatten()
            .chain(&spec.containers)
            .map(|c| c.image_pull_policy.clone().unwrap_or_default())
            .collect();
        assert_eq!(policies, ["IfNotPresent", "Always", "Never"]);
    }
}
