#![no_main]
//! `peapod_tests::fuzz::image_documents` under libFuzzer.

libfuzzer_sys::fuzz_target!(|data: &[u8]| peapod_tests::fuzz::image_documents(data));
