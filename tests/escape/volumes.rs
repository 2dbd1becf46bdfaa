//! Class: volumes peapod fills with files as root on the host (`configMap`, `secret`,
//! `downwardAPI`, `projected`; `peapod::volumes`). Their item paths, keys and modes come
//! from the manifest, and the files are written into a directory of the pod's on the host
//! before any container runs (kubelet's atomic-writer layout), then bind-mounted read-only
//! into the containers. The attempts:
//!
//! - an item path or a key that climbs out of the volume (`../`, absolute, `..data/`, a
//!   timestamp directory's name, NUL, too long) or collides with another: refused naming
//!   the field (the API server's `validateKeyToPath`, `IsConfigMapKey`, kubelet's
//!   `atomic_writer.go` `validatePath`), with nothing written where the climb leads, no
//!   pod, state dir, mount or shim left;
//! - a mode with setuid, setgid or sticky bits, negative or over 0777: refused naming the
//!   field (the API server accepts 0..=0777), so no such bit reaches a file;
//! - symlinks planted on the way to a volume's directory (a previous run's leftovers, or
//!   anything else placed in the pod's data directory): peapod follows none of them, a
//!   host directory they name keeps its entries and mode and gets no mount;
//! - root in a container (default capabilities: no CAP_SYS_ADMIN) writing into, linking
//!   in, chmodding, remounting or unmounting the read-only volumes, and looking for their
//!   host path: every write is EROFS, every mount call EPERM, the host path is not in its
//!   root; the host's files keep their contents and hold no setuid, setgid or sticky bit.
//!
//! peapod's own inputs, so no runc twin. The tests run in embedded mode; CRI mode writes
//! the same volumes with the same code (`peapod::volumes::set_up`) after `RunPodSandbox`.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{ensure, Context, Result};

use super::{HostPod, SENTINEL};

/// A ConfigMap `cm` (keys `a`, `b`) and a Secret `s` (key `pw`), given with the pods.
const OBJECTS: &str = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cm}\ndata: {a: A, b: B}\n---\n\
     apiVersion: v1\nkind: Secret\nmetadata: {name: s}\nstringData: {pw: hunter2}\n";

/// A Pod `name` with volumes `volumes` (YAML list items, each `- name: ...`), each mounted
/// at `/<name>` in container `c`, which runs `script`; `objects` given with it.
fn manifest(name: &str, objects: &str, volumes: &[(&str, String)], script: &str) -> String {
    let mut vols = String::new();
    let mut mounts = String::new();
    for (v, source) in volumes {
        vols.push_str(&format!("  - name: {v}\n    {source}\n"));
        mounts.push_str(&format!("    - {{name: {v}, mountPath: /{v}}}\n"));
    }
    format!(
        "{objects}---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, labels: {{app: x}}}}\nspec:\n  restartPolicy: Never\n\
         \x20 volumes:\n{vols}  containers:\n  - name: c\n    image: busybox\n    imagePullPolicy: IfNotPresent\n\
         \x20   command: [sh, -c, {script:?}]\n    volumeMounts:\n{mounts}"
    )
}

/// A pod test's directories with a canary: `outside/canary`, a host directory holding
/// only the sentinel `keep`, mode 0755, that the escapes aim at.
struct Target {
    pod: HostPod,
}

impl Target {
    fn new(name: &str) -> Result<Self> {
        let pod = HostPod::new(name)?;
        let canary = pod.dir.path().join("outside/canary");
        fs::create_dir_all(&canary)?;
        fs::set_permissions(&canary, fs::Permissions::from_mode(0o755))?;
        fs::write(canary.join("keep"), SENTINEL)?;
        // The pod directories exist, so a climb through them resolves.
        fs::create_dir_all(pod.root().join("pods"))?;
        fs::create_dir_all(pod.state().join("pods"))?;
        Ok(Self { pod })
    }

    fn canary(&self) -> PathBuf {
        self.pod.dir.path().join("outside/canary")
    }

