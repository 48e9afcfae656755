#![no_main]
//! `sql`: see `ferris_fuzz::sql`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| ferris_fuzz::sql(data));
