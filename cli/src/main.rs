//! `peapod`: run Kubernetes Pod manifests on one machine, embedded (the shim without
//! containerd) or through a CRI runtime (`--cri`), manage the embedded mode's image
//! store, and run single OCI bundles.
//!
//! Exit codes: 0 success; 1 the command failed (message on stderr); 2 usage errors;
//! 125 `run-bundle` could not run the container; otherwise `exec` and `run-bundle` exit
//! with the process's own status.
#![deny(unsafe_code)]

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use k8s_openapi::api::core::v1::Pod;
use nix::sys::signal::{kill, SigSet, Signal};
use peapod::config::ConfigObjects;
use peapod::crimode::Cri;
use peapod::display::{self, PodSummary};
use peapod::manifest::{self, PodPlan};
use peapod::runner::{self, NetworkMode, Paths};
use sandbox::{Config, Container, CreateOptions, Stdio};

#[derive(Parser)]
#[command(
    name = "peapod",
    version,
    about = "Run Kubernetes pods natively: pods from manifests, containers without runc",
    after_help = "Examples:\n  peapod image import busybox.tar\n  peapod run -f examples/shared-volume.yaml\n  peapod get pods -o wide\n  peapod describe pod shared-volume\n  peapod logs shared-volume -c reader -f --timestamps\n  peapod exec -it shared-volume -c writer -- sh\n  peapod delete pod shared-volume --grace-period 5\n  peapod --cri unix:///run/containerd/containerd.sock run -f examples/native-sidecar.yaml\n\nExit codes: 0 success; 1 the command failed (message on stderr); 2 usage error;\nexec: the command's exit status; run-bundle: the container's, 125 if it could not run."
)]
struct Cli {
    /// Persistent data (images, volumes, logs; in CRI mode the pods' configMap, secret,
    /// downwardAPI and projected volumes).
    #[arg(long, env = "PEAPOD_ROOT", default_value = "/var/lib/peapod", global = true)]
    root: PathBuf,
    /// Runtime state (pods, container state).
    #[arg(long, env = "PEAPOD_STATE", default_value = "/run/peapod", global = true)]
    state: PathBuf,
    /// Kubernetes namespace of the pods.
    #[arg(short = 'n', long, default_value = "default", global = true)]
    namespace: String,
    /// CRI mode: run pods through this CRI endpoint (`unix:///run/containerd/containerd.sock`)
    /// instead of embedded, as kubelet would.
    #[arg(long, env = "PEAPOD_CRI", global = true, value_name = "ENDPOINT")]
    cri: Option<String>,
    /// CRI mode: the runtime handler pods run with (containerd's runtime name).
    #[arg(long, env = "PEAPOD_RUNTIME_HANDLER", default_value = "peapod", global = true)]
    runtime_handler: String,
    /// CRI mode: where pod log directories go (kubelet's `/var/log/pods`).
    #[arg(long, env = "PEAPOD_POD_LOG_DIR", default_value = peapod::crimode::DEFAULT_POD_LOG_ROOT, global = true)]
    pod_log_dir: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum Network {
    /// peapod's CNI bridge: one IP per pod.
    Cni,
    /// Loopback only.
    None,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    /// More columns.
    Wide,
    /// YAML.
    Yaml,
    /// JSON.
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the Pod in a manifest (embedded mode: no containerd needed).
    #[command(alias = "apply")]
    Run {
        /// The manifest (YAML or JSON; `-` for stdin): one Pod, with the ConfigMaps and
        /// Secrets it uses as more documents (`---`) or more `-f` files.
        #[arg(short = 'f', long = "filename", required = true)]
        file: Vec<PathBuf>,
        /// The pod's network.
        #[arg(long, value_enum, default_value = "cni")]
        network: Network,
        /// Where `seccompProfile: {type: Localhost, localhostProfile: FILE}` profiles are
        /// (kubelet's `<root-dir>/seccomp`).
        #[arg(long, env = "PEAPOD_SECCOMP_PROFILE_ROOT", default_value = peapod::security::KUBELET_SECCOMP_ROOT)]
        seccomp_profile_root: PathBuf,
    },
    /// List pods: NAME READY STATUS RESTARTS AGE IP (kubelet's phases and reasons).
    Get {
        /// `pods` (or `pod`, `po`).
        resource: String,
        /// Only this pod.
        name: Option<String>,
        /// `wide` (adds NODE, QOS, RUNTIME), `yaml` or `json` (`v1.Pod` objects with status).
        #[arg(short = 'o', long, value_enum)]
        output: Option<Output>,
    },
    /// Show a pod in detail: containers with state, reason, exit code, start and finish
    /// times; phase and conditions; volumes; events.
    Describe {
        /// `pod` (or `pods`, `po`).
        resource: String,
        /// The pod.
        name: String,
    },
    /// Print a container's logs.
    Logs {
        /// The pod.
        pod: String,
        /// The container (default: the pod's only app container).
        #[arg(short = 'c', long)]
        container: Option<String>,
        /// Keep printing new lines until the container stops.
        #[arg(short = 'f', long)]
        follow: bool,
        /// The previous run of a restarted container.
        #[arg(short = 'p', long)]
        previous: bool,
        /// Prefix each line with its RFC 3339 time.
        #[arg(long)]
        timestamps: bool,
    },
    /// Run a command in a container of a pod.
    Exec {
        /// The pod.
        pod: String,
        /// The container (default: the pod's only app container).
        #[arg(short = 'c', long)]
        container: Option<String>,
        /// Pass stdin to the command.
        #[arg(short = 'i', long)]
        stdin: bool,
        /// Give the command a terminal (with `-i`: an interactive shell).
        #[arg(short = 't', long)]
        tty: bool,
        /// The command.
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Delete a pod: SIGTERM to all its containers at once, SIGKILL after the grace period.
    Delete {
        /// `pod NAME`.
        #[arg(num_args = 0..=2)]
        target: Vec<String>,
        /// The manifest whose pod to delete.
        #[arg(short = 'f', long = "filename")]
        file: Option<PathBuf>,
        /// Seconds to wait before SIGKILL (default: the pod's own).
        #[arg(long)]
        grace_period: Option<u64>,
    },
    /// The local image store.
    #[command(subcommand)]
    Image(ImageCommand),
    /// Write a default OCI spec (`config.json`, like containerd's defaults) into a bundle.
    ///
    /// Example: peapod spec --bundle ./demo -- sh -c 'echo hello'
    Spec {
        /// The bundle directory; its rootfs is expected in `rootfs/`.
        #[arg(long, default_value = ".")]
        bundle: PathBuf,
        /// The process to run (default: `sh`).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Create, start and wait for a container from an OCI bundle; exit with its exit code.
    ///
    /// SIGINT, SIGTERM and SIGHUP are forwarded to the container; a second one kills it.
    RunBundle {
        /// The bundle directory (holds `config.json`).
        bundle: PathBuf,
        /// Container id (default: the bundle directory's name).
        #[arg(long)]
        id: Option<String>,
    },
    /// (Internal) Wait out an embedded pod's image pull back-off, pull again, and start
    /// its containers once its images are there. `run` leaves it behind when a pull
    /// fails; `delete` ends it. Credentials come as JSON on stdin.
    #[command(name = "pull-back-off", hide = true)]
    PullBackOff {
        /// The pod's key, `<namespace>_<name>`.
        key: String,
    },
}

#[derive(Subcommand)]
enum ImageCommand {
    /// Import images from an OCI image-layout or docker-archive tarball.
    Import {
        /// The tarball.
        file: PathBuf,
        /// Refuse a layer larger than this uncompressed (bytes, or with a suffix Ki, Mi, Gi,
        /// Ti; `unlimited` for no cap): unpacking stops at the limit.
        #[arg(long, env = "PEAPOD_MAX_LAYER_SIZE", default_value = "32Gi", value_parser = parse_layer_size)]
        max_layer_size: LayerSize,
    },
    /// Pull an image from a registry (http for loopback hosts and `--insecure` ones).
    Pull {
        /// The reference, e.g. `busybox` or `127.0.0.1:5000/app:v1`.
        reference: String,
        /// Registries to reach over plain http.
        #[arg(long)]
        insecure: Vec<String>,
        /// Refuse a layer larger than this uncompressed (bytes, or with a suffix Ki, Mi, Gi,
        /// Ti; `unlimited` for no cap): unpacking stops at the limit.
        #[arg(long, env = "PEAPOD_MAX_LAYER_SIZE", default_value = "32Gi", value_parser = parse_layer_size)]
        max_layer_size: LayerSize,
    },
    /// List images.
    Ls,
    /// Remove an image.
    Rm {
        /// The image.
        name: String,
    },
}

/// Where pods run: the shim driven directly, or a CRI runtime.
enum Mode {
    Embedded(Paths),
    Cri(Box<Cri>),
}

fn main() {
    sandbox::init::run_if_requested();
    // Whatever umask we were started with: nothing group- or world-writable on the host
    // (the modes that matter are set explicitly, see sandbox::hostdir).
    sandbox::hostdir::set_umask();
    let cli = Cli::parse();
    let paths = Paths {
        root: cli.root.clone(),
        state: cli.state.clone(),
    };
    let mode = || -> Result<Mode> {
        Ok(match &cli.cri {
            Some(endpoint) => Mode::Cri(Box::new(Cri::connect(
                endpoint,
                &cli.runtime_handler,
                &cli.pod_log_dir,
                &cli.root,
            )?)),
            None => Mode::Embedded(paths.clone()),
        })
    };
    let ns = cli.namespace.as_str();
    // `-n` and a pod name become the pod key, a path under the state and data roots:
    // checked as the API server checks `metadata.namespace` and `metadata.name` before any
    // path is built (a manifest's are checked by `manifest::plan`).
    let names = |pod: Option<&str>| -> Result<()> {
        manifest::dns_label("metadata.namespace (-n/--namespace)", ns)?;
        if let Some(pod) = pod {
            manifest::dns_subdomain("metadata.name", pod)?;
        }
        Ok(())
    };
    let result = match cli.command {
        Command::Run {
            file,
            network,
            seccomp_profile_root,
        } => mode().and_then(|m| run(&m, &file, network, &seccomp_profile_root)),
        Command::Get { resource, name, output } => names(name.as_deref())
            .and_then(|()| mode())
            .and_then(|m| get(&m, ns, &resource, name, output)),
        Command::Describe { resource, name } => names(Some(&name))
            .and_then(|()| mode())
            .and_then(|m| describe(&m, ns, &resource, &name)),
        Command::Logs {
            pod,
            container,
            follow,
            previous,
            timestamps,
        } => names(Some(&pod))
            .and_then(|()| mode())
            .and_then(|m| logs(&m, ns, &pod, container, follow, previous, timestamps)),
        Command::Exec {
            pod,
            container,
            stdin,
            tty,
            command,
        } => names(Some(&pod))
            .and_then(|()| mode())
            .and_then(|m| exec(&m, ns, &pod, container, stdin, tty, &command)),
        Command::Delete {
            target,
            file,
            grace_period,
        } => names(match target.as_slice() {
            [_, name] => Some(name),
            _ => None,
        })
        .and_then(|()| mode())
        .and_then(|m| delete(&m, ns, &target, file, grace_period)),
        Command::Image(_) if cli.cri.is_some() => Err(anyhow::anyhow!(
            "peapod image manages the embedded mode's image store; under CRI the runtime's own store is used (pulled on run)"
        )),
        Command::Image(cmd) => image(&paths, cmd),
        Command::Spec { bundle, args } => write_spec(&bundle, &args).map(|()| 0),
        Command::PullBackOff { key } => pull_back_off(&paths, &key).map(|()| 0),
        Command::RunBundle { bundle, id } => run_bundle(&cli.state.join("containers"), &bundle, id).or_else(|e| {
            eprintln!("peapod: {}", sandbox::error::chain(e.as_ref()));
            Ok(125)
        }),
    };
    match result {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("peapod: {}", sandbox::error::chain(e.as_ref()));
            std::process::exit(1);
        }
    }
}

/// The Pod of `files`, its plan, and the ConfigMaps and Secrets given with it.
fn read_manifest(files: &[PathBuf]) -> Result<(Pod, PodPlan, ConfigObjects)> {
    let mut texts = Vec::new();
    for file in files {
        let text = if file.as_os_str() == "-" {
            std::io::read_to_string(std::io::stdin())?
        } else {
            std::fs::read_to_string(file).with_context(|| format!("read {}", file.display()))?
        };
        texts.push((file.to_string_lossy().into_owned(), text));
    }
    let manifests = peapod::manifest::parse_all(&texts)?;
    let plan = peapod::manifest::plan(&manifests.pod, peapod::manifest::memory_capacity())?;
    Ok((manifests.pod, plan, manifests.config))
}

fn run(mode: &Mode, files: &[PathBuf], network: Network, seccomp_root: &Path) -> Result<i32> {
    let (pod, plan, config) = read_manifest(files)?;
    // kubelet resolves the references when it makes each container; here a missing
    // object or key fails the run before anything exists.
    let plan = peapod::config::resolve_env(&plan, &config)?;
    // Likewise for the files of configMap, secret, downwardAPI and projected volumes
    // (kubelet's FailedMount).
    let volumes = peapod::volumes::resolve(&plan, &config)?;
    // Pull credentials from the pod's imagePullSecrets (read here, never recorded).
    let (keyring, warnings) = peapod::imagepull::pull_credentials(&plan, &config)?;
    let spinner = Spinner::start();
    let report = spinner.report();
    for warning in &warnings {
        report(warning);
    }
    let progress = |msg: &str| report(&format!("{}: {msg}", plan.name));
    let ip = match mode {
        Mode::Embedded(paths) => {
            let bins = runner::Binaries::find()?;
            let network = match network {
                Network::Cni => NetworkMode::Cni,
                Network::None => NetworkMode::None,
            };
            runner::preflight(paths, &plan, seccomp_root)?;
            // Images as their pull policies ask, before anything of the pod exists; the
            // store reports downloads as `peapod image pull` does. One that cannot be had
            // leaves the pod waiting for it, as kubelet does (`ErrImagePull`, then
            // `ImagePullBackOff` and pulls again).
            let store = paths.images()?.with_progress(std::sync::Arc::new(spinner.report()));
            let pulled = peapod::imagepull::ensure_images(&store, &plan, &keyring, &progress)?;
            for wait in &pulled.waiting {
                report(&format!("warning: {}", wait.warning()));
            }
            let inputs = runner::RunInputs {
                volumes,
                pulled,
                keyring,
            };
            let record = runner::run(paths, &bins, &plan, network, seccomp_root, inputs, &progress)?;
            runner::save_manifest(paths, &record, &pod)?;
            record.ip
        }
        Mode::Cri(cri) => {
            if matches!(network, Network::None) {
                bail!("--network none: under CRI the runtime's CNI configuration decides the pod network");
            }
            let id = cri.run(&pod, &plan, &volumes, &keyring, seccomp_root, &progress)?;
            cri.summary(&id)?.status.pod_ip
        }
    };
    drop(spinner);
    println!(
        "pod/{} created{}",
        plan.name,
        ip.map(|ip| format!(" ({ip})")).unwrap_or_default()
    );
    Ok(0)
}

/// The image puller's process ([`runner::PULLER_COMMAND`]): its lock moved off stdout
/// first, the credentials read from stdin, then the wait.
fn pull_back_off(paths: &Paths, key: &str) -> Result<()> {
    let _lock = runner::keep_puller_lock().context("keep the puller's lock")?;
    let keyring: peapod::images::auth::DockerKeyring =
        serde_json::from_reader(std::io::stdin()).context("read the pull credentials from stdin")?;
    runner::wait_for_images(paths, key, &keyring)?;
    Ok(())
}

fn check_pods(resource: &str) -> Result<()> {
    if !matches!(resource, "pods" | "pod" | "po") {
        bail!("the server doesn't have a resource type {resource:?}: peapod knows pods");
    }
    Ok(())
}

/// The pod `namespace/name` as printed.
fn summary(mode: &Mode, namespace: &str, name: &str) -> Result<PodSummary> {
    match mode {
        Mode::Embedded(paths) => Ok(runner::summary(
            paths,
            &runner::load(paths, &runner::key(namespace, name))?,
        )),
        Mode::Cri(cri) => {
            let sandbox = cri.existing(namespace, name)?;
            Ok(cri.summary(&sandbox.id)?)
        }
    }
}

fn get(mode: &Mode, namespace: &str, resource: &str, name: Option<String>, output: Option<Output>) -> Result<i32> {
    check_pods(resource)?;
    let pods = match (&name, mode) {
        (Some(n), _) => vec![summary(mode, namespace, n)?],
        (None, Mode::Embedded(paths)) => runner::list(paths)?
            .iter()
            .filter(|r| r.plan.namespace == namespace)
            .map(|r| runner::summary(paths, r))
            .collect(),
        (None, Mode::Cri(cri)) => cri.list(Some(namespace))?,
    };
    let text = match output {
        None | Some(Output::Wide) if pods.is_empty() => {
            eprintln!("No resources found in {namespace} namespace.");
            return Ok(0);
        }
        None => display::table(&pods, false),
        Some(Output::Wide) => display::table(&pods, true),
        Some(Output::Yaml) => display::serialize(&pods, name.is_some(), true).map_err(anyhow::Error::msg)?,
        Some(Output::Json) => display::serialize(&pods, name.is_some(), false).map_err(anyhow::Error::msg)?,
    };
    print!("{text}");
    Ok(0)
}

fn describe(mode: &Mode, namespace: &str, resource: &str, name: &str) -> Result<i32> {
    check_pods(resource)?;
    print!("{}", display::describe(&summary(mode, namespace, name)?));
    Ok(0)
}

/// `-c`, or the pod's only app container.
fn pick_container(plan: &PodPlan, container: Option<String>) -> Result<String> {
    if let Some(c) = container {
        if !plan.containers.iter().any(|p| p.name == c) {
            bail!("container {c:?} is not valid for pod {:?}", plan.name);
        }
        return Ok(c);
    }
    let apps: Vec<&str> = plan
        .containers
        .iter()
        .filter(|c| c.role == sandbox::pod::Role::App)
        .map(|c| c.name.as_str())
        .collect();
    match apps.as_slice() {
        [one] => Ok(one.to_string()),
        _ => bail!("pod {} has containers {apps:?}: choose one with -c", plan.name),
    }
}

fn logs(
    mode: &Mode,
    namespace: &str,
    pod: &str,
    container: Option<String>,
    follow: bool,
    previous: bool,
    timestamps: bool,
) -> Result<i32> {
    let mut opts = proto::crilog::Options {
        timestamps,
        ..Default::default()
    };
    let out = &mut std::io::stdout().lock();
    let (name, path, running): (String, PathBuf, Box<dyn Fn() -> bool>) = match mode {
        Mode::Embedded(paths) => {
            let record = runner::load(paths, &runner::key(namespace, pod))?;
            let name = pick_container(&record.plan, container)?;
            // Restarts append to one file: a run is a time window of it.
            (opts.since, opts.until) = runner::log_window(paths, &record, &name, previous)?;
            let path = record.log_path(paths, &name);
            let n = name.clone();
            let running = move || {
                runner::status(paths, &record)
                    .1
                    .iter()
                    .any(|c| c.name == n && matches!(c.state.as_str(), "running" | "created"))
            };
            (name, path, Box::new(running))
        }
        Mode::Cri(cri) => {
            let summary = summary(mode, namespace, pod)?;
            let name = pick_container(&summary.plan, container)?;
            if previous {
                // Nothing restarts containers under CRI without kubelet (kubectl's words).
                bail!("previous terminated container {name:?} in pod {pod:?} not found");
            }
            let (path, id) = cri.log(namespace, pod, &name)?;
            (name, path, Box::new(move || cri.running(&id)))
        }
    };
    proto::crilog::print(&path, out, opts, follow, &running)
        .with_context(|| format!("logs of container {name:?} ({})", path.display()))?;
    Ok(0)
}

fn exec(
    mode: &Mode,
    namespace: &str,
    pod: &str,
    container: Option<String>,
    stdin: bool,
    tty: bool,
    command: &[String],
) -> Result<i32> {
    let (code, out, err) = match mode {
        Mode::Embedded(paths) => {
            let record = runner::load(paths, &runner::key(namespace, pod))?;
            let name = pick_container(&record.plan, container)?;
            if stdin || tty {
                return Ok(runner::exec_attached(&record, &name, command, stdin, tty)?);
            }
            let (code, out, err) = runner::exec(&record, &name, command)?;
            (i32::try_from(code).unwrap_or(255), out, err)
        }
        Mode::Cri(cri) => {
            let name = pick_container(&summary(mode, namespace, pod)?.plan, container)?;
            if stdin || tty {
                return Ok(cri.exec_attached(namespace, pod, &name, command, stdin, tty)?);
            }
            cri.exec(namespace, pod, &name, command)?
        }
    };
    std::io::Write::write_all(&mut std::io::stdout(), &out)?;
    std::io::Write::write_all(&mut std::io::stderr(), &err)?;
    Ok(code)
}

fn delete(mode: &Mode, namespace: &str, target: &[String], file: Option<PathBuf>, grace: Option<u64>) -> Result<i32> {
    let (namespace, name) = match (file, target) {
        (Some(f), []) => {
            let (_, plan, _) = read_manifest(&[f])?;
            (plan.namespace, plan.name)
        }
        (None, [kind, name]) if matches!(kind.as_str(), "pod" | "pods" | "po") => (namespace.to_string(), name.clone()),
        _ => bail!("usage: peapod delete pod NAME | peapod delete -f FILE"),
    };
    match mode {
        Mode::Embedded(paths) => runner::delete(paths, &runner::key(&namespace, &name), grace)?,
        Mode::Cri(cri) => cri.delete(&namespace, &name, grace)?,
    }
    println!("pod/{name} deleted");
    Ok(0)
}

/// Progress on stderr: on a terminal one line redrawn in place behind a spinner, else one
/// line per message.
struct Spinner {
    message: std::sync::Arc<std::sync::Mutex<Option<String>>>,
    ticker: Option<std::thread::JoinHandle<()>>,
}

impl Spinner {
    fn start() -> Spinner {
        use std::io::IsTerminal;
        let message = std::sync::Arc::new(std::sync::Mutex::new(Some(String::new())));
        let ticker = std::io::stderr().is_terminal().then(|| {
            let message = message.clone();
            std::thread::spawn(move || {
                const FRAMES: [char; 10] = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];
                for frame in FRAMES.iter().cycle() {
                    match message.lock().expect("spinner").as_deref() {
                        None => break,
                        Some("") => {}
                        Some(m) => eprint!("\r\x1b[K{frame} {m}"),
                    }
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
                eprint!("\r\x1b[K");
            })
        });
        Spinner { message, ticker }
    }

    /// The callback for [`peapod::images::Store::with_progress`] and the runners.
    fn report(&self) -> impl Fn(&str) + Send + Sync + 'static {
        let message = self.message.clone();
        let live = self.ticker.is_some();
        move |m: &str| {
            if live && !m.contains("warning:") {
                *message.lock().expect("spinner") = Some(m.to_string());
            } else {
                // Warnings stay on screen: a line of their own above the spinner.
                let _guard = message.lock().expect("spinner");
                eprintln!("{}{m}", if live { "\r\x1b[K" } else { "" });
            }
        }
    }
}

impl Drop for Spinner {
    fn drop(&mut self) {
        *self.message.lock().expect("spinner") = None;
        if let Some(t) = self.ticker.take() {
            let _ = t.join();
        }
    }
}

/// `--max-layer-size`: bytes; `None` for no cap.
#[derive(Clone, Copy)]
struct LayerSize(Option<u64>);

/// `--max-layer-size`: bytes, or a number with a binary suffix (`Ki`, `Mi`, `Gi`, `Ti`);
/// `unlimited` is no cap.
fn parse_layer_size(value: &str) -> Result<LayerSize, String> {
    if value == "unlimited" {
        return Ok(LayerSize(None));
    }
    let (digits, shift) = match value.len().checked_sub(2).map(|i| value.split_at(i)) {
        Some((n, "Ki")) => (n, 10),
        Some((n, "Mi")) => (n, 20),
        Some((n, "Gi")) => (n, 30),
        Some((n, "Ti")) => (n, 40),
        _ => (value, 0),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{value:?} is not a size: bytes, or a number with Ki, Mi, Gi or Ti, or unlimited"))?;
    n.checked_mul(1u64 << shift)
        .map(|n| LayerSize(Some(n)))
        .ok_or_else(|| format!("{value:?} is too large"))
}

fn image(paths: &Paths, cmd: ImageCommand) -> Result<i32> {
    let spinner = Spinner::start();
    let store = paths.images()?.with_progress(std::sync::Arc::new(spinner.report()));
    match cmd {
        ImageCommand::Import { file, max_layer_size } => {
            let names = store.with_max_layer_size(max_layer_size.0).import(&file)?;
            drop(spinner);
            for name in names {
                println!("imported {name}");
            }
        }
        ImageCommand::Pull {
            reference,
            insecure,
            max_layer_size,
        } => {
            let name = store
                .with_max_layer_size(max_layer_size.0)
                .pull(&reference, &insecure)?;
            drop(spinner);
            println!("pulled {name}");
        }
        ImageCommand::Ls => {
            println!("{:<50} {:<20} SIZE", "IMAGE", "DIGEST");
            for i in store.list()? {
                let digest = i.digest.trim_start_matches("sha256:");
                println!(
                    "{:<50} {:<20} {:.1}MB",
                    i.name,
                    &digest[..digest.len().min(12)],
                    i.size as f64 / 1e6
                );
            }
        }
        ImageCommand::Rm { name } => {
            let name = peapod::images::normalize(&name)?;
            let pods = runner::list(paths)?;
            let in_use = |n: &str| {
                pods.iter().any(|p| {
                    p.plan
                        .containers
                        .iter()
                        .any(|c| peapod::images::normalize(&c.image).is_ok_and(|i| i == n))
                })
            };
            store.remove(&name, &in_use)?;
            println!("removed {name}");
        }
    }
    Ok(0)
}

fn write_spec(bundle: &std::path::Path, args: &[String]) -> Result<()> {
    let args: Vec<&str> = if args.is_empty() {
        vec!["sh"]
    } else {
        args.iter().map(String::as_str).collect()
    };
    let spec = sandbox::spec::default_spec(&args);
    let path = bundle.join("config.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&spec)?).with_context(|| format!("write {}", path.display()))
}

fn run_bundle(state: &std::path::Path, bundle: &std::path::Path, id: Option<String>) -> Result<i32> {
    let bundle = std::fs::canonicalize(bundle).with_context(|| format!("bundle {}", bundle.display()))?;
    let id = match id {
        Some(id) => id,
        None => bundle
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .context("bundle has no name")?,
    };
    // Block the signals we forward before any thread exists; the init helper unblocks
    // them again for the container.
    let mut forwarded = SigSet::empty();
    for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        forwarded.add(s);
    }
    forwarded.thread_block()?;
    let dup = |fd: std::os::fd::BorrowedFd<'_>| fd.try_clone_to_owned().map(Some);
    let stdio = Stdio {
        stdin: dup(std::io::stdin().as_fd())?,
        stdout: dup(std::io::stdout().as_fd())?,
        stderr: dup(std::io::stderr().as_fd())?,
    };
    let config = Config {
        state_root: state.to_path_buf(),
        init_binary: sandbox::init::installed_helper(),
        seccomp_store: None,
    };
    let mut container = Container::create(
        &config,
        CreateOptions {
            id,
            bundle,
            rootfs_mounts: Vec::new(),
            spec: None,
            stdio,
        },
    )?;
    let pid = container.pid().context("container has no pid")?;
    std::thread::spawn(move || {
        let mut count = 0;
        while let Ok(sig) = forwarded.wait() {
            count += 1;
            let _ = kill(pid, if count > 1 { Signal::SIGKILL } else { sig });
        }
    });
    if let Err(e) = container.start() {
        let _ = container.wait();
        container.delete(true)?;
        return Err(e.into());
    }
    let code = container.wait()?;
    container.delete(false)?;
    Ok(code)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_cause_a_dependency_already_printed_is_printed_once() {
        let io = std::io::Error::from(std::io::ErrorKind::NotFound);
        let text = io.to_string();
        // A wrapper that prints its source and returns it too, like tonic's ConnectError.
        #[derive(Debug)]
        struct Repeats(std::io::Error);
        impl std::fmt::Display for Repeats {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "transport error: {}", self.0)
            }
        }
        impl std::error::Error for Repeats {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let e = anyhow::Error::new(Repeats(io)).context("CRI endpoint unix:///x.sock");
        assert_eq!(
            sandbox::error::chain(e.as_ref()),
            format!("CRI endpoint unix:///x.sock: transport error: {text}")
        );
        let plain = anyhow::anyhow!("pod x").context("delete");
        assert_eq!(sandbox::error::chain(plain.as_ref()), "delete: pod x");
    }
}
