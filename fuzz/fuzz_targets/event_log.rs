#![no_main]
//! `peapod_tests::fuzz::event_log` under libFuzzer.

libfuzzer_sys::fuzz_target!(|data: &[u8]| peapod_tests::fuzz::event_log(data));
