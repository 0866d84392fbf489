//! Formatting of exec events, and the buffered sink they are written to.

pub mod clock;
pub mod decimal;
pub mod escape;
pub mod journald;
pub mod json;
pub mod table;
pub mod text;

use std::io::{self, Write};

use crate::event::ExecEvent;
use crate::fields::Exclusions;
use clock::Clock;

/// Output format of exec events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// For people: a table on a terminal, else one escaped line per exec.
    Text,
    /// One ECS JSON object per line (docs/schema.md).
    Json,
    /// One journal entry per exec over journald's native protocol.
    Journald,
}

/// Formats events into a reused buffer and writes them in batches: the
/// daemon flushes after each ring-buffer drain, not after each event.
pub struct EventSink<W: ChunkWrite> {
    /// The format, with the fields each event shows in it.
    render: Render,
    clock: Clock,
    buf: Vec<u8>,
    out: W,
    /// `Format::Text` as a table, for a terminal ([`EventSink::show_table`]).
    table: Option<table::Table>,
    /// Some fields are excluded: the table, whose columns are fixed, is not
    /// shown.
    excluding: bool,
}

/// A format with the fields it renders, made once.
enum Render {
    Text(text::TextLayout),
    Json(json::Layout),
    Journald(journald::JournaldLayout),
}

impl Render {
    fn new(format: Format, excluded: &Exclusions) -> Render {
        let keep = |f: &crate::fields::Field| !excluded.excludes(f);
        match format {
            Format::Text => Render::Text(text::TextLayout::new(keep)),
            Format::Json => Render::Json(json::Layout::new(keep)),
            Format::Journald => Render::Journald(journald::JournaldLayout::new(keep)),
        }
    }
}

/// What an [`EventSink`] flushes into. The default copies the buffer out; a
/// writer that can take it whole swaps it instead, saving a copy per event.
pub trait ChunkWrite: Write {
    /// Take everything in `buf`, leaving it empty.
    fn write_chunk(&mut self, buf: &mut Vec<u8>) -> io::Result<()> {
        self.write_all(buf)?;
        buf.clear();
        Ok(())
    }
}

/// Flush to the writer once this much is buffered, even mid-batch.
const FLUSH_AT: usize = 512 * 1024;

impl<W: ChunkWrite> EventSink<W> {
    /// `Format::Journald` writes framed entries ([`journald::frames`]) for
    /// a writer that sends each as a datagram. No format shows the fields
    /// `excluded` names.
    pub fn new(format: Format, out: W, excluded: &Exclusions) -> Self {
        EventSink {
            render: Render::new(format, excluded),
            excluding: !excluded.is_empty(),
            clock: Clock::new(),
            buf: Vec::with_capacity(FLUSH_AT + 64 * 1024),
            out,
            table: None,
        }
    }

    /// Show `Format::Text` as `table` (for a person at a terminal); other
    /// formats ignore it, and so does a sink with fields excluded (the
    /// table's columns are fixed; the plain line leaves the fields out).
    /// The header is flushed at once, alone: the writer counts delivered
    /// events by lines, so no event may share its write.
    pub fn show_table(&mut self, table: table::Table) -> io::Result<()> {
        if !matches!(self.render, Render::Text(_)) || self.excluding {
            return Ok(());
        }
        table.write_header(&mut self.buf);
        self.table = Some(table);
        self.flush()
    }

    pub fn clock_mut(&mut self) -> &mut Clock {
        &mut self.clock
    }

    pub fn write_event(&mut self, ev: &ExecEvent) -> io::Result<()> {
        let (buf, clock) = (&mut self.buf, &self.clock);
        match (&self.render, &mut self.table) {
            (Render::Text(_), Some(t)) => t.write_event(buf, ev, clock),
            (Render::Text(l), None) => text::write_line(buf, ev, clock, l),
            (Render::Json(l), _) => json::write_fields(buf, ev, clock, l),
            (Render::Journald(l), _) => journald::write_framed(buf, ev, clock, l),
        }
        if self.buf.len() >= FLUSH_AT {
            self.flush()?;
        }
        Ok(())
    }

    pub fn flush(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            self.out.write_chunk(&mut self.buf)?;
        }
        self.out.flush()
    }

    pub fn into_inner(self) -> W {
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl ChunkWrite for Vec<u8> {}

    fn shown(excluded: &[&str]) -> String {
        let ex = Exclusions::new(excluded).unwrap();
        let mut sink = EventSink::new(Format::Text, Vec::new(), &ex);
        sink.show_table(table::Table::new(false, table::Zone::Utc))
            .unwrap();
        let mut ev = ExecEvent::default();
        ev.set_args([&b"/bin/true"[..], b"secret"]);
        sink.write_event(&ev).unwrap();
        sink.flush().unwrap();
        String::from_utf8(sink.into_inner()).unwrap()
    }

    #[test]
    fn with_fields_excluded_text_is_the_plain_line_even_for_a_terminal() {
        let table = shown(&[]);
        assert!(
            table.contains("COMMAND") && table.contains("secret"),
            "{table}"
        );
        let plain = shown(&["process.args", "process.command_line"]);
        assert!(
            !plain.contains("COMMAND") && !plain.contains("secret"),
            "{plain}"
        );
        assert!(plain.contains(" exec "), "{plain}");
    }
}
