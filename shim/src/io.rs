//! A task's stdio as containerd hands it over (`CreateTaskRequest` / `ExecProcessRequest`
//! `stdin`, `stdout`, `stderr`):
//! - a FIFO path: containerd's FIFOs. The process writes into a pipe of ours and a
//!   copier moves the bytes into the FIFO. The copier first waits until a reader
//!   has the FIFO open (containerd opens its end in a goroutine of its own, containerd/fifo's
//!   `OpenFifo` with `O_NONBLOCK`, which may run after a short process has already
//!   exited): a FIFO whose last writer closes before any reader opened discards what was
//!   written, and the reader's blocking open then waits forever for a writer (CRI's
//!   ExecSync hung on its IO, the lost `exec echo ok`). runc's shim waits the same
//!   way (`pkg/process/io.go`, a blocking `O_WRONLY` open), then also opens a read end of
//!   its own, as the copier does, so writes never raise SIGPIPE while containerd restarts.
//!   Once the process has exited, the copier waits at most [`FIFO_READER_GRACE`] for a
//!   reader, then drops the output so the exit is still published. Because the process
//!   never holds the FIFO, a background child that keeps the pipe open (`sh -c 'sleep 20
//!   &'`) does not keep containerd waiting: once the process exits, the copier drains what
//!   is buffered and closes its FIFO end.
//! - `file:///path`: appended to the file. peapod's extension `file:///path?format=cri`
//!   writes Kubernetes' CRI log format instead, as containerd's CRI plugin does for
//!   kubelet: one `<RFC 3339 time> <stdout|stderr> <F|P> <text>` record per line (the
//!   `peapod` CLI's embedded mode uses it, so `logs --timestamps` works alike in both modes).
//! - `binary:///path?args`: containerd's logging-binary protocol: the binary gets the
//!   process's stdout on fd 3, stderr on fd 4, and closes fd 5 when ready; environment
//!   `CONTAINER_ID` and `CONTAINER_NAMESPACE`.
//! - empty: `/dev/null`.
//!
//! With a terminal, the pty master (from `sandbox`) is copied to stdout, and stdin into it.
//!
//! An output copier is a task on the shim's event loop, not a thread (issue 17): it waits
//! there for output or the exit, holding no thread and no buffer; a burst of output is
//! written from tokio's blocking pool (a write may block on a full FIFO or a slow disk),
//! with the reads that follow until the pipe is empty. A shim at rest thus keeps no
//! thread per container (two per container before, 22 KiB of stack each).

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::process::{Command, Stdio as StdStdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use tokio::runtime::Handle;

/// A stdio target that cannot be opened.
#[derive(Debug, thiserror::Error)]
#[error("{stream} {uri:?}: {op}: {source}")]
pub struct IoError {
    /// `stdin`, `stdout` or `stderr`.
    pub stream: &'static str,
    /// The URI or path containerd gave.
    pub uri: String,
    /// What failed.
    pub op: &'static str,
    /// Cause.
    #[source]
    pub source: io::Error,
}

/// Who owns the stdio (for `binary://` loggers).
#[derive(Debug, Clone)]
pub struct IoOwner {
    /// containerd namespace.
    pub namespace: String,
    /// Container id.
    pub id: String,
}

/// The stdio of one process: the fds to give it, and the copiers that serve them.
pub struct ProcessIo {
    /// Ends for the process (taken by `create`/`exec`).
    pub stdio: sandbox::Stdio,
    /// One per output copier: disconnected once the copier has ended.
    copiers: Vec<mpsc::Receiver<()>>,
    stdin: Arc<Mutex<Option<File>>>,
    /// `CloseIO` arrived: the stdin copier closes the process's stdin once it has moved
    /// everything already written to the FIFO.
    stdin_closing: Arc<AtomicBool>,
    /// A copier moves containerd's stdin FIFO into the process.
    stdin_copier: bool,
    exited: Arc<ExitSignal>,
    /// The event loop the output copiers run on.
    events: Option<Handle>,
    /// (stdin, stdout) URIs waiting for the pty master of a terminal process.
    terminal: Option<(String, String)>,
    console: Option<OwnedFd>,
}

/// The process's exit as its output copiers learn it: a flag that the copiers' tasks can
/// also wait for, so that they sleep until there is output or an exit, with no periodic
/// wake-up while the process runs. Set from any thread.
struct ExitSignal(tokio::sync::watch::Sender<bool>);

impl ExitSignal {
    fn new() -> ExitSignal {
        ExitSignal(tokio::sync::watch::Sender::new(false))
    }

    fn set(&self) {
        self.0.send_replace(true);
    }

    fn is_set(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves once the flag is set.
    async fn wait(&self) {
        let _ = self.0.subscribe().wait_for(|&set| set).await;
    }
}

fn pipe() -> io::Result<(File, File)> {
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    Ok((File::from(r), File::from(w)))
}

impl ProcessIo {
    /// Opens the targets; output copiers run on `events`, the shim's event loop. With
    /// `terminal`, no fds are handed to the process: call [`ProcessIo::attach_console`]
    /// with the pty master once it exists.
    ///
    /// Errors: [`IoError`] naming the stream and URI when a target cannot be opened, or
    /// when output is to be copied and `events` is `None` (a service made outside a
    /// tokio runtime).
    pub fn open(
        stdin: &str,
        stdout: &str,
        stderr: &str,
        terminal: bool,
        owner: &IoOwner,
        events: Option<&Handle>,
    ) -> Result<ProcessIo, IoError> {
        let mut io = ProcessIo {
            events: events.cloned(),
            stdio: sandbox::Stdio::default(),
            copiers: Vec::new(),
            stdin: Arc::new(Mutex::new(None)),
            stdin_closing: Arc::new(AtomicBool::new(false)),
            stdin_copier: false,
            exited: Arc::new(ExitSignal::new()),
            terminal: None,
            console: None,
        };
        if terminal {
            io.terminal = Some((stdin.to_string(), stdout.to_string()));
            return Ok(io);
        }
        if let Some(stdout_uri) = stdout.strip_prefix("binary://") {
            let (out_r, out_w) = pipe().map_err(err("stdout", stdout, "pipe"))?;
            let (err_r, err_w) = pipe().map_err(err("stderr", stderr, "pipe"))?;
            spawn_logger(stdout_uri, stdout, out_r, err_r, owner)?;
            io.stdio.stdout = Some(out_w.into());
            io.stdio.stderr = Some(err_w.into());
        } else {
            for (name, uri) in [("stdout", stdout), ("stderr", stderr)] {
                let Some(sink) = open_sink(name, uri)? else { continue };
                let (r, w) = pipe().map_err(err(name, uri, "pipe"))?;
                let copier = io.spawn_copier(name, uri, r, sink)?;
                io.copiers.push(copier);
                let w: OwnedFd = w.into();
                if name == "stdout" {
                    io.stdio.stdout = Some(w);
                } else {
                    io.stdio.stderr = Some(w);
                }
            }
        }
        if !stdin.is_empty() {
            let (r, w) = pipe().map_err(err("stdin", stdin, "pipe"))?;
            *io.stdin.lock().expect("stdin lock") = Some(w);
            io.stdio.stdin = Some(r.into());
            spawn_stdin(stdin.to_string(), io.stdin.clone(), io.stdin_closing.clone());
            io.stdin_copier = true;
        }
        Ok(io)
    }

    /// Connects the pty master of a terminal process: output to the stdout target, the
    /// stdin FIFO into the terminal. Keeps a handle for [`ProcessIo::resize`].
    pub fn attach_console(&mut self, master: OwnedFd) -> Result<(), IoError> {
        let Some((stdin, stdout)) = self.terminal.take() else {
            return Ok(());
        };
        let dup = |m: &OwnedFd| {
            m.try_clone()
                .map(File::from)
                .map_err(err("stdout", &stdout, "dup pty master"))
        };
        if let Some(sink) = open_sink("stdout", &stdout)? {
            // A terminal has one output stream: CRI logs call it stdout.
            let copier = self.spawn_copier("stdout", &stdout, dup(&master)?, sink)?;
            self.copiers.push(copier);
        }
        if !stdin.is_empty() {
            *self.stdin.lock().expect("stdin lock") = Some(dup(&master)?);
            spawn_stdin(stdin, self.stdin.clone(), self.stdin_closing.clone());
            self.stdin_copier = true;
        }
        self.console = Some(master);
        Ok(())
    }

    /// Resizes the terminal, if the process has one (`ResizePty`), in character cells.
    pub fn resize(&self, width: u32, height: u32) -> Result<(), sandbox::sys::SysError> {
        match &self.console {
            Some(m) => sandbox::sys::set_window_size(
                m.as_fd(),
                u16::try_from(height).unwrap_or(u16::MAX),
                u16::try_from(width).unwrap_or(u16::MAX),
            ),
            None => Ok(()),
        }
    }

    /// Closes the process's stdin (`CloseIO`): it reads end-of-file once buffered input
    /// is consumed. Input already written to containerd's FIFO still reaches the process
    /// first (clients close their end, then call CloseIO, while the copier may not have
    /// read it yet). A terminal keeps its input open (the pty is shared with output).
    pub fn close_stdin(&self) {
        if self.console.is_some() {
            return;
        }
        if self.stdin_copier {
            self.stdin_closing.store(true, Ordering::SeqCst);
        } else {
            self.stdin.lock().expect("stdin lock").take();
        }
    }

    /// After the process exited: lets the copiers drain what is buffered, waits for them,
    /// and closes every target. Blocks at most as long as the buffered data takes to move
    /// (or [`FIFO_READER_GRACE`] for a FIFO no reader opened). The copiers run on the
    /// event loop: never call this on it, nor while holding a lock that a task on it takes.
    pub fn finish(&mut self) {
        self.exited.set();
        for c in self.copiers.drain(..) {
            // Disconnected when the copier ends: it never sends.
            let _ = c.recv();
        }
        self.stdin.lock().expect("stdin lock").take();
        self.console = None;
    }

    /// Starts a copier of `src` into `sink` (`stream`'s target `uri`) on the event loop.
    fn spawn_copier(
        &self,
        stream: &'static str,
        uri: &str,
        src: File,
        sink: Sink,
    ) -> Result<mpsc::Receiver<()>, IoError> {
        let Some(events) = &self.events else {
            return Err(IoError {
                stream,
                uri: uri.to_string(),
                op: "start output copier",
                source: io::Error::other("the shim has no event loop"),
            });
        };
        let (ended, copier) = mpsc::channel();
        let exited = self.exited.clone();
        events.spawn(async move {
            copy_output(stream, src, sink, exited).await;
            drop(ended);
        });
        Ok(copier)
    }
}

/// Dropped without [`ProcessIo::finish`] (a deleted task, an exec that is forgotten): the
/// copiers drain what is buffered and end on their own, as after the exit.
impl Drop for ProcessIo {
    fn drop(&mut self) {
        self.exited.set();
    }
}

fn err<'a>(stream: &'static str, uri: &'a str, op: &'static str) -> impl FnOnce(io::Error) -> IoError + 'a {
    move |source| IoError {
        stream,
        uri: uri.to_string(),
        op,
        source,
    }
}

