//! Formatted events go to stdout or to journald from a thread of their
//! own, through a queue with a byte budget. The event loop never blocks on a slow or
//! stalled reader: it stops taking records from the ring buffer while the
//! queue is full (the kernel then counts the drops), and keeps checking the
//! stop flag, the counters and the watchdog.
//!
//! Only what a `write` accepted counts as delivered. Records are lines (text
//! and JSON escape every newline inside a record), so after a short write
//! the complete lines are delivered and the rest is lost: with reason
//! `output` after a write error, `shutdown` when the drain deadline cut the
//! write short. journald entries are framed, and each sent datagram is one
//! delivered record.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Write};
use std::os::unix::thread::JoinHandleExt;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Once};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::counters::{Counter, Counts};
use crate::liveness::Liveness;
use crate::output::journald::{self, Journal};

/// Where the writer thread delivers.
pub enum Output {
    /// A file, pipe or terminal: lines, written in pieces.
    Stream(File),
    /// journald's socket: one datagram per framed entry.
    Journal(Journal),
}

/// Bytes queued for the writer before the loop stops taking records.
pub const QUEUE_BUDGET: usize = 1 << 20;
/// Largest single `write`: progress shows between pieces, and a pipe's
/// default capacity is 64 KiB. In a regular file, pieces end at multiples
/// of it: writes that start aligned fill whole large folios of the page
/// cache, and cost the kernel about a third less (docs/performance.md).
const WRITE_PIECE: usize = 64 << 10;
/// How long an abandoned writer gets to report what it wrote.
const ABANDON_WAIT: Duration = Duration::from_millis(200);

/// Formatted records and each one's outcome (true: the exec succeeded).
#[derive(Default)]
struct Chunk {
    bytes: Vec<u8>,
    outcomes: Vec<bool>,
}

fn count_outcomes(counts: &mut Counts, outcomes: &[bool]) {
    let ok = outcomes.iter().filter(|&&s| s).count() as u64;
    counts.add(Counter::events_success, ok);
    counts.add(Counter::events_failure, outcomes.len() as u64 - ok);
}

#[derive(Default)]
struct State {
    chunks: VecDeque<Chunk>,
    /// No more chunks: the writer ends once the queue is empty.
    closed: bool,
    /// The writer thread has left its loop.
    finished: bool,
    /// Records of the chunk being written.
    in_flight: Option<usize>,
    /// The in-flight chunk was counted as lost by `abandon`.
    in_flight_written_off: bool,
    /// Delivered and lost, counted here.
    counts: Counts,
    /// The first write error, until the loop takes it.
    error: Option<io::Error>,
    failed: bool,
    /// Emptied buffers for reuse.
    spare: Vec<Vec<u8>>,
}

/// The queue between the event loop and the writer thread.
pub struct OutputQueue {
    state: Mutex<State>,
    changed: Condvar,
    queued_bytes: AtomicUsize,
    /// Checked between writes and after an interrupted one.
    abandon: AtomicBool,
    budget: usize,
}

