//! `cargo +nightly fuzz run alerts`: see `alertflow_model::fuzzing::alerts` for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| alertflow_model::fuzzing::alerts(data));
