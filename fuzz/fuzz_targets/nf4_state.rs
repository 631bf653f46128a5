//! `unicorn_engine::fuzz::nf4_state` under libFuzzer: any input must return, not panic.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = unicorn_engine::fuzz::nf4_state(data);
});
