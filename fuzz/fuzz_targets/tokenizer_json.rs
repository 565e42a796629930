//! itera_pack::tokenizer_json::parse_tokenizer on the input (UTF-8, lossily).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = itera_pack::tokenizer_json::parse_tokenizer(&String::from_utf8_lossy(data));
});
