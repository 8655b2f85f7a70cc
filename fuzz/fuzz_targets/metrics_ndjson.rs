//! `cargo +nightly fuzz run metrics_ndjson`: see `alertflow_model::fuzzing::metrics_ndjson` for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| alertflow_model::fuzzing::metrics_ndjson(data));