/// Kubernetes' CRI log records longer than this are split into partial (`P`) records,
/// like containerd's CRI plugin does (its default `max_container_log_line_size`), in bytes.
pub const CRI_MAX_LINE: usize = 16 * 1024;

/// How long, once the process has exited, a copier waits for a reader to open the
/// process's stdout or stderr FIFO before it drops the output (runc's shim fails an exec's
/// start after 30 s without one). containerd opens its end at once; this bounds only a
/// client that never reads, so that the exit is still published.
pub const FIFO_READER_GRACE: Duration = if cfg!(test) {
    Duration::from_millis(300)
} else {
    Duration::from_secs(10)
};

/// An output target.
struct Sink {
    /// The file or, once a reader has it open, the FIFO.
    file: Option<File>,
    /// A FIFO not yet opened: see [`Sink::connect`].
    fifo: Option<PathBuf>,
    /// Our own read end of the FIFO, held so that writes never fail with EPIPE (nor raise
    /// SIGPIPE) while the reader is away (containerd restarting).
    _keep: Option<File>,
    /// For `?format=cri`: the stream name and the line not yet ended by a newline.
    cri: Option<(&'static str, Vec<u8>)>,
}

impl Sink {
    /// Opens a FIFO target for writing once a reader has it open, polling `open(O_WRONLY |
    /// O_NONBLOCK)` (ENXIO while no reader has it open). Waits as long as the process runs
    /// (`exited` unset), then at most [`FIFO_READER_GRACE`]. False when no reader came or
    /// the FIFO cannot be opened (logged): the output is then dropped.
    async fn connect(&mut self, name: &str, exited: &ExitSignal) -> bool {
        let Some(path) = self.fifo.take() else {
            return self.file.is_some();
        };
        let mut delay = Duration::from_millis(1);
        let mut exited_at = None;
        loop {
            let opened = OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_CLOEXEC | libc::O_NONBLOCK)
                .open(&path);
            match opened {
                Ok(file) => {
                    // Blocking writes, as before: a full FIFO holds the copier, not the data.
                    let _ = nix::fcntl::fcntl(&file, nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::empty()));
                    self._keep = OpenOptions::new()
                        .read(true)
                        .custom_flags(libc::O_CLOEXEC | libc::O_NONBLOCK)
                        .open(&path)
                        .ok();
                    self.file = Some(file);
                    return true;
                }
                Err(e) if e.raw_os_error() == Some(libc::ENXIO) => {
                    if exited.is_set() {
                        let since = *exited_at.get_or_insert_with(Instant::now);
                        if since.elapsed() >= FIFO_READER_GRACE {
                            tracing::warn!(stream = name, fifo = %path.display(), "no reader opened the fifo: output dropped");
                            return false;
                        }
                    }
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_millis(50));
                }
                Err(e) => {
                    tracing::warn!(stream = name, fifo = %path.display(), error = %e, "open fifo");
                    return false;
                }
            }
        }
    }

    /// Writes process output: as is, or as CRI records of the complete lines.
    fn write(&mut self, mut data: &[u8]) -> io::Result<()> {
        let Some(file) = self.file.as_mut() else {
            return Ok(());
        };
        let Some((stream, pending)) = &mut self.cri else {
            return file.write_all(data);
        };
        while let Some(end) = data.iter().position(|&b| b == b'\n') {
            pending.extend_from_slice(&data[..end]);
            data = &data[end + 1..];
            let line = std::mem::take(pending);
            write_cri(file, stream, true, &line)?;
        }
        pending.extend_from_slice(data);
        while pending.len() >= CRI_MAX_LINE {
            let rest = pending.split_off(CRI_MAX_LINE);
            let part = std::mem::replace(pending, rest);
            write_cri(file, stream, false, &part)?;
        }
        Ok(())
    }

    /// At end of output: a last line without newline still becomes a full record.
    fn finish(&mut self) -> io::Result<()> {
        match (&mut self.cri, self.file.as_mut()) {
            (Some((stream, pending)), Some(file)) if !pending.is_empty() => {
                let line = std::mem::take(pending);
                write_cri(file, stream, true, &line)
            }
            _ => Ok(()),
        }
    }
}

