//! Reading a runtime's files only when nobody but their owner could have
//! written them: every directory from `/` down, and the file, must be owned
//! by an allowed uid and not group- or world-writable (a directory may be if
//! it is sticky), and no component may be a symbolic link. The walk holds
//! each directory open (`openat` with `O_NOFOLLOW`), so what was checked is
//! what is read. In a user's files the walk never enters a FUSE mount: the
//! user may run its server, and one that never answers would hold the
//! daemon in the first stat or lookup for good.

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat, OFlag};
use nix::sys::stat::{fstat, Mode, SFlag};

/// Who may own the files that attest a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owners {
    /// A system container: root only.
    Root,
    /// A rootless container of this user: root or the user.
    RootOr(u32),
}

impl Owners {
    fn allows(self, uid: u32) -> bool {
        match self {
            Owners::Root => uid == 0,
            Owners::RootOr(u) => uid == 0 || uid == u,
        }
    }
}

/// Why a file was not read.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error("{0} does not exist")]
    Missing(PathBuf),
    #[error("{path} is not trusted: {why}")]
    Untrusted { path: PathBuf, why: String },
    #[error("{path} is larger than {cap} bytes")]
    TooLarge { path: PathBuf, cap: usize },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl TrustError {
    pub fn is_missing(&self) -> bool {
        matches!(self, TrustError::Missing(_))
    }
}

fn io_err(path: &Path, e: Errno) -> TrustError {
    match e {
        Errno::ENOENT => TrustError::Missing(path.to_path_buf()),
        Errno::ENOTDIR | Errno::ELOOP => TrustError::Untrusted {
            path: path.to_path_buf(),
            why: "a symbolic link or not a directory".into(),
        },
        e => TrustError::Io {
            path: path.to_path_buf(),
            source: e.into(),
        },
    }
}

/// Check the owner and mode of an open file or directory.
fn check(fd: &OwnedFd, path: &Path, owners: Owners, want_dir: bool) -> Result<(), TrustError> {
    let st = fstat(fd.as_fd()).map_err(|e| io_err(path, e))?;
    let untrusted = |why: String| TrustError::Untrusted {
        path: path.to_path_buf(),
        why,
    };
    let kind = SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits());
    if want_dir && kind != SFlag::S_IFDIR {
        return Err(untrusted("not a directory".into()));
    }
    if !want_dir && kind != SFlag::S_IFREG {
        return Err(untrusted("not a regular file".into()));
    }
    if !owners.allows(st.st_uid) {
        return Err(untrusted(format!("owned by uid {}", st.st_uid)));
    }
    // A sticky directory (a container's /run tmpfs is 1777) lets others add
    // entries but not rename or remove ours, and every entry below is
    // checked in turn; a writable file or plain directory is refused.
    let sticky_dir = want_dir && st.st_mode & 0o1000 != 0;
    if st.st_mode & 0o022 != 0 && !sticky_dir {
        return Err(untrusted(format!(
            "group- or world-writable (mode {:o})",
            st.st_mode & 0o7777
        )));
    }
    Ok(())
}

/// The mount `fd` is on (its id), its device and its type and mode, from
/// the VFS alone: `AT_STATX_DONT_SYNC` lets FUSE answer from its cache
/// instead of asking its server.
fn statx_of(fd: BorrowedFd<'_>) -> Result<(u64, u64, u16), Errno> {
    // SAFETY: statx is plain old data, all zeroes valid.
    let mut stx: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: an open descriptor, a NUL-ended empty path with AT_EMPTY_PATH,
    // and a buffer of the size the kernel writes.
    let r = unsafe {
        libc::statx(
            fd.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH | libc::AT_STATX_DONT_SYNC,
            libc::STATX_MNT_ID | libc::STATX_TYPE,
            &mut stx,
        )
    };
    if r != 0 {
        return Err(Errno::last());
    }
    if stx.stx_mask & libc::STATX_MNT_ID == 0 {
        return Err(Errno::ENOSYS); // before 5.8
    }
    let dev = libc::makedev(stx.stx_dev_major, stx.stx_dev_minor);
    Ok((stx.stx_mnt_id, dev, stx.stx_mode))
}

