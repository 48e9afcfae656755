#![no_main]
//! `json`: see `ferris_fuzz::json`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| ferris_fuzz::json(data));
