//! `itera-sim eval`: perplexity on a text, and agreement with a second blob.

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Args;
use itera_sim::eval::evaluate;
use itera_sim::progress::Progress;
use itera_sim::text::{encode_iter, TableVocab, Unknown, Vocab};
use itera_sim::{limits, read_blob};
use serde_json::json;

use super::{load, say, Outcome};

/// Perplexity of a blob on a text file, optionally with its agreement with a reference blob.
///
/// The text is encoded with the blob's tokenizer, or the tokenizer JSON (word level: lower-cased, whitespace-split
/// words; char level: characters; unknown input becomes the unknown id), truncated to
/// --truncate tokens, and cut into consecutive windows of the model's max_seq positions, each
/// from an empty session. Within a window the logits after position p predict token p+1;
/// perplexity is exp(mean NLL) over all predicted positions.
///
/// With --compare, both blobs run the same windows and, over the same positions, the
/// report adds KL(reference ‖ this) per position (softmax in f64: mean, 99th percentile,
/// max), top-1 agreement, mean |Δp| of the reference's top token, RMSE and cosine of the
/// logits, and the reference's perplexity.
#[derive(Args)]
#[command(after_help = "\
Examples:
  itera-sim eval micro.itb --text tinystories_train.txt        # a blob packed with --tokenizer
  itera-sim eval micro.itb --text tinystories_train.txt --tokenizer tokenizer_2000.json
  itera-sim eval micro_int8.itb --text tinystories_train.txt --tokenizer tokenizer_2000.json \\
      --compare micro.itb --truncate 2048 --json

The report says how many of the tokens are the tokenizer's unknown id: a model sees every
unknown word as the same token, so the perplexity of a text mostly unknown to the
tokenizer says little about the text.

JSON keys: perplexity, mean_nll, positions, tokens, windows, window, unknown_tokens,
unknown_share, tokenizer (\"blob\" or the JSON's path), reference_perplexity,
kld_mean, kld_p99, kld_max, top1_agreement, mean_abs_dp_top, rmse, cosine (the reference
keys are null without --compare; a non-finite value is null).")]
pub struct EvalArgs {
    /// The blob (.itb) to evaluate.
    blob: PathBuf,
    /// Plain text file to evaluate on.
    #[arg(long, value_name = "FILE")]
    text: PathBuf,
    /// Tokenizer JSON (token_to_id/id_to_token, or token2id/id2token with "level": "char").
    /// Default: the blob's own; a tokenizer of another kind (word or char) than the blob's
    /// is refused.
    #[arg(long, value_name = "JSON")]
    tokenizer: Option<PathBuf>,
    /// Reference blob (e.g. the FP32 model) to compare with, on the same windows.
    #[arg(long = "compare", alias = "reference", value_name = "BLOB")]
    reference: Option<PathBuf>,
    /// Evaluate only the first N tokens of the text (default: all; 2 to 16777216).
    #[arg(long = "truncate", alias = "max-tokens", value_name = "N", allow_negative_numbers = true,
          value_parser = limits::EVAL_TOKENS.parser())]
    max_tokens: Option<usize>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

impl EvalArgs {
    /// Runs the command.
    pub fn run(&self) -> anyhow::Result<Outcome> {
        let a = self;
        let bytes = read_blob(&a.blob)?;
        let model = load(&a.blob, &bytes)?;
        let own = model.tokenizer();
        let table = a.tokenizer.as_deref().map(itera_pack::convert::read_tokenizer).transpose()?;
        let table_vocab = table.as_ref().map(TableVocab::new);
        let (vocab, tokenizer): (&dyn Vocab, String) = match (&own, &table_vocab, a.tokenizer.as_deref()) {
            (Some(own), Some(given), Some(path)) if own.kind() != given.kind() => bail!(
                "{} is a {} tokenizer but {} was packed with a {} one: leave out --tokenizer to use the blob's own, or give a {} tokenizer",
                path.display(),
                kind_name(given.kind()),
                a.blob.display(),
                kind_name(own.kind()),
                kind_name(own.kind())
            ),
            (_, Some(given), Some(path)) => (given as &dyn Vocab, path.display().to_string()),
            (Some(own), _, _) => (*own as &dyn Vocab, "blob".to_string()),
            _ => bail!(
                "{} has no tokenizer: give the one it was trained with (--tokenizer tokenizer.json), or repack it with `itera-pack convert ... --tokenizer tokenizer.json`",
                a.blob.display()
            ),
        };
        let text = itera_sim::eval::read_text(&a.text, limits::MAX_EVAL_TEXT_BYTES)?;
        // Encode no more than can be evaluated: one token past the limit tells a text that is
        // too long (without --truncate) from one that fits.
        let limit = a.max_tokens.unwrap_or(limits::EVAL_TOKENS.max);
        let mut tokens: Vec<u32> = encode_iter(vocab, &text).take(limit + 1).collect();
        if tokens.len() > limit {
            if a.max_tokens.is_none() {
                bail!(
                    "{} has more than {limit} tokens, the most eval holds in memory: give --truncate {limit} (or fewer) to evaluate its start",
                    a.text.display()
                );
            }
            tokens.truncate(limit);
        }
        let unknown = Unknown::count(vocab.unk_id(), &tokens);
        let ref_bytes = a.reference.as_deref().map(read_blob).transpose()?;
        let reference = match (a.reference.as_deref(), ref_bytes.as_ref()) {
            (Some(path), Some(b)) => Some(load(path, b)?),
            _ => None,
        };
        let mut progress = Progress::new("eval");
        let r = evaluate(&model, reference.as_ref(), &tokens, |d, t| progress.update(d, t))
            .with_context(|| format!("cannot evaluate {} on {}", a.blob.display(), a.text.display()))?;
        progress.finish();
        if unknown.share() >= UNKNOWN_WARNING_SHARE {
            eprintln!(
                "warning: {} of {} are the tokenizer's unknown id: the perplexity mostly measures predicting it; evaluate on text the tokenizer covers",
                unknown.describe(),
                a.text.display()
            );
        }
        let report = EvalSummary { report: r, unknown, tokenizer };
        say(&if a.json { format!("{}\n", report.to_json()) } else { report.render() })?;
        Ok(Outcome::Ok)
    }
}

/// What `eval` reports: the evaluation, and how much of the text its tokenizer knew. The
/// text and the JSON are both made from it.
struct EvalSummary {
    report: itera_sim::eval::EvalReport,
    unknown: Unknown,
    /// `blob`, or the tokenizer JSON's path.
    tokenizer: String,
}

impl EvalSummary {
    fn to_json(&self) -> serde_json::Value {
        let mut v = self.report.to_json();
        v["unknown_tokens"] = json!(self.unknown.unknown);
        v["unknown_share"] = json!(self.unknown.share());
        v["tokenizer"] = json!(self.tokenizer);
        v
    }

    fn render(&self) -> String {
        let source = if self.tokenizer == "blob" { "the blob's" } else { &self.tokenizer };
        format!(
            "{}unknown:     {} are unknown to the tokenizer ({source})\n",
            self.report.render(),
            self.unknown.describe()
        )
    }
}

/// Above this share of unknown tokens, `eval` warns that its perplexity says little.
const UNKNOWN_WARNING_SHARE: f64 = 0.05;

/// "word" or "char".
fn kind_name(kind: itera_edge::format::TokenizerKind) -> &'static str {
    match kind {
        itera_edge::format::TokenizerKind::Word => "word",
        itera_edge::format::TokenizerKind::Char => "char",
    }
}