/// One CRI log record, in one `write` (O_APPEND keeps the stdout and stderr copiers'
/// records whole in the shared file).
fn write_cri(file: &mut File, stream: &str, full: bool, text: &[u8]) -> io::Result<()> {
    file.write_all(&proto::crilog::record(stream, full, text))
}

/// Opens an output target: `None` for an empty URI.
fn open_sink(stream: &'static str, uri: &str) -> Result<Option<Sink>, IoError> {
    if uri.is_empty() {
        return Ok(None);
    }
    if let Some(target) = uri.strip_prefix("file://") {
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let cri = match query {
            "" => None,
            "format=cri" => Some((stream, Vec::new())),
            other => {
                return Err(IoError {
                    stream,
                    uri: uri.to_string(),
                    op: "parse the file URI",
                    source: io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!("unknown query {other:?} (only format=cri is known)"),
                    ),
                })
            }
        };
        let path = PathBuf::from(path);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(err(stream, uri, "create log directory"))?;
        }
        return OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map(|file| {
                Some(Sink {
                    file: Some(file),
                    fifo: None,
                    _keep: None,
                    cri,
                })
            })
            .map_err(err(stream, uri, "open log file"));
    }
    // containerd's FIFO: opened by the copier once a reader has it (`Sink::connect`); here
    // only checked, so a wrong path fails the call that named it.
    let meta = std::fs::metadata(uri).map_err(err(stream, uri, "open fifo"))?;
    if !std::os::unix::fs::FileTypeExt::is_fifo(&meta.file_type()) {
        return Err(IoError {
            stream,
            uri: uri.to_string(),
            op: "open fifo",
            source: io::Error::new(io::ErrorKind::InvalidInput, "not a FIFO"),
        });
    }
    Ok(Some(Sink {
        file: None,
        fifo: Some(PathBuf::from(uri)),
        _keep: None,
        cri: None,
    }))
}

