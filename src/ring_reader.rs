//! The CPUs' ring buffers, read in place as one stream in sequence order.
//!
//! Each CPU writes its own BPF ring buffer. The reader maps them as libbpf
//! does (the consumer page read-write; the producer page and the data,
//! mapped twice so that a record never wraps, read-only) and hands on, one
//! at a time, the record with the lowest sequence number among the rings'
//! first records, in place: no copy.
//!
//! That order keeps every record after what it depends on (a process's
//! exec before its exit, a parent's exec before its child's): a cause is
//! committed before the record that depends on it takes its number. The
//! reading goes in batches: each reads every ring's producer position
//! twice, and hands on only records below the first reading, choosing among
//! everything below the second. A cause of a record below the first
//! reading was committed before that record was reserved, so it is below
//! the second. When a ring's first record is numbered above the chosen one,
//! nothing behind it is a cause either (it was reserved later still); and a
//! ring whose first record is still being written (busy) holds the reading
//! back until it is committed. So the producer positions, which the CPUs
//! write, are read twice a batch, not per record.

use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use libbpf_rs::MapInfo;

/// Bits of a record header's length word (uapi/linux/bpf.h).
const BUSY_BIT: u32 = 1 << 31;
const DISCARD_BIT: u32 = 1 << 30;
const HEADER_LEN: u64 = 8;

#[derive(Debug, thiserror::Error)]
pub enum RingError {
    #[error("opening or mapping a ring buffer: {0}")]
    Map(#[source] std::io::Error),
    #[error("watching the ring buffers: {0}")]
    Epoll(#[source] std::io::Error),
    #[error("ring buffer of {0} bytes: not a power of two")]
    Size(u32),
}

/// A record at the head of a ring: its number, where it is, where the next
/// one starts.
#[derive(Debug, Clone, Copy)]
struct Head {
    seq: u64,
    pos: u64,
    len: u32,
    next: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Peek {
    Empty,
    /// Reserved, not yet committed.
    Busy,
    Record,
    /// A length that does not fit the ring, or a misaligned position.
    Corrupt,
}

struct Ring {
    /// The consumer page (read-write) and the producer page with the data
    /// mapped twice after it (read-only).
    consumer: NonNull<libc::c_void>,
    producer: NonNull<libc::c_void>,
    producer_len: usize,
    page: usize,
    mask: u64,
    /// Consumed up to here (published to the kernel by `publish`).
    cons: u64,
    /// The batch's first reading of the producer position: records below
    /// it may be handed on.
    until: u64,
    /// Its second reading: records below it are seen.
    seen: u64,
    /// The committed first record, once read.
    head: Option<Head>,
    /// Its map, open while mapped.
    _fd: OwnedFd,
}

impl Ring {
    fn map(fd: OwnedFd) -> Result<Ring, RingError> {
        let info = MapInfo::new(fd.as_fd())
            .map_err(|e| RingError::Map(std::io::Error::other(e.to_string())))?
            .info;
        let size = info.max_entries;
        if !size.is_power_of_two() {
            return Err(RingError::Size(size));
        }
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
        let raw = fd.as_raw_fd();
        // SAFETY: a new shared mapping of the ring buffer's consumer page,
        // which the kernel allows read-write; the result is checked.
        let consumer = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                page,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                raw,
                0,
            )
        };
        if consumer == libc::MAP_FAILED {
            return Err(RingError::Map(std::io::Error::last_os_error()));
        }
        let producer_len = page + 2 * size as usize;
        // SAFETY: the producer page and the data pages mapped twice, the
        // layout the kernel gives a ring buffer at offset one page,
        // read-only; the result is checked.
        let producer = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                producer_len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                raw,
                page as libc::off_t,
            )
        };
        if producer == libc::MAP_FAILED {
            let err = std::io::Error::last_os_error();
            // SAFETY: unmapping the mapping made just above, unused since.
            unsafe { libc::munmap(consumer, page) };
            return Err(RingError::Map(err));
        }
        let mut ring = Ring {
            consumer: NonNull::new(consumer).expect("mmap never returns null here"),
            producer: NonNull::new(producer).expect("mmap never returns null here"),
            producer_len,
            page,
            mask: u64::from(size) - 1,
            cons: 0,
            until: 0,
            seen: 0,
            head: None,
            _fd: fd,
        };
        ring.cons = ring.consumer_pos().load(Ordering::Acquire);
        Ok(ring)
    }

    /// The producer position now. The page is mapped read-only: a relaxed
    /// load and a fence, as libbpf's smp_load_acquire.
    fn producer_now(&self) -> u64 {
        let p = self.producer_pos().load(Ordering::Relaxed);
        fence(Ordering::Acquire);
        p
    }

    fn consumer_pos(&self) -> &AtomicU64 {
        // SAFETY: the consumer page is mapped (and aligned) while self
        // lives; the kernel's consumer position is its first u64.
        unsafe { &*(self.consumer.as_ptr() as *const AtomicU64) }
    }

    fn producer_pos(&self) -> &AtomicU64 {
        // SAFETY: as above, for the producer page.
        unsafe { &*(self.producer.as_ptr() as *const AtomicU64) }
    }

    /// The data byte at ring position `pos`.
    fn data(&self, pos: u64) -> *const u8 {
        // SAFETY: the data starts one page into the producer mapping, and
        // `pos & mask` is within its first copy.
        unsafe {
            (self.producer.as_ptr() as *const u8)
                .add(self.page)
                .add((pos & self.mask) as usize)
        }
    }

    /// Look at the first record seen in this batch.
    fn peek(&mut self) -> Peek {
        if self.head.is_some() {
            return Peek::Record;
        }
        loop {
            if self.cons > self.seen {
                // Past what the kernel wrote: the consumer page was written.
                return Peek::Corrupt;
            }
            if self.cons == self.seen {
                return Peek::Empty;
            }
            // The consumer page is writable by anyone who can map the ring.
            if self.cons % 8 != 0 {
                return Peek::Corrupt;
            }
            let at = self.data(self.cons);
            // SAFETY: `at` is a record header below the producer position,
            // so within the data mapping, and 8-byte aligned (checked); the
            // kernel writes its length word atomically (commit clears BUSY
            // with a release store, matched by the fence after this load:
            // the mapping is read-only, so the load itself is relaxed).
            let word = unsafe { (*(at as *const AtomicU32)).load(Ordering::Relaxed) };
            fence(Ordering::Acquire);
            if word & BUSY_BIT != 0 {
                return Peek::Busy;
            }
            let len = word & !(BUSY_BIT | DISCARD_BIT);
            if u64::from(len) + HEADER_LEN > self.mask + 1 {
                return Peek::Corrupt;
            }
            let next = self.cons + (u64::from(len) + HEADER_LEN).next_multiple_of(8);
            if word & DISCARD_BIT != 0 {
                self.consume_to(next);
                continue;
            }
            let seq = if len >= 8 {
                let mut b = [0u8; 8];
                // SAFETY: the record's first 8 bytes, committed (above) and
                // within the double mapping (a record never wraps in it).
                unsafe {
                    std::ptr::copy_nonoverlapping(at.add(HEADER_LEN as usize), b.as_mut_ptr(), 8)
                };
                u64::from_ne_bytes(b)
            } else {
                0 // too short to be an event: a decode error, handed on first
            };
            self.head = Some(Head {
                seq,
                pos: self.cons,
                len,
                next,
            });
            return Peek::Record;
        }
    }

    /// The record `head` (peeked, so committed), lent until it is consumed.
    #[inline(always)]
    fn record(&self, head: &Head) -> &[u8] {
        // SAFETY: a committed record of `len` bytes after its header,
        // contiguous in the double mapping (a record never wraps in it), and
        // not consumed (so not overwritten) while `self` is borrowed.
        unsafe {
            std::slice::from_raw_parts(
                self.data(head.pos).add(HEADER_LEN as usize),
                head.len as usize,
            )
        }
    }

    fn consume_to(&mut self, next: u64) {
        self.cons = next;
        self.head = None;
    }

    /// Tell the kernel how far this ring is consumed: the space is free.
    fn publish(&self) {
        self.consumer_pos().store(self.cons, Ordering::Release);
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        // SAFETY: the two mappings made in `map`, with their lengths; no
        // reference into them outlives self (records are lent to a closure
        // only while self is borrowed).
        unsafe {
            libc::munmap(self.consumer.as_ptr(), self.page);
            libc::munmap(self.producer.as_ptr(), self.producer_len);
        }
    }
}

