//! The mount table (/proc/self/mounts): which filesystem is mounted where.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

/// This process's view of the mounts.
pub const PROC_MOUNTS: &str = "/proc/self/mounts";

/// One filesystem mounted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub dir: PathBuf,
    pub fstype: Vec<u8>,
}

/// The mounts in table order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MountTable {
    mounts: Vec<Mount>,
}

impl MountTable {
    /// This process's mount table.
    pub fn read() -> std::io::Result<MountTable> {
        std::fs::read(PROC_MOUNTS).map(|text| MountTable::parse(&text))
    }

    /// The table from its text (`source dir type options dump pass` a
    /// line); a line with fewer than three fields is skipped.
    pub fn parse(text: &[u8]) -> MountTable {
        let mounts = text
            .split(|&b| b == b'\n')
            .filter_map(|line| {
                let mut fields = line
                    .split(|b| b.is_ascii_whitespace())
                    .filter(|f| !f.is_empty());
                let (_source, dir, fstype) = (fields.next()?, fields.next()?, fields.next()?);
                Some(Mount {
                    dir: PathBuf::from(OsString::from_vec(unescape(dir))),
                    fstype: unescape(fstype),
                })
            })
            .collect();
        MountTable { mounts }
    }

    pub fn iter(&self) -> impl Iterator<Item = &Mount> {
        self.mounts.iter()
    }

    /// Where the first filesystem of type `fstype` is mounted.
    pub fn first_of_type(&self, fstype: &str) -> Option<&Path> {
        self.iter()
            .find(|m| m.fstype == fstype.as_bytes())
            .map(|m| m.dir.as_path())
    }

    /// A filesystem of type `fstype` is mounted at `dir`.
    pub fn has(&self, dir: &Path, fstype: &str) -> bool {
        self.iter()
            .any(|m| m.dir == dir && m.fstype == fstype.as_bytes())
    }
}

/// The kernel writes a space, tab, newline or backslash in a field as a
/// backslash and three octal digits (`\040`); anything else is kept as is.
fn unescape(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        let octal = field
            .get(i + 1..i + 4)
            .filter(|d| field[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)))
            .map(|d| d.iter().fold(0u32, |n, c| n * 8 + u32::from(c - b'0')))
            .and_then(|n| u8::try_from(n).ok());
        match octal {
            Some(b) => {
                out.push(b);
                i += 4;
            }
            None => {
                out.push(field[i]);
                i += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &[u8] = b"sysfs /sys sysfs rw,nosuid 0 0\n\
        cgroup2 /sys/fs/cgroup/unified cgroup2 rw 0 0\n\
        bpf /sys/fs/bpf bpf rw 0 0\n\
        /dev/sdb1 /media/my\\040disk\\011x\\134y ext4 rw 0 0\n\
        truncated-line /mnt\n\
        \n\
        bpf /tmp/pins bpf rw 0 0\n";

    #[test]
    fn lines_are_parsed_and_paths_unescaped() {
        let t = MountTable::parse(TABLE);
        let dirs: Vec<&Path> = t.iter().map(|m| m.dir.as_path()).collect();
        assert_eq!(
            dirs,
            [
                Path::new("/sys"),
                Path::new("/sys/fs/cgroup/unified"),
                Path::new("/sys/fs/bpf"),
                Path::new("/media/my disk\tx\\y"),
                Path::new("/tmp/pins"),
            ],
            "the malformed and the empty line are skipped"
        );
        assert_eq!(t.iter().nth(3).unwrap().fstype, b"ext4");
    }

    #[test]
    fn lookups_by_type_and_place() {
        let t = MountTable::parse(TABLE);
        assert_eq!(
            t.first_of_type("cgroup2"),
            Some(Path::new("/sys/fs/cgroup/unified"))
        );
        assert_eq!(t.first_of_type("bpf"), Some(Path::new("/sys/fs/bpf")));
        assert_eq!(t.first_of_type("tracefs"), None);
        assert!(t.has(Path::new("/tmp/pins"), "bpf"));
        assert!(t.has(Path::new("/media/my disk\tx\\y"), "ext4"));
        assert!(!t.has(Path::new("/sys"), "bpf"));
        assert!(!t.has(Path::new("/mnt"), "truncated-line"));
    }

    #[test]
    fn malformed_escapes_are_kept_as_written() {
        assert_eq!(unescape(b"a\\040b"), b"a b");
        assert_eq!(unescape(b"a\\04"), b"a\\04", "too short");
        assert_eq!(unescape(b"a\\089"), b"a\\089", "not octal");
        assert_eq!(unescape(b"a\\777"), b"a\\777", "over a byte");
        assert_eq!(unescape(b"end\\"), b"end\\");
        assert_eq!(unescape(b"\\134\\040"), b"\\ ");
    }

    #[test]
    fn non_utf8_paths_are_kept() {
        let t = MountTable::parse(b"dev /mnt/\xff\\040x ext4 rw 0 0\n");
        assert_eq!(
            t.first_of_type("ext4")
                .unwrap()
                .as_os_str()
                .as_encoded_bytes(),
            b"/mnt/\xff x"
        );
    }
}