/// Bytes a copier reads at a time: containerd's own copy buffer (32 KiB, its shims' and
/// CRI's `io.CopyBuffer` pool), half a default pipe.
const COPY_BUFFER: usize = 32 * 1024;

/// Copies `src` (a pipe or pty master) to `sink` until end-of-file (EIO on a pty whose
/// slaves are all closed), or, once `exited` is set, until nothing more is buffered (for a
/// pty, nothing more within [`PTY_SETTLE`]). Runs
/// on the event loop; the writes run on the blocking pool ([`Output::drain`]).
async fn copy_output(name: &'static str, src: File, mut sink: Sink, exited: Arc<ExitSignal>) {
    // The process's output waits in our pipe (or pty) meanwhile.
    if !sink.connect(name, &exited).await {
        return;
    }
    let tty = nix::unistd::isatty(&src).unwrap_or(false);
    let registered = nix::fcntl::fcntl(&src, nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK))
        .map_err(io::Error::from)
        .and_then(|_| crate::wake::register_readable(src));
    let src = match registered {
        Ok(src) => Arc::new(src),
        Err(e) => {
            tracing::warn!(stream = name, error = %e, "watch process output: output dropped");
            return;
        }
    };
    let mut out = Output {
        name,
        tty,
        sink,
        dropped: Dropped::default(),
    };
    loop {
        // Read the flag before reading the pipe: if the process had exited by then,
        // every byte it wrote is already buffered, so "would block" means drained.
        let done = exited.is_set();
        // Allocated only once there is output (issue 17: a buffer per copier kept for the
        // process's life was half an idle shim's live heap).
        let mut buf;
        let read = if done {
            buf = vec![0u8; COPY_BUFFER];
            src.get_ref().read(&mut buf)
        } else {
            tokio::select! {
                ready = src.readable() => {
                    let Ok(mut ready) = ready else { break };
                    buf = vec![0u8; COPY_BUFFER];
                    // A read through the guard: "would block" clears the readiness it
                    // saw, and only that, so output that came meanwhile is not missed.
                    match ready.try_io(|src| src.get_ref().read(&mut buf)) {
                        Ok(read) => read,
                        Err(_would_block) => continue,
                    }
                }
                () = exited.wait() => continue,
            }
        };
        match next_step(name, read, done) {
            Step::Copy(n) => {
                let (src, exited) = (src.clone(), exited.clone());
                let drained =
                    tokio::task::spawn_blocking(move || out.drain(buf, n, src.get_ref(), &exited).map(|()| out)).await;
                match drained {
                    Ok(Ok(more)) => out = more,
                    Ok(Err(())) | Err(_) => return,
                }
            }
            Step::Retry | Step::Wait => {}
            Step::Drained => {
                let src = src.clone();
                let more = tty
                    && tokio::task::spawn_blocking(move || pty_has_more(src.get_ref()))
                        .await
                        .unwrap_or(false);
                if !more {
                    break;
                }
            }
            Step::End => break,
        }
    }
    out.end();
}

