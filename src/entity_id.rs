//! `process.entity_id`: a short id unique per process on this host, across
//! reboots.
//!
//! It is derived from the boot id, the pid and the process start time in clock
//! ticks, so a process seeded from `/proc/PID/stat` (field 22, ticks) and the
//! same process seen by BPF (`group_leader->start_boottime`, ns) get the same
//! id: [`ticks_from_boot_ns`] does the kernel's own conversion.
//!
//! The id is base64url (no padding) of the first 12 bytes of
//! SHA-256(boot_id ‖ pid as le32 ‖ start_ticks as le64): 16 ASCII characters.
//! 96 bits keep collisions out of reach (birthday bound ~2^48 processes).

use std::fmt;
use std::sync::OnceLock;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use sha2::{Digest, Sha256};

/// Length of an entity id in ASCII characters.
pub const ENTITY_ID_LEN: usize = 16;

/// Bytes of the digest kept (12 bytes encode to exactly 16 base64 characters).
const DIGEST_BYTES: usize = 12;

/// Where the kernel publishes the id of the running boot.
pub const BOOT_ID_PATH: &str = "/proc/sys/kernel/random/boot_id";

#[derive(Debug, thiserror::Error)]
pub enum EntityIdError {
    #[error("cannot read the boot id from {path}: {source} (is /proc mounted?)")]
    ReadBootId {
        path: String,
        source: std::io::Error,
    },
    #[error("the boot id {text:?} is not a UUID (expected 32 hex digits, dashes allowed)")]
    BadBootId { text: String },
}

/// The kernel's boot id: 16 random bytes, new at each boot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BootId(pub [u8; 16]);

impl BootId {
    /// Read the running boot's id from [`BOOT_ID_PATH`].
    pub fn read() -> Result<BootId, EntityIdError> {
        let text =
            std::fs::read_to_string(BOOT_ID_PATH).map_err(|source| EntityIdError::ReadBootId {
                path: BOOT_ID_PATH.to_string(),
                source,
            })?;
        BootId::parse(&text)
    }

    /// Parse a UUID as the kernel prints it (`8-4-4-4-12` hex, newline allowed).
    pub fn parse(text: &str) -> Result<BootId, EntityIdError> {
        let bad = || EntityIdError::BadBootId {
            text: text.chars().take(64).collect(),
        };
        let mut out = [0u8; 16];
        let mut n = 0;
        let mut hi: Option<u8> = None;
        for c in text.trim_end_matches('\n').bytes() {
            if c == b'-' {
                continue;
            }
            let v = (c as char).to_digit(16).ok_or_else(bad)? as u8;
            match hi.take() {
                None => hi = Some(v),
                Some(h) => {
                    *out.get_mut(n).ok_or_else(bad)? = h << 4 | v;
                    n += 1;
                }
            }
        }
        if n != 16 || hi.is_some() {
            return Err(bad());
        }
        Ok(BootId(out))
    }
}

/// A process's entity id: 16 base64url characters, stored inline (no heap).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct EntityId([u8; ENTITY_ID_LEN]);

impl EntityId {
    /// The id for process `pid` started at `start_ticks` (clock ticks since
    /// boot, as in `/proc/PID/stat` field 22) during boot `boot_id`.
    pub fn new(boot_id: &BootId, pid: u32, start_ticks: u64) -> EntityId {
        let mut h = Sha256::new();
        h.update(boot_id.0);
        h.update(pid.to_le_bytes());
        h.update(start_ticks.to_le_bytes());
        let digest = h.finalize();
        let mut out = [0u8; ENTITY_ID_LEN];
        let written = URL_SAFE_NO_PAD
            .encode_slice(&digest[..DIGEST_BYTES], &mut out)
            .expect("12 bytes encode to exactly 16 base64 characters");
        debug_assert_eq!(written, ENTITY_ID_LEN);
        EntityId(out)
    }

    pub fn as_str(&self) -> &str {
        // The bytes come from the base64 encoder: always ASCII.
        std::str::from_utf8(&self.0).expect("base64 output is ASCII")
    }

    pub fn as_bytes(&self) -> &[u8; ENTITY_ID_LEN] {
        &self.0
    }
}

impl fmt::Display for EntityId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for EntityId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EntityId({})", self.as_str())
    }
}

/// USER_HZ: the unit of `/proc/PID/stat` times (`sysconf(_SC_CLK_TCK)`, 100 on
/// every Linux architecture in practice). Read once.
pub fn user_hz() -> u64 {
    static HZ: OnceLock<u64> = OnceLock::new();
    *HZ.get_or_init(|| {
        match nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK) {
            Ok(Some(hz)) if hz > 0 => hz as u64,
            // sysconf cannot fail for CLK_TCK on Linux; 100 is USER_HZ there.
            _ => 100,
        }
    })
}

/// Clock ticks from CLOCK_BOOTTIME nanoseconds, exactly as the kernel turns
/// `start_boottime` into `/proc/PID/stat` field 22 (`nsec_to_clock_t`:
/// truncating division by 1e9 / USER_HZ).
pub fn ticks_from_boot_ns(ns: u64) -> u64 {
    ticks_from_boot_ns_at(ns, user_hz())
}

