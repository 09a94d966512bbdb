//! CPU utilisation measured the way a container sees it.
//!
//! Sources, in order of preference:
//! 1. cgroup v2: `cpu.stat` (`usage_usec`) against `cpu.max`
//!    (`quota period`, or `max`), taking the tightest `cpu.max` from the
//!    process's cgroup up to the root;
//! 2. cgroup v1: `cpuacct.usage` (ns) against `cpu.cfs_quota_us /
//!    cpu.cfs_period_us` (`-1` = unlimited);
//! 3. `/proc/stat`: busy over total jiffies of the whole machine.
//!
//! The effective limit is the cgroup quota in CPUs, capped by
//! [`std::thread::available_parallelism`] (which also reflects CPU
//! affinity); without a quota it is `available_parallelism`.

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

use parking_lot::Mutex;

use crate::clock::{Clock, SystemClock, now_nanos};

/// Where a [`CpuLoad`] reads CPU usage from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CpuSource {
    /// cgroup v2 `cpu.stat`.
    CgroupV2,
    /// cgroup v1 `cpuacct.usage`.
    CgroupV1,
    /// The machine-wide `/proc/stat`.
    ProcStat,
    /// Nothing readable: [`CpuLoad::sample`] returns `None`.
    Unavailable,
}

#[derive(Debug)]
enum Reader {
    V2 { stat: PathBuf },
    V1 { usage: PathBuf },
    Proc { stat: PathBuf },
    None,
}

/// A CPU load signal: CPU time used since the previous sample divided by
/// the time elapsed times the effective CPU limit (`0.0` idle, `1.0` the
/// whole limit in use; it can briefly exceed 1).
///
/// # Example
/// A cgroup v2 container limited to one CPU, as files under a temporary
/// root ([`CpuLoad::new`] reads the real `/`):
/// ```
/// use std::{fs, time::Duration};
/// use seckill_flowcontrol::{CpuLoad, CpuSource, ManualClock};
///
/// let root = std::env::temp_dir().join(format!("cpuload-doc-{}", std::process::id()));
/// let cgroup = root.join("sys/fs/cgroup");
/// fs::create_dir_all(&cgroup)?;
/// fs::write(cgroup.join("cgroup.controllers"), "cpu\n")?;
/// fs::write(cgroup.join("cpu.max"), "100000 100000\n")?; // 1 CPU
/// fs::write(cgroup.join("cpu.stat"), "usage_usec 0\n")?;
/// let clock = ManualClock::new();
/// let cpu = CpuLoad::with_root(&root, clock.clone());
/// assert_eq!((cpu.source(), cpu.limit()), (CpuSource::CgroupV2, 1.0));
/// // 0.5 s of CPU time in 1 s, against one CPU:
/// fs::write(cgroup.join("cpu.stat"), "usage_usec 500000\n")?;
/// clock.advance(Duration::from_secs(1));
/// assert_eq!(cpu.sample(), Some(0.5));
/// fs::remove_dir_all(&root)?;
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct CpuLoad<C: Clock = SystemClock> {
    reader: Reader,
    limit: f64,
    last: Mutex<Option<(u64, u64)>>,
    clock: C,
}

impl CpuLoad<SystemClock> {
    /// Detects the best source on this machine and takes a first reading.
    pub fn new() -> Self {
        Self::with_root("/", SystemClock)
    }
}

impl Default for CpuLoad<SystemClock> {
    fn default() -> Self {
        Self::new()
    }
}

impl<C: Clock> CpuLoad<C> {
    /// Like [`CpuLoad::new`] but reading `/proc` and `/sys` under `root`
    /// and wall time from `clock` (for tests, or a host filesystem mounted
    /// elsewhere).
    pub fn with_root(root: impl AsRef<Path>, clock: C) -> Self {
        let root = root.as_ref();
        let cpus = std::thread::available_parallelism().map_or(1, usize::from) as f64;
        let (reader, quota) = detect(root);
        let limit = quota.map_or(cpus, |q| q.min(cpus));
        let this = Self {
            reader,
            limit,
            last: Mutex::new(None),
            clock,
        };
        *this.last.lock() = this.read();
        this
    }