/// How long, once the process has exited and its terminal's master has nothing to read,
/// a copier waits for more: the kernel moves what the process wrote from the pty's slave
/// side to its master through a buffer of its own (flushed by a work item), so right
/// after the exit a read may find nothing although output is still on its way (the likely
/// cause of the last ~2.5 KB of `seq -s " " 1000000` going missing once, under load, in
/// containerd's large tty output test; not reproduced on demand).
/// Once the slave is closed everywhere the master is readable at once (data, or EIO at the
/// end), so this bounds only a terminal a background process still holds.
const PTY_SETTLE: Duration = Duration::from_millis(100);

/// After the exit: true when the pty master `src` turns readable (more output, or the
/// end) within [`PTY_SETTLE`]. Blocks: call it on the blocking pool.
fn pty_has_more(src: &File) -> bool {
    let mut fds = [PollFd::new(src.as_fd(), PollFlags::POLLIN)];
    let timeout = PollTimeout::try_from(PTY_SETTLE).unwrap_or(PollTimeout::ZERO);
    match poll(&mut fds, timeout) {
        Ok(n) => n > 0,
        // Interrupted: read again, which comes back here if nothing is there.
        Err(nix::errno::Errno::EINTR) => true,
        Err(_) => false,
    }
}

/// What a copier does after a read of the process's output.
enum Step {
    /// Write these many bytes, then read again.
    Copy(usize),
    /// Interrupted: read again.
    Retry,
    /// Nothing buffered: wait for output or the exit.
    Wait,
    /// Nothing to read and the process has exited: the end for a pipe (all it wrote is
    /// buffered by then); a terminal may still have output on its way ([`pty_has_more`]).
    Drained,
    /// End of output.
    End,
}

/// Classifies a read of the process's output; `done`: the process had exited before it.
fn next_step(name: &str, read: io::Result<usize>, done: bool) -> Step {
    match read {
        Ok(0) => Step::End,
        Ok(n) => Step::Copy(n),
        Err(e) if e.kind() == io::ErrorKind::Interrupted => Step::Retry,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
            if done {
                Step::Drained
            } else {
                Step::Wait
            }
        }
        // A pty master whose slaves are all closed.
        Err(e) if e.raw_os_error() == Some(libc::EIO) => Step::End,
        Err(e) => {
            tracing::warn!(stream = name, error = %e, "read process output");
            Step::End
        }
    }
}

/// An output copier's target, and what it has dropped.
struct Output {
    name: &'static str,
    /// The source is a pty master (see [`Step::Drained`]).
    tty: bool,
    sink: Sink,
    dropped: Dropped,
}

impl Output {
    /// On the blocking pool: writes the `n` bytes read into `buf`, then reads and writes
    /// until the pipe is empty (`Ok`: wait for more) or the output ended (`Err`: the
    /// target is finished).
    fn drain(&mut self, mut buf: Vec<u8>, mut n: usize, mut src: &File, exited: &ExitSignal) -> Result<(), ()> {
        loop {
            match self.sink.write(&buf[..n]) {
                Ok(()) => {
                    self.dropped.resumed(self.name);
                }
                Err(e) => {
                    self.dropped.failed(self.name, &e, n);
                }
            }
            n = loop {
                let done = exited.is_set();
                match next_step(self.name, src.read(&mut buf), done) {
                    Step::Copy(n) => break n,
                    Step::Retry => {}
                    Step::Wait => {
                        // The buffer is freed here; the heap is trimmed once at rest.
                        crate::serve::worked();
                        return Ok(());
                    }
                    Step::Drained if self.tty && pty_has_more(src) => {}
                    Step::Drained | Step::End => {
                        self.end();
                        return Err(());
                    }
                }
            };
        }
    }

    /// At the end of output: reports what was dropped and ends a last CRI record.
    fn end(&mut self) {
        let _ = self.dropped.resumed(self.name);
        if let Err(e) = self.sink.finish() {
            tracing::warn!(stream = self.name, error = %e, "write to stdio target");
        }
    }
}

/// Output a stdio target refused (a full disk under a log file: ENOSPC), counted so the
/// shim's log gets one warning when writes start failing, naming the error, and one when
/// they work again or the copy ends, with the bytes lost meanwhile; not one per 32 KiB
/// read while the disk stays full.
#[derive(Debug, Default)]
struct Dropped {
    /// Bytes dropped since writes began to fail; 0 while they succeed.
    bytes: u64,
}

