#![no_main]
//! `peapod_tests::fuzz::oci_spec` under libFuzzer.

libfuzzer_sys::fuzz_target!(|data: &[u8]| peapod_tests::fuzz::oci_spec(data));
