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

/// Logs go to stderr through `tracing`, filtered by `RUST_LOG` (default: warnings).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false).try_init();
}