impl Dropped {
    /// A write of `n` bytes failed with `e`.
    fn failed(&mut self, stream: &str, e: &io::Error, n: usize) -> bool {
        let first = self.bytes == 0;
        if first {
            tracing::warn!(stream, error = %e, "write to stdio target: output dropped until writes succeed again");
        }
        self.bytes += n as u64;
        first
    }

    /// A write succeeded, or the copy ended: reports what was dropped, if anything.
    fn resumed(&mut self, stream: &str) -> Option<u64> {
        let lost = std::mem::take(&mut self.bytes);
        if lost == 0 {
            return None;
        }
        tracing::warn!(stream, dropped_bytes = lost, "write to stdio target: output dropped");
        Some(lost)
    }
}

/// Copies containerd's stdin FIFO into the process until end-of-file, or until `CloseIO`
/// (`closing`) once nothing more is buffered in the FIFO.
fn spawn_stdin(fifo: String, writer: Arc<Mutex<Option<File>>>, closing: Arc<AtomicBool>) {
    let _ = std::thread::Builder::new().name("io-stdin".into()).spawn(move || {
        // Blocks until containerd (or the attached client) opens the writing end.
        let mut src = match OpenOptions::new().read(true).custom_flags(libc::O_CLOEXEC).open(&fifo) {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(%fifo, error = %e, "open stdin fifo");
                writer.lock().expect("stdin lock").take();
                return;
            }
        };
        let _ = nix::fcntl::fcntl(&src, nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK));
        loop {
            // Read the flag first: once CloseIO arrived, "would block" means drained.
            let close = closing.load(Ordering::SeqCst);
            // Waits for input, looking at the flag every 100 ms meanwhile; the buffer is
            // allocated only once there is input (issue 17: it was held for life).
            let mut fds = [PollFd::new(src.as_fd(), PollFlags::POLLIN)];
            let timeout = if close {
                PollTimeout::ZERO
            } else {
                PollTimeout::from(100u16)
            };
            if !poll(&mut fds, timeout).is_ok_and(|n| n > 0) {
                if close {
                    break;
                }
                continue;
            }
            let mut buf = vec![0u8; COPY_BUFFER];
            let n = match src.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(_) => break,
            };
            let mut guard = writer.lock().expect("stdin lock");
            let written = guard.as_mut().is_some_and(|w| w.write_all(&buf[..n]).is_ok());
            if !written {
                return;
            }
        }
        writer.lock().expect("stdin lock").take();
    });
}