    /// The source in use.
    pub fn source(&self) -> CpuSource {
        match self.reader {
            Reader::V2 { .. } => CpuSource::CgroupV2,
            Reader::V1 { .. } => CpuSource::CgroupV1,
            Reader::Proc { .. } => CpuSource::ProcStat,
            Reader::None => CpuSource::Unavailable,
        }
    }

    /// The effective CPU limit, in CPUs.
    pub fn limit(&self) -> f64 {
        self.limit
    }

    /// Utilisation since the previous sample (or since creation), or `None`
    /// when nothing is readable or no time has passed.
    pub fn sample(&self) -> Option<f64> {
        let now = self.read()?;
        let prev = self.last.lock().replace(now)?;
        let used = now.0.checked_sub(prev.0)?;
        let span = now.1.checked_sub(prev.1).filter(|&s| s > 0)?;
        Some(match self.reader {
            Reader::Proc { .. } => used as f64 / span as f64,
            _ => used as f64 / (span as f64 * self.limit),
        })
    }

    /// (CPU ns used, wall ns) for cgroups; (busy, total) jiffies for /proc.
    fn read(&self) -> Option<(u64, u64)> {
        match &self.reader {
            Reader::V2 { stat } => {
                let usec = parse_cpu_stat_usage_usec(&fs::read_to_string(stat).ok()?)?;
                Some((usec.saturating_mul(1000), now_nanos(&self.clock)))
            }
            Reader::V1 { usage } => {
                let ns = parse_cpuacct_usage(&fs::read_to_string(usage).ok()?)?;
                Some((ns, now_nanos(&self.clock)))
            }
            Reader::Proc { stat } => parse_proc_stat(&fs::read_to_string(stat).ok()?),
            Reader::None => None,
        }
    }
}

impl<C: Clock> fmt::Debug for CpuLoad<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CpuLoad")
            .field("source", &self.source())
            .field("limit", &self.limit)
            .finish_non_exhaustive()
    }
}

/// The reader and the cgroup quota in CPUs (`None` = unlimited).
fn detect(root: &Path) -> (Reader, Option<f64>) {
    let cg = root.join("sys/fs/cgroup");
    if cg.join("cgroup.controllers").exists() {
        let rel = fs::read_to_string(root.join("proc/self/cgroup"))
            .ok()
            .and_then(|s| parse_cgroup_v2_path(&s).map(str::to_owned))
            .unwrap_or_default();
        let mut dir = cg.join(rel.trim_start_matches('/'));
        if !dir.join("cpu.stat").exists() {
            dir = cg.clone();
        }
        if dir.join("cpu.stat").exists() {
            // The tightest cpu.max from this cgroup up to the root.
            let mut quota: Option<f64> = None;
            let mut at = Some(dir.as_path());
            while let Some(d) = at.filter(|d| d.starts_with(&cg)) {
                if let Some(Some(q)) = fs::read_to_string(d.join("cpu.max"))
                    .ok()
                    .and_then(|s| parse_cpu_max(&s))
                {
                    quota = Some(quota.map_or(q, |cur| cur.min(q)));
                }
                at = d.parent();
            }
            return (
                Reader::V2 {
                    stat: dir.join("cpu.stat"),
                },
                quota,
            );
        }
    }
    for v1 in ["cpu,cpuacct", "cpuacct,cpu", "cpuacct"] {
        let usage = cg.join(v1).join("cpuacct.usage");
        if usage.exists() {
            let quota = ["cpu,cpuacct", "cpuacct,cpu", "cpu"]
                .iter()
                .map(|d| cg.join(d))
                .find_map(|d| {
                    let q = fs::read_to_string(d.join("cpu.cfs_quota_us")).ok()?;
                    let p = fs::read_to_string(d.join("cpu.cfs_period_us")).ok()?;
                    parse_cfs_quota(&q, &p)
                })
                .flatten();
            return (Reader::V1 { usage }, quota);
        }
    }
    let stat = root.join("proc/stat");
    if fs::read_to_string(&stat)
        .ok()
        .and_then(|s| parse_proc_stat(&s))
        .is_some()
    {
        return (Reader::Proc { stat }, None);
    }
    (Reader::None, None)
}

