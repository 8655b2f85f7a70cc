//! `cargo +nightly fuzz run metrics_csv`: see `alertflow_model::fuzzing::metrics_csv` for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| alertflow_model::fuzzing::metrics_csv(data));
