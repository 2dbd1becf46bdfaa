//! The shim daemon: serves the Task API on the listener `start` handed over, until
//! Shutdown arrives with no task left.

use std::fs::OpenOptions;
use std::os::fd::{IntoRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use containerd_shim_protos::ttrpc::Server;

use crate::args::Flags;
use crate::events::Publisher;
use crate::service::Service;
use crate::start::{socket_address, socket_path, Paths, LISTENER_ENV};

/// Upper bound of ttrpc worker threads: every pending Wait holds one.
const MAX_THREADS: usize = 512;

/// Sends `tracing` output to containerd's `log` FIFO in the bundle (opened read-write and
/// non-blocking: a missing or slow reader drops log lines instead of stalling the shim).
pub fn init_logging(bundle: &Path, debug: bool) {
    let level = if debug { "debug" } else { "info" };
    let filter = tracing_subscriber::EnvFilter::try_from_env("PEAPOD_LOG").unwrap_or_else(|_| level.into());
    let fifo = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(bundle.join("log"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(false);
    let _ = match fifo {
        Ok(f) => builder.with_writer(std::sync::Mutex::new(f)).try_init(),
        Err(_) => builder.with_writer(std::io::sink).try_init(),
    };
}

/// Runs the daemon. `flags` are those `start` passed; the listener fd comes from the
/// environment.
pub fn serve(flags: &Flags, bundle: &Path) -> Result<()> {
    // Own session: containerd's signals to its process group never reach the shim.
    let _ = nix::unistd::setsid();
    nix::sys::prctl::set_child_subreaper(true).context("become child subreaper")?;
    init_logging(bundle, flags.debug);
    let fd: RawFd = std::env::var(LISTENER_ENV)
        .context("no listener: the shim daemon is started by `start`")?
        .parse()
        .context("listener fd")?;
    let listener = sandbox::sys::adopt_inherited_fd(fd).context("adopt listener")?;
    std::env::remove_var(LISTENER_ENV);
    // containerd always sets TTRPC_ADDRESS; the peapod CLI's embedded mode leaves it empty
    // and may name an event log instead.
    let publisher = match std::env::var("TTRPC_ADDRESS") {
        Ok(address) if !address.is_empty() => Publisher::new(&address, &flags.namespace),
        _ => match std::env::var_os(crate::events::EVENT_LOG_ENV) {
            Some(path) if !path.is_empty() => Publisher::to_file(Path::new(&path), &flags.namespace)
                .with_context(|| format!("open the event log {}", Path::new(&path).display()))?,
            _ => Publisher::disabled(&flags.namespace),
        },
    };
    let service = Service::new(&flags.namespace, Paths::for_namespace(&flags.namespace), publisher);

    let reaped = service.clone();
    crate::reaper::start(move |pid, code| reaped.on_exit(pid, code)).context("start reaper")?;

    let task = containerd_shim_protos::create_task(Arc::new(service.clone()));
    let mut server = Server::new()
        .add_listener(listener.into_raw_fd())
        .context("ttrpc listener")?
        .register_service(task)
        .set_thread_count_default(4)
        .set_thread_count_min(2)
        .set_thread_count_max(MAX_THREADS);
    server.start().context("start ttrpc server")?;
    tracing::info!(namespace = %flags.namespace, id = %flags.id, "shim serving");

    service.wait_for_shutdown();
    server.shutdown();
    let group = crate::start::group_id(bundle, &flags.id).unwrap_or_else(|_| flags.id.clone());
    let _ = std::fs::remove_file(socket_path(&socket_address(&flags.address, &flags.namespace, &group)));
    Ok(())
}
