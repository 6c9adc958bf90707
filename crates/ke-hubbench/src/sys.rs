//! Process facts the benchmark reports: file-descriptor limit, resident memory, a clock both
//! processes share.

use anyhow::Context as _;
use nix::sys::resource::{Resource, getrlimit, setrlimit};
use nix::time::{ClockId, clock_gettime};

/// Raises the soft `nofile` limit to the hard one: every session is a socket, and the default
/// soft limit (1024) would cap a run at about a thousand edges.
pub fn raise_nofile() -> anyhow::Result<u64> {
    let (_soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).context("getrlimit(RLIMIT_NOFILE)")?;
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).context("setrlimit(RLIMIT_NOFILE)")?;
    Ok(hard)
}

/// `VmRSS` of this process, KiB.
pub fn rss_kib() -> u64 {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return 0;
    };
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// CLOCK_MONOTONIC in nanoseconds. System-wide, so a timestamp taken in the cloud process can
/// be subtracted from one taken in the edges process on the same machine; `Instant` cannot be
/// sent across processes and wall-clock time can step.
pub fn mono_ns() -> u64 {
    let now = clock_gettime(ClockId::CLOCK_MONOTONIC).expect("CLOCK_MONOTONIC is always available");
    u64::try_from(now.tv_sec()).unwrap_or(0) * 1_000_000_000
        + u64::try_from(now.tv_nsec()).unwrap_or(0)
}

/// The 1/5/15-minute load averages, as `/proc/loadavg` prints them.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// User + system CPU time of this process so far, milliseconds: tells which of the two
/// processes sharing the machine's cores a run was spending them on.
pub fn cpu_ms() -> u64 {
    use nix::sys::resource::{UsageWho, getrusage};
    let Ok(usage) = getrusage(UsageWho::RUSAGE_SELF) else {
        return 0;
    };
    let ms = |t: nix::sys::time::TimeVal| {
        u64::try_from(t.tv_sec()).unwrap_or(0) * 1000
            + u64::try_from(t.tv_usec()).unwrap_or(0) / 1000
    };
    ms(usage.user_time()) + ms(usage.system_time())
}
