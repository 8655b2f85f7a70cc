//! `cargo +nightly fuzz run alertmanager`: see `alertflow_model::fuzzing::alertmanager` for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| alertflow_model::fuzzing::alertmanager(data));
