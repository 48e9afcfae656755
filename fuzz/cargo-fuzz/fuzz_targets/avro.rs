#![no_main]
//! `avro`: see `ferris_fuzz::avro`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| ferris_fuzz::avro(data));
