//! A FUSE mount whose server never answers: every lookup, open, stat or read
//! of it waits, as on a server that stopped. Closing the device lets them go.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use super::tempdir::TempDir;

pub struct SilentFuse {
    /// Where it is mounted.
    pub at: PathBuf,
    /// Its device, from the mount table (a stat of it would wait).
    pub dev: u64,
    device: Option<OwnedFd>,
    _dir: Option<TempDir>,
}

impl SilentFuse {
    /// A directory of its own, for root.
    pub fn mount() -> SilentFuse {
        let dir = TempDir::new("silent-fuse");
        let mut fuse = SilentFuse::mount_on(&dir.0, 0o40000, 0);
        fuse._dir = Some(dir);
        fuse
    }

    /// Mounted on `at` (a directory, or a file with `rootmode` 0o100644),
    /// as `user_id` mounts it with `allow_other`: root may enter it too.
    pub fn mount_on(at: &Path, rootmode: u32, user_id: u32) -> SilentFuse {
        let device = nix::fcntl::open(
            "/dev/fuse",
            nix::fcntl::OFlag::O_RDWR | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .expect("/dev/fuse (the test needs root and the fuse module)");
        let opts = format!(
            "fd={},rootmode={rootmode:o},user_id={user_id},group_id={user_id},allow_other",
            device.as_raw_fd()
        );
        let target = std::ffi::CString::new(at.to_str().unwrap()).unwrap();
        let opts = std::ffi::CString::new(opts).unwrap();
        // SAFETY: NUL-ended strings that outlive the call.
        let r = unsafe {
            libc::mount(
                c"execwatch-test".as_ptr(),
                target.as_ptr(),
                c"fuse".as_ptr(),
                0,
                opts.as_ptr().cast(),
            )
        };
        assert_eq!(r, 0, "mount fuse: {}", std::io::Error::last_os_error());
        let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let line = info
            .lines()
            .rev()
            .find(|l| l.split(' ').nth(4) == at.to_str())
            .expect("the FUSE mount in /proc/self/mountinfo");
        let (major, minor) = line.split(' ').nth(2).unwrap().split_once(':').unwrap();
        SilentFuse {
            at: at.to_path_buf(),
            dev: libc::makedev(major.parse().unwrap(), minor.parse().unwrap()),
            device: Some(device),
            _dir: None,
        }
    }

    /// Let whatever waits on it go (with an error), as a server that dies.
    pub fn abort(&mut self) {
        self.device = None;
    }
}

impl Drop for SilentFuse {
    fn drop(&mut self) {
        self.device = None;
        let _ = nix::mount::umount2(&self.at, nix::mount::MntFlags::MNT_DETACH);
    }
}
