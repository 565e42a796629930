//! The whole pipeline with no input files: a seeded synthetic checkpoint with
//! Itera-Lite's shapes (`itera_lite_micro_distilled.pt`: vocab 2000, d 64, 3 layers, one MoE
//! layer), a made-up word tokenizer, the real packer ([`itera_pack::convert::build`] →
//! `finish`), [`itera_edge::Blob::parse`], and a session that prefills a prompt and
//! generates.
//!
//! The weights are random, so the generated text is noise; the point is that every stage a
//! real checkpoint goes through runs, and how fast.

use std::time::Instant;

use anyhow::Context;
use itera_pack::quant::QuantPolicy;
use itera_pack::synthetic::{synth_blob, Shape};
use itera_pack::AlignedBytes;
use serde::Serialize;

use crate::generate::{generate, ContextPolicy, Sampling};
use crate::text::{decode, encode, TextStream};

/// What the demo says about itself, in every output.
pub const SYNTHETIC_NOTE: &str = "weights are synthetic (random, seeded): the generated text is noise. \
For a real checkpoint: itera-pack convert model.pt -o model.itb --tokenizer tokenizer.json, \
then itera-sim run model.itb --prompt \"...\"";

/// Demo settings.
#[derive(Clone, Debug, PartialEq)]
pub struct DemoOptions {
    /// Seed of the synthetic weights (and of the sampler when sampling).
    pub seed: u64,
    /// Tokens to generate.
    pub n: usize,
    /// Prompt text (encoded with the demo's word tokenizer).
    pub prompt: String,
    /// Token choice; its `seed` is ignored in favour of [`DemoOptions::seed`].
    pub sampling: Sampling,
}

impl Default for DemoOptions {
    fn default() -> Self {
        DemoOptions {
            seed: 42,
            n: 32,
            prompt: "once upon a time there was a little fox".into(),
            sampling: Sampling::default(),
        }
    }
}

impl DemoReport {
    /// The lines the text demo prints after the streamed text (JSON is the report itself).
    pub fn render_summary(&self) -> String {
        let mut s = format!("synthetic:  yes (random weights, seed {}): the text above is noise\n", self.seed);
        s += &format!("generate:   {} tokens, {:.0} tok/s\n", self.generated.len(), self.tok_per_s);
        s += &format!("prefill:    {} tokens, {:.0} tok/s\n", self.prompt_tokens, self.prefill_tok_per_s);
        s += &format!("arena:      {} bytes per session\n", self.arena_bytes);
        s += &format!("blob:       {} bytes (made and packed in {:.0} ms)\n", self.blob_bytes, self.pack_secs * 1e3);
        s += &format!("macs/token: {}\n", self.macs_per_token);
        s += &format!("kernel:     {}\n", self.kernel);
        if self.stopped_at_max_seq {
            s += "stopped early: the session reached the model's max_seq positions\n";
        }
        s += "real models: itera-pack convert model.pt -o model.itb --tokenizer tokenizer.json\n";
        s += "             itera-sim run model.itb --prompt \"once upon a time\"\n";
        s
    }
}

/// Everything the demo measured.
#[derive(Clone, Debug, Serialize)]
pub struct DemoReport {
    /// Always true: the weights are random.
    pub synthetic: bool,
    /// [`SYNTHETIC_NOTE`].
    pub note: String,
    /// Seed of the weights.
    pub seed: u64,
    /// Prompt text.
    pub prompt: String,
    /// Prompt length in tokens.
    pub prompt_tokens: usize,
    /// Prompt ids.
    pub prompt_ids: Vec<u32>,
    /// Generated ids.
    pub generated: Vec<u32>,
    /// Generated text (decoded, joined with spaces).
    pub text: String,
    /// Generated tokens per second.
    pub tok_per_s: f64,
    /// Prompt tokens per second during prefill.
    pub prefill_tok_per_s: f64,
    /// Seconds to make, pack and parse the synthetic model.
    pub pack_secs: f64,
    /// Bytes of arena one session needs.
    pub arena_bytes: usize,
    /// Bytes of the packed blob.
    pub blob_bytes: usize,
    /// Multiply-accumulates per token.
    pub macs_per_token: usize,
    /// Matrix kernel the core runs on.
    pub kernel: String,
    /// Generation stopped at the model's `max_seq` before `n` tokens.
    pub stopped_at_max_seq: bool,
    /// Sampling used.
    pub sampling: Sampling,
}

/// Packs the synthetic micro model for `seed` (f32, the made-up word tokenizer) through
/// the real packer, as `itera-pack synth --shape micro` does, and returns the blob bytes.
pub fn synthetic_blob(seed: u64) -> anyhow::Result<Vec<u8>> {
    synth_blob(Shape::Micro, seed, &QuantPolicy::default())
}

/// Runs the demo, calling `on_text` with each piece of generated text as it is produced.
pub fn run_demo(opts: &DemoOptions, mut on_text: impl FnMut(&str)) -> anyhow::Result<DemoReport> {
    let start = Instant::now();
    let bytes = AlignedBytes::from(synthetic_blob(opts.seed)?.as_slice());
    let model = crate::open_model(&bytes).context("the synthetic blob does not parse (bug)")?;
    let pack_secs = start.elapsed().as_secs_f64();
    let tok = model.tokenizer().context("the synthetic blob lost its tokenizer (bug)")?;

    let prompt_ids = encode(tok, &opts.prompt);
    let sampling = Sampling { seed: opts.seed, ..opts.sampling };
    let mut sampler = sampling.sampler()?;
    let mut stream = TextStream::new();
    let g =
        generate(&model, &prompt_ids, opts.n, &mut sampler, ContextPolicy::Full, |id| on_text(&stream.piece(tok, id)))?;
    Ok(DemoReport {
        synthetic: true,
        note: SYNTHETIC_NOTE.into(),
        seed: opts.seed,
        prompt: opts.prompt.clone(),
        prompt_tokens: prompt_ids.len(),
        text: decode(tok, &g.generated),
        tok_per_s: g.tok_per_s(),
        prefill_tok_per_s: g.prefill_tok_per_s(),
        prompt_ids,
        generated: g.generated.clone(),
        pack_secs,
        arena_bytes: model.arena_bytes(),
        blob_bytes: bytes.len(),
        macs_per_token: model.macs_per_token(),
        kernel: model.kernel_name().into(),
        stopped_at_max_seq: g.stopped_at_max_seq,
        sampling,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_prompt_is_in_the_tokenizer() {
        // Distinct entries: `synthetic::word_tokenizer`'s own test.
        let t = itera_pack::synthetic::word_tokenizer(2000);
        for w in DemoOptions::default().prompt.split_whitespace() {
            assert!(t.tokens.iter().any(|t| t == w), "{w}");
        }
    }

    #[test]
    fn demo_is_deterministic_per_seed_and_streams_its_text() {
        let opts = DemoOptions { n: 8, ..Default::default() };
        let mut streamed = String::new();
        let a = run_demo(&opts, |s| streamed.push_str(s)).unwrap();
        assert!(a.synthetic && a.note.contains("synthetic"));
        assert_eq!(a.generated.len(), 8);
        assert_eq!(streamed, a.text);
        assert!(!a.prompt_ids.contains(&1), "prompt words are all in the vocabulary");
        let b = run_demo(&opts, |_| ()).unwrap();
        assert_eq!(a.generated, b.generated);
        let sampled = DemoOptions { sampling: Sampling { temperature: 1.0, ..Default::default() }, ..opts };
        assert_eq!(run_demo(&sampled, |_| ()).unwrap().generated.len(), 8);
    }
}
