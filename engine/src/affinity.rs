//! Worker CPU pinning (`[engine] pin_workers`).
//!
//! Why: the timely workers wake each other all the time (exchanged batches, progress), and
//! the kernel's wake-affine placement tends to put a woken worker on its waker's core. For a
//! few milliseconds two workers then take turns on one core while the other sits idle —
//! measured on a window close of the `metrics` bench (BENCHMARKS, "where a metrics window
//! close goes"). Pinning each worker to a core of its own takes that choice from the
//! scheduler.
//!
//! Which core: the process's allowed CPUs (its affinity mask when the run starts, so
//! `taskset`, a container's cpuset or Kubernetes' static CPU manager decide the set), taken in
//! order, by the worker's *global* index: the processes of a cluster on one host pin to
//! different cores, as long as each is started with the same mask. It is a setting, off by
//! default: two independent runs on one host would pin to the same cores, and with every
//! thread busy (an unpaced replay) a pinned worker cannot move to whichever core is free, which
//! cost the alert chain and the detectors 7–13 % of throughput (BENCHMARKS, "Pinned workers").

use rustix::thread::{CpuSet, sched_getaffinity, sched_setaffinity};

/// The CPUs the calling thread may run on, in increasing order. Read on the thread that starts
/// the workers, before they start: they inherit its mask, and once one is pinned its own mask
/// says nothing about the process's.
pub fn allowed_cpus() -> std::io::Result<Vec<usize>> {
    let set = sched_getaffinity(None)?;
    Ok((0..CpuSet::MAX_CPU).filter(|&c| set.is_set(c)).collect())
}

/// Where worker `global` of `local` workers in this process goes, over `cpus`: the
/// `global`-th allowed CPU (round the set), or `None` when this process has more workers than
/// CPUs (two pinned workers on one core could not move apart when one is busy: worse than not
/// pinning at all).
pub fn cpu_of(global: usize, local: usize, cpus: &[usize]) -> Option<usize> {
    (!cpus.is_empty() && local <= cpus.len()).then(|| cpus[global % cpus.len()])
}

/// The CPUs to pin a process's `local` workers to, or `None` (with a warning saying why)
/// when they cannot be pinned: the mask unreadable, or more workers than CPUs.
pub fn plan(local: usize) -> Option<Vec<usize>> {
    let cpus = match allowed_cpus() {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!("engine.pin_workers: cannot read this process's CPU affinity ({e}); the workers are not pinned");
            return None;
        }
    };
    if cpu_of(0, local, &cpus).is_none() {
        tracing::warn!(
            "engine.pin_workers: {local} workers but only {} allowed CPU(s); the workers are not pinned (two on one core could not move apart)",
            cpus.len()
        );
        return None;
    }
    tracing::info!("pinning {local} worker(s) over CPUs {cpus:?}");
    Some(cpus)
}

/// Pins the calling worker thread (global index `global`) to its CPU of `cpus` (a [`plan`]).
/// A refusal (a seccomp filter, say) leaves the worker unpinned, with a warning: the run
/// is the same, only its scheduling is not.
pub fn pin_worker(global: usize, cpus: &[usize]) {
    let Some(cpu) = cpu_of(global, 1, cpus) else { return };
    if let Err(e) = pin_current_thread(cpu) {
        tracing::warn!("engine.pin_workers: worker {global} cannot be pinned to CPU {cpu} ({e}); it runs unpinned");
    }
}

/// Pins the calling thread to `cpu`.
pub fn pin_current_thread(cpu: usize) -> std::io::Result<()> {
    let mut set = CpuSet::new();
    set.set(cpu);
    sched_setaffinity(None, &set).map_err(std::io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workers_take_the_allowed_cpus_in_order_by_global_index() {
        let cpus = [2, 3, 6, 7];
        // One process of 4 workers: one core each.
        assert_eq!((0..4).map(|w| cpu_of(w, 4, &cpus)).collect::<Vec<_>>(), vec![Some(2), Some(3), Some(6), Some(7)]);
        // Process 1 of a one-host cluster of 2 × 2 workers: global indices 2 and 3.
        assert_eq!((2..4).map(|w| cpu_of(w, 2, &cpus)).collect::<Vec<_>>(), vec![Some(6), Some(7)]);
        // More peers than cores over the cluster (other hosts): round the set.
        assert_eq!(cpu_of(5, 2, &cpus), Some(3));
        // More workers in this process than cores: nobody is pinned.
        assert_eq!(cpu_of(0, 5, &cpus), None);
        assert_eq!(cpu_of(0, 1, &[]), None);
    }

    #[test]
    fn a_pinned_thread_runs_only_on_its_cpu() {
        let cpus = allowed_cpus().unwrap();
        assert!(!cpus.is_empty());
        let last = *cpus.last().unwrap();
        let seen = std::thread::spawn(move || {
            pin_current_thread(last).unwrap();
            (allowed_cpus().unwrap(), rustix::thread::sched_getcpu())
        })
        .join()
        .unwrap();
        assert_eq!(seen, (vec![last], last));
        // The pinning was the thread's own: this one keeps the whole set.
        assert_eq!(allowed_cpus().unwrap(), cpus);
    }
}
