//! `containerd-shim-peapod-v2`: what containerd runs for `runtime_type =
//! "io.containerd.peapod.v2"`.
#![deny(unsafe_code)]

use std::io::Write;
use std::path::PathBuf;

use containerd_shim_protos::protobuf::Message;

fn main() {
    // For the start-up time the daemon logs (shim::start::STARTED_AT_ENV).
    let began_ns = shim::start::boottime_ns();
    // Container init helpers are this binary too.
    sandbox::init::run_if_requested();
    // containerd starts us with its own umask (and the embedded CLI with its caller's):
    // nothing group- or world-writable on the host, and container init helpers (this
    // binary, re-executed) make mount points with the modes they ask for. The modes that
    // keep host users out are set explicitly (sandbox::hostdir).
    sandbox::hostdir::set_umask();
    // One malloc arena: a shim is many mostly idle threads, and glibc's arena per thread
    // is most of its private memory otherwise (issue 17; sandbox::sys::limit_malloc_arenas).
    sandbox::sys::limit_malloc_arenas(1);
    // Release builds abort on panic: log it first (to containerd's log once `serve` has
    // set logging up).
    shim::panic::install();
    let flags = match shim::args::parse(std::env::args().skip(1)) {
        // containerd 1.7+ also passes the namespace as $NAMESPACE.
        Ok(mut f) => {
            if f.namespace.is_empty() {
                f.namespace = std::env::var("NAMESPACE").unwrap_or_default();
            }
            f
        }
        Err(e) => {
            eprintln!("containerd-shim-peapod-v2: {e}");
            std::process::exit(2);
        }
    };
    if flags.version {
        println!("containerd-shim-peapod-v2:\n  Version: {}", env!("CARGO_PKG_VERSION"));
        return;
    }
    if flags.info {
        // The runtime options arrive on stdin as a protobuf Any (or nothing).
        let info = shim::bootstrap::read_stdin()
            .map_err(anyhow::Error::from)
            .and_then(|bytes| {
                let any = (!bytes.is_empty())
                    .then(|| containerd_shim_protos::protobuf::well_known_types::any::Any::parse_from_bytes(&bytes))
                    .transpose()?;
                Ok(shim::options::runtime_info(any.as_ref()).write_to_bytes()?)
            })
            .and_then(|bytes| Ok(std::io::stdout().write_all(&bytes)?));
        if let Err(e) = info {
            eprintln!("containerd-shim-peapod-v2: -info: {e:#}");
            std::process::exit(1);
        }
        return;
    }
    if flags.namespace.is_empty() && !flags.version {
        eprintln!("containerd-shim-peapod-v2: -namespace (or $NAMESPACE) is required");
        std::process::exit(2);
    }
    let bundle = flags
        .bundle
        .clone()
        .or_else(|| std::env::current_dir().ok())
        .unwrap_or_else(|| PathBuf::from("."));
    let result = match flags.action.as_str() {
        // What containerd wrote on stdin tells which containerd this is, hence the answer
        // (shim::bootstrap). Nothing may go to stderr on success: containerd 2.3 reads
        // stdout and stderr together.
        "start" => shim::bootstrap::read_stdin()
            .and_then(|bytes| {
                let max = std::env::var(shim::bootstrap::MAX_SHIM_VERSION_ENV).ok();
                let containerd = std::path::Path::new(&flags.publish_binary);
                shim::bootstrap::detect(&bytes, max.as_deref(), containerd)
            })
            .map_err(anyhow::Error::from)
            .and_then(|input| {
                let address = shim::start::start(&flags, &bundle, &input, began_ns)?;
                let mut out = std::io::stdout().lock();
                out.write_all(&shim::bootstrap::answer(input.generation, &address))?;
                out.flush()?;
                Ok(())
            }),
        "delete" => shim::start::delete(&flags, &bundle)
            .map_err(anyhow::Error::from)
            .and_then(|resp| {
                let bytes = resp.write_to_bytes()?;
                std::io::stdout().write_all(&bytes)?;
                Ok(())
            }),
        "" => shim::serve::serve(&flags, &bundle).map_err(anyhow::Error::from),
        other => Err(anyhow::anyhow!("unknown action {other:?}")),
    };
    if let Err(e) = result {
        eprintln!("containerd-shim-peapod-v2: {e:#}");
        std::process::exit(1);
    }
}
