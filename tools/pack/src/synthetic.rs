//! Seeded synthetic checkpoints: a state dict with Itera-Lite's names and shapes and random
//! weights, for demos, benchmarks and tests that must run without the real fixtures. The
//! weights mean nothing; the text they generate is noise.
//!
//! [`Shape`] names the published configurations (`itera-pack synth --shape …`) and
//! [`synth_blob`] packs one through the same path `itera-pack convert` takes.

use anyhow::Context;
use itera_edge::format::{for_each_expected, Config, Role, TokenizerKind};
use itera_edge::Rng;

use crate::checkpoint::{RawTensor, StateDict, TensorData};
use crate::convert::checkpoint_name;
use crate::quant::QuantPolicy;
use crate::writer::TokenizerTable;
use crate::PackOptions;

/// An Itera-Lite configuration from what the papers publish (vocab, width, depth, state
/// size, experts and their width); the rest is the same for every published shape, as in the
/// released micro checkpoint: `d_inner = 2·d`, conv kernel 4, 128 positions, MoE on every
/// other layer starting at layer 1, top-2 routing, plain FFN layers as wide as one expert,
/// LayerNorm eps 1e-5, `lm_head` tied to the embedding.
fn published(vocab: u32, d_model: u32, n_layers: u32, d_state: u32, n_experts: u32, expert_hidden: u32) -> Config {
    Config {
        vocab,
        d_model,
        n_layers,
        d_inner: 2 * d_model,
        d_state,
        conv_kernel: 4,
        max_seq: 128,
        ffn_hidden: expert_hidden,
        n_experts,
        expert_hidden,
        top_k: 2,
        moe_layers: 0xAAAA_AAAA & ((1u32 << n_layers) - 1),
        norm_eps: 1e-5,
        tied_lm_head: true,
    }
}

/// The shape of `itera_lite_micro_distilled.pt`: vocab 2000, d 64, 3 layers (layer 1 MoE with
/// 4 experts of width 32, top-2), d_inner 128, state 8, conv 4, 128 positions, tied head.
pub fn micro_config() -> Config {
    published(2000, 64, 3, 8, 4, 32)
}

/// The published tiny configuration (the authors' headline CPU model): vocab 8000, d 128,
/// 4 layers (layers 1 and 3 MoE with 4 experts of width 64, top-2; layers 0 and 2 a plain FFN
/// of width 64), d_inner 256, state 8, conv 4, 128 positions, tied head: 1,886,496 parameters.
///
/// Not to be confused with [`tiny_config`], the very small config of the unit tests.
pub fn published_tiny_config() -> Config {
    published(8000, 128, 4, 8, 4, 64)
}

/// The published small configuration: vocab 16000, d 256, 6 layers (layers 1, 3 and 5 MoE
/// with 8 experts of width 128, top-2; layers 0, 2 and 4 a plain FFN of width 128), d_inner
/// 512, state 16, conv 4, 128 positions, tied head: 9,963,104 parameters.
pub fn small_config() -> Config {
    published(16000, 256, 6, 16, 8, 128)
}

/// A published Itera-Lite configuration, for `itera-pack synth --shape` (see [`published`]
/// for what the three share).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Shape {
    /// vocab 2000, d 64, 3 layers, state 8, 4 experts x 32 (the micro checkpoint's shape).
    Micro,
    /// vocab 8000, d 128, 4 layers, state 8, 4 experts x 64 (1.89 M parameters).
    Tiny,
    /// vocab 16000, d 256, 6 layers, state 16, 8 experts x 128 (9.96 M parameters).
    Small,
}

impl Shape {
    /// The configuration ([`micro_config`], [`published_tiny_config`], [`small_config`]).
    pub fn config(self) -> Config {
        match self {
            Shape::Micro => micro_config(),
            Shape::Tiny => published_tiny_config(),
            Shape::Small => small_config(),
        }
    }

    /// Lower-case name, as `--shape` takes it.
    pub fn name(self) -> &'static str {
        match self {
            Shape::Micro => "micro",
            Shape::Tiny => "tiny",
            Shape::Small => "small",
        }
    }
}

impl std::fmt::Display for Shape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Trainable parameters of `config`: every tensor's elements, a tied `lm_head` counted once.
pub fn param_count(config: &Config) -> usize {
    let mut n = 0usize;
    let _ = for_each_expected::<()>(config, |e| {
        if !(e.role == Role::LmHead && config.tied_lm_head) {
            n += e.shape[0] as usize * e.shape[1] as usize;
        }
        Ok(())
    });
    n
}