/// [`ticks_from_boot_ns`] for a given USER_HZ.
pub fn ticks_from_boot_ns_at(ns: u64, hz: u64) -> u64 {
    ns / (1_000_000_000 / hz)
}

/// CLOCK_BOOTTIME nanoseconds of the start of tick `ticks` (for durations of
/// processes known only from `/proc`; precise to one tick).
pub fn boot_ns_from_ticks(ticks: u64) -> u64 {
    ticks.saturating_mul(1_000_000_000 / user_hz())
}

/// Computes entity ids for one boot.
#[derive(Clone, Copy, Debug)]
pub struct EntityIds {
    boot_id: BootId,
}

impl EntityIds {
    pub fn new(boot_id: BootId) -> EntityIds {
        EntityIds { boot_id }
    }

    /// For the running boot.
    pub fn for_this_boot() -> Result<EntityIds, EntityIdError> {
        Ok(EntityIds::new(BootId::read()?))
    }

    pub fn boot_id(&self) -> &BootId {
        &self.boot_id
    }

    /// From the start time in clock ticks (the `/proc` route).
    pub fn from_ticks(&self, pid: u32, start_ticks: u64) -> EntityId {
        EntityId::new(&self.boot_id, pid, start_ticks)
    }

    /// From `start_boottime` in ns (the BPF route).
    pub fn from_boot_ns(&self, pid: u32, start_boot_ns: u64) -> EntityId {
        self.from_ticks(pid, ticks_from_boot_ns(start_boot_ns))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOOT: &str = "0f3c6f0e-51a4-4c9e-9a3b-8d2b1c7e5a10\n";

    fn boot() -> BootId {
        BootId::parse(BOOT).unwrap()
    }

    #[test]
    fn parses_the_kernel_format() {
        let b = boot();
        assert_eq!(b.0[0], 0x0f);
        assert_eq!(b.0[15], 0x10);
        assert_eq!(
            BootId::parse("0f3c6f0e51a44c9e9a3b8d2b1c7e5a10").unwrap(),
            b
        );
    }

    #[test]
    fn rejects_bad_boot_ids() {
        for bad in [
            "",
            "0f3c6f0e-51a4-4c9e-9a3b-8d2b1c7e5a1",
            "0f3c6f0e-51a4-4c9e-9a3b-8d2b1c7e5a100",
            "0f3c6f0e-51a4-4c9e-9a3b-8d2b1c7e5a1g",
            "0f3c6f0e-51a4-4c9e-9a3b-8d2b1c7e5a10-00",
        ] {
            let e = BootId::parse(bad).unwrap_err();
            assert!(e.to_string().contains("not a UUID"), "{bad:?}: {e}");
        }
    }

    #[test]
    fn reads_this_machines_boot_id() {
        let a = BootId::read().unwrap();
        assert_ne!(a.0, [0; 16]);
        assert_eq!(BootId::read().unwrap(), a);
    }

    #[test]
    fn is_short_url_safe_and_stable() {
        let id = EntityId::new(&boot(), 4242, 123_456);
        assert_eq!(id.as_str().len(), ENTITY_ID_LEN);
        assert!(id
            .as_str()
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
        assert_eq!(EntityId::new(&boot(), 4242, 123_456), id);
        // Pinned: a change of the derivation would change every id ever shipped.
        assert_eq!(id.as_str(), pinned());
    }

    /// The same derivation written out by hand with the crates' primitives.
    fn pinned() -> String {
        let mut input = boot().0.to_vec();
        input.extend_from_slice(&4242u32.to_le_bytes());
        input.extend_from_slice(&123_456u64.to_le_bytes());
        let d = Sha256::digest(&input);
        URL_SAFE_NO_PAD.encode(&d[..12])
    }

    #[test]
    fn differs_by_each_input() {
        let base = EntityId::new(&boot(), 4242, 123_456);
        let mut other = boot();
        other.0[15] ^= 1;
        assert_ne!(EntityId::new(&other, 4242, 123_456), base);
        assert_ne!(EntityId::new(&boot(), 4243, 123_456), base);
        assert_ne!(EntityId::new(&boot(), 4242, 123_457), base);
        // pid and start are not interchangeable.
        assert_ne!(
            EntityId::new(&boot(), 1, 2),
            EntityId::new(&boot(), 2, 1),
            "fields must not alias"
        );
    }

    #[test]
    fn tick_conversion_truncates_like_the_kernel() {
        assert_eq!(ticks_from_boot_ns_at(0, 100), 0);
        assert_eq!(ticks_from_boot_ns_at(9_999_999, 100), 0);
        assert_eq!(ticks_from_boot_ns_at(10_000_000, 100), 1);
        assert_eq!(ticks_from_boot_ns_at(12_345_678_901, 100), 1234);
        assert_eq!(ticks_from_boot_ns_at(12_345_678_901, 1000), 12_345);
        assert_eq!(ticks_from_boot_ns_at(u64::MAX, 100), u64::MAX / 10_000_000);
        let ids = EntityIds::new(boot());
        assert_eq!(
            ids.from_boot_ns(7, 1_234_567_890_123),
            ids.from_ticks(7, ticks_from_boot_ns(1_234_567_890_123))
        );
    }
}
