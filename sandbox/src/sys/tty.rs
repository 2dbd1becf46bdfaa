//! Terminals: the controlling terminal of a container with `process.terminal`, and the
//! window size (rows, columns) the shim forwards from containerd's ResizePty.

use std::os::fd::{AsRawFd, BorrowedFd};

use super::{last_error, SysError};

/// Makes the terminal `fd` the controlling terminal of the calling session leader
/// (`ioctl(TIOCSCTTY)`).
pub fn set_controlling_terminal(fd: BorrowedFd<'_>) -> Result<(), SysError> {
    // SAFETY: TIOCSCTTY takes an int argument (0: do not steal) and no pointer.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSCTTY, 0) } < 0 {
        return Err(last_error("ioctl(TIOCSCTTY)"));
    }
    Ok(())
}

/// The window size of terminal `fd` (`ioctl(TIOCGWINSZ)`): (rows, columns) in character
/// cells. Fails with ENOTTY when `fd` is not a terminal.
pub fn window_size(fd: BorrowedFd<'_>) -> Result<(u16, u16), SysError> {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes a `struct winsize` through the pointer, which points to a
    // live value owned by this frame for the duration of the call.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCGWINSZ, &mut ws as *mut libc::winsize) } < 0 {
        return Err(last_error("ioctl(TIOCGWINSZ)"));
    }
    Ok((ws.ws_row, ws.ws_col))
}

/// Sets the window size of terminal `fd` (`ioctl(TIOCSWINSZ)`), in character cells.
pub fn set_window_size(fd: BorrowedFd<'_>, rows: u16, cols: u16) -> Result<(), SysError> {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a `struct winsize` through the pointer, which points to a
    // live, initialised value for the duration of the call.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, &ws as *const libc::winsize) } < 0 {
        return Err(last_error("ioctl(TIOCSWINSZ)"));
    }
    Ok(())
}
