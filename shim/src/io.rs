//! A task's stdio as containerd hands it over (`CreateTaskRequest` / `ExecProcessRequest`
//! `stdin`, `stdout`, `stderr`):
//! - a FIFO path: containerd's FIFOs. The process writes into a pipe of ours and a
//!   copier thread moves the bytes into the FIFO, opened read-write so it never blocks or
//!   raises SIGPIPE while containerd restarts. Because the process never holds the FIFO,
//!   a background child that keeps the pipe open (`sh -c 'sleep 20 &'`) does not keep
//!   containerd waiting: once the process exits, the copier drains what is buffered and
//!   closes its FIFO end.
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

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::process::{Command, Stdio as StdStdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

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
    copiers: Vec<JoinHandle<()>>,
    stdin: Arc<Mutex<Option<File>>>,
    /// `CloseIO` arrived: the stdin copier closes the process's stdin once it has moved
    /// everything already written to the FIFO.
    stdin_closing: Arc<AtomicBool>,
    /// A copier moves containerd's stdin FIFO into the process.
    stdin_copier: bool,
    exited: Arc<AtomicBool>,
    /// (stdin, stdout) URIs waiting for the pty master of a terminal process.
    terminal: Option<(String, String)>,
    console: Option<OwnedFd>,
}

fn pipe() -> io::Result<(File, File)> {
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    Ok((File::from(r), File::from(w)))
}

impl ProcessIo {
    /// Opens the targets. With `terminal`, no fds are handed to the process: call
    /// [`ProcessIo::attach_console`] with the pty master once it exists.
    pub fn open(
        stdin: &str,
        stdout: &str,
        stderr: &str,
        terminal: bool,
        owner: &IoOwner,
    ) -> Result<ProcessIo, IoError> {
        let mut io = ProcessIo {
            stdio: sandbox::Stdio::default(),
            copiers: Vec::new(),
            stdin: Arc::new(Mutex::new(None)),
            stdin_closing: Arc::new(AtomicBool::new(false)),
            stdin_copier: false,
            exited: Arc::new(AtomicBool::new(false)),
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
                io.copiers.push(spawn_copier(name, r, sink, io.exited.clone()));
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
            self.copiers
                .push(spawn_copier("stdout", dup(&master)?, sink, self.exited.clone()));
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
    /// and closes every target. Blocks at most as long as the buffered data takes to move.
    pub fn finish(&mut self) {
        self.exited.store(true, Ordering::SeqCst);
        for c in self.copiers.drain(..) {
            let _ = c.join();
        }
        self.stdin.lock().expect("stdin lock").take();
        self.console = None;
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

/// An opened output target.
struct Sink {
    file: File,
    /// For `?format=cri`: the stream name and the line not yet ended by a newline.
    cri: Option<(&'static str, Vec<u8>)>,
}

impl Sink {
    /// Writes process output: as is, or as CRI records of the complete lines.
    fn write(&mut self, mut data: &[u8]) -> io::Result<()> {
        let Some((stream, pending)) = &mut self.cri else {
            return self.file.write_all(data);
        };
        while let Some(end) = data.iter().position(|&b| b == b'\n') {
            pending.extend_from_slice(&data[..end]);
            data = &data[end + 1..];
            let line = std::mem::take(pending);
            write_cri(&mut self.file, stream, true, &line)?;
        }
        pending.extend_from_slice(data);
        while pending.len() >= CRI_MAX_LINE {
            let rest = pending.split_off(CRI_MAX_LINE);
            let part = std::mem::replace(pending, rest);
            write_cri(&mut self.file, stream, false, &part)?;
        }
        Ok(())
    }

    /// At end of output: a last line without newline still becomes a full record.
    fn finish(&mut self) -> io::Result<()> {
        match &mut self.cri {
            Some((stream, pending)) if !pending.is_empty() => {
                let line = std::mem::take(pending);
                write_cri(&mut self.file, stream, true, &line)
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
            .map(|file| Some(Sink { file, cri }))
            .map_err(err(stream, uri, "open log file"));
    }
    // containerd's FIFO: read-write so the open never blocks and a vanished reader never
    // raises SIGPIPE (it reappears when containerd restarts).
    OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(uri)
        .map(|file| Some(Sink { file, cri: None }))
        .map_err(err(stream, uri, "open fifo"))
}

/// Copies `src` (a pipe or pty master) to `sink` until end-of-file (EIO on a pty whose
/// slaves are all closed), or, once `exited` is set, until nothing more is buffered.
fn spawn_copier(name: &'static str, src: File, mut sink: Sink, exited: Arc<AtomicBool>) -> JoinHandle<()> {
    std::thread::Builder::new()
        .name(format!("io-{name}"))
        .spawn(move || {
            let _ = nix::fcntl::fcntl(&src, nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK));
            let mut src = src;
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                // Read the flag before reading the pipe: if the process had exited by
                // then, every byte it wrote is already buffered, so "would block" means
                // drained.
                let done = exited.load(Ordering::SeqCst);
                match src.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        if let Err(e) = sink.write(&buf[..n]) {
                            tracing::warn!(stream = name, error = %e, "write to stdio target");
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        if done {
                            break;
                        }
                        let mut fds = [PollFd::new(src.as_fd(), PollFlags::POLLIN)];
                        let _ = poll(&mut fds, PollTimeout::from(50u16));
                    }
                    // A pty master whose slaves are all closed.
                    Err(e) if e.raw_os_error() == Some(libc::EIO) => break,
                    Err(e) => {
                        tracing::warn!(stream = name, error = %e, "read process output");
                        break;
                    }
                }
            }
            if let Err(e) = sink.finish() {
                tracing::warn!(stream = name, error = %e, "write to stdio target");
            }
        })
        .expect("spawn io copier")
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
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            // Read the flag first: once CloseIO arrived, "would block" means drained.
            let close = closing.load(Ordering::SeqCst);
            let n = match src.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if close {
                        break;
                    }
                    let mut fds = [PollFd::new(src.as_fd(), PollFlags::POLLIN)];
                    let _ = poll(&mut fds, PollTimeout::from(100u16));
                    continue;
                }
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

    #[test]
    fn unknown_file_query_is_refused_with_its_name() {
        let e = open_sink("stdout", "file:///tmp/x.log?format=json").err().unwrap();
        assert!(e.to_string().contains("format=json"), "{e}");
    }
}
