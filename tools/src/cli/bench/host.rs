//! What the host took from a run: the CPU time the hypervisor gave to other guests while this
//! machine's CPUs wanted it (*steal*, the eighth column of `/proc/stat`'s `cpu` line).
//!
//! On a shared virtual machine the same binary's figures move with its neighbours: on this
//! project's 2-core machine the alert chain's wall time ranged over 3.0–5.7 s within one
//! morning, and a paced run's p99 with it. Steal is the part of that a guest can see (the
//! neighbours also share caches and memory bandwidth, which no counter here shows), so each
//! scenario reports it: a run with much steal is not comparable with a quiet one. A host that
//! does not report steal (not Linux, or a kernel too old for the column), or a run too short
//! for the clock-tick counters, gives no figure rather than a wrong one.

/// Cumulative CPU time of all CPUs, in clock ticks.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CpuTimes {
    /// Time stolen by the hypervisor.
    steal: u64,
    /// Every state's time: user, nice, system, idle, iowait, irq, softirq, steal. (`guest`
    /// and `guest_nice`, when present, are already counted in user and nice.)
    total: u64,
}

/// The host's CPU times now, if it reports them.
pub fn cpu_times() -> Option<CpuTimes> {
    parse(&std::fs::read_to_string("/proc/stat").ok()?)
}

/// Reads the aggregate `cpu` line of `/proc/stat`.
fn parse(stat: &str) -> Option<CpuTimes> {
    let line = stat.lines().find(|l| l.split_whitespace().next() == Some("cpu"))?;
    let ticks: Vec<u64> = line.split_whitespace().skip(1).take(8).map(|v| v.parse().ok()).collect::<Option<_>>()?;
    let steal = *ticks.get(7)?;
    Some(CpuTimes { steal, total: ticks.iter().sum() })
}

/// Fewest clock ticks (of all CPUs together) a figure is given for: at the usual 100 Hz a
/// second of one CPU, so one tick is at most 1 %.
const MIN_TICKS: u64 = 100;

/// The share of all CPU time between `before` and `after` that was stolen, in percent; `None`
/// when fewer than [`MIN_TICKS`] passed (or the counters went back, which they do not on one
/// boot).
pub fn steal_percent(before: CpuTimes, after: CpuTimes) -> Option<f64> {
    let total = after.total.checked_sub(before.total).filter(|&t| t >= MIN_TICKS)?;
    let steal = after.steal.checked_sub(before.steal)?;
    Some(100.0 * steal as f64 / total as f64)
}

/// Steal from here on, as a percentage of the host's CPU time: [`Stopwatch::stop`] gives it.
pub struct Stopwatch(Option<CpuTimes>);

impl Stopwatch {
    /// Starts counting.
    pub fn start() -> Stopwatch {
        Stopwatch(cpu_times())
    }

    /// The steal since [`start`](Self::start), if the host reports it.
    pub fn stop(&self) -> Option<f64> {
        steal_percent(self.0?, cpu_times()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str = "cpu  1720746 113670 126861 564217 13591 0 2622 778 0 0\n\
                        cpu0 860373 56835 63430 282108 6795 0 1311 389 0 0\n\
                        intr 1 2 3\n";

    #[test]
    fn the_aggregate_line_gives_steal_and_total() {
        let t = parse(STAT).expect("a full line");
        assert_eq!(t, CpuTimes { steal: 778, total: 1720746 + 113670 + 126861 + 564217 + 13591 + 2622 + 778 });
    }

    #[test]
    fn a_kernel_without_the_steal_column_gives_no_figure() {
        assert_eq!(parse("cpu  1 2 3 4 5 6 7\ncpu0 1 2 3 4 5 6 7\n"), None);
        assert_eq!(parse("cpu0 1 2 3 4 5 6 7 8\n"), None, "only the aggregate line counts");
        assert_eq!(parse("cpu  1 2 x 4 5 6 7 8\n"), None);
        assert_eq!(parse(""), None);
    }

    #[test]
    fn steal_is_a_share_of_the_time_between_two_readings() {
        let a = CpuTimes { steal: 100, total: 10_000 };
        let b = CpuTimes { steal: 130, total: 10_600 };
        assert_eq!(steal_percent(a, b), Some(5.0));
        assert_eq!(steal_percent(a, CpuTimes { steal: 100, total: 10_100 }), Some(0.0));
        assert_eq!(steal_percent(a, CpuTimes { steal: 101, total: 10_099 }), None, "too few ticks for a figure");
        assert_eq!(steal_percent(a, a), None, "no time passed");
        assert_eq!(steal_percent(b, a), None, "counters never go back");
    }

    #[test]
    fn this_host_reports_a_figure_between_0_and_100() {
        // Linux only: elsewhere there is no /proc/stat and so no figure, which is the point.
        if cfg!(target_os = "linux") {
            let watch = Stopwatch::start();
            let start = cpu_times().expect("Linux reports CPU times");
            let waited = std::time::Instant::now();
            while cpu_times().expect("still").total < start.total + MIN_TICKS {
                assert!(waited.elapsed() < std::time::Duration::from_secs(10), "the tick counters do not move");
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            let steal = watch.stop().expect("a figure once enough ticks passed");
            assert!((0.0..=100.0).contains(&steal), "{steal}");
        }
    }
}
