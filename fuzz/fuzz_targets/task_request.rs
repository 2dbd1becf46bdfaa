#![no_main]
//! `peapod_tests::fuzz::task_request` under libFuzzer.

libfuzzer_sys::fuzz_target!(|data: &[u8]| peapod_tests::fuzz::task_request(data));
