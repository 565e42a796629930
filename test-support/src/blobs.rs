//! Synthetic models packed by the real packer: blobs that parse, small enough for any test.

use itera_edge::Config;
use itera_pack::synthetic::{state_dict, tiny_config};
use itera_pack::writer::BlobBuilder;
use itera_pack::{AlignedBytes, PackOptions};

/// The packer's builder for a synthetic model of `config` with weights drawn from `seed`,
/// converted with `opts`, before it is finished: for tests that edit tensors first.
pub fn builder(config: &Config, seed: u64, opts: &PackOptions) -> BlobBuilder {
    itera_pack::convert::build(&state_dict(config, seed), opts).expect("the synthetic model converts")
}

/// A synthetic model of `config` (weights from `seed`) packed with `opts`.
pub fn packed(config: &Config, seed: u64, opts: &PackOptions) -> AlignedBytes {
    let bytes = builder(config, seed, opts).finish().expect("the synthetic model packs");
    AlignedBytes::from(bytes.as_slice())
}

/// The tiny synthetic model (`tiny_config`: vocab 48, max_seq 16, all f32) from `seed`.
pub fn tiny_blob(seed: u64) -> AlignedBytes {
    tiny_blob_with(seed, &PackOptions::default())
}

/// [`tiny_blob`] packed with `opts` (a quantization preset, a tokenizer, ...).
pub fn tiny_blob_with(seed: u64, opts: &PackOptions) -> AlignedBytes {
    packed(&tiny_config(), seed, opts)
}
