//! The sync channel between the runtime and a container's init helper: one
//! `SOCK_SEQPACKET` socketpair, one JSON message per packet, close-on-exec on both ends.
//!
//! Close-on-exec is the signal: when container init's `execve` succeeds its end closes,
//! so the runtime reads end-of-file; when anything fails, the child sends
//! [`FromChild::Failed`] with the cause first (youki's `ErrorEnclosure`), so errors never
//! surface as a bare "exit status 1".

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;

use std::io::{IoSlice, IoSliceMut};

use nix::sys::socket::{
    recvmsg, send, sendmsg, socketpair, AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag,
    SockType,
};
use oci_spec::runtime::{Process, Spec};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::seccomp::Program;
use crate::spec::NamespacePlan;

/// Largest message: a spec with many mounts and env entries stays far below this.
const MAX_MESSAGE: usize = 1 << 20;

/// One end of the channel.
#[derive(Debug)]
pub struct Channel(OwnedFd);

impl Channel {
    /// A connected pair (parent end, child end), both close-on-exec.
    pub fn pair() -> io::Result<(Channel, Channel)> {
        let (a, b) = socketpair(AddressFamily::Unix, SockType::SeqPacket, None, SockFlag::SOCK_CLOEXEC)?;
        Ok((Channel(a), Channel(b)))
    }

    /// Wraps an inherited end (in the init helper).
    pub(crate) fn from_fd(fd: OwnedFd) -> Channel {
        Channel(fd)
    }

    /// Sends one message.
    pub fn send<T: Serialize>(&self, msg: &T) -> io::Result<()> {
        let bytes = serde_json::to_vec(msg).map_err(io::Error::other)?;
        send(self.0.as_raw_fd(), &bytes, MsgFlags::MSG_NOSIGNAL)?;
        Ok(())
    }

    /// Sends one message with `fd` attached (`SCM_RIGHTS`).
    pub fn send_with_fd<T: Serialize>(&self, msg: &T, fd: BorrowedFd<'_>) -> io::Result<()> {
        let bytes = serde_json::to_vec(msg).map_err(io::Error::other)?;
        let fds = [fd.as_raw_fd()];
        let cmsg = [ControlMessage::ScmRights(&fds)];
        sendmsg::<()>(
            self.0.as_raw_fd(),
            &[IoSlice::new(&bytes)],
            &cmsg,
            MsgFlags::MSG_NOSIGNAL,
            None,
        )?;
        Ok(())
    }

    /// Receives one message; `None` when the peer closed its end.
    pub fn recv<T: DeserializeOwned>(&self) -> io::Result<Option<T>> {
        Ok(self.recv_with_fd()?.map(|(msg, _)| msg))
    }

    /// Receives one message and the fd attached to it, if any (close-on-exec).
    pub fn recv_with_fd<T: DeserializeOwned>(&self) -> io::Result<Option<(T, Option<OwnedFd>)>> {
        // The next message's length first (MSG_PEEK | MSG_TRUNC), so the buffer is its size:
        // a MAX_MESSAGE buffer per call would be zeroed each time and stay dirty in the
        // calling thread's malloc arena, about 1 MiB per thread that spawned.
        let len = loop {
            match nix::sys::socket::recv(self.0.as_raw_fd(), &mut [], MsgFlags::MSG_PEEK | MsgFlags::MSG_TRUNC) {
                Err(nix::Error::EINTR) => continue,
                Err(e) => return Err(e.into()),
                Ok(n) => break n,
            }
        };
        let mut buf = vec![0u8; len.clamp(1, MAX_MESSAGE)];
        let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
        let (n, fd) = loop {
            let mut iov = [IoSliceMut::new(&mut buf)];
            match recvmsg::<()>(
                self.0.as_raw_fd(),
                &mut iov,
                Some(&mut space),
                MsgFlags::MSG_CMSG_CLOEXEC,
            ) {
                Err(nix::Error::EINTR) => continue,
                Err(e) => return Err(e.into()),
                Ok(msg) => {
                    let mut fd = None;
                    for c in msg.cmsgs()? {
                        if let ControlMessageOwned::ScmRights(fds) = c {
                            for raw in fds {
                                let owned = crate::sys::own_received_fd(raw);
                                fd.get_or_insert(owned);
                            }
                        }
                    }
                    break (msg.bytes, fd);
                }
            }
        };
        if n == 0 {
            return Ok(None);
        }
        let msg = serde_json::from_slice(&buf[..n]).map_err(io::Error::other)?;
        Ok(Some((msg, fd)))
    }
}

