//! itera_pack::checkpoint::safetensors::load_safetensors_bytes on the raw input.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = itera_pack::checkpoint::safetensors::load_safetensors_bytes(data, "fuzz.safetensors");
});