/// What a mount is, for a walk that must not ask a user's server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum MountKind {
    /// Not FUSE.
    Other,
    /// FUSE mounted with `user_id=0`: in the daemon's own mount table only
    /// root can have made it (fusermount gives the caller's uid, and a user
    /// namespace's mounts are in a table of its own).
    RootsFuse,
    UsersFuse,
}

/// One line of `/proc/self/mountinfo`: the mount's id and device, and what
/// it is (type, and for FUSE the `user_id` among the super options).
fn parse_mount_line(line: &[u8]) -> Option<((u64, u64), MountKind)> {
    let num = |b: &[u8]| std::str::from_utf8(b).ok()?.parse::<u64>().ok();
    let mut fields = line.split(|&b| b == b' ');
    let id = num(fields.next()?)?;
    let _parent = fields.next()?;
    let (major, minor) = {
        let d = fields.next()?;
        let colon = d.iter().position(|&b| b == b':')?;
        (num(&d[..colon])?, num(&d[colon + 1..])?)
    };
    let dev = libc::makedev(major.try_into().ok()?, minor.try_into().ok()?);
    // Root and mount point escape spaces, so the lone `-` ends the optional
    // fields; then type, source, super options.
    let mut after = fields.skip_while(|f| *f != b"-").skip(1);
    let fstype = after.next()?;
    let options = after.nth(1).unwrap_or(b"");
    let fuse = fstype == b"fuse" || fstype == b"fuseblk" || fstype.starts_with(b"fuse.");
    let kind = if !fuse {
        MountKind::Other
    } else if options.split(|&b| b == b',').any(|o| o == b"user_id=0") {
        MountKind::RootsFuse
    } else {
        MountKind::UsersFuse
    };
    Some(((id, dev), kind))
}

/// Every mount of `/proc/self/mountinfo`, by id and device. Read as bytes:
/// a user names mount points and FUSE sources as they like.
fn read_mount_kinds() -> Option<HashMap<(u64, u64), MountKind>> {
    MOUNTINFO_READS.with(|n| n.set(n.get() + 1));
    let info = std::fs::read("/proc/self/mountinfo").ok()?;
    Some(
        info.split(|&b| b == b'\n')
            .filter_map(parse_mount_line)
            .collect(),
    )
}

thread_local! {
    /// Reads of the mount table by this thread (what the checks cost).
    static MOUNTINFO_READS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// What each mount (id and device) is, per thread: the whole mount table,
/// read when a mount is not in it yet, and again after any mount or
/// unmount, since both numbers are reused, lowest free first: a user's new
/// mount may take those of one known to be root's. Not per walk: on a host
/// with thousands of mounts the table is large, and each of a user's forged
/// cgroups asks for a walk.
struct MountKinds {
    /// `/proc/self/mountinfo`, polled for a change (`POLLPRI`).
    table: Option<File>,
    kinds: HashMap<(u64, u64), MountKind>,
}

thread_local! {
    static MOUNT_KINDS: std::cell::RefCell<MountKinds> = std::cell::RefCell::new(MountKinds {
        table: None,
        kinds: HashMap::new(),
    });
}

impl MountKinds {
    /// Whether the mount table may have changed since this thread last
    /// asked; the kernel keeps that per open file.
    fn changed(&mut self) -> bool {
        let Some(table) = &self.table else {
            self.table = File::open("/proc/self/mountinfo").ok();
            return true;
        };
        let mut p = libc::pollfd {
            fd: table.as_raw_fd(),
            events: libc::POLLPRI,
            revents: 0,
        };
        // SAFETY: one valid pollfd, for an open descriptor, no wait.
        let r = unsafe { libc::poll(&mut p, 1, 0) };
        // Changed: POLLPRI (with POLLERR); an error counts as a change.
        r != 0
    }
}

/// Why a mount's kind is not known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KindUnknown {
    /// Not in the mount table (unmounted since it was opened).
    NotMounted,
    /// The mount table could not be read.
    TableUnreadable,
}

