//! Fuzz target: see `tower_mpsd::fuzz_checks::sim_store` for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tower_mpsd::fuzz_checks::sim_store(data));
