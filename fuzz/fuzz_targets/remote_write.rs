//! `cargo +nightly fuzz run remote_write`: see `alertflow_model::fuzzing::remote_write` for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| alertflow_model::fuzzing::remote_write(data));
