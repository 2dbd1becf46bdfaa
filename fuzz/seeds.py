#!/usr/bin/env python3
"""Writes the fuzz targets' seed inputs into fuzz/corpus/<target>/ (run once, from the
repository root; `make fuzz` grows and `cargo fuzz cmin` minimizes the corpus from there).
Protobuf messages are encoded by hand, field numbers from containerd's and CRI's .proto
files (containerd api/runtime/task/v2/shim.proto, api/runtime/sandbox/v1/sandbox.proto,
proto/protos/*.proto here)."""
import gzip, io, json, os, shutil, struct, subprocess, tarfile, tempfile

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")

def put(target, name, data):
    d = os.path.join(ROOT, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())

def varint(n):
    n &= (1 << 64) - 1
    out = b""
    while True:
        b = n & 0x7F
        n >>= 7
        out += bytes([b | (0x80 if n else 0)])
        if not n:
            return out

def f_varint(num, v): return varint(num << 3) + varint(v)
def f_bytes(num, b):
    b = b if isinstance(b, bytes) else b.encode()
    return varint(num << 3 | 2) + varint(len(b)) + b
def f_map(num, d): return b"".join(f_bytes(num, f_bytes(1, k) + f_bytes(2, v)) for k, v in d.items())
def any_(url, value): return f_bytes(1, url) + f_bytes(2, value)

# manifest: the examples.
ex = os.path.join(os.path.dirname(ROOT), "..", "examples")
os.makedirs(os.path.join(ROOT, "manifest"), exist_ok=True)
for n in sorted(os.listdir(ex)):
    if n.endswith(".yaml"):
        shutil.copy(os.path.join(ex, n), os.path.join(ROOT, "manifest", n))

# oci_spec: runc's default spec, its root in the bundle `/` (tmp), plus a seccomp profile.
with tempfile.TemporaryDirectory() as d:
    subprocess.run(["runc", "spec"], cwd=d, check=True)
    spec = json.load(open(os.path.join(d, "config.json")))
spec["root"] = {"path": "tmp", "readonly": True}
put("oci_spec", "runc-default.json", json.dumps(spec))
spec["linux"]["seccomp"] = {
    "defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 1, "architectures": ["SCMP_ARCH_X86_64"],
    "syscalls": [{"names": ["read", "write", "exit_group"], "action": "SCMP_ACT_ALLOW"},
                 {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
                  "args": [{"index": 0, "value": 0, "op": "SCMP_CMP_EQ"}]}]}
spec["linux"]["resources"] = {"memory": {"limit": 67108864}, "cpu": {"shares": 512, "quota": 50000, "period": 100000, "cpus": "0-1"}, "pids": {"limit": 100}}
spec["linux"]["sysctl"] = {"net.ipv4.ip_forward": "1", "kernel.shm_rmid_forced": "1"}
spec["annotations"] = {"io.kubernetes.cri.container-type": "container", "io.kubernetes.cri.sandbox-id": "pod1",
                       "io.peapod.name": "app", "io.peapod.role": "sidecar",
                       "io.peapod.volume-mounts": '[{"name":"cache","mountPath":"/cache","readOnly":true}]'}
put("oci_spec", "seccomp-resources.json", json.dumps(spec))

# annotations: key=value lines.
put("annotations", "sandbox", "\n".join([
    "io.kubernetes.cri.container-type=sandbox",
    'io.peapod.containers=[{"name":"setup","role":"init"},{"name":"log","role":"sidecar"},{"name":"web","role":"app"}]',
    'io.peapod.empty-dirs=[{"name":"cache","medium":"Memory","sizeLimit":"16Mi"},{"name":"data"}]',
    "io.peapod.grace-period=30", "io.peapod.pod-cpu-request=250m", "io.peapod.pod-cpu-limit=1500m",
    "io.peapod.pod-memory-limit=128Mi", "io.peapod.restart-policy=Always",
    "io.kubernetes.cri.sandbox-cpu-period=100000", "io.kubernetes.cri.sandbox-cpu-quota=150000",
    "io.kubernetes.cri.sandbox-cpu-shares=256", "io.kubernetes.cri.sandbox-memory=134217728",
    "io.kubernetes.pod.terminationGracePeriod=45"]))
