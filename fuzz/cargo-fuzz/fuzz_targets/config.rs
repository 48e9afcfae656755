#![no_main]
//! `config`: see `ferris_fuzz::config`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| ferris_fuzz::config(data));