/// Whether the mount is FUSE (`fuse`, `fuseblk`, `fuse.*`), and whose.
/// Called after the mount's numbers were taken from an open file, so a
/// change of the table since then is seen.
fn kind_of(id: u64, dev: u64) -> Result<MountKind, KindUnknown> {
    MOUNT_KINDS.with(|m| {
        let mut m = m.borrow_mut();
        if m.changed() {
            m.kinds.clear();
        }
        if let Some(&kind) = m.kinds.get(&(id, dev)) {
            return Ok(kind);
        }
        m.kinds = read_mount_kinds().ok_or(KindUnknown::TableUnreadable)?;
        m.kinds
            .get(&(id, dev))
            .copied()
            .ok_or(KindUnknown::NotMounted)
    })
}

/// A bare reference (`O_PATH`) to the file at `path` (absolute), taken one
/// component at a time from `/`: a symbolic link anywhere on it is `ELOOP`
/// (as is `..`), and a step into a FUSE mount a user made is `EXDEV`,
/// before anything is looked up in it: its server may never answer, and
/// would hold the caller for good. Root's FUSE mounts are entered.
pub fn open_path_outside_users_fuse(path: &Path) -> Result<OwnedFd, Errno> {
    let mut comps = path.components().peekable();
    if comps.next() != Some(Component::RootDir) {
        return Err(Errno::EINVAL);
    }
    let flags = OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let mut fd = nix::fcntl::open("/", flags, Mode::empty())?;
    let (mut at, _, _) = statx_of(fd.as_fd())?;
    while let Some(c) = comps.next() {
        let Component::Normal(name) = c else {
            return Err(Errno::ELOOP);
        };
        fd = openat(fd.as_fd(), name, flags, Mode::empty())?;
        // FUSE without `allow_other` refuses even root a stat: a user's.
        let (id, dev, mode) = statx_of(fd.as_fd()).map_err(|e| match e {
            Errno::EACCES => Errno::EXDEV,
            e => e,
        })?;
        if u32::from(mode) & libc::S_IFMT == libc::S_IFLNK {
            return Err(Errno::ELOOP);
        }
        if id != at {
            match kind_of(id, dev) {
                Ok(MountKind::Other | MountKind::RootsFuse) => at = id,
                Ok(MountKind::UsersFuse) | Err(KindUnknown::NotMounted) => {
                    return Err(Errno::EXDEV)
                }
                Err(KindUnknown::TableUnreadable) => return Err(Errno::EIO),
            }
        }
        if comps.peek().is_some() && u32::from(mode) & libc::S_IFMT != libc::S_IFDIR {
            return Err(Errno::ENOTDIR);
        }
    }
    Ok(fd)
}

/// Where a walk is: the mount of the last directory it checked.
struct Mounts {
    /// Only a user's files are guarded: root's FUSE mounts are root's.
    guard: bool,
    at: Option<u64>,
}

impl Mounts {
    fn new(owners: Owners) -> Mounts {
        Mounts {
            guard: owners != Owners::Root,
            at: None,
        }
    }

    /// Refuse `fd` if it is the root of a FUSE mount; before anything that
    /// would ask the file system.
    fn enter(&mut self, fd: &OwnedFd, path: &Path) -> Result<(), TrustError> {
        if !self.guard {
            return Ok(());
        }
        let untrusted = |why: String| TrustError::Untrusted {
            path: path.to_path_buf(),
            why,
        };
        let (id, dev, _) =
            statx_of(fd.as_fd()).map_err(|e| untrusted(format!("its mount is unknown ({e})")))?;
        if self.at.is_some_and(|at| at != id) {
            match kind_of(id, dev) {
                Ok(MountKind::RootsFuse | MountKind::UsersFuse) => {
                    return Err(untrusted("on a FUSE mount".into()))
                }
                Ok(MountKind::Other) => {}
                Err(KindUnknown::NotMounted) => {
                    return Err(untrusted("a mount not in /proc/self/mountinfo".into()))
                }
                Err(KindUnknown::TableUnreadable) => {
                    return Err(untrusted("/proc/self/mountinfo could not be read".into()))
                }
            }
        }
        self.at = Some(id);
        Ok(())
    }
}