put("annotations", "container", "\n".join([
    "io.kubernetes.cri.container-type=container", "io.kubernetes.cri.sandbox-id=pod1",
    "io.kubernetes.cri.container-name=web", "io.peapod.name=web", "io.peapod.role=app",
    'io.peapod.volume-mounts=[{"name":"cache","mountPath":"/cache","readOnly":true}]',
    "io.kubernetes.pod.terminationGracePeriod=10"]))
with open(os.path.join(os.path.dirname(ROOT), "dicts", "annotations.dict"), "w") as f:
    for k in ["io.kubernetes.cri.container-type", "sandbox", "container", "io.kubernetes.cri.sandbox-id",
              "io.kubernetes.cri.container-name", "io.kubernetes.cri.sandbox-cpu-period",
              "io.kubernetes.cri.sandbox-cpu-quota", "io.kubernetes.cri.sandbox-cpu-shares",
              "io.kubernetes.cri.sandbox-memory", "io.kubernetes.pod.terminationGracePeriod",
              "io.peapod.role", "io.peapod.name", "io.peapod.containers", "io.peapod.grace-period",
              "io.peapod.pod-cpu-request", "io.peapod.pod-cpu-limit", "io.peapod.pod-memory-limit",
              "io.peapod.empty-dirs", "io.peapod.volume-mounts", "io.peapod.restart-policy",
              "init", "sidecar", "app", "Memory", "sizeLimit", "mountPath", "readOnly", "medium",
              "Always", "OnFailure", "Never", "Mi", "Gi", "Ei", "m", "e3"]:
        f.write(json.dumps(k) + "\n")

# layer: tar streams, plain and gzipped, with what an image layer holds and what it must not do.
def tar(entries, gz=False):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for name, kind, data in entries:
            i = tarfile.TarInfo(name)
            i.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
            i.type = kind
            if kind == tarfile.SYMTYPE or kind == tarfile.LNKTYPE:
                i.linkname = data
                t.addfile(i)
            elif kind == tarfile.REGTYPE:
                i.size = len(data)
                t.addfile(i, io.BytesIO(data))
            else:
                t.addfile(i)
    raw = buf.getvalue()
    return gzip.compress(raw) if gz else raw
D, F, S, L = tarfile.DIRTYPE, tarfile.REGTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE
base = [("etc", D, None), ("etc/passwd", F, b"root:x:0:0::/root:/bin/sh\n"), ("bin", D, None),
        ("bin/sh", F, b"#!"), ("bin/ash", L, "bin/sh"), ("lib", S, "usr/lib"), ("usr/lib", D, None)]
put("layer", "base.tar", tar(base))
put("layer", "base.tar.gz", tar(base, gz=True))
put("layer", "whiteouts.tar", tar([("etc", D, None), ("etc/.wh.passwd", F, b""), ("usr/.wh..wh..opq", F, b""),
                                   (".wh..wh..opq", F, b"")]))
put("layer", "escapes.tar", tar([("../outside", F, b"x"), ("/abs", F, b"x"), ("up", S, "../.."),
                                 ("up/b/sentinel", F, b"x"), ("root", S, "/"), ("root/tmp/x", F, b"x"),
                                 ("hl", L, "../sentinel"), (".wh...", F, b""), ("a/.wh..", F, b"")]))
put("layer", "dir-then-symlink.tar", tar([("d", D, None), ("d/f", F, b"x"), ("d", S, ".."), ("d/g", F, b"x")]))
fifo = tarfile.TarInfo("dev/fifo"); fifo.type = tarfile.FIFOTYPE
put("layer", "special.tar", tar([("dev", D, None), ("dev/fifo", tarfile.FIFOTYPE, None),
                                 ("dev/null", tarfile.CHRTYPE, None)]))

