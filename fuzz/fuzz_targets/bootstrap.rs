#![no_main]
//! `peapod_tests::fuzz::bootstrap` under libFuzzer.

libfuzzer_sys::fuzz_target!(|data: &[u8]| peapod_tests::fuzz::bootstrap(data));
