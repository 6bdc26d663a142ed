//! Fuzz target: see `tower_mpsd::fuzz_checks::retry_after` for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tower_mpsd::fuzz_checks::retry_after(data));