    /// A relative path from a volume's data directory
    /// (`root/pods/<key>/volumes/<plugin>/<volume>/..<time>`) to `outside/canary/x`, and
    /// one that climbs far past `/` and comes down to it by its absolute path.
    fn climbs(&self) -> [String; 2] {
        let canary = self.canary();
        [
            format!("{}outside/canary/x", "../".repeat(7)),
            format!(
                "{}{}/x",
                "../".repeat(32),
                canary.to_string_lossy().trim_start_matches('/')
            ),
        ]
    }

    /// Everything under the test's directory but `pod.yaml`, not following symlinks: kind,
    /// mode, and a file's content or a link's target.
    fn snapshot(&self) -> Result<BTreeMap<PathBuf, String>> {
        let root = self.pod.dir.path();
        let mut out = BTreeMap::new();
        let mut todo = vec![root.to_path_buf()];
        while let Some(d) = todo.pop() {
            for e in fs::read_dir(&d).with_context(|| format!("read {}", d.display()))? {
                let p = e?.path();
                if p == root.join("pod.yaml") {
                    continue;
                }
                let m = fs::symlink_metadata(&p)?;
                let mode = m.permissions().mode();
                let what = if m.is_dir() {
                    todo.push(p.clone());
                    format!("dir {mode:o}")
                } else if m.file_type().is_symlink() {
                    format!("link {mode:o} -> {}", fs::read_link(&p)?.display())
                } else {
                    format!("file {mode:o} {:?}", fs::read(&p)?)
                };
                out.insert(p.strip_prefix(root)?.to_path_buf(), what);
            }
        }
        Ok(out)
    }

    /// The canary holds only its sentinel, with its mode, and nothing is mounted there.
    fn assert_canary_intact(&self) -> Result<()> {
        let canary = self.canary();
        let meta = fs::symlink_metadata(&canary).context("the canary directory is gone")?;
        ensure!(
            meta.is_dir() && meta.permissions().mode() & 0o7777 == 0o755,
            "the canary {} was changed: {meta:?}",
            canary.display()
        );
        let names: Vec<String> = fs::read_dir(&canary)?
            .map(|e| Ok(e?.file_name().to_string_lossy().into_owned()))
            .collect::<Result<_>>()?;
        ensure!(
            names == ["keep"],
            "peapod wrote into the canary {}: {names:?}",
            canary.display()
        );
        ensure!(
            fs::read_to_string(canary.join("keep"))? == SENTINEL,
            "the canary's sentinel changed"
        );
        let mounts = fs::read_to_string("/proc/self/mountinfo")?;
        ensure!(
            !mounts.contains(&*canary.to_string_lossy()),
            "a mount on the canary: {mounts}"
        );
        Ok(())
    }

    /// No pod is recorded or has directories, nothing is mounted below the test's
    /// directory, and no shim of the pod runs.
    fn assert_no_pod(&self) -> Result<()> {
        for dir in [self.pod.root().join("pods"), self.pod.state().join("pods")] {
            let left: Vec<PathBuf> = fs::read_dir(&dir)
                .into_iter()
                .flatten()
                .map(|e| Ok(e?.path()))
                .collect::<Result<_>>()?;
            ensure!(left.is_empty(), "a refused run left {left:?}");
        }
        let mounts = fs::read_to_string("/proc/self/mountinfo")?;
        ensure!(
            !mounts.contains(&*self.pod.dir.path().to_string_lossy()),
            "leak: a mount under {}",
            self.pod.dir.path().display()
        );
        let shims: Vec<String> = fs::read_dir("/proc")?
            .flatten()
            .filter_map(|e| fs::read(e.path().join("cmdline")).ok())
            .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
            .filter(|c| c.contains("containerd-shim-peapod-v2") && c.contains(&self.pod.key()))
            .collect();
        ensure!(shims.is_empty(), "leak: a shim runs: {shims:?}");
        Ok(())
    }