/// The rings, and an epoll set that wakes when any has records.
pub struct Rings {
    rings: Vec<Ring>,
    /// Rings with records seen in this batch.
    active: Vec<usize>,
    epoll: OwnedFd,
}

/// What [`Rings::next`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next<R> {
    /// A record, handed to the closure, which returned this.
    Record(R),
    /// Nothing left in this batch: start another to read on.
    Later,
    /// Every ring was empty when the batch began.
    Empty,
    /// A record is being written: the reading waits for it.
    Busy,
    /// A ring holds what the kernel cannot have written (a record longer
    /// than the ring, a misplaced position): it cannot be read on.
    Corrupt,
}

impl Rings {
    /// Read the ring buffers `fds` (by CPU).
    pub fn new(fds: Vec<OwnedFd>) -> Result<Rings, RingError> {
        // SAFETY: epoll_create1 has no memory preconditions; checked.
        let epfd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if epfd < 0 {
            return Err(RingError::Epoll(std::io::Error::last_os_error()));
        }
        // SAFETY: a new descriptor that nothing else owns.
        let epoll = unsafe { OwnedFd::from_raw_fd(epfd) };
        let mut rings = Vec::with_capacity(fds.len());
        for (i, fd) in fds.into_iter().enumerate() {
            let mut ev = libc::epoll_event {
                events: libc::EPOLLIN as u32,
                u64: i as u64,
            };
            // SAFETY: both descriptors are open; `ev` is a valid event.
            let r = unsafe {
                libc::epoll_ctl(
                    epoll.as_raw_fd(),
                    libc::EPOLL_CTL_ADD,
                    fd.as_raw_fd(),
                    &mut ev,
                )
            };
            if r < 0 {
                return Err(RingError::Epoll(std::io::Error::last_os_error()));
            }
            rings.push(Ring::map(fd)?);
        }
        Ok(Rings {
            rings,
            active: Vec::new(),
            epoll,
        })
    }

