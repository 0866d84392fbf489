//! Formatting of exec events, and the buffered sink they are written to.

pub mod clock;
pub mod escape;
pub mod json;
pub mod text;

use std::io::{self, Write};

use crate::decode::ExecEvent;
use clock::Clock;

/// Output format of exec events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// One escaped line per exec, for people.
    Text,
    /// One ECS JSON object per line (docs/schema.md).
    Json,
}

/// Formats events into a reused buffer and writes them in batches: the
/// daemon flushes after each ring-buffer drain, not after each event.
pub struct EventSink<W: Write> {
    format: Format,
    clock: Clock,
    buf: Vec<u8>,
    out: W,
}

/// Flush to the writer once this much is buffered, even mid-batch.
const FLUSH_AT: usize = 256 * 1024;

impl<W: Write> EventSink<W> {
    pub fn new(format: Format, out: W) -> Self {
        EventSink {
            format,
            clock: Clock::new(),
            buf: Vec::with_capacity(FLUSH_AT + 64 * 1024),
            out,
        }
    }

    pub fn clock_mut(&mut self) -> &mut Clock {
        &mut self.clock
    }

    pub fn write_event(&mut self, ev: &ExecEvent) -> io::Result<()> {
        match self.format {
            Format::Text => text::write_event(&mut self.buf, ev, &self.clock),
            Format::Json => json::write_event(&mut self.buf, ev, &self.clock),
        }
        if self.buf.len() >= FLUSH_AT {
            self.flush()?;
        }
        Ok(())
    }

    pub fn flush(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            self.out.write_all(&self.buf)?;
            self.buf.clear();
        }
        self.out.flush()
    }

    pub fn into_inner(self) -> W {
        self.out
    }
}
