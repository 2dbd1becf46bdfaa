//! `peapod`: the command-line front door.
//!
//! Today it runs single containers from OCI bundles with peapod's own runtime (no runc):
//! `peapod spec` writes a default `config.json`, `peapod run-bundle` creates, starts and
//! waits for the container and exits with its exit code.
#![deny(unsafe_code)]

use std::os::fd::AsFd;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use nix::sys::signal::{kill, SigSet, Signal};
use sandbox::{Config, Container, CreateOptions, Stdio};

#[derive(Parser)]
#[command(
    name = "peapod",
    version,
    about = "Run Kubernetes pods natively: containers without runc"
)]
struct Cli {
    /// Directory for container state (one sub-directory per container).
    #[arg(long, env = "PEAPOD_STATE", default_value = "/run/peapod/containers", global = true)]
    state: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
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
    /// Example: peapod run-bundle ./demo
    RunBundle {
        /// The bundle directory (holds `config.json`).
        bundle: PathBuf,
        /// Container id (default: the bundle directory's name).
        #[arg(long)]
        id: Option<String>,
    },
}

fn main() {
    sandbox::init::run_if_requested();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Spec { bundle, args } => write_spec(&bundle, &args).map(|()| 0),
        Command::RunBundle { bundle, id } => run_bundle(&cli.state, &bundle, id),
    };
    match result {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("peapod: {e:#}");
            std::process::exit(125);
        }
    }
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
        init_binary: shim::init_binary(),
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
