#![no_main]
//! `csv`: see `ferris_fuzz::csv`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| ferris_fuzz::csv(data));