/// English words at the start of the made-up vocabulary (after the four specials), so
/// prompts are readable.
const WORDS: &[&str] = &[
    "the", "a", "was", "to", "one", "in", "day", "there", "every", "it", "little", "friends", "fox", "morning",
    "squirrel", "bear", "once", "upon", "time", "loved", "bird", "met", "they", "became", "best", "and", "together",
    "dog", "liked", "with", "play", "forest", "river", "tree", "sun", "moon", "happy", "small", "big", "went", "saw",
    "found", "home", "near", "under", "over", "he", "she", "her", "his", "said", "ran", "jumped", "sang",
];

/// A made-up word tokenizer of exactly `vocab` distinct entries: `<PAD>`, `<UNK>`, `<BOS>`,
/// `<EOS>`, about fifty English words, then two-syllable words (`baba`, `babe`, …) and, past
/// those (4,900 of them), three-syllable ones. A `vocab` smaller than the specials and words
/// keeps a prefix of them.
pub fn word_tokenizer(vocab: usize) -> TokenizerTable {
    let mut tokens: Vec<String> = ["<PAD>", "<UNK>", "<BOS>", "<EOS>"].iter().map(|s| s.to_string()).collect();
    tokens.extend(WORDS.iter().map(|s| s.to_string()));
    let syllables: Vec<String> =
        "bdfgklmnprstvz".chars().flat_map(|c| "aeiou".chars().map(move |v| format!("{c}{v}"))).collect();
    let s = &syllables;
    let two = s.iter().flat_map(move |a| s.iter().map(move |b| format!("{a}{b}")));
    let three = s.iter().flat_map(move |a| s.iter().flat_map(move |b| s.iter().map(move |c| format!("{a}{b}{c}"))));
    for w in two.chain(three) {
        if tokens.len() >= vocab {
            break;
        }
        if !WORDS.contains(&w.as_str()) {
            tokens.push(w);
        }
    }
    tokens.truncate(vocab);
    TokenizerTable { kind: TokenizerKind::Word, unk_id: 1, tokens }
}

/// The provenance `source` of a synthetic blob.
pub fn synth_source(shape: Shape, seed: u64) -> String {
    format!("synthetic {shape} model, seed {seed} (random weights)")
}

/// Packs the synthetic model of `shape` with weights from `seed` through the packer
/// ([`crate::convert::build`], the path `itera-pack convert` takes, so `quant` means what
/// `--quant` means there), with the made-up [`word_tokenizer`], and returns the blob bytes.
/// The provenance records that the weights are synthetic, with the shape and the seed.
/// The same arguments always give the same bytes.
pub fn synth_blob(shape: Shape, seed: u64, quant: &QuantPolicy) -> anyhow::Result<Vec<u8>> {
    let config = shape.config();
    let sd = state_dict(&config, seed);
    let opts = PackOptions {
        top_k: Some(config.top_k),
        norm_eps: config.norm_eps,
        tokenizer: Some(word_tokenizer(config.vocab as usize)),
        meta: vec![
            ("source".into(), synth_source(shape, seed)),
            ("synthetic".into(), format!("shape={shape} seed={seed}")),
        ],
        quant: quant.clone(),
        tokenizer_source: None,
    };
    // A policy file is the user's; any other refusal of weights made here is a packer bug.
    let builder = crate::convert::build(&sd, &opts).map_err(|e| match e {
        crate::convert::ConvertError::Policy(_) => anyhow::Error::new(e),
        e => anyhow::anyhow!("packing the synthetic {shape} model failed: {e} (a bug in itera-pack: please report it)"),
    })?;
    builder.finish().with_context(|| format!("writing the synthetic {shape} blob failed"))
}

/// A very small config (vocab 48, d 8) for exhaustive tests.
pub fn tiny_config() -> Config {
    Config {
        vocab: 48,
        d_model: 8,
        n_layers: 2,
        d_inner: 16,
        d_state: 4,
        conv_kernel: 4,
        max_seq: 16,
        ffn_hidden: 8,
        n_experts: 3,
        expert_hidden: 8,
        top_k: 2,
        moe_layers: 0b10,
        norm_eps: 1e-5,
        tied_lm_head: true,
    }
}