# image_documents: an index, a manifest, a config.
dig = "sha256:" + "a" * 64
put("image_documents", "index.json", json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
    "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": dig, "size": 7,
                   "platform": {"os": "linux", "architecture": "amd64"},
                   "annotations": {"io.containerd.image.name": "docker.io/library/busybox:latest",
                                   "org.opencontainers.image.ref.name": "latest"}},
                  {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": dig, "size": 7,
                   "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}}]}))
put("image_documents", "manifest.json", json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": dig, "size": 2},
    "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": dig, "size": 100}]}))
put("image_documents", "config.json", json.dumps({"created": "2024-01-01T00:00:00Z", "architecture": "amd64", "os": "linux",
    "config": {"User": "1000:1000", "Env": ["PATH=/bin"], "Entrypoint": ["/bin/sh"], "Cmd": ["-c", "true"],
               "WorkingDir": "/", "ExposedPorts": {"80/tcp": {}}, "Labels": {"a": "b"}, "StopSignal": "SIGTERM"},
    "rootfs": {"type": "layers", "diff_ids": [dig]}}))

# cri_log: flags byte, then records.
log = ("2016-10-06T00:17:09.669794202Z stdout F hello world\n"
       "2016-10-06T00:17:09.669794203Z stderr P part one \n"
       "2016-10-06T00:17:10+02:00 stderr F part two\n"
       "yesterday stdout F bad\n"
       "2016-10-06T00:17:11Z stdout F unterminated")
put("cri_log", "records", b"\x07" + log.encode())
put("cri_log", "plain", b"\x00" + log.encode())

# event_log: length-delimited Envelopes (timestamp 1, namespace 2, topic 3, event 4).
def envelope(topic, url, value):
    return f_bytes(1, f_varint(1, 1700000000) + f_varint(2, 5)) + f_bytes(2, "default") + f_bytes(3, topic) + f_bytes(4, any_(url, value))
recs = [envelope("/tasks/start", "containerd.events.TaskStart", f_bytes(1, "c1") + f_varint(2, 42)),
        envelope("/tasks/exit", "containerd.events.TaskExit", f_bytes(1, "c1") + f_bytes(2, "c1") + f_varint(3, 42) + f_varint(4, 137))]
put("event_log", "two", b"".join(varint(len(r)) + r for r in recs))
put("event_log", "torn", (b"".join(varint(len(r)) + r for r in recs))[:-3])