/// Open the directory `path` (absolute), checking it and every directory above.
pub fn open_dir(path: &Path, owners: Owners) -> Result<OwnedFd, TrustError> {
    open_dir_at(path, owners).map(|(fd, _)| fd)
}

fn open_dir_at(path: &Path, owners: Owners) -> Result<(OwnedFd, Mounts), TrustError> {
    let dir_flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let mut comps = path.components();
    if comps.next() != Some(Component::RootDir) {
        return Err(TrustError::Untrusted {
            path: path.to_path_buf(),
            why: "not an absolute path".into(),
        });
    }
    let mut mounts = Mounts::new(owners);
    let mut fd = nix::fcntl::open("/", dir_flags, Mode::empty()).map_err(|e| io_err(path, e))?;
    let mut walked = PathBuf::from("/");
    mounts.enter(&fd, &walked)?;
    check(&fd, &walked, owners, true)?;
    for c in comps {
        let Component::Normal(name) = c else {
            return Err(TrustError::Untrusted {
                path: path.to_path_buf(),
                why: "`.` or `..` in the path".into(),
            });
        };
        walked.push(name);
        fd = openat(fd.as_fd(), name, dir_flags, Mode::empty()).map_err(|e| io_err(&walked, e))?;
        mounts.enter(&fd, &walked)?;
        check(&fd, &walked, owners, true)?;
    }
    Ok((fd, mounts))
}

/// A directory that passed the checks, held open.
pub struct TrustedDir {
    fd: OwnedFd,
    path: PathBuf,
    owners: Owners,
    mount: Option<u64>,
}

impl TrustedDir {
    /// Open `path` (absolute), checking it and every directory above.
    pub fn open(path: &Path, owners: Owners) -> Result<TrustedDir, TrustError> {
        let (fd, mounts) = open_dir_at(path, owners)?;
        Ok(TrustedDir {
            fd,
            path: path.to_path_buf(),
            owners,
            mount: mounts.at,
        })
    }

