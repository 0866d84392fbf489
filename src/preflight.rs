//! Checks made before loading, so that a host that cannot run execwatch gets
//! one line naming what is missing instead of a libbpf error.

use std::path::Path;

/// Oldest kernel supported: BPF atomic fetch-add (the global sequence number)
/// arrived in 5.12; ring buffer (5.8), tp_btf/fentry (5.5) are older.
pub const MIN_KERNEL: (u32, u32) = (5, 12);

const BTF_PATH: &str = "/sys/kernel/btf/vmlinux";

const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PreflightError {
    #[error(
        "kernel {release} is too old: execwatch needs Linux {}.{} or newer (BPF ring buffer and atomics)",
        MIN_KERNEL.0,
        MIN_KERNEL.1
    )]
    KernelTooOld { release: String },
    #[error(
        "kernel BTF not found at {BTF_PATH}: execwatch needs a kernel built with \
         CONFIG_DEBUG_INFO_BTF=y"
    )]
    NoBtf,
    #[error(
        "insufficient privileges (missing {missing}): run execwatch as root, or grant it \
         CAP_BPF and CAP_PERFMON"
    )]
    NotPrivileged { missing: String },
}

/// Parse `major.minor` from a kernel release string like `6.18.44-foo`.
pub fn parse_release(release: &str) -> Option<(u32, u32)> {
    let mut it = release.split(|c: char| !c.is_ascii_digit());
    let major = it.next()?.parse().ok()?;
    let minor = it.next()?.parse().ok()?;
    Some((major, minor))
}

pub fn check_kernel(release: &str) -> Result<(), PreflightError> {
    match parse_release(release) {
        Some(v) if v >= MIN_KERNEL => Ok(()),
        // An unparsable release is left for the loader to judge.
        None => Ok(()),
        Some(_) => Err(PreflightError::KernelTooOld {
            release: release.to_string(),
        }),
    }
}

pub fn check_btf(path: &Path) -> Result<(), PreflightError> {
    if path.exists() {
        Ok(())
    } else {
        Err(PreflightError::NoBtf)
    }
}

/// `CapEff` from /proc/self/status text.
pub fn parse_cap_eff(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
}

pub fn check_caps(cap_eff: u64) -> Result<(), PreflightError> {
    let has = |c: u32| cap_eff & (1 << c) != 0;
    if has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON)) {
        return Ok(());
    }
    let missing: Vec<&str> = [(CAP_BPF, "CAP_BPF"), (CAP_PERFMON, "CAP_PERFMON")]
        .into_iter()
        .filter(|&(c, _)| !has(c))
        .map(|(_, n)| n)
        .collect();
    Err(PreflightError::NotPrivileged {
        missing: missing.join(", "),
    })
}

/// All checks against this host.
pub fn check_host() -> Result<(), PreflightError> {
    let release = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    check_kernel(&release)?;
    check_btf(Path::new(BTF_PATH))?;
    if let Some(caps) = std::fs::read_to_string("/proc/self/status")
        .ok()
        .as_deref()
        .and_then(parse_cap_eff)
    {
        check_caps(caps)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn release_parsing() {
        assert_eq!(parse_release("6.18.44-fc-v669"), Some((6, 18)));
        assert_eq!(parse_release("5.4.0-150-generic"), Some((5, 4)));
        assert_eq!(parse_release("junk"), None);
    }

    #[test]
    fn kernel_floor() {
        assert!(check_kernel("5.12.0").is_ok());
        assert!(check_kernel("6.1.0-27-cloud-amd64").is_ok());
        let e = check_kernel("5.10.0-30-amd64").unwrap_err();
        assert!(e.to_string().contains("5.10.0-30-amd64 is too old"), "{e}");
    }

    #[test]
    fn missing_btf_is_named() {
        let e = check_btf(Path::new("/nonexistent/btf")).unwrap_err();
        assert!(e.to_string().contains("CONFIG_DEBUG_INFO_BTF"));
    }

    #[test]
    fn capabilities() {
        assert!(check_caps(u64::MAX).is_ok());
        assert!(check_caps(1 << CAP_SYS_ADMIN).is_ok());
        assert!(check_caps((1 << CAP_BPF) | (1 << CAP_PERFMON)).is_ok());
        let e = check_caps(1 << CAP_BPF).unwrap_err();
        assert_eq!(
            e,
            PreflightError::NotPrivileged {
                missing: "CAP_PERFMON".into()
            }
        );
        assert!(check_caps(0)
            .unwrap_err()
            .to_string()
            .contains("CAP_BPF, CAP_PERFMON"));
        let status = "Name:\tx\nCapEff:\t000001ffffffffff\n";
        assert_eq!(parse_cap_eff(status), Some(0x1ff_ffff_ffff));
    }
}