/// Starts a `binary://` logging driver and waits until it signals readiness by closing
/// fd 5.
fn spawn_logger(target: &str, uri: &str, stdout: File, stderr: File, owner: &IoOwner) -> Result<(), IoError> {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut cmd = Command::new(path);
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some((k, v)) => cmd.arg(format!("{k}={v}")),
            None => cmd.arg(pair),
        };
    }
    let (ready_r, ready_w) = pipe().map_err(err("stdout", uri, "pipe"))?;
    cmd.env("CONTAINER_ID", &owner.id)
        .env("CONTAINER_NAMESPACE", &owner.namespace)
        .stdin(StdStdio::null())
        .stdout(StdStdio::null())
        .stderr(StdStdio::null());
    sandbox::sys::map_fds(
        &mut cmd,
        &[(stdout.as_fd(), 3), (stderr.as_fd(), 4), (ready_w.as_fd(), 5)],
    );
    cmd.spawn().map_err(err("stdout", uri, "start logging binary"))?;
    drop(ready_w);
    // EOF once the driver closed fd 5 (or exited).
    let mut byte = [0u8; 1];
    let _ = (&ready_r).read(&mut byte);
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_full_disk_is_reported_once_with_the_bytes_dropped() {
        let mut d = Dropped::default();
        let full = io::Error::from_raw_os_error(libc::ENOSPC);
        assert_eq!(d.resumed("stdout"), None);
        assert!(d.failed("stdout", &full, 65536), "the first failure is reported");
        assert!(!d.failed("stdout", &full, 100), "later ones are only counted");
        assert_eq!(d.resumed("stdout"), Some(65636));
        assert_eq!(d.resumed("stdout"), None, "counted once");
        assert!(d.failed("stdout", &full, 1), "a new run of failures is reported again");
    }

    use super::*;

    fn records(path: &std::path::Path) -> Vec<(String, String, String)> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| {
                let mut f = l.splitn(4, ' ');
                let time = f.next().unwrap();
                assert!(time.parse::<jiff::Timestamp>().is_ok(), "time {time:?}");
                let (stream, tag, text) = (f.next().unwrap(), f.next().unwrap(), f.next().unwrap_or(""));
                (stream.to_string(), tag.to_string(), text.to_string())
            })
            .collect()
    }

    #[test]
    fn cri_sink_writes_one_record_per_line_and_splits_long_ones() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("c.log");
        let uri = format!("file://{}?format=cri", log.display());
        let mut sink = open_sink("stderr", &uri).unwrap().unwrap();
        sink.write(b"one\ntw").unwrap();
        sink.write(b"o\n\n").unwrap();
        sink.write(&vec![b'x'; CRI_MAX_LINE + 3]).unwrap();
        sink.write(b"\nlast").unwrap();
        sink.finish().unwrap();
        let long = "x".repeat(CRI_MAX_LINE);
        let want = [
            ("stderr", "F", "one"),
            ("stderr", "F", "two"),
            ("stderr", "F", ""),
            ("stderr", "P", long.as_str()),
            ("stderr", "F", "xxx"),
            ("stderr", "F", "last"),
        ];
        let got = records(&log);
        assert_eq!(got.len(), want.len(), "{got:?}");
        for (g, w) in got.iter().zip(want) {
            assert_eq!((g.0.as_str(), g.1.as_str(), g.2.as_str()), w);
        }
    }

    /// An event loop as the daemon's: a current-thread runtime driven by a thread of its
    /// own, shared by the tests of this process.
    fn event_loop() -> &'static Handle {
        static LOOP: std::sync::OnceLock<Handle> = std::sync::OnceLock::new();
        LOOP.get_or_init(|| {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let handle = runtime.handle().clone();
            std::thread::spawn(move || runtime.block_on(std::future::pending::<()>()));
            handle
        })
    }

    fn owner() -> IoOwner {
        IoOwner {
            namespace: "test".into(),
            id: "test".into(),
        }
    }

    /// A `ProcessIo` with a terminal whose output goes to the file `log`, and the pty's
    /// slave end (the process's).
    fn terminal_io(log: &std::path::Path) -> (ProcessIo, File) {
        let uri = format!("file://{}", log.display());
        let mut io = ProcessIo::open("", &uri, "", true, &owner(), Some(event_loop())).unwrap();
        let pty = nix::pty::openpty(None, None).unwrap();
        io.attach_console(pty.master).unwrap();
        (io, File::from(pty.slave))
    }

    /// A FIFO, a `ProcessIo` with it as stdout, and the process's stdout end.
    fn fifo_io(dir: &std::path::Path) -> (PathBuf, ProcessIo, File) {
        fifo_io_named(dir, "stdout")
    }

    fn fifo_io_named(dir: &std::path::Path, name: &str) -> (PathBuf, ProcessIo, File) {
        let fifo = dir.join(name);
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let mut io = ProcessIo::open("", fifo.to_str().unwrap(), "", false, &owner(), Some(event_loop())).unwrap();
        let out = File::from(io.stdio.stdout.take().unwrap());
        (fifo, io, out)
    }

    /// A reader of `fifo` that has it open (non-blocking: with no writer, a read returns
    /// end-of-file at once).
    fn fifo_reader(fifo: &std::path::Path) -> File {
        OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(fifo)
            .unwrap()
    }

    /// Reads `reader` until `want` arrived or 2 s passed; returns what it read.
    fn read_until(reader: &mut File, want: &[u8]) -> Vec<u8> {
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut got = Vec::new();
        let mut buf = [0u8; 64];
        while got != want && Instant::now() < deadline {
            match reader.read(&mut buf) {
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("read fifo: {e}"),
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        got
    }

    /// The copier sleeps between bursts of output, and each burst reaches the reader while
    /// the process runs: no output waits for the exit.
    #[test]
    fn output_reaches_the_fifo_burst_by_burst_while_the_process_runs() {
        let dir = tempfile::tempdir().unwrap();
        let (fifo, mut io, mut out) = fifo_io(dir.path());
        let mut reader = fifo_reader(&fifo);
        for burst in ["one\n", "two\n", "three\n"] {
            std::thread::sleep(Duration::from_millis(50));
            out.write_all(burst.as_bytes()).unwrap();
            let got = read_until(&mut reader, burst.as_bytes());
            assert_eq!(String::from_utf8_lossy(&got), burst, "burst not copied while running");
        }
        drop(out);
        io.finish();
    }

    /// A FIFO whose reader stops reading blocks its copier's writes, on the blocking pool:
    /// the event loop, and another process's copier on it, go on.
    #[test]
    fn a_full_fifo_holds_only_its_own_copier() {
        let dir = tempfile::tempdir().unwrap();
        let (full_fifo, mut full_io, full_out) = fifo_io_named(dir.path(), "full");
        let mut stalled = fifo_reader(&full_fifo);
        // Fills the FIFO and then our pipe: the copier blocks in a write.
        nix::fcntl::fcntl(&full_out, nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK)).unwrap();
        let chunk = vec![b'x'; 4096];
        let mut filled = 0usize;
        // Until nothing more fits for 200 ms: the copier is stuck in its write.
        let mut progress = Instant::now();
        while progress.elapsed() < Duration::from_millis(200) {
            match (&full_out).write(&chunk) {
                Ok(n) => {
                    filled += n;
                    progress = Instant::now();
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::sleep(Duration::from_millis(10)),
                Err(e) => panic!("write: {e}"),
            }
        }
        assert!(
            filled > 2 * 64 * 1024,
            "only {filled} bytes fitted: the copier does not copy"
        );

        let (fifo, mut io, mut out) = fifo_io(dir.path());
        let mut reader = fifo_reader(&fifo);
        out.write_all(b"ok\n").unwrap();
        let got = read_until(&mut reader, b"ok\n");
        assert_eq!(String::from_utf8_lossy(&got), "ok\n", "a full FIFO held another copier");
        drop(out);
        io.finish();

        // Every byte still reaches the stalled reader once it reads again.
        drop(full_out);
        let finisher = std::thread::spawn(move || full_io.finish());
        let mut copied = 0usize;
        let mut buf = vec![0u8; 64 * 1024];
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match stalled.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => copied += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    assert!(Instant::now() < deadline, "{copied} of {filled} bytes copied");
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => panic!("read fifo: {e}"),
            }
        }
        finisher.join().unwrap();
        assert_eq!(copied, filled);
    }

    /// Reads the FIFO from a reader that opens it `late`, as containerd's goroutine may
    /// under load, until `ok\n` or 2 s; returns what it read.
    fn late_reader(fifo: &std::path::Path, late: Duration) -> Vec<u8> {
        std::thread::sleep(late);
        // Non-blocking, so the test never hangs where containerd would.
        read_until(&mut fifo_reader(fifo), b"ok\n")
    }

    /// A process that wrote and exited before containerd's reader opened the FIFO (the
    /// issue's `exec echo ok`): its output reaches the late reader, and the exit is
    /// finished only after it did. Before the copier waited for a reader, the bytes went
    /// into a FIFO nobody had open, the kernel dropped them when the copier closed it, and
    /// containerd's blocking open then waited forever for a writer.
    #[test]
    fn output_of_a_process_that_exited_waits_for_a_late_fifo_reader() {
        let dir = tempfile::tempdir().unwrap();
        let (fifo, mut io, mut out) = fifo_io(dir.path());
        out.write_all(b"ok\n").unwrap();
        drop(out);
        let finisher = std::thread::spawn(move || {
            io.finish();
            Instant::now()
        });
        std::thread::sleep(Duration::from_millis(20));
        let reader_opened = Instant::now() + Duration::from_millis(100);
        let got = late_reader(&fifo, Duration::from_millis(100));
        let finished = finisher.join().unwrap();
        assert_eq!(String::from_utf8_lossy(&got), "ok\n", "output lost");
        assert!(finished >= reader_opened, "finished before the reader came");
    }

    /// With no reader at all, a finished process's output is dropped after
    /// `FIFO_READER_GRACE` (300 ms in tests), so its exit is still published.
    #[test]
    fn output_without_a_fifo_reader_is_dropped_after_the_grace() {
        let dir = tempfile::tempdir().unwrap();
        let (_fifo, mut io, mut out) = fifo_io(dir.path());
        out.write_all(b"ok\n").unwrap();
        drop(out);
        let begun = Instant::now();
        io.finish();
        let took = begun.elapsed();
        assert!(took >= FIFO_READER_GRACE, "gave up after {took:?}");
        assert!(took < FIFO_READER_GRACE + Duration::from_secs(1), "waited {took:?}");
    }

    /// A terminal's output written right before the exit all arrives, and the writer's
    /// exit (its slave closed) ends the copy. (containerd's large tty output test once lost
    /// the last ~2.5 KB of `seq`'s output under load, which [`pty_has_more`] addresses;
    /// this test did not reproduce that race here, it guards the drain and the end.)
    #[test]
    fn a_terminal_s_last_output_before_the_exit_arrives() {
        let dir = tempfile::tempdir().unwrap();
        for round in 0..20 {
            let log = dir.path().join(format!("out-{round}"));
            let (mut io, mut slave) = terminal_io(&log);
            const LEN: usize = 1 << 20;
            let writer = std::thread::spawn(move || slave.write_all(&[b'x'; LEN]).unwrap());
            writer.join().unwrap();
            let began = Instant::now();
            io.finish();
            assert_eq!(std::fs::metadata(&log).unwrap().len(), LEN as u64, "round {round}");
            assert!(began.elapsed() < PTY_SETTLE * 10, "round {round}: the copy did not end");
        }
    }

    /// A terminal a background process still holds after the exit (its slave open) ends
    /// the copy after [`PTY_SETTLE`], with what was written.
    #[test]
    fn a_terminal_held_by_a_background_process_ends_after_the_settle_time() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("out");
        let (mut io, mut slave) = terminal_io(&log);
        slave.write_all(b"before the exit").unwrap();
        let began = Instant::now();
        io.finish();
        let took = began.elapsed();
        assert_eq!(std::fs::read(&log).unwrap(), b"before the exit");
        assert!(
            took >= PTY_SETTLE && took < PTY_SETTLE * 20,
            "the copy ended after {took:?}"
        );
        drop(slave);
    }

    #[test]
    fn unknown_file_query_is_refused_with_its_name() {
        let e = open_sink("stdout", "file:///tmp/x.log?format=json").err().unwrap();
        assert!(e.to_string().contains("format=json"), "{e}");
    }
}