impl AsFd for Channel {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

/// What the runtime tells the init helper and container init.
#[derive(Debug, Serialize, Deserialize)]
pub enum ToChild {
    /// Before its config, on cgroup v1: the helper moves itself into the container's
    /// cgroup by writing `0` to each of these files (every hierarchy's `tasks`).
    ///
    /// A thread that moves itself skips the kernel's global `cgroup_threadgroup_rwsem`
    /// (and its RCU grace period), which a write of another process's pid to
    /// `cgroup.procs` takes once per hierarchy: about 17 ms for nine v1 hierarchies
    /// here, against 2 ms (kernel commit "cgroup: Optimize single thread migration").
    /// The helper is single-threaded, so moving its one thread moves the process.
    EnterCgroup(Vec<PathBuf>),
    /// Create a container: enter namespaces, clone its init.
    Init(Box<InitConfig>),
    /// Enter the namespaces of a running container and run a process there. Sent with
    /// the pidfd of the container's init attached, whose namespaces are joined.
    Exec(Box<ExecConfig>),
    /// The runtime has recorded the new pid: go on.
    Continue,
    /// `start`: exec the container's program.
    Start,
}

/// What the init helper and container init report.
#[derive(Debug, Serialize, Deserialize)]
pub enum FromChild {
    /// The helper cloned the process, which has this pid in the runtime's pid namespace.
    Spawned {
        /// Host pid.
        pid: i32,
        /// Time the helper spent joining and creating namespaces, µs.
        namespaces_us: u64,
    },
    /// The pty master of a `process.terminal` process is attached to this message.
    Console,
    /// Container init finished setting up and waits for `Start`.
    Ready {
        /// Time spent on the mount table (mounts, /dev, pivot_root, finalize), µs.
        rootfs_us: u64,
        /// Time spent on process settings (user, caps, rlimits, cwd, program lookup, and
        /// the seccomp load when `noNewPrivileges` is off), µs.
        process_us: u64,
    },
    /// Setup failed at `stage`; `error` is the full cause chain.
    Failed {
        /// e.g. `rootfs`, `namespaces`, `process`.
        stage: String,
        /// The error, with its sources.
        error: String,
    },
}

/// Everything container init needs, already validated by `spec::validate`.
#[derive(Debug, Serialize, Deserialize)]
pub struct InitConfig {
    /// The OCI spec.
    pub spec: Spec,
    /// Absolute host path of the rootfs.
    pub rootfs: PathBuf,
    /// Namespaces in join order.
    pub namespaces: Vec<NamespacePlan>,
    /// The host runs the unified cgroup v2 hierarchy.
    pub cgroup_v2: bool,
    /// The host's cgroup mounts as the runtime read them once
    /// ([`crate::rootfs::host_hierarchies`]), for the container's `cgroup` mounts.
    pub cgroup_mounts: Vec<crate::rootfs::Hierarchy>,
    /// `linux.seccomp`, compiled by the runtime ([`crate::seccomp::compile`]); init only
    /// loads it, in the order [`crate::seccomp`] describes.
    pub seccomp: Option<Program>,
}

/// Everything an exec'd process needs.
#[derive(Debug, Serialize, Deserialize)]
pub struct ExecConfig {
    /// Host pid of the container's init, for messages: its namespaces are joined through
    /// the pidfd that comes with the message, never by this pid.
    pub target: i32,
    /// The process to run.
    pub process: Process,
    /// The container's compiled `linux.seccomp`: exec'd processes get the container's
    /// filter, as under runc.
    pub seccomp: Option<Program>,
}
