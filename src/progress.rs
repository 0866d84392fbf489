//! The daemon's progress, kept where its death cannot take it: the kept
//! `progress` map (`enum progress_slot` in execve.h), mapped and written as
//! the daemon goes, with plain stores.
//!
//! A daemon killed (SIGKILL, the watchdog's SIGABRT) dies holding records
//! it took from the rings and never counted: those in its output queue,
//! those waiting for a hash or a container's state, those formatted and not
//! yet queued. The next daemon reads here how many the dead one had taken
//! and how many it had counted (delivered or lost), and counts the
//! difference as lost (reason `crash`), so that nothing is lost silently.
//! Two copies and a selector: a crash in the middle of a write leaves the
//! other copy whole.

use std::os::fd::{AsRawFd, BorrowedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::bpf_loader::types::progress_slot as P;
use crate::handover::Meta;

const SELECT: usize = P::PROGRESS_SELECT.0 as usize;
const COPY: usize = P::PROGRESS_COPY.0 as usize;
const RING: usize = P::PROGRESS_RING.0 as usize;

/// Slots of the map for `rings` ring buffers.
pub fn slots(rings: u32) -> u32 {
    (COPY + 2 * (RING + rings as usize)) as u32
}

#[derive(Debug, thiserror::Error)]
pub enum ProgressError {
    #[error("mapping the progress map: {0}")]
    Map(#[source] std::io::Error),
    #[error("the progress map has {have} slots where {rings} ring buffers need {want}")]
    Size { have: u32, want: u32, rings: usize },
}

/// A whole copy: what the daemons had taken from the rings and counted,
/// as of the ring positions in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// Records taken from the kept rings, by all daemons on these maps.
    pub taken: u64,
    /// Their counts (`lost_crash` included); layout, flags and the loss
    /// reports' positions unset.
    pub meta: Meta,
    /// Each ring's consumer position as of the counts.
    pub rings: Vec<u64>,
}

/// The `progress` map, mapped read-write.
pub struct Progress {
    base: NonNull<AtomicU64>,
    map_len: usize,
    rings: usize,
}

impl Progress {
    /// Map the `progress` map `fd`, made for `rings` ring buffers.
    pub fn map(fd: BorrowedFd<'_>, rings: usize) -> Result<Progress, ProgressError> {
        let have = libbpf_rs::MapInfo::new(fd)
            .map_err(|e| ProgressError::Map(std::io::Error::other(e.to_string())))?
            .info
            .max_entries;
        let want = slots(rings as u32);
        if have != want {
            return Err(ProgressError::Size { have, want, rings });
        }
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
        let map_len = (want as usize * 8).next_multiple_of(page);
        // SAFETY: a new shared mapping of an mmapable array map, of the
        // length the kernel allows for it (its values, rounded to a page);
        // the result is checked.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(ProgressError::Map(std::io::Error::last_os_error()));
        }
        Ok(Progress {
            base: NonNull::new(ptr.cast()).expect("mmap never returns null here"),
            map_len,
            rings,
        })
    }

    fn slot(&self, i: usize) -> &AtomicU64 {
        assert!(i < slots(self.rings as u32) as usize);
        // SAFETY: slot i is inside the mapping (checked above), which lives
        // as long as self; the kernel page-aligns it, so each u64 is aligned.
        unsafe { &*self.base.as_ptr().add(i) }
    }

    fn copy_at(&self, which: u64) -> usize {
        COPY + (which as usize - 1) * (RING + self.rings)
    }

    /// The whole copy, if a daemon wrote one.
    pub fn read(&self) -> Option<Snapshot> {
        let which = self.slot(SELECT).load(Ordering::Acquire);
        if which != 1 && which != 2 {
            return None;
        }
        let at = self.copy_at(which);
        let get = |field: P| self.slot(at + field.0 as usize).load(Ordering::Relaxed);
        let meta = Meta {
            delivered: get(P::PROGRESS_DELIVERED),
            decode_errors: get(P::PROGRESS_DECODE_ERRORS),
            lost_output: get(P::PROGRESS_LOST_OUTPUT),
            lost_shutdown: get(P::PROGRESS_LOST_SHUTDOWN),
            lost_upgrade: get(P::PROGRESS_LOST_UPGRADE),
            seen_upgrade: get(P::PROGRESS_SEEN_UPGRADE),
            lost_crash: get(P::PROGRESS_LOST_CRASH),
            ..Meta::default()
        };
        Some(Snapshot {
            taken: get(P::PROGRESS_TAKEN),
            meta,
            rings: (0..self.rings)
                .map(|i| self.slot(at + RING + i).load(Ordering::Relaxed))
                .collect(),
        })
    }

    /// Write a new whole copy. Call before the rings' space up to
    /// `positions` is freed: a crash then leaves a copy at or ahead of them.
    pub fn write(&self, taken: u64, meta: &Meta, positions: impl Iterator<Item = u64>) {
        let which = if self.slot(SELECT).load(Ordering::Relaxed) == 1 {
            2
        } else {
            1
        };
        let at = self.copy_at(which);
        let set = |field: P, v: u64| self.slot(at + field.0 as usize).store(v, Ordering::Relaxed);
        set(P::PROGRESS_TAKEN, taken);
        set(P::PROGRESS_LOST_CRASH, meta.lost_crash);
        set(P::PROGRESS_DELIVERED, meta.delivered);
        set(P::PROGRESS_DECODE_ERRORS, meta.decode_errors);
        set(P::PROGRESS_LOST_OUTPUT, meta.lost_output);
        set(P::PROGRESS_LOST_SHUTDOWN, meta.lost_shutdown);
        set(P::PROGRESS_LOST_UPGRADE, meta.lost_upgrade);
        set(P::PROGRESS_SEEN_UPGRADE, meta.seen_upgrade);
        for (i, pos) in positions.take(self.rings).enumerate() {
            self.slot(at + RING + i).store(pos, Ordering::Relaxed);
        }
        // Release: the copy is whole before it is chosen, and chosen before
        // the caller frees the rings' space (its own release stores).
        self.slot(SELECT).store(which, Ordering::Release);
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `map`, with its length; no reference
        // into it outlives self.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.map_len) };
    }
}

