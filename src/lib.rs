//! execwatch: records every program execution on a Linux host.

pub mod bpf_loader;
pub mod cgroups;
pub mod check;
pub mod containers;
pub mod counters;
pub mod daemon;
pub mod decode;
pub mod entity_id;
pub mod event;
pub mod exe_hash;
pub mod fields;
pub mod handover;
pub mod journal_log;
pub mod layout;
pub mod liveness;
pub mod metrics;
pub mod mounts;
pub mod output;
pub mod preflight;
pub mod process_table;
pub mod progress;
pub mod ring_reader;
pub mod sd_notify;
pub mod tracefs;
pub mod writer_thread;
