#![no_main]
//! `substitution`: see `ferris_fuzz::substitution`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| ferris_fuzz::substitution(data));