    /// Runs `manifest`: it must exit 1 with an error holding every word of `want`, and
    /// change nothing under the test's directory (the canary included), leaving no pod.
    fn assert_refused(&self, manifest: &str, want: &[&str]) -> Result<()> {
        let before = self.snapshot()?;
        let out = self.pod.run_manifest(manifest)?;
        let after = self.snapshot()?;
        ensure!(
            out.code == 1,
            "exit {}, want 1: {out:?}\nmanifest:\n{manifest}",
            out.code
        );
        for w in want {
            ensure!(out.stderr.contains(w), "want {w:?} in {:?}", out.stderr);
        }
        let changed: Vec<_> = before
            .iter()
            .filter(|(p, w)| after.get(*p) != Some(w))
            .map(|(p, _)| p)
            .chain(after.keys().filter(|p| !before.contains_key(*p)))
            .collect();
        ensure!(
            changed.is_empty(),
            "a refused run changed {changed:?}: {:?}",
            out.stderr
        );
        self.assert_canary_intact()?;
        self.assert_no_pod()
    }
}

/// The pod's name for this test process.
fn pod_name(what: &str) -> String {
    format!("escape-{what}-{}", std::process::id())
}

/// A configMap volume `v` of `cm` projecting `items` (YAML flow list).
fn config_map(items: &str) -> String {
    format!("configMap: {{name: cm, items: {items}}}")
}

/// Item paths and keys that lead out of the volume or collide: each refused by name.
pub(crate) fn volume_item_paths_and_keys_cannot_leave_the_volume() -> Result<()> {
    let name = pod_name("volpath");
    let t = Target::new(&name)?;
    let abs = format!("{}/x", t.canary().display());
    let [climb, deep] = t.climbs();
    let items = "spec.volumes[0].configMap.items";
    let mut cases: Vec<(String, String, Vec<String>)> = Vec::new();
    let mut case = |volume: String, field: &str, why: &str| {
        cases.push((OBJECTS.to_string(), volume, vec![field.to_string(), why.to_string()]))
    };
    let dotdot = "must not contain '..'";
    let reserved = "must not start with '..'";
    for path in [
        climb.clone(),
        deep.clone(),
        format!("a/../{climb}"),
        "..".into(),
        "x/..".into(),
        "./../x".into(),
    ] {
        case(
            config_map(&format!("[{{key: a, path: {path:?}}}]")),
            &format!("{items}[0].path"),
            dotdot,
        );
    }
    case(
        config_map(&format!("[{{key: a, path: {abs:?}}}]")),
        &format!("{items}[0].path"),
        "must be a relative path",
    );
    // kubelet's own names in the volume: the `..data` link and the timestamped directory.
    for path in ["..data/x", "..data", "..2024_01_01_00_00_00.1/x", "./..data_tmp"] {
        case(
            config_map(&format!("[{{key: a, path: {path:?}}}]")),
            &format!("{items}[0].path"),
            reserved,
        );
    }
    case(
        config_map("[{key: a, path: .}]"),
        &format!("{items}[0].path"),
        "not the volume itself",
    );
    case(
        config_map("[{key: ../a, path: x}]"),
        &format!("{items}[0].key"),
        "a valid config key",
    );
    // Over kubelet's limits (`validatePath`): the whole path and one element.
    let long = format!("{}a", "a/".repeat(2048));
    case(
        config_map(&format!("[{{key: a, path: {long}}}]")),
        &format!("{items}[0].path"),
        "no more than 4096 bytes",
    );
    let element = "e".repeat(256);
    case(
        config_map(&format!("[{{key: a, path: x/{element}}}]")),
        &format!("{items}[0].path"),
        "no more than 255 bytes",
    );
    // NUL: no file name can hold it (the kernel would end the path there), with and
    // without a climb behind it.
    case(
        config_map("[{key: a, path: \"x\\0/../../y\"}]"),
        &format!("{items}[0].path"),
        dotdot,
    );
    case(
        config_map("[{key: a, path: \"x\\0y\"}]"),
        &format!("{items}[0].path"),
        "NUL",
    );
    // Two items on one file, or a file where another needs a directory.
    case(
        config_map("[{key: a, path: x}, {key: b, path: ./x}]"),
        &format!("{items}[1].path"),
        "conflicting duplicate paths",
    );
    case(
        config_map("[{key: a, path: x}, {key: b, path: x/y}]"),
        &format!("{items}[1].path"),
        "conflicting duplicate paths",
    );
    case(
        "projected: {sources: [{configMap: {name: cm}}, {downwardAPI: {items: [{path: a/y, fieldRef: {fieldPath: metadata.name}}]}}]}".into(),
        "spec.volumes[0]: FailedMount",
        "\"a\" is a file",
    );
    // The other plugins' paths.
    case(
        format!("secret: {{secretName: s, items: [{{key: pw, path: {climb:?}}}]}}"),
        "spec.volumes[0].secret.items[0].path",
        dotdot,
    );
    case(
        format!("downwardAPI: {{items: [{{path: {deep:?}, fieldRef: {{fieldPath: metadata.name}}}}]}}"),
        "spec.volumes[0].downwardAPI.items[0].path",
        dotdot,
    );
    case(
        format!("projected: {{sources: [{{configMap: {{name: cm, items: [{{key: a, path: ok}}]}}}}, {{downwardAPI: {{items: [{{path: {abs:?}, fieldRef: {{fieldPath: metadata.uid}}}}]}}}}]}}"),
        "spec.volumes[0].projected.sources[1].downwardAPI.items[0].path",
        "must be a relative path",
    );
    // Keys become file names when no items are given: the objects' own keys are checked.
    for (objects, field) in [
        (
            OBJECTS.replace("{a: A, b: B}", "{\"../x\": A}"),
            "ConfigMap cm data[../x]",
        ),
        (
            OBJECTS.replace("data: {a: A, b: B}", "binaryData: {..data: QQ==}"),
            "ConfigMap cm binaryData[..data]",
        ),
        (
            OBJECTS.replace("{pw: hunter2}", "{\"../../x\": hunter2}"),
            "Secret s stringData[../../x]",
        ),
        (
            OBJECTS.replace("stringData: {pw: hunter2}", "data: {a/b: QQ==}"),
            "Secret s data[a/b]",
        ),
        (OBJECTS.replace("{a: A, b: B}", "{\"..\": A}"), "ConfigMap cm data[..]"),
    ] {
        let volume = if field.starts_with("Secret") {
            "secret: {secretName: s}"
        } else {
            "configMap: {name: cm}"
        };
        cases.push((objects, volume.to_string(), vec![field.to_string()]));
    }
    for (objects, volume, want) in &cases {
        let m = manifest(&name, objects, &[("v", volume.clone())], "sleep 3600");
        let want: Vec<&str> = want.iter().map(String::as_str).collect();
        t.assert_refused(&m, &want)
            .with_context(|| format!("volume {volume}, objects {objects:?}"))?;
    }
    Ok(())
}