/// What a daemon that died had taken and never counted: `snap.taken` less
/// what is still in the rings below its positions (`in_rings`: taken by
/// its copy but not freed when it died, so read again by this daemon), less
/// what it counted.
pub fn lost_in_crash(snap: &Snapshot, in_rings: u64) -> u64 {
    snap.taken
        .saturating_sub(in_rings)
        .saturating_sub(snap.meta.consumed())
}

#[cfg(test)]
mod tests {
    use super::*;
    use libbpf_rs::{MapCore, MapFlags, MapHandle, MapType};
    use std::os::fd::AsFd;

    fn map(rings: u32) -> MapHandle {
        let opts = libbpf_rs::libbpf_sys::bpf_map_create_opts {
            sz: std::mem::size_of::<libbpf_rs::libbpf_sys::bpf_map_create_opts>() as _,
            map_flags: libbpf_rs::libbpf_sys::BPF_F_MMAPABLE,
            ..Default::default()
        };
        MapHandle::create(
            MapType::Array,
            Some("progress_test"),
            4,
            8,
            slots(rings),
            &opts,
        )
        .expect("an mmapable array map (the test needs root)")
    }

    #[test]
    fn a_written_copy_reads_back_and_a_torn_one_is_never_chosen() {
        let m = map(2);
        let p = Progress::map(m.as_fd(), 2).unwrap();
        assert_eq!(p.read(), None, "nothing written yet");
        let meta = Meta {
            delivered: 10,
            decode_errors: 1,
            lost_output: 2,
            lost_crash: 3,
            ..Meta::default()
        };
        p.write(16, &meta, [64, 128].into_iter());
        let first = p.read().unwrap();
        assert_eq!(
            first,
            Snapshot {
                taken: 16,
                meta,
                rings: vec![64, 128]
            }
        );
        // A write cut short before the selector: the first copy stands.
        let at = p.copy_at(2);
        p.slot(at + P::PROGRESS_TAKEN.0 as usize)
            .store(99, Ordering::Relaxed);
        assert_eq!(p.read().unwrap(), first);
        // Seen through the map itself: the memory is the map's.
        let v = m
            .lookup(&(SELECT as u32).to_ne_bytes(), MapFlags::ANY)
            .unwrap()
            .unwrap();
        assert_eq!(u64::from_ne_bytes(v.try_into().unwrap()), 1);
        // The next write goes to the other copy and is chosen.
        p.write(20, &meta, [72, 136].into_iter());
        assert_eq!(p.read().unwrap().taken, 20);
        assert_eq!(p.read().unwrap().rings, [72, 136]);
        let again = Progress::map(m.as_fd(), 2).unwrap();
        assert_eq!(again.read().unwrap().taken, 20, "kept in the map");
        assert!(matches!(
            Progress::map(m.as_fd(), 3),
            Err(ProgressError::Size { .. })
        ));
    }

    #[test]
    fn the_crash_loss_is_what_was_taken_less_what_was_counted_and_what_is_still_there() {
        let snap = Snapshot {
            taken: 100,
            meta: Meta {
                delivered: 60,
                decode_errors: 2,
                lost_output: 3,
                lost_crash: 5,
                ..Meta::default()
            },
            rings: vec![0],
        };
        // 100 taken, 70 counted, 10 still in the rings: 20 died with it.
        assert_eq!(lost_in_crash(&snap, 10), 20);
        assert_eq!(lost_in_crash(&snap, 40), 0, "never negative");
    }
}
