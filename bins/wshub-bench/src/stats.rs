//! Latency histogram and `/proc` readers (resident memory, CPU time).

use std::time::{Duration, Instant};

/// Sub-buckets per power of two above [`LINEAR`]: about 1.6 % relative resolution.
const SUB: u64 = 64;
/// Values below this are counted exactly.
const LINEAR: u64 = 2 * SUB;
/// Powers of two covered above [`LINEAR`]: up to 2^47 µs, far beyond any run.
const OCTAVES: usize = 40;

/// A log-linear histogram of microsecond values (the idea of HdrHistogram, in a few lines).
#[derive(Debug, Clone)]
pub(crate) struct Histogram {
    counts: Vec<u64>,
    total: u64,
    max: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            counts: vec![0; LINEAR as usize + OCTAVES * SUB as usize],
            total: 0,
            max: 0,
        }
    }
}

impl Histogram {
    pub(crate) fn record(&mut self, micros: u64) {
        let index = index_of(micros).min(self.counts.len() - 1);
        self.counts[index] += 1;
        self.total += 1;
        self.max = self.max.max(micros);
    }

    #[cfg(test)]
    pub(crate) fn total(&self) -> u64 {
        self.total
    }

    pub(crate) fn max(&self) -> u64 {
        self.max
    }

    /// The value at quantile `q` (0..=1): the middle of its bucket, at most the maximum seen.
    pub(crate) fn quantile(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        // The rank of the wanted value, 1-based; ceil so that q = 1 is the last value.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (index, &count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                let (low, width) = bucket_of(index);
                return (low + width / 2).min(self.max);
            }
        }
        self.max
    }
}

fn index_of(v: u64) -> usize {
    if v < LINEAR {
        return v as usize;
    }
    let exp = 63 - u64::from(v.leading_zeros()); // >= 7
    let shift = exp - 6; // keeps the top 7 bits: a mantissa in 64..128
    let mantissa = v >> shift;
    (LINEAR + (exp - 7) * SUB + (mantissa - SUB)) as usize
}

/// The lowest value of bucket `index` and the bucket's width.
fn bucket_of(index: usize) -> (u64, u64) {
    let index = index as u64;
    if index < LINEAR {
        return (index, 1);
    }
    let exp = 7 + (index - LINEAR) / SUB;
    let mantissa = SUB + (index - LINEAR) % SUB;
    let shift = exp - 6;
    (mantissa << shift, 1 << shift)
}

/// Resident memory of process `pid`, in KiB (`VmRSS` of `/proc/PID/status`).
pub(crate) fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// User plus system CPU time of process `pid` (every thread), from `/proc/PID/stat`.
pub(crate) fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields are counted after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of stat(5) (utime, stime) are the 12th and 13th after the name.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // USER_HZ is 100 on every Linux architecture this runs on.
    Some(Duration::from_millis(ticks * 10))
}

/// CPU use of a process between two points in time, as a share of one core.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CpuMeter {
    pid: u32,
    wall: Instant,
    cpu: Option<Duration>,
}

impl CpuMeter {
    pub(crate) fn start(pid: u32) -> Self {
        Self {
            pid,
            wall: Instant::now(),
            cpu: cpu_time(pid),
        }
    }

    /// Percent of one core used since [`CpuMeter::start`]; `None` when `/proc` could not be read.
    pub(crate) fn percent(&self) -> Option<f64> {
        let used = cpu_time(self.pid)?.checked_sub(self.cpu?)?;
        let wall = self.wall.elapsed().as_secs_f64();
        (wall > 0.0).then(|| 100.0 * used.as_secs_f64() / wall)
    }
}

/// How busy each CPU was between two points in time, whoever ran on it (`/proc/stat`): on a
/// shared machine, a server that got 40 % of its core while the core was 100 % busy was
/// starved by a neighbour, not idle.
#[derive(Debug, Clone)]
pub(crate) struct CoreMeter {
    start: Vec<(u64, u64)>,
}

impl CoreMeter {
    pub(crate) fn start() -> Self {
        Self { start: cpu_ticks() }
    }

    /// Percent busy of each CPU since [`CoreMeter::start`], CPU 0 first.
    pub(crate) fn busy_percent(&self) -> Vec<f64> {
        cpu_ticks()
            .iter()
            .zip(&self.start)
            .map(|(&(busy, total), &(busy0, total0))| {
                let total = total.saturating_sub(total0);
                if total == 0 {
                    0.0
                } else {
                    100.0 * busy.saturating_sub(busy0) as f64 / total as f64
                }
            })
            .collect()
    }
}

/// `(busy, total)` ticks of every `cpuN` line of `/proc/stat`.
fn cpu_ticks() -> Vec<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    stat.lines()
        .filter(|line| line.starts_with("cpu") && !line.starts_with("cpu "))
        .map(|line| {
            let ticks: Vec<u64> = line
                .split_whitespace()
                .skip(1)
                .filter_map(|v| v.parse().ok())
                .collect();
            let total: u64 = ticks.iter().take(8).sum();
            // idle and iowait are the 4th and 5th fields.
            let idle = ticks.get(3).copied().unwrap_or(0) + ticks.get(4).copied().unwrap_or(0);
            (total.saturating_sub(idle), total)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::{Histogram, bucket_of, index_of};

    #[test]
    fn buckets_cover_their_values() {
        for v in (0..5000).chain([1 << 20, (1 << 20) + 12345, 3_600_000_000]) {
            let (low, width) = bucket_of(index_of(v));
            assert!(low <= v && v < low + width, "{v}: [{low}, {})", low + width);
            assert!(
                width == 1 || width * 60 <= low,
                "{v}: width {width} too coarse"
            );
        }
    }

    #[test]
    fn quantiles_are_close() {
        let mut h = Histogram::default();
        for v in 1..=10_000 {
            h.record(v);
        }
        assert_eq!(h.total(), 10_000);
        for (q, want) in [(0.5, 5000.0), (0.99, 9900.0), (0.999, 9990.0)] {
            let got = h.quantile(q) as f64;
            assert!((got - want).abs() / want < 0.02, "q{q}: {got} vs {want}");
        }
        assert_eq!(h.quantile(1.0), 10_000);
        assert_eq!(Histogram::default().quantile(0.5), 0);
    }

    #[test]
    fn reads_cpu_ticks() {
        let meter = super::CoreMeter::start();
        assert!(!meter.busy_percent().is_empty());
    }

    #[test]
    fn reads_own_process() {
        let pid = std::process::id();
        assert!(super::rss_kib(pid).is_some_and(|kib| kib > 0));
        assert!(super::cpu_time(pid).is_some());
    }
}
