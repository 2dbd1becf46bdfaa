#![no_main]
//! `peapod_tests::fuzz::pod_sandbox` under libFuzzer.

libfuzzer_sys::fuzz_target!(|data: &[u8]| peapod_tests::fuzz::pod_sandbox(data));