    /// Read the file `name` in it, at most `cap` bytes, if it passes the checks.
    pub fn read(&self, name: &str, cap: usize) -> Result<Vec<u8>, TrustError> {
        let path = self.path.join(name);
        if name.is_empty() || name.contains('/') || name == "." || name == ".." {
            return Err(TrustError::Untrusted {
                path,
                why: "not a file name".into(),
            });
        }
        // O_NONBLOCK: a FIFO put in place of the file must not block the daemon.
        let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK;
        let mut mounts = Mounts::new(self.owners);
        let fd = if mounts.guard {
            // A FUSE file mounted on the name: refused before its open,
            // which would ask the server. Then reopened, the same inode.
            let at = openat(
                self.fd.as_fd(),
                name,
                OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| io_err(&path, e))?;
            mounts.at = self.mount;
            mounts.enter(&at, &path)?;
            let proc_path = format!("/proc/self/fd/{}", at.as_raw_fd());
            nix::fcntl::open(proc_path.as_str(), flags - OFlag::O_NOFOLLOW, Mode::empty())
                .map_err(|e| io_err(&path, e))?
        } else {
            openat(self.fd.as_fd(), name, flags, Mode::empty()).map_err(|e| io_err(&path, e))?
        };
        check(&fd, &path, self.owners, false)?;
        // Too large: refused before a byte is read.
        let size = fstat(fd.as_fd()).map_err(|e| io_err(&path, e))?.st_size;
        if usize::try_from(size).map_or(true, |s| s > cap) {
            return Err(TrustError::TooLarge { path, cap });
        }
        let mut buf = Vec::new();
        File::from(fd)
            .take(cap as u64 + 1)
            .read_to_end(&mut buf)
            .map_err(|e| TrustError::Io {
                path: path.clone(),
                source: e,
            })?;
        if buf.len() > cap {
            return Err(TrustError::TooLarge { path, cap });
        }
        Ok(buf)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Read the file `dir/name`, at most `cap` bytes, if `dir` and the file pass
/// the ownership checks.
pub fn read_file(
    dir: &Path,
    name: &str,
    owners: Owners,
    cap: usize,
) -> Result<Vec<u8>, TrustError> {
    TrustedDir::open(dir, owners)?.read(name, cap)
}

/// Names of the subdirectories of a checked directory, at most `max`.
pub fn list_dirs(dir: &Path, owners: Owners, max: usize) -> Result<Vec<String>, TrustError> {
    let fd = open_dir(dir, owners)?;
    // O_PATH descriptors cannot be listed: reopen the checked one for reading.
    let rd = openat(
        fd.as_fd(),
        ".",
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| io_err(dir, e))?;
    let d = nix::dir::Dir::from_fd(rd).map_err(|e| io_err(dir, e))?;
    let mut out = Vec::new();
    for entry in d.into_iter().flatten() {
        if out.len() >= max {
            break;
        }
        if entry.file_type() != Some(nix::dir::Type::Directory) {
            continue;
        }
        let Ok(name) = entry.file_name().to_str() else {
            continue;
        };
        if name != "." && name != ".." {
            out.push(name.to_string());
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_users_walk_reads_the_mount_table_once_per_mount() {
        // `/proc` is a mount of its own, root's: crossed, and looked up once.
        let reads_now = || MOUNTINFO_READS.with(|n| n.get());
        let before = reads_now();
        for _ in 0..3 {
            open_dir(Path::new("/proc/sys"), Owners::RootOr(4242)).unwrap();
        }
        let reads = reads_now() - before;
        assert!(reads <= 1, "{reads} reads of the mount table");
        // Root's walks do not look.
        open_dir(Path::new("/proc/sys"), Owners::Root).unwrap();
        assert_eq!(reads_now() - before, reads);
    }

    #[test]
    fn the_mount_table_is_read_again_after_any_mount_or_unmount() {
        assert!(
            nix::unistd::geteuid().is_root(),
            "this test mounts a tmpfs: run it as root"
        );
        let reads_now = || MOUNTINFO_READS.with(|n| n.get());
        let walk = || open_path_outside_users_fuse(Path::new("/proc/sys")).unwrap();
        walk();
        let before = reads_now();
        walk();
        assert_eq!(
            reads_now(),
            before,
            "the kinds are kept while nothing changes"
        );
        let dir = std::env::temp_dir().join(format!("execwatch-mounts-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        nix::mount::mount(
            Some("tmpfs"),
            &dir,
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )
        .unwrap();
        nix::mount::umount(&dir).unwrap();
        std::fs::remove_dir(&dir).unwrap();
        walk();
        assert!(reads_now() > before, "a mount since: read again");
    }

    #[test]
    fn mount_lines_are_read_as_bytes_and_fuse_is_told_by_its_user_id() {
        let line = parse_mount_line;
        let dev = |a, b| libc::makedev(a, b);
        assert_eq!(
            line(b"36 35 98:0 / /mnt\\040x rw,noatime master:1 - ext4 /dev/root rw"),
            Some(((36, dev(98, 0)), MountKind::Other))
        );
        assert_eq!(
            line(b"40 1 0:50 / /home/u/\xff\xfe rw shared:9 - fuse.sshfs \xffsrc rw,user_id=1000,group_id=1000"),
            Some(((40, dev(0, 50)), MountKind::UsersFuse))
        );
        assert_eq!(
            line(b"41 1 0:51 / /srv rw - fuse /src rw,user_id=0,group_id=0,allow_other"),
            Some(((41, dev(0, 51)), MountKind::RootsFuse))
        );
        // user_id=0 only as a whole option, not as the end of another.
        assert_eq!(
            line(b"42 1 0:52 / /x rw - fuseblk /dev/sdb rw,xuser_id=0"),
            Some(((42, dev(0, 52)), MountKind::UsersFuse))
        );
        assert_eq!(line(b"garbage"), None);
        assert_eq!(line(b"43 1 0:53 / /y rw"), None);
    }

    #[test]
    fn the_path_walk_follows_no_link_and_no_dots() {
        assert_eq!(
            open_path_outside_users_fuse(Path::new("proc")).unwrap_err(),
            Errno::EINVAL
        );
        assert_eq!(
            open_path_outside_users_fuse(Path::new("/proc/self/exe")).unwrap_err(),
            Errno::ELOOP
        );
        assert_eq!(
            open_path_outside_users_fuse(Path::new("/proc/../proc")).unwrap_err(),
            Errno::ELOOP
        );
        assert_eq!(
            open_path_outside_users_fuse(Path::new("/proc/version/x")).unwrap_err(),
            Errno::ENOTDIR
        );
        open_path_outside_users_fuse(Path::new("/proc/version")).unwrap();
    }

    #[test]
    fn owners() {
        assert!(Owners::Root.allows(0));
        assert!(!Owners::Root.allows(1000));
        assert!(Owners::RootOr(1000).allows(1000));
        assert!(Owners::RootOr(1000).allows(0));
        assert!(!Owners::RootOr(1000).allows(1001));
    }

    #[test]
    fn relative_and_dotted_paths_are_refused() {
        assert!(matches!(
            open_dir(Path::new("run/runc"), Owners::Root),
            Err(TrustError::Untrusted { .. })
        ));
        assert!(matches!(
            read_file(Path::new("/run"), "..", Owners::Root, 10),
            Err(TrustError::Untrusted { .. })
        ));
        assert!(matches!(
            read_file(Path::new("/run"), "a/b", Owners::Root, 10),
            Err(TrustError::Untrusted { .. })
        ));
    }

    /// A directory in /tmp with a readable file, a world-writable file, a
    /// FIFO and a link to the directory.
    struct Fixture(PathBuf);

    impl Fixture {
        fn new() -> Fixture {
            use std::os::unix::fs::PermissionsExt;
            let d = std::env::temp_dir().join(format!("execwatch-trust-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&d);
            std::fs::create_dir(&d).unwrap();
            std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700)).unwrap();
            for (name, mode) in [("ok", 0o644), ("ww", 0o666)] {
                std::fs::write(d.join(name), "state").unwrap();
                std::fs::set_permissions(d.join(name), std::fs::Permissions::from_mode(mode))
                    .unwrap();
            }
            nix::unistd::mkfifo(&d.join("fifo"), Mode::from_bits_truncate(0o600)).unwrap();
            std::os::unix::fs::symlink(&d, d.join("link")).unwrap();
            Fixture(d)
        }

        fn chmod(&self, mode: u32) {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&self.0, std::fs::Permissions::from_mode(mode)).unwrap();
        }
    }

    impl Drop for Fixture {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn untrusted(r: Result<Vec<u8>, TrustError>, why: &str) {
        match r {
            Err(TrustError::Untrusted { why: w, .. }) => assert!(w.contains(why), "{w}"),
            other => panic!("expected untrusted ({why}), got {other:?}"),
        }
    }

    #[test]
    fn files_and_directories_are_checked_all_the_way() {
        let f = Fixture::new();
        let me = Owners::RootOr(nix::unistd::geteuid().as_raw());
        // Through the sticky, world-writable /tmp to a private directory.
        assert_eq!(read_file(&f.0, "ok", me, 5).unwrap(), b"state");
        assert!(matches!(
            read_file(&f.0, "ok", me, 4),
            Err(TrustError::TooLarge { cap: 4, .. })
        ));
        untrusted(read_file(&f.0, "ww", me, 100), "writable");
        untrusted(read_file(&f.0, "fifo", me, 100), "not a regular file");
        untrusted(read_file(&f.0.join("link"), "ok", me, 100), "symbolic link");
        assert!(read_file(&f.0, "absent", me, 100).unwrap_err().is_missing());
        f.chmod(0o777);
        untrusted(read_file(&f.0, "ok", me, 100), "writable");
        f.chmod(0o1777);
        assert!(read_file(&f.0, "ok", me, 100).is_ok(), "sticky is crossed");
        f.chmod(0o700);
        // Owned by someone not allowed.
        if nix::unistd::geteuid().is_root() {
            std::os::unix::fs::chown(f.0.join("ok"), Some(65534), None).unwrap();
            untrusted(
                read_file(&f.0, "ok", Owners::Root, 100),
                "owned by uid 65534",
            );
            assert!(read_file(&f.0, "ok", Owners::RootOr(65534), 100).is_ok());
        } else {
            untrusted(read_file(&f.0, "ok", Owners::Root, 100), "owned by uid");
        }
    }
}