# task_request: selector byte, then the request.
exec_spec = json.dumps({"args": ["sh", "-c", "echo ok"], "cwd": "/", "env": ["PATH=/bin"], "user": {"uid": 0, "gid": 0},
                        "terminal": False, "capabilities": {"bounding": ["CAP_KILL"]},
                        "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}], "noNewPrivileges": True})
put("task_request", "0-create", b"\x00" + f_bytes(1, "c1") + f_bytes(2, "/run/bundle") + f_bytes(5, "/fifo/in") + f_bytes(10, any_("containerd.runc.v1.Options", b"")))
put("task_request", "0-create-checkpoint", b"\x00" + f_bytes(1, "c1") + f_bytes(8, "/cp"))
put("task_request", "1-exec", b"\x01" + f_bytes(1, "c1") + f_bytes(2, "e1") + f_bytes(5, "/fifo/out") + f_bytes(7, any_("types.containerd.io/opencontainers/runtime-spec/1/Process", exec_spec)))
put("task_request", "2-kill", b"\x02" + f_bytes(1, "c1") + f_varint(3, 9) + f_varint(4, 1))
put("task_request", "2-kill-bad", b"\x02" + f_bytes(1, "c1") + f_varint(3, 4294967295))
put("task_request", "3-update", b"\x03" + f_bytes(1, "c1") + f_bytes(2, any_("x", json.dumps({"memory": {"limit": 1 << 26}, "cpu": {"shares": 2}}))))
put("task_request", "3-update-grace", b"\x03" + f_bytes(1, "c1") + f_map(3, {"io.peapod.grace-period": "30"}))
for i in range(5, 16):
    put("task_request", f"{i}-plain", bytes([i]) + f_bytes(1, "c1") + f_bytes(2, "e1") + f_varint(3, 80) + f_varint(4, 24))

# pod_sandbox: PodSandboxConfig; task_request 4: CreateSandboxRequest carrying one.
def pod_config(network=0, cgroup="kubepods-besteffort.slice", userns=None, resources=True):
    ns = f_varint(1, network) + f_varint(2, 1) + f_varint(3, 0)
    if userns is not None:
        ns += f_bytes(5, f_varint(1, userns))
    sec = f_bytes(1, ns) + f_bytes(3, f_varint(1, 1000)) + f_varint(5, 100) + f_bytes(8, f_varint(1, 1000))
    linux = f_bytes(1, cgroup) + f_bytes(2, sec) + f_map(3, {"net.ipv4.ip_unprivileged_port_start": "0"})
    if resources:
        linux += f_bytes(5, f_varint(1, 100000) + f_varint(2, 50000) + f_varint(3, 512) + f_varint(4, 1 << 27))
        linux += f_bytes(4, f_varint(3, 10) + f_varint(4, 1 << 20))
    return (f_bytes(1, f_bytes(1, "web") + f_bytes(2, "uid-1") + f_bytes(3, "default") + f_varint(4, 1))
            + f_bytes(2, "web") + f_bytes(3, "/var/log/pods/web")
            + f_bytes(4, f_bytes(1, "10.0.0.10") + f_bytes(2, "svc.cluster.local") + f_bytes(3, "ndots:5"))
            + f_map(6, {"app": "web"}) + f_map(7, {"io.peapod.restart-policy": "Always", "io.peapod.grace-period": "5"})
            + f_bytes(8, linux))
put("pod_sandbox", "pod-network", pod_config())
put("pod_sandbox", "node-network", pod_config(network=2, cgroup="", resources=False))
put("pod_sandbox", "userns", pod_config(userns=0))
url = "type.googleapis.com/runtime.v1.PodSandboxConfig"
put("task_request", "4-create-sandbox", b"\x04" + f_bytes(1, "pod1") + f_bytes(2, "/run/bundle") + f_bytes(4, any_(url, pod_config()))
    + f_bytes(5, "/var/run/netns/x") + f_map(6, {"io.peapod.containers": '[{"name":"web","role":"app"}]'}))
put("task_request", "4-create-sandbox-node", b"\x04" + f_bytes(1, "pod1") + f_bytes(4, any_(url, pod_config(network=2, cgroup="", resources=False))))

# bootstrap: BootstrapParams (containerd 2.3), an Any of runc options, nothing.
runc = any_("containerd.runc.v1.Options", f_bytes(9, "/peapod/shim"))
put("bootstrap", "params-2.3", f_bytes(1, "pod1") + f_bytes(2, "k8s.io") + f_varint(3, (-4) & 0xFFFFFFFFFFFFFFFF)
    + f_bytes(4, "v2.3.4") + f_bytes(5, "/run/containerd/containerd.sock.ttrpc") + f_bytes(6, "/run/containerd/containerd.sock")
    + f_bytes(7, "/usr/bin/containerd") + f_bytes(8, f_bytes(1, runc)) + f_bytes(9, "/run/containerd/s"))
put("bootstrap", "runc-options", runc)
put("bootstrap", "cri-toml", any_("runtimeoptions.v1.Options", f_bytes(1, "") + f_bytes(3, 'ShimCgroup = "/peapod/shim"\n')))
put("bootstrap", "legacy", any_("containerd.linux.runc.CreateOptions", b""))
