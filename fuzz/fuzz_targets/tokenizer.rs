//! `unicorn_engine::fuzz::tokenizer_and_template` under libFuzzer: any input must
//! return, not panic.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = unicorn_engine::fuzz::tokenizer_and_template(data);
});