/// Modes with setuid, setgid or sticky bits, negative or over 0777: refused by name.
pub(crate) fn volume_modes_with_setuid_bits_are_refused() -> Result<()> {
    let name = pod_name("volmode");
    let t = Target::new(&name)?;
    let range = "must be a number between 0 and 0777 (octal), both inclusive";
    for (volume, field) in [
        (
            "configMap: {name: cm, defaultMode: 04755}",
            "spec.volumes[0].configMap.defaultMode",
        ),
        (
            "configMap: {name: cm, defaultMode: 0o4755}",
            "spec.volumes[0].configMap.defaultMode",
        ),
        (
            "configMap: {name: cm, items: [{key: a, path: a, mode: 07777}]}",
            "spec.volumes[0].configMap.items[0].mode",
        ),
        (
            "configMap: {name: cm, items: [{key: a, path: a, mode: -1}]}",
            "spec.volumes[0].configMap.items[0].mode",
        ),
        (
            "secret: {secretName: s, defaultMode: 512}",
            "spec.volumes[0].secret.defaultMode",
        ),
        (
            "secret: {secretName: s, items: [{key: pw, path: p, mode: 01777}]}",
            "spec.volumes[0].secret.items[0].mode",
        ),
        (
            "downwardAPI: {items: [{path: n, mode: 02755, fieldRef: {fieldPath: metadata.name}}]}",
            "spec.volumes[0].downwardAPI.items[0].mode",
        ),
        (
            "projected: {defaultMode: 06777, sources: [{configMap: {name: cm}}]}",
            "spec.volumes[0].projected.defaultMode",
        ),
        (
            "projected: {sources: [{secret: {name: s, items: [{key: pw, path: p, mode: -2147483648}]}}]}",
            "spec.volumes[0].projected.sources[0].secret.items[0].mode",
        ),
    ] {
        let m = manifest(&name, OBJECTS, &[("v", volume.to_string())], "sleep 3600");
        t.assert_refused(&m, &[field, range])
            .with_context(|| format!("volume {volume}"))?;
    }
    Ok(())
}