/// `cpu.max`: `"max 100000"` → `Some(None)`; `"50000 100000"` →
/// `Some(Some(0.5))`.
pub(crate) fn parse_cpu_max(s: &str) -> Option<Option<f64>> {
    let mut it = s.split_whitespace();
    let quota = it.next()?;
    let period: u64 = it.next().map_or(Some(100_000), |p| p.parse().ok())?;
    if quota == "max" {
        return Some(None);
    }
    let quota: u64 = quota.parse().ok()?;
    (period > 0).then(|| Some(quota as f64 / period as f64))
}

/// `usage_usec` from cgroup v2 `cpu.stat`.
pub(crate) fn parse_cpu_stat_usage_usec(s: &str) -> Option<u64> {
    s.lines().find_map(|l| {
        let mut it = l.split_whitespace();
        (it.next()? == "usage_usec").then(|| it.next()?.parse().ok())?
    })
}

/// cgroup v1 quota: `"-1"` → `Some(None)`; `"50000", "100000"` →
/// `Some(Some(0.5))`.
pub(crate) fn parse_cfs_quota(quota: &str, period: &str) -> Option<Option<f64>> {
    let quota: i64 = quota.trim().parse().ok()?;
    if quota < 0 {
        return Some(None);
    }
    let period: u64 = period.trim().parse().ok()?;
    (period > 0).then(|| Some(quota as f64 / period as f64))
}

/// cgroup v1 `cpuacct.usage`, in nanoseconds.
pub(crate) fn parse_cpuacct_usage(s: &str) -> Option<u64> {
    s.trim().parse().ok()
}

/// `/proc/stat` aggregate line → (busy, total) jiffies; idle and iowait
/// are not busy; guest time is already included in user time.
pub(crate) fn parse_proc_stat(s: &str) -> Option<(u64, u64)> {
    let line = s.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    if v.len() < 4 {
        return None;
    }
    let total: u64 = v.iter().sum();
    let idle = v[3] + v.get(4).copied().unwrap_or(0);
    Some((total - idle, total))
}