    /// Start a batch: read every ring's producer position twice.
    pub fn begin_batch(&mut self) {
        for ring in &mut self.rings {
            ring.until = ring.producer_now();
        }
        self.active.clear();
        for (i, ring) in self.rings.iter_mut().enumerate() {
            ring.seen = ring.producer_now();
            if ring.cons < ring.seen {
                self.active.push(i);
            }
        }
    }

    /// Hand the batch's next record in sequence order to `f`, and consume it.
    pub fn next<R>(&mut self, f: impl FnOnce(&[u8]) -> R) -> Next<R> {
        if self.active.is_empty() {
            return Next::Empty;
        }
        let mut best: Option<(usize, u64)> = None;
        let mut k = 0;
        while k < self.active.len() {
            let i = self.active[k];
            let ring = &mut self.rings[i];
            match ring.peek() {
                Peek::Busy => return Next::Busy,
                Peek::Corrupt => return Next::Corrupt,
                Peek::Empty => {
                    self.active.swap_remove(k);
                    continue;
                }
                Peek::Record => {
                    let seq = ring.head.expect("peeked").seq;
                    if best.is_none_or(|(_, s)| seq < s) {
                        best = Some((i, seq));
                    }
                }
            }
            k += 1;
        }
        let Some((at, _)) = best else {
            return Next::Later;
        };
        let ring = &mut self.rings[at];
        let head = ring.head.expect("chosen from the peeked heads");
        if head.pos >= ring.until {
            // Its causes may not be seen yet: the next batch.
            return Next::Later;
        }
        let r = f(ring.record(&head));
        ring.consume_to(head.next);
        Next::Record(r)
    }

    /// Hand every committed record the rings hold now to `f`, ring by ring
    /// (not in sequence order), up to the first one still being written,
    /// and free their space: for records that are only counted.
    pub fn take_present(&mut self, mut f: impl FnMut(&[u8])) {
        for ring in &mut self.rings {
            ring.seen = ring.producer_now();
            while ring.peek() == Peek::Record {
                let head = ring.head.expect("peeked");
                f(ring.record(&head));
                ring.consume_to(head.next);
            }
            ring.publish();
        }
        self.active.clear();
    }

    /// How many rings.
    pub fn len(&self) -> usize {
        self.rings.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rings.is_empty()
    }

    /// Each ring's position, consumed up to (published or not).
    pub fn positions(&self) -> impl Iterator<Item = u64> + '_ {
        self.rings.iter().map(|r| r.cons)
    }

    /// Records in ring `i` from where it is consumed up to `to`, discarded
    /// ones not counted; `None` unless `to` is a record boundary at or after
    /// it and below the producer position. For records a previous reader
    /// took and never freed: they are committed.
    pub fn records_up_to(&self, i: usize, to: u64) -> Option<u64> {
        let ring = self.rings.get(i)?;
        let mut pos = ring.cons;
        if to < pos || to - pos > ring.mask + 1 || to > ring.producer_now() {
            return None;
        }
        let mut n = 0;
        while pos < to {
            if pos % 8 != 0 {
                return None;
            }
            // SAFETY: a record header below the producer position (checked
            // above), so within the data mapping, and 8-byte aligned.
            let word = unsafe { (*(ring.data(pos) as *const AtomicU32)).load(Ordering::Relaxed) };
            fence(Ordering::Acquire);
            if word & BUSY_BIT != 0 {
                return None;
            }
            let len = word & !(BUSY_BIT | DISCARD_BIT);
            if u64::from(len) + HEADER_LEN > ring.mask + 1 {
                return None;
            }
            if word & DISCARD_BIT == 0 {
                n += 1;
            }
            pos += (u64::from(len) + HEADER_LEN).next_multiple_of(8);
        }
        (pos == to).then_some(n)
    }

    /// Free the space of what was consumed.
    pub fn publish(&self) {
        for ring in &self.rings {
            ring.publish();
        }
    }

    /// Sleep until a ring has records, or `timeout`. A signal (a stop)
    /// ends the wait early.
    pub fn wait(&self, timeout: Duration) {
        let mut event = [libc::epoll_event { events: 0, u64: 0 }];
        let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
        // SAFETY: the epoll fd is open while self lives, and `event` has
        // room for the one event asked for.
        unsafe { libc::epoll_wait(self.epoll.as_raw_fd(), event.as_mut_ptr(), 1, ms) };
    }
}