/// Symlinks to a host directory planted on the way to a volume's directory before the run
/// (as a previous run could leave the pod's data directory, or anything with root on the
/// host): the run is refused naming the planted path, and neither the run nor its cleanup
/// writes, chmods, mounts or removes anything in the directory the link names.
pub(crate) fn symlinks_planted_on_the_way_to_a_volume_are_not_followed() -> Result<()> {
    let name = pod_name("volplant");
    let t = Target::new(&name)?;
    t.pod.import()?;
    let key = t.pod.key();
    let volumes = [
        ("cfg", "configMap: {name: cm}".to_string()),
        ("sec", "secret: {secretName: s}".to_string()),
    ];
    let m = manifest(&name, OBJECTS, &volumes, "echo ready; sleep 3600");
    let data = t.pod.root().join("pods").join(&key);
    for planted in [
        String::new(),
        "volumes".into(),
        "volumes/kubernetes.io~configmap".into(),
        "volumes/kubernetes.io~secret".into(),
        "volumes/kubernetes.io~configmap/cfg".into(),
        "volumes/kubernetes.io~secret/sec".into(),
    ] {
        let link = if planted.is_empty() {
            data.clone()
        } else {
            data.join(&planted)
        };
        let parent = link.parent().context("a parent")?;
        fs::create_dir_all(parent)?;
        symlink(t.canary(), &link)?;
        let out = t.pod.run_manifest(&m)?;
        let deleted = if out.code == 0 {
            Some(t.pod.peapod(&["delete", "pod", &name, "--grace-period", "0"])?)
        } else {
            None
        };
        let result = (|| {
            t.assert_canary_intact()?;
            ensure!(
                deleted.is_none(),
                "the run through the planted link succeeded: {out:?}, then {deleted:?}"
            );
            ensure!(out.code == 1, "exit {}, want 1: {out:?}", out.code);
            ensure!(
                out.stderr.contains(&*link.to_string_lossy())
                    && (out.stderr.contains("a symlink, not a directory: not followed")
                        || out.stderr.contains("File exists")),
                "the error does not name the planted link {}: {:?}",
                link.display(),
                out.stderr
            );
            t.assert_no_pod()
        })();
        // Whatever is left of the pod's data directory goes (not following links).
        if fs::symlink_metadata(&data).is_ok_and(|m| m.is_dir()) {
            fs::remove_dir_all(&data)?;
        } else if fs::symlink_metadata(&data).is_ok() {
            fs::remove_file(&data)?;
        }
        result.with_context(|| format!("planted {}", link.display()))?;
    }
    Ok(())
}

/// What each attempt of the container prints on one line: `<attempt> <dir>: <output>`,
/// with `WROTE` appended when the command succeeded.
const ATTEMPTS: &str = r#"
try() { what=$1; shift; echo "$what: $("$@" 2>&1 && echo WROTE)"; }
for d in /cfg /sec /info /all; do
  try "create $d" touch $d/new
  try "overwrite $d" sh -c "echo x > $d/a"
  try "unlink $d" rm -f $d/..data
  try "link $d" ln -s / $d/root
  try "mkdir $d" mkdir $d/dir
  try "chmod $d" chmod 4777 $d/..data/a
  try "remount $d" mount -o remount,rw $d
  try "rebind $d" mount -o remount,bind,rw $d
  try "umount $d" umount $d
  try "overmount $d" mount -t tmpfs tmpfs $d
  try "again $d" touch $d/new
