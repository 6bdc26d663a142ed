//! Fuzz target: see `mpsd_sim::fuzz_checks::sim_store` for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mpsd_sim::fuzz_checks::sim_store(data));
