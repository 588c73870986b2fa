//! Pseudo-terminals for the demo's printer tap: a "till side" and a "printer side", each a
//! raw pty pair whose slave the gateway opens by a stable symlink (as it would open
//! `/dev/serial/by-id/...`) and whose master the demo plays the till or the printer on.

use std::ffi::CStr;
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

/// One pty pair with a symlink to its slave.
pub struct Pty {
    /// The demo's end (the till writes here, or the printer reads here).
    pub master: File,
    _slave: OwnedFd,
    /// The symlink the gateway opens.
    pub link: PathBuf,
}

impl Pty {
    /// Opens a raw pty pair and links `link` to its slave.
    pub fn open(link: &Path) -> std::io::Result<Pty> {
        let mut master = -1;
        let mut slave = -1;
        // SAFETY: openpty writes two descriptors; null name/termios/winsize are allowed.
        let rc = unsafe {
            libc::openpty(
                &mut master,
                &mut slave,
                std::ptr::null_mut(),
                std::ptr::null(),
                std::ptr::null(),
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: both descriptors were just returned by openpty and are owned here.
        let (master, slave) =
            unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
        // Not inherited by child processes (a gateway started later would otherwise hold the
        // master open, and closing it here would never hang the device up).
        for fd in [&master, &slave] {
            // SAFETY: setting a descriptor flag on an owned, valid descriptor.
            if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        // SAFETY: termios is plain data filled by tcgetattr on a valid descriptor.
        unsafe {
            let mut termios: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(slave.as_raw_fd(), &mut termios) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            libc::cfmakeraw(&mut termios);
            if libc::tcsetattr(slave.as_raw_fd(), libc::TCSANOW, &termios) != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        let mut name = [0 as libc::c_char; 128];
        // SAFETY: the buffer is large enough and NUL-terminated on success.
        let rc = unsafe { libc::ttyname_r(slave.as_raw_fd(), name.as_mut_ptr(), name.len()) };
        if rc != 0 {
            return Err(std::io::Error::from_raw_os_error(rc));
        }
        // SAFETY: ttyname_r succeeded, so the buffer holds a C string.
        let name = unsafe { CStr::from_ptr(name.as_ptr()) }
            .to_string_lossy()
            .to_string();
        let _ = std::fs::remove_file(link);
        std::os::unix::fs::symlink(&name, link)?;
        Ok(Pty {
            master: File::from(master),
            _slave: slave,
            link: link.to_path_buf(),
        })
    }
}