done
hp=$(awk '$5 == "/cfg" { print $4 }' /proc/self/mountinfo)
echo "hostpath: $hp: $(ls -d "$hp" 2>&1)"
echo "suid: $(find /cfg/ /sec/ /info/ /all/ -name 'lll*' -prune -o -perm -1000 -print 2>&1)"
echo ready
trap 'exit 0' TERM; sleep 3600 & wait
"#;

/// Root in a container (default capabilities) cannot write into, relink, chmod, remount
/// or unmount its configMap, secret, downwardAPI and projected volumes, nor reach the
/// configMap volume's host path; the host's files keep their contents, lie inside the
/// volume, and no file or directory has a setuid, setgid or sticky bit, the widest modes
/// allowed (0777) included. A 4095-byte item path and one with a newline are written
/// inside the volume too.
pub(crate) fn populated_volumes_are_read_only_and_hold_no_setuid_bit() -> Result<()> {
    let name = pod_name("volro");
    let long: String = vec!["l".repeat(255); 16].join("/");
    let volumes = [
        (
            "cfg",
            format!(
                "configMap: {{name: cm, defaultMode: 0777, items: [{{key: a, path: a}}, {{key: b, path: \"x\\ny\", mode: 0}}, {{key: b, path: {long}}}]}}"
            ),
        ),
        ("sec", "secret: {secretName: s, defaultMode: 0400, items: [{key: pw, path: a}]}".into()),
        (
            "info",
            "downwardAPI: {items: [{path: a, fieldRef: {fieldPath: metadata.name}, mode: 0777}]}".into(),
        ),
        (
            "all",
            "projected: {sources: [{configMap: {name: cm, items: [{key: a, path: a}]}}, {secret: {name: s, items: [{key: pw, path: d/pw}]}}, {downwardAPI: {items: [{path: labels, fieldRef: {fieldPath: metadata.labels}}]}}]}".into(),
        ),
        ("scratch", "emptyDir: {}".into()),
    ];
    let m = manifest(&name, OBJECTS, &volumes, ATTEMPTS);
    HostPod::run(&name, &m)?.check_then_delete(|pod| {
        let log = pod.wait_ready("c")?;
        let volumes_dir = pod.root().join("pods").join(pod.key()).join("volumes");
        let mut checked = 0;
        for line in log.lines().filter(|l| l.contains(": ")) {
            let (what, got) = line.split_once(": ").context("a line")?;
            let verb = what.split(' ').next().unwrap_or_default();
            let want = match verb {
                "create" | "overwrite" | "unlink" | "link" | "mkdir" | "chmod" | "again" => "Read-only file system",
                "remount" | "rebind" | "overmount" => "permission denied",
                "umount" => "Operation not permitted",
                _ => continue,
            };
            ensure!(
                got.contains(want) && !got.contains("WROTE"),
                "the container got through: {line:?} (want {want:?})\n{log}"
            );
            checked += 1;
        }
        ensure!(checked == 44, "{checked} attempts reported, want 44:\n{log}");
        // The configMap volume's host path (the bind's root in the container's mountinfo:
        // the path inside the host filesystem holding it, `/tmp/...` here, `/...` where
        // /tmp is a tmpfs of its own, as in the VM) is not in the container's root.
        let host = log
            .lines()
            .find_map(|l| l.strip_prefix("hostpath: "))
            .context("no hostpath line")?;
        let (path, ls) = host.split_once(": ").context("hostpath line")?;
        let cfg = volumes_dir.join("kubernetes.io~configmap/cfg");
        ensure!(
            path.len() > 1 && cfg.to_string_lossy().ends_with(path) && ls.contains("No such file or directory"),
            "the container reached {path:?} (the volume is at {}): {ls}",
            cfg.display()
        );
        let suid = log
            .lines()
            .find_map(|l| l.strip_prefix("suid: "))
            .context("no suid line")?;
        ensure!(
            suid.is_empty(),
            "setuid, setgid or sticky files in the container's volumes: {suid}"
        );
        // On the host: contents unchanged, modes as asked, no special bit, nothing
        // pointing out of its volume.
        let read =
            |v: &str, p: &str| fs::read_to_string(volumes_dir.join(v).join(p)).with_context(|| format!("{v}/{p}"));
        let mode = |v: &str, p: &str| -> Result<u32> {
            Ok(fs::metadata(volumes_dir.join(v).join(p))?.permissions().mode() & 0o7777)
        };
        let cm = "kubernetes.io~configmap/cfg";
        ensure!(read(cm, "a")? == "A" && mode(cm, "a")? == 0o777, "cfg/a");
        ensure!(read(cm, "x\ny")? == "B" && mode(cm, "x\ny")? == 0, "cfg/x\\ny");
        ensure!(read("kubernetes.io~secret/sec", "a")? == "hunter2", "sec/a");
        ensure!(mode("kubernetes.io~secret/sec", "a")? == 0o400, "sec/a mode");
        ensure!(read("kubernetes.io~downward-api/info", "a")? == pod.name, "info/a");
        ensure!(read("kubernetes.io~projected/all", "d/pw")? == "hunter2", "all/d/pw");
        let mut long_found = false;
        walk(&volumes_dir, &mut |p, stat, link| {
            ensure!(
                stat.st_mode & 0o7000 == 0,
                "{} has mode {:o}",
                p.display(),
                stat.st_mode
            );
            if let Some(target) = link {
                // Relative, and without a `..` element (kubelet's `..data` and `..<time>`
                // are names): it stays in its directory.
                ensure!(
                    !target.starts_with('/') && !target.split('/').any(|e| e == ".."),
                    "{} -> {target}: leads out of the volume",
                    p.display()
                );
            }
            if p.to_string_lossy().ends_with(&format!("/{long}")) {
                long_found = stat.st_mode & 0o170000 == 0o100000 && stat.st_size == 1;
            }
            Ok(())
        })?;
        ensure!(long_found, "the 4095-byte item path was not written in cfg");
        Ok(())
    })
}