/// A state dict for `config` with weights drawn from `seed`, scaled like a trained model's
/// (norm weights near 1, projections ~ 1/sqrt(fan-in)), so activations stay in range.
pub fn state_dict(config: &Config, seed: u64) -> StateDict {
    let mut rng = Rng::new(seed);
    let mut tensors = Vec::new();
    let _ = for_each_expected::<()>(config, |e| {
        if e.role == Role::LmHead && config.tied_lm_head {
            return Ok(());
        }
        let [rows, cols] = e.shape.map(|v| v as usize);
        let mut uniform = |scale: f32, offset: f32| -> Vec<f32> {
            (0..rows * cols).map(|_| offset + scale * (2.0 * rng.next_f32() - 1.0)).collect()
        };
        let fan_in = (cols as f32).sqrt();
        let data = match e.role {
            Role::SsmNormWeight | Role::MixNormWeight | Role::FinalNormWeight => uniform(0.1, 1.0),
            Role::ALog => uniform(0.5, 0.0),
            Role::Embedding | Role::Position => uniform(1.0, 0.0),
            _ => uniform(1.0 / fan_in, 0.0),
        };
        let shape = match e.role {
            Role::ConvWeight => vec![rows, 1, cols],
            Role::Gate | Role::Embedding | Role::Position => vec![rows, cols],
            _ if rows == 1 => vec![cols],
            _ => vec![rows, cols],
        };
        let name = checkpoint_name(config, &e);
        tensors.push((name, RawTensor { shape, data: TensorData::F32(data), storage: None }));
        Ok(())
    });
    let source_dtypes = tensors.iter().map(|(n, _)| (n.clone(), "float32".to_string())).collect();
    StateDict { tensors, source_dtypes, ..StateDict::default() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameter_counts_of_the_published_shapes() {
        // tiny, by hand: embedding 8000·128 = 1,024,000; positions 128·128 = 16,384; per
        // layer the SSM block 2·128 (norm) + 512·128 (in_proj) + 256·4 + 256 (conv) + 8 (A_log)
        // + 8·256 (B) + 256·8 (C) + 256 (D) + 256·256 + 256 (delta_proj) + 128·256 (out_proj)
        // + 2·128 (mix norm) = 170,248, four times = 680,992; two FFNs 2·64·128 = 16,384 each;
        // two MoE layers 4·128 (router) + 4·2·64·128 = 66,048 each; final norm 256.
        let tiny = 1_024_000 + 16_384 + 4 * 170_248 + 2 * 16_384 + 2 * 66_048 + 256;
        assert_eq!(tiny, 1_886_496);
        assert_eq!(param_count(&Shape::Tiny.config()), tiny);
        assert_eq!(param_count(&Shape::Small.config()), 9_963_104);
        // The micro checkpoint: 293,656 parameters (tied head), 1,174,624 bytes of f32.
        assert_eq!(param_count(&Shape::Micro.config()), 293_656);
    }

    #[test]
    fn word_tokenizer_entries_are_distinct_at_every_size() {
        for vocab in [48, 2000, 8000, 16000] {
            let t = word_tokenizer(vocab);
            assert_eq!(t.tokens.len(), vocab);
            let set: std::collections::BTreeSet<_> = t.tokens.iter().collect();
            assert_eq!(set.len(), vocab);
        }
        // Larger vocabularies extend smaller ones.
        assert_eq!(word_tokenizer(2000).tokens[..], word_tokenizer(16000).tokens[..2000]);
    }

    #[test]
    fn synth_blobs_are_deterministic_and_record_their_origin() {
        let q = QuantPolicy::default();
        let a = synth_blob(Shape::Micro, 5, &q).unwrap();
        assert_eq!(a, synth_blob(Shape::Micro, 5, &q).unwrap());
        assert_ne!(a, synth_blob(Shape::Micro, 6, &q).unwrap());
        let bytes = crate::AlignedBytes::from(a.as_slice());
        let blob = itera_edge::Blob::parse(&bytes).unwrap();
        assert_eq!(*blob.config(), micro_config());
        let meta: Vec<_> = blob.provenance().collect();
        assert!(meta.contains(&("synthetic", "shape=micro seed=5")), "{meta:?}");
        assert!(meta.contains(&("source", "synthetic micro model, seed 5 (random weights)")), "{meta:?}");
    }
}
