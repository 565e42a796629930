//! itera_pack::checkpoint::load_bytes: zip + restricted-pickle PyTorch checkpoints and
//! safetensors, sniffed from the input. Under libFuzzer a panic aborts even inside the
//! reader's `catch_unwind` guard, so the fuzzer sees it.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = itera_pack::checkpoint::load_bytes(data, "fuzz.pt");
});
