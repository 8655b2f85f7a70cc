//! Subcommands. Exit codes: 0 ok, 1 runtime failure, 2 bad config or arguments.

pub mod bench;
pub mod demo;
pub mod detect;
pub mod eval_cmd;
pub mod gen_cmd;
pub mod run;
pub mod sql;

/// Success.
pub const OK: u8 = 0;
/// The run or query failed.
pub const FAILED: u8 = 1;
/// Bad configuration or arguments.
pub const BAD_CONFIG: u8 = 2;

/// Turns transparent huge pages off for this process; true if they are off afterwards (always
/// false off Linux, where nothing is done).
///
/// mimalloc returns freed memory to the OS after 1 s, in 4 KiB pieces of 2 MiB regions it asked
/// huge pages for; touching such a region again faults in a whole 2 MiB huge page, which the
/// kernel zeroes on the spot. A 1-second window's close allocates its rows afresh every second,
/// so every close paid for megabytes of zeroing (85 % of a 10–18 ms merge call in a profile of
/// `alertflow bench metrics --rate 100000`, see BENCHMARKS.md): p99 latency 27–43 ms with huge
/// pages, under 10 ms without, and throughput no worse. Called first thing in `main`, before
/// the dataflow allocates; the flag is the process's (and its children's), not the thread's.
pub fn no_huge_pages() -> bool {
    #[cfg(target_os = "linux")]
    {
        // A kernel without the flag (too old) keeps its default, and says so below.
        let _ = rustix::thread::disable_transparent_huge_pages(true);
        rustix::thread::transparent_huge_pages_are_disabled().unwrap_or(false)
    }
    #[cfg(not(target_os = "linux"))]
    false
}

/// Logs go to stderr through `tracing`, filtered by `RUST_LOG` (default: warnings).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false).try_init();
}

#[cfg(test)]
mod tests {
    #[test]
    #[cfg(target_os = "linux")]
    fn huge_pages_are_off_for_the_whole_process_after_the_call() {
        assert!(super::no_huge_pages());
        // The flag belongs to the process: another thread sees it too.
        let seen = std::thread::spawn(|| rustix::thread::transparent_huge_pages_are_disabled().unwrap()).join().unwrap();
        assert!(seen);
    }
}
