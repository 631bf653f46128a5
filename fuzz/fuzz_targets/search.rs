//! `unicorn_hub::fuzz::search` under libFuzzer: any search answer must return, not
//! panic.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = unicorn_hub::fuzz::search(data);
});
