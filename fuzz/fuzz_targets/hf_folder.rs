//! `unicorn_engine::fuzz::hf_folder` under libFuzzer: any input must return, not panic.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = unicorn_engine::fuzz::hf_folder(data);
});