/// The cgroup v2 path (`0::/path`) from `/proc/self/cgroup`.
pub(crate) fn parse_cgroup_v2_path(s: &str) -> Option<&str> {
    s.lines().find_map(|l| l.strip_prefix("0::"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use std::time::Duration;

    #[test]
    fn parses_cgroup_v2() {
        assert_eq!(parse_cpu_max("max 100000\n"), Some(None));
        assert_eq!(parse_cpu_max("50000 100000\n"), Some(Some(0.5)));
        assert_eq!(parse_cpu_max("200000 100000"), Some(Some(2.0)));
        assert_eq!(parse_cpu_max("garbage"), None);
        assert_eq!(parse_cpu_max(""), None);
        let stat = "usage_usec 123456\nuser_usec 100000\nsystem_usec 23456\nnr_periods 0\n";
        assert_eq!(parse_cpu_stat_usage_usec(stat), Some(123_456));
        assert_eq!(parse_cpu_stat_usage_usec("user_usec 1\n"), None);
        assert_eq!(
            parse_cgroup_v2_path("0::/kubepods/pod1/c1\n"),
            Some("/kubepods/pod1/c1")
        );
        assert_eq!(parse_cgroup_v2_path("12:cpu,cpuacct:/docker/x\n"), None);
    }

    #[test]
    fn parses_cgroup_v1() {
        assert_eq!(parse_cfs_quota("-1\n", "100000\n"), Some(None));
        assert_eq!(parse_cfs_quota("150000\n", "100000\n"), Some(Some(1.5)));
        assert_eq!(parse_cfs_quota("1\n", "0\n"), None);
        assert_eq!(parse_cpuacct_usage("987654321\n"), Some(987_654_321));
        assert_eq!(parse_cpuacct_usage("x"), None);
    }

    #[test]
    fn parses_proc_stat() {
        let s = "cpu  100 5 50 800 20 3 2 0 0 0\ncpu0 50 2 25 400 10 1 1 0 0 0\nintr 1\n";
        assert_eq!(parse_proc_stat(s), Some((160, 980)));
        assert_eq!(parse_proc_stat("intr 1\n"), None);
        assert_eq!(parse_proc_stat("cpu 1 2\n"), None);
    }

    struct Fixture(PathBuf);

    impl Fixture {
        fn new(name: &str) -> Self {
            let dir =
                std::env::temp_dir().join(format!("seckill-fc-cpu-{name}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            Self(dir)
        }
        fn write(&self, rel: &str, body: &str) {
            let p = self.0.join(rel);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, body).unwrap();
        }
    }

    impl Drop for Fixture {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn samples_cgroup_v2_against_quota() {
        let f = Fixture::new("v2");
        f.write("sys/fs/cgroup/cgroup.controllers", "cpu io memory\n");
        f.write("proc/self/cgroup", "0::/app\n");
        f.write("sys/fs/cgroup/app/cpu.max", "50000 100000\n");
        f.write("sys/fs/cgroup/app/cpu.stat", "usage_usec 1000000\n");
        let clock = ManualClock::new();
        let cpu = CpuLoad::with_root(&f.0, clock.clone());
        assert_eq!(cpu.source(), CpuSource::CgroupV2);
        assert_eq!(cpu.limit(), 0.5);
        assert_eq!(cpu.sample(), None, "no time has passed");
        // 0.25 s of CPU over 1 s with half a CPU allowed: 50 %.
        f.write("sys/fs/cgroup/app/cpu.stat", "usage_usec 1250000\n");
        clock.advance(Duration::from_secs(1));
        let load = cpu.sample().unwrap();
        assert!((load - 0.5).abs() < 1e-9, "{load}");
    }

    #[test]
    fn samples_cgroup_v1_and_proc_stat() {
        let f = Fixture::new("v1");
        f.write("sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us", "25000\n");
        f.write("sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us", "100000\n");
        f.write("sys/fs/cgroup/cpu,cpuacct/cpuacct.usage", "0\n");
        let clock = ManualClock::new();
        let cpu = CpuLoad::with_root(&f.0, clock.clone());
        assert_eq!(cpu.source(), CpuSource::CgroupV1);
        assert_eq!(cpu.limit(), 0.25);
        f.write("sys/fs/cgroup/cpu,cpuacct/cpuacct.usage", "250000000\n");
        clock.advance(Duration::from_secs(2));
        let load = cpu.sample().unwrap();
        assert!((load - 0.5).abs() < 1e-9, "{load}");

        let f = Fixture::new("proc");
        f.write("proc/stat", "cpu  100 0 0 900 0 0 0 0 0 0\n");
        let cpu = CpuLoad::with_root(&f.0, ManualClock::new());
        assert_eq!(cpu.source(), CpuSource::ProcStat);
        f.write("proc/stat", "cpu  400 0 0 1600 0 0 0 0 0 0\n");
        let load = cpu.sample().unwrap();
        assert!((load - 0.3).abs() < 1e-9, "{load}");

        let f = Fixture::new("none");
        let cpu = CpuLoad::with_root(&f.0, ManualClock::new());
        assert_eq!(cpu.source(), CpuSource::Unavailable);
        assert_eq!(cpu.sample(), None);
    }

    #[test]
    fn real_machine_does_not_panic() {
        let cpu = CpuLoad::new();
        let _ = cpu.sample();
        assert!(cpu.limit() > 0.0);
    }
}