impl OutputQueue {
    pub fn new(budget: usize) -> Arc<OutputQueue> {
        Arc::new(OutputQueue {
            state: Mutex::default(),
            changed: Condvar::new(),
            queued_bytes: AtomicUsize::new(0),
            abandon: AtomicBool::new(false),
            budget,
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere does not make the counts meaningless.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn push(&self, chunk: Chunk) {
        let mut st = self.lock();
        if st.failed || self.abandon.load(Ordering::Relaxed) {
            let reason = if st.failed {
                Counter::lost_output
            } else {
                Counter::lost_shutdown
            };
            st.counts.add(reason, chunk.outcomes.len() as u64);
            return;
        }
        self.queued_bytes
            .fetch_add(chunk.bytes.len(), Ordering::Relaxed);
        st.chunks.push_back(chunk);
        self.changed.notify_all();
    }

    /// The writer is behind by the whole budget.
    pub fn is_full(&self) -> bool {
        self.queued_bytes.load(Ordering::Relaxed) >= self.budget
    }

    /// Bytes waiting for the writer (the chunk being written included).
    pub fn queued_bytes(&self) -> usize {
        self.queued_bytes.load(Ordering::Relaxed)
    }

    /// Wait until the queue has room, the writer failed, or `timeout`.
    pub fn wait_for_room(&self, timeout: Duration) {
        let st = self.lock();
        let _unused = self
            .changed
            .wait_timeout_while(st, timeout, |st| self.is_full() && !st.failed)
            .unwrap_or_else(|p| p.into_inner());
    }

    /// The first write error, once.
    pub fn take_error(&self) -> Option<io::Error> {
        self.lock().error.take()
    }

    /// Delivered and lost as counted so far (the daemon's entries only).
    pub fn counts(&self) -> Counts {
        self.lock().counts
    }

    /// No more chunks will come.
    pub fn close(&self) {
        self.lock().closed = true;
        self.changed.notify_all();
    }

    /// Wait until the writer has written everything and ended, or until
    /// `deadline`; true when it ended.
    pub fn wait_finished(&self, deadline: Instant) -> bool {
        let mut st = self.lock();
        while !st.finished {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            st = self
                .changed
                .wait_timeout(st, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        true
    }
}

/// The `Write` end given to the `EventSink`: `write` collects, `flush`
/// queues a chunk. It never blocks and never fails; the writer's errors
/// reach the loop through [`OutputQueue::take_error`].
pub struct QueueWriter {
    pending: Rc<RefCell<Chunk>>,
    queue: Arc<OutputQueue>,
}

/// Notes each record's outcome before it is formatted, so that delivered
/// events are counted by outcome.
pub struct OutcomeNotes {
    pending: Rc<RefCell<Chunk>>,
}

impl OutcomeNotes {
    pub fn note(&self, succeeded: bool) {
        self.pending.borrow_mut().outcomes.push(succeeded);
    }
}

impl QueueWriter {
    pub fn new(queue: Arc<OutputQueue>) -> (QueueWriter, OutcomeNotes) {
        let pending = Rc::new(RefCell::new(Chunk::default()));
        let notes = OutcomeNotes {
            pending: Rc::clone(&pending),
        };
        (QueueWriter { pending, queue }, notes)
    }
}

impl crate::output::ChunkWrite for QueueWriter {
    fn write_chunk(&mut self, buf: &mut Vec<u8>) -> io::Result<()> {
        let mut p = self.pending.borrow_mut();
        if p.bytes.is_empty() {
            // The buffer itself becomes the chunk; its spare takes its place.
            std::mem::swap(&mut p.bytes, buf);
        } else {
            p.bytes.extend_from_slice(buf);
            buf.clear();
        }
        Ok(())
    }
}

impl Write for QueueWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.pending.borrow_mut().bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        let mut p = self.pending.borrow_mut();
        if p.bytes.is_empty() {
            return Ok(());
        }
        let spare = self.queue.lock().spare.pop().unwrap_or_default();
        let chunk = std::mem::replace(
            &mut *p,
            Chunk {
                bytes: spare,
                outcomes: Vec::new(),
            },
        );
        drop(p);
        self.queue.push(chunk);
        Ok(())
    }
}

/// The thread that writes queued chunks to the output.
pub struct WriterThread {
    queue: Arc<OutputQueue>,
    handle: Option<JoinHandle<()>>,
}

extern "C" fn interrupt_write(_: libc::c_int) {}

/// SIGURG, without SA_RESTART, makes a blocked `write` or `send` of the
/// writer thread return (short, or EINTR) when it is abandoned.
fn install_interrupt_handler() -> nix::Result<()> {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
    static ONCE: Once = Once::new();
    let mut result = Ok(());
    ONCE.call_once(|| {
        let action = SigAction::new(
            SigHandler::Handler(interrupt_write),
            SaFlags::empty(),
            SigSet::empty(),
        );
        // SAFETY: the handler does nothing, so it is async-signal-safe.
        // SIGURG is ignored by default and execwatch uses no out-of-band
        // socket data, so no other code depends on its disposition.
        result = unsafe { sigaction(Signal::SIGURG, &action) }.map(|_| ());
    });
    result
}

impl WriterThread {
    pub fn spawn(
        out: Output,
        queue: Arc<OutputQueue>,
        liveness: Arc<Liveness>,
    ) -> io::Result<WriterThread> {
        install_interrupt_handler().map_err(io::Error::from)?;
        let q = Arc::clone(&queue);
        let handle = std::thread::Builder::new()
            .name("output".into())
            .spawn(move || write_loop(out, &q, &liveness))?;
        Ok(WriterThread {
            queue,
            handle: Some(handle),
        })
    }

    /// Stop now: what is not written yet is lost with reason `shutdown`
    /// (or `output`, counted already, when the output had failed). Returns
    /// once the thread has said what it wrote, or after a short wait if it
    /// is stuck (its chunk then counts as lost).
    pub fn abandon(mut self) {
        let q = &self.queue;
        {
            // Under the lock: the writer checks the flag holding it.
            let _st = q.lock();
            q.abandon.store(true, Ordering::Relaxed);
        }
        q.changed.notify_all();
        let deadline = Instant::now() + ABANDON_WAIT;
        let handle = self.handle.take().expect("abandoned once");
        let mut st = q.lock();
        while !st.finished && Instant::now() < deadline {
            drop(st);
            // Repeated: the first may land before the thread enters write().
            let _ = nix::sys::pthread::pthread_kill(
                handle.as_pthread_t(),
                nix::sys::signal::Signal::SIGURG,
            );
            st = q.lock();
            st = q
                .changed
                .wait_timeout(st, Duration::from_millis(5))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        if !st.finished {
            if let Some(n) = st.in_flight {
                st.counts.add(Counter::lost_shutdown, n as u64);
                st.in_flight_written_off = true;
            }
        }
        let reason = if st.failed {
            Counter::lost_output
        } else {
            Counter::lost_shutdown
        };
        let left: Vec<Chunk> = st.chunks.drain(..).collect();
        for c in &left {
            st.counts.add(reason, c.outcomes.len() as u64);
            q.queued_bytes.fetch_sub(c.bytes.len(), Ordering::Relaxed);
        }
        let finished = st.finished;
        drop(st);
        if finished {
            let _ = handle.join();
        } // else it is blocked in the kernel and ends with the process
    }
}

/// How a regular file places a write: at its offset, or at its end
/// (`O_APPEND`). Neither changes while the file is open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Placement {
    Offset,
    Append,
}

/// `None` for a pipe, a socket or a terminal.
fn placement(out: &File) -> Option<Placement> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    if !out.metadata().ok()?.file_type().is_file() {
        return None;
    }
    let flags = OFlag::from_bits_truncate(fcntl(out, FcntlArg::F_GETFL).ok()?);
    Some(if flags.contains(OFlag::O_APPEND) {
        Placement::Append
    } else {
        Placement::Offset
    })
}

/// Where the next write lands. Read again for each chunk: stderr sent to
/// the same file, or another writer, moves it.
fn position(out: &File, placement: Placement) -> Option<u64> {
    match placement {
        Placement::Append => out.metadata().ok().map(|m| m.len()),
        Placement::Offset => io::Seek::stream_position(&mut &*out).ok(),
    }
}

/// The next piece's length: up to the next multiple of WRITE_PIECE in a
/// file (`pos` known), else WRITE_PIECE.
fn piece_len(pos: Option<u64>) -> usize {
    let piece = WRITE_PIECE as u64;
    pos.map_or(WRITE_PIECE, |p| (piece - p % piece) as usize)
}

/// Write `bytes` in pieces; returns how many were written and how it
/// ended. `pos` is the file position at the start, and follows it.
fn write_counted(
    out: &mut impl Write,
    bytes: &[u8],
    mut pos: Option<u64>,
    q: &OutputQueue,
    liveness: &Liveness,
) -> (usize, io::Result<()>) {
    let mut written = 0;
    while written < bytes.len() {
        if q.abandon.load(Ordering::Relaxed) {
            return (written, Err(io::ErrorKind::Interrupted.into()));
        }
        let end = (written + piece_len(pos)).min(bytes.len());
        match out.write(&bytes[written..end]) {
            Ok(0) => return (written, Err(io::ErrorKind::WriteZero.into())),
            Ok(n) => {
                written += n;
                if let Some(p) = &mut pos {
                    *p += n as u64;
                }
                liveness.touch();
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return (written, Err(e)),
        }
    }
    (written, Ok(()))
}

/// Send each framed entry of `bytes`; returns how many were sent and how
/// it ended. journald full blocks the send until a signal (`abandon`).
fn send_counted(
    journal: &mut Journal,
    bytes: &[u8],
    q: &OutputQueue,
    liveness: &Liveness,
) -> (usize, io::Result<()>) {
    let mut sent = 0;
    let mut used = 0;
    for entry in journald::frames(bytes) {
        used += journald::FRAME_HEADER + entry.len();
        loop {
            if q.abandon.load(Ordering::Relaxed) {
                return (sent, Err(io::ErrorKind::Interrupted.into()));
            }
            match journal.send(entry) {
                Ok(()) => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return (sent, Err(e)),
            }
        }
        sent += 1;
        liveness.touch();
    }
    if used != bytes.len() {
        // Chunks hold whole frames: a cut one is a bug, not a delivery.
        return (sent, Err(io::ErrorKind::InvalidData.into()));
    }
    (sent, Ok(()))
}

fn write_loop(mut out: Output, q: &OutputQueue, liveness: &Liveness) {
    let placement = match &out {
        Output::Stream(f) => placement(f),
        Output::Journal(_) => None,
    };
    loop {
        let chunk = {
            let mut st = q.lock();
            loop {
                if q.abandon.load(Ordering::Relaxed) || st.failed {
                    break None;
                }
                if let Some(c) = st.chunks.pop_front() {
                    st.in_flight = Some(c.outcomes.len());
                    break Some(c);
                }
                if st.closed {
                    break None;
                }
                st = q.changed.wait(st).unwrap_or_else(|p| p.into_inner());
            }
        };
        let Some(mut chunk) = chunk else {
            q.lock().finished = true;
            q.changed.notify_all();
            return;
        };
        // Records delivered if it ended early.
        let (done, res) = match &mut out {
            Output::Stream(f) => {
                let pos = placement.and_then(|p| position(f, p));
                let (written, res) = write_counted(&mut &*f, &chunk.bytes, pos, q, liveness);
                let lines = match res {
                    Ok(()) => 0, // not asked
                    Err(_) => memchr::memchr_iter(b'\n', &chunk.bytes[..written]).count(),
                };
                (lines, res)
            }
            Output::Journal(j) => send_counted(j, &chunk.bytes, q, liveness),
        };
        let mut st = q.lock();
        q.queued_bytes
            .fetch_sub(chunk.bytes.len(), Ordering::Relaxed);
        st.in_flight = None;
        if !std::mem::take(&mut st.in_flight_written_off) {
            let lines = match &res {
                Ok(()) => chunk.outcomes.len(),
                Err(_) => done,
            };
            let lines = lines.min(chunk.outcomes.len());
            count_outcomes(&mut st.counts, &chunk.outcomes[..lines]);
            let rest = (chunk.outcomes.len() - lines) as u64;
            let reason = if res.is_err() && q.abandon.load(Ordering::Relaxed) {
                Counter::lost_shutdown
            } else {
                Counter::lost_output
            };
            st.counts.add(reason, rest);
        }
        match res {
            Err(e) if !q.abandon.load(Ordering::Relaxed) => {
                // The output is gone: nothing queued will be written.
                st.failed = true;
                st.error = Some(e);
                let left: Vec<Chunk> = st.chunks.drain(..).collect();
                for c in &left {
                    st.counts.add(Counter::lost_output, c.outcomes.len() as u64);
                    q.queued_bytes.fetch_sub(c.bytes.len(), Ordering::Relaxed);
                }
            }
            _ => {
                if st.spare.len() < 2 {
                    chunk.bytes.clear();
                    st.spare.push(std::mem::take(&mut chunk.bytes));
                }
            }
        }
        q.changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::OwnedFd;

    fn pipe() -> (File, File) {
        let (r, w): (OwnedFd, OwnedFd) = nix::unistd::pipe().unwrap();
        (File::from(r), File::from(w))
    }

    fn queue_lines(w: &mut QueueWriter, notes: &OutcomeNotes, n: usize, len: usize) {
        for i in 0..n {
            notes.note(i % 2 == 0);
            let mut line = vec![b'x'; len - 1];
            line.push(b'\n');
            w.write_all(&line).unwrap();
        }
        w.flush().unwrap();
    }

    #[test]
    fn pieces_end_at_multiples_of_the_piece_size_in_a_file() {
        assert_eq!(piece_len(None), WRITE_PIECE);
        assert_eq!(piece_len(Some(0)), WRITE_PIECE);
        assert_eq!(piece_len(Some(1000)), WRITE_PIECE - 1000);
        assert_eq!(piece_len(Some(WRITE_PIECE as u64 - 1)), 1);
        assert_eq!(piece_len(Some(3 * WRITE_PIECE as u64)), WRITE_PIECE);

        let (r, w) = pipe();
        assert_eq!(placement(&w), None);
        drop(r);

        let path = std::env::temp_dir().join(format!("execwatch-pieces-{}", std::process::id()));
        std::fs::write(&path, vec![b'a'; 1000]).unwrap();
        let append = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        assert_eq!(placement(&append), Some(Placement::Append));
        assert_eq!(position(&append, Placement::Append), Some(1000));
        let mut f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        io::Seek::seek(&mut f, io::SeekFrom::Start(10)).unwrap();
        assert_eq!(placement(&f), Some(Placement::Offset));
        assert_eq!(position(&f, Placement::Offset), Some(10));

        // Written whole and in order, in pieces that end at multiples of
        // WRITE_PIECE of the file position.
        let bytes: Vec<u8> = (0..2 * WRITE_PIECE + 5).map(|i| (i % 251) as u8).collect();
        let q = OutputQueue::new(QUEUE_BUDGET);
        let mut rec = Recorder::default();
        let (n, res) = write_counted(&mut rec, &bytes, Some(10), &q, &Liveness::default());
        assert!(res.is_ok());
        assert_eq!(n, bytes.len());
        assert_eq!(rec.pieces, [WRITE_PIECE - 10, WRITE_PIECE, 15]);
        assert_eq!(rec.bytes, bytes);
        // A short write moves the next piece's end along.
        let mut rec = Recorder {
            most: Some(100),
            ..Recorder::default()
        };
        let (_, res) = write_counted(&mut rec, &bytes, Some(0), &q, &Liveness::default());
        assert!(res.is_ok());
        assert_eq!(rec.pieces[..2], [WRITE_PIECE, WRITE_PIECE - 100]);
        // Not a file: plain pieces.
        let mut rec = Recorder::default();
        let (_, res) = write_counted(&mut rec, &bytes, None, &q, &Liveness::default());
        assert!(res.is_ok());
        assert_eq!(rec.pieces, [WRITE_PIECE, WRITE_PIECE, 5]);
        // Through the file itself.
        let (n, _) = write_counted(
            &mut &f,
            &bytes,
            position(&f, Placement::Offset),
            &q,
            &Liveness::default(),
        );
        assert_eq!(n, bytes.len());
        assert_eq!(
            position(&f, Placement::Offset),
            Some(10 + bytes.len() as u64)
        );
        let back = std::fs::read(&path).unwrap();
        assert_eq!(&back[..10], &[b'a'; 10]);
        assert_eq!(&back[10..], &bytes[..]);
        std::fs::remove_file(&path).unwrap();
    }

    /// Records the length of each write asked for; takes at most `most`
    /// bytes of the first.
    #[derive(Default)]
    struct Recorder {
        pieces: Vec<usize>,
        bytes: Vec<u8>,
        most: Option<usize>,
    }

    impl Write for Recorder {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let n = self.most.take().map_or(buf.len(), |m| m.min(buf.len()));
            self.pieces.push(buf.len());
            self.bytes.extend_from_slice(&buf[..n]);
            Ok(n)
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn everything_written_is_delivered_by_outcome() {
        let (mut r, wfile) = pipe();
        let q = OutputQueue::new(QUEUE_BUDGET);
        let live = Arc::new(Liveness::default());
        let t = WriterThread::spawn(Output::Stream(wfile), Arc::clone(&q), live).unwrap();
        let (mut w, notes) = QueueWriter::new(Arc::clone(&q));
        let reader = std::thread::spawn(move || {
            let mut s = Vec::new();
            io::Read::read_to_end(&mut r, &mut s).unwrap();
            s
        });
        queue_lines(&mut w, &notes, 5, 100);
        queue_lines(&mut w, &notes, 3, 10);
        q.close();
        assert!(q.wait_finished(Instant::now() + Duration::from_secs(5)));
        t.abandon();
        let out = reader.join().unwrap();
        assert_eq!(out.len(), 530);
        let c = q.counts();
        assert_eq!(c.get(Counter::events_success), 3 + 2);
        assert_eq!(c.get(Counter::events_failure), 2 + 1);
        assert_eq!(c.lost(), 0);
        assert!(q.take_error().is_none());
    }

    #[test]
    fn a_failed_output_counts_the_rest_as_lost_output() {
        let full = File::options().write(true).open("/dev/full").unwrap();
        let q = OutputQueue::new(QUEUE_BUDGET);
        let t = WriterThread::spawn(Output::Stream(full), Arc::clone(&q), Arc::default()).unwrap();
        let (mut w, notes) = QueueWriter::new(Arc::clone(&q));
        queue_lines(&mut w, &notes, 4, 50);
        q.close();
        assert!(q.wait_finished(Instant::now() + Duration::from_secs(5)));
        // Queued after the failure: counted at once.
        queue_lines(&mut w, &notes, 2, 50);
        t.abandon();
        let c = q.counts();
        assert_eq!(c.delivered(), 0);
        assert_eq!(c.get(Counter::lost_output), 6);
        let e = q.take_error().expect("the write error");
        assert_eq!(e.raw_os_error(), Some(libc::ENOSPC));
    }

    #[test]
    fn an_abandoned_blocked_writer_reports_complete_lines_only() {
        // Nobody reads: the writer blocks once the pipe (64 KiB) is full.
        let (r, wfile) = pipe();
        let q = OutputQueue::new(QUEUE_BUDGET);
        let t = WriterThread::spawn(Output::Stream(wfile), Arc::clone(&q), Arc::default()).unwrap();
        let (mut w, notes) = QueueWriter::new(Arc::clone(&q));
        // 100 lines of 1000 bytes: 65 whole lines fit in 64 KiB, the 66th
        // is cut. Then a second chunk that never starts.
        queue_lines(&mut w, &notes, 100, 1000);
        queue_lines(&mut w, &notes, 10, 1000);
        let start = Instant::now();
        while q.queued_bytes() > 0 && start.elapsed() < Duration::from_millis(300) {
            std::thread::sleep(Duration::from_millis(10));
        }
        let t0 = Instant::now();
        t.abandon();
        assert!(t0.elapsed() < Duration::from_secs(1));
        let c = q.counts();
        let pipe_bytes = nix::fcntl::fcntl(&r, nix::fcntl::FcntlArg::F_GETPIPE_SZ).unwrap() as u64;
        assert_eq!(c.delivered(), pipe_bytes / 1000, "{c:?}");
        assert_eq!(c.delivered() + c.get(Counter::lost_shutdown), 110);
        assert_eq!(c.get(Counter::lost_output), 0);
        assert!(q.take_error().is_none());
        drop(r);
    }

    /// A socket at a path of its own standing in for journald's.
    fn journal_socket(
        name: &str,
    ) -> (
        std::os::unix::net::UnixDatagram,
        Journal,
        std::path::PathBuf,
    ) {
        let path = std::env::temp_dir().join(format!("execwatch-{name}-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let sock = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        let j = Journal::connect_to(&path).unwrap();
        (sock, j, path)
    }

    fn queue_entries(w: &mut QueueWriter, notes: &OutcomeNotes, n: usize, len: usize) {
        for i in 0..n {
            notes.note(i % 2 == 0);
            let mut framed = (len as u32).to_le_bytes().to_vec();
            framed.extend(std::iter::repeat_n(b'x', len));
            w.write_all(&framed).unwrap();
        }
        w.flush().unwrap();
    }

    #[test]
    fn each_sent_journal_entry_is_one_delivered_record() {
        let (sock, j, path) = journal_socket("journal-all");
        let q = OutputQueue::new(QUEUE_BUDGET);
        let t = WriterThread::spawn(Output::Journal(j), Arc::clone(&q), Arc::default()).unwrap();
        let (mut w, notes) = QueueWriter::new(Arc::clone(&q));
        let reader = std::thread::spawn(move || {
            let mut buf = vec![0u8; 4096];
            (0..7)
                .map(|_| sock.recv(&mut buf).unwrap())
                .collect::<Vec<_>>()
        });
        queue_entries(&mut w, &notes, 4, 100);
        queue_entries(&mut w, &notes, 3, 10);
        q.close();
        assert!(q.wait_finished(Instant::now() + Duration::from_secs(5)));
        t.abandon();
        assert_eq!(reader.join().unwrap(), [100, 100, 100, 100, 10, 10, 10]);
        let c = q.counts();
        assert_eq!(c.get(Counter::events_success), 2 + 2);
        assert_eq!(c.get(Counter::events_failure), 2 + 1);
        assert_eq!(c.lost(), 0);
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn an_abandoned_writer_blocked_on_a_stalled_journal_counts_what_was_sent() {
        // Nobody reads: sends block once the socket's queue is full.
        let (sock, j, path) = journal_socket("journal-stalled");
        let q = OutputQueue::new(QUEUE_BUDGET);
        let live = Arc::new(Liveness::default());
        let t = WriterThread::spawn(Output::Journal(j), Arc::clone(&q), Arc::clone(&live)).unwrap();
        let (mut w, notes) = QueueWriter::new(Arc::clone(&q));
        let begin = Instant::now();
        queue_entries(&mut w, &notes, 2000, 200);
        // Until the writer has sent some and then made no progress for a
        // while: it is blocked in send.
        while begin.elapsed() < Duration::from_secs(5)
            && (live.age() >= begin.elapsed() || live.age() < Duration::from_millis(200))
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        let t0 = Instant::now();
        t.abandon();
        assert!(t0.elapsed() < Duration::from_secs(1));
        sock.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 512];
        let mut queued = 0;
        while sock.recv(&mut buf).is_ok() {
            queued += 1;
        }
        let c = q.counts();
        assert!(queued > 0 && queued < 2000, "{queued} datagrams queued");
        assert_eq!(c.delivered(), queued, "{c:?}");
        assert_eq!(c.delivered() + c.get(Counter::lost_shutdown), 2000);
        assert_eq!(c.get(Counter::lost_output), 0);
        std::fs::remove_file(path).unwrap();
    }
}
