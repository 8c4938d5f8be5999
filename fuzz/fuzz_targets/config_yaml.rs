//! cargo-fuzz target `config_yaml`: the body is `tests/fuzz_targets/mod.rs`, shared with the stable short run.

#![no_main]

#[path = "../../tests/fuzz_targets/mod.rs"]
mod targets;

libfuzzer_sys::fuzz_target!(|data: &[u8]| targets::config_yaml(data));
