//! execwatch: records every program execution on a Linux host.

pub mod bpf_loader;
pub mod cgroups;
pub mod daemon;
pub mod decode;
pub mod handover;
pub mod metrics;
pub mod output;
pub mod preflight;
pub mod sd_notify;
pub mod tracefs;