/// What [`walk`] calls for each entry.
type Visit<'a> = dyn FnMut(&Path, &libc::stat, Option<String>) -> Result<()> + 'a;

/// Calls `check` with each entry under `root` (not following symlinks): its path, its
/// `lstat`, and a symlink's target. Relative to directory fds, so paths past `PATH_MAX`
/// (a 4095-byte item path inside a volume's directory) are walked too.
fn walk(root: &Path, check: &mut Visit) -> Result<()> {
    use nix::fcntl::{openat, readlinkat, AtFlags, OFlag};
    use nix::sys::stat::{fstatat, Mode};
    let dir_flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let fd = nix::fcntl::open(root, dir_flags, Mode::empty()).with_context(|| format!("open {}", root.display()))?;
    let mut todo = vec![(fd, root.to_path_buf())];
    while let Some((fd, path)) = todo.pop() {
        let names: Vec<std::ffi::OsString> = nix::dir::Dir::from_fd(fd.try_clone()?)?
            .iter()
            .map(|e| Ok(e?.file_name().to_bytes().to_vec()))
            .collect::<Result<Vec<Vec<u8>>>>()?
            .into_iter()
            .map(std::os::unix::ffi::OsStringExt::from_vec)
            .filter(|n| n != "." && n != "..")
            .collect();
        for name in names {
            let p = path.join(&name);
            let stat = fstatat(&fd, name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW)
                .with_context(|| format!("lstat {}", p.display()))?;
            let kind = stat.st_mode & libc::S_IFMT;
            let link = if kind == libc::S_IFLNK {
                Some(readlinkat(&fd, name.as_os_str())?.to_string_lossy().into_owned())
            } else {
                None
            };
            check(&p, &stat, link)?;
            if kind == libc::S_IFDIR {
                todo.push((openat(&fd, name.as_os_str(), dir_flags, Mode::empty())?, p));
            }
        }
    }
    Ok(())
}
