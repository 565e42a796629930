//! Hostile inputs against `itera-pack`'s own steps: quantization parameters, tokenizers,
//! printed names, key files and output paths.
