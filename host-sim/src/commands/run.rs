//! `itera-sim run`: text (or ids) generated from a prompt, streamed as it comes.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{ArgGroup, Args};
use itera_pack::untrusted::shown;
use itera_sim::generate::{generate, ContextPolicy, Generation, Sampling};
use itera_sim::text::{decode, encode, for_terminal, unknown_pieces, TextStream, Unknown};
use itera_sim::{limits, parse_tokens, read_blob};
use serde_json::json;

use super::{load, Outcome, SamplingArgs};

/// Generate text from a prompt, streaming tokens to stdout as they come.
///
/// The prompt is encoded with the blob's tokenizer (word level: lower-cased,
/// whitespace-split words; char level: characters; unknown input becomes the unknown id),
/// fed in one prefill, then --max-tokens tokens are sampled one at a time. A summary (prompt and
/// generated tokens, tok/s) goes to stderr. Generation stops early, cleanly, when the
/// model's max_seq positions are used up, unless --context slide (upstream's policy).
#[derive(Args)]
#[command(after_help = "\
Examples:
  itera-sim run micro.itb --prompt \"once upon a time\"                 # greedy, 40 tokens
  itera-sim run micro.itb --prompt \"the fox\" -n 20 --temperature 0.8 --top-k 40 --seed 7
  itera-sim run micro.itb --tokens 4,16,6 --json                      # ids in, ids out
  itera-sim run micro.itb --prompt \"once upon a time\" -n 300 --context slide   # past max_seq

A blob packed without --tokenizer has no text side: give --tokens instead of --prompt.
Token text is the blob's: control characters in it other than newline and tab are shown
escaped (\\u{1b}); --json gives the exact text.")]
#[command(group(ArgGroup::new("input").required(true).args(["prompt", "tokens"])))]
pub struct RunArgs {
    /// The blob (.itb).
    blob: PathBuf,
    /// Prompt text, encoded with the blob's tokenizer.
    #[arg(long, short, value_name = "TEXT")]
    prompt: Option<String>,
    /// Prompt as token ids (commas or spaces); output is ids unless the blob has a tokenizer.
    #[arg(long, value_name = "IDS", allow_hyphen_values = true)]
    tokens: Option<String>,
    /// Tokens to generate (1 to 16777215; generation stops when max_seq is reached, unless --context slide).
    #[arg(short, long = "max-tokens", default_value_t = 40, value_name = "N", allow_negative_numbers = true,
          value_parser = limits::GENERATE_TOKENS.parser())]
    n: usize,
    /// Print the prompt (as the model sees it, unknown words shown as such) before the output.
    #[arg(long)]
    echo: bool,
    /// Stream token ids even when the blob has a tokenizer.
    #[arg(long)]
    ids: bool,
    /// At max_seq tokens: `full` stops (the default); `slide` goes on as upstream's
    /// generate() does, predicting each further token from the last max_seq tokens run
    /// again from an empty state (positions from 0): max_seq times the work per token.
    #[arg(long, value_enum, default_value_t = ContextPolicy::Full, value_name = "POLICY")]
    context: ContextPolicy,
    #[command(flatten)]
    sampling: SamplingArgs,
    /// Print one JSON object (prompt_tokens, generated ids, text, tok_per_s, ...) at the
    /// end instead of streaming.
    #[arg(long)]
    json: bool,
}

impl RunArgs {
    /// Runs the command.
    pub fn run(&self) -> anyhow::Result<Outcome> {
        let a = self;
        let mut sampler = Sampling::from(&a.sampling).sampler()?;
        if let Some(note) = Sampling::from(&a.sampling).greedy_note() {
            eprintln!("note: {note}");
        }
        let bytes = read_blob(&a.blob)?;
        let model = load(&a.blob, &bytes)?;
        let tok = model.tokenizer();
        let mut unknown = None;
        let prompt = match (a.prompt.as_deref(), a.tokens.as_deref()) {
            (Some(text), _) => {
                let tok = tok.with_context(|| {
                    format!(
                        "{} has no tokenizer, so --prompt cannot be encoded; repack it with `itera-pack convert ... --tokenizer tokenizer.json`, or give token ids with --tokens 1,2,3",
                        a.blob.display()
                    )
                })?;
                let ids = encode(tok, text);
                if ids.is_empty() {
                    bail!("--prompt has no tokens (it is empty or only whitespace): give some text, or ids with --tokens 1,2,3");
                }
                let u = Unknown::count(tok.unk_id(), &ids);
                if u.unknown > 0 {
                    let pieces: Vec<String> = unknown_pieces(tok, text).iter().map(|p| shown(p)).collect();
                    eprintln!(
                        "note: {} of the prompt are not in the blob's tokenizer, so the model sees each as its one unknown token: {}",
                        u.describe(),
                        pieces.join(" ")
                    );
                }
                unknown = Some(u);
                ids
            }
            (None, Some(list)) => parse_tokens(list).context("--tokens")?,
            (None, None) => bail!("give a prompt: --prompt \"text\" or --tokens 1,2,3"),
        };
        // Text out when there is a tokenizer (and ids were not asked for), ids otherwise.
        let text_tok = tok.filter(|_| !a.ids);
        let stream = !a.json;
        let mut out = std::io::stdout().lock();
        if a.echo && stream {
            match text_tok {
                Some(t) => write!(out, "{}", for_terminal(&decode(t, &prompt)))?,
                None => write!(out, "{}", join_ids(&prompt))?,
            }
        }
        let mut text = TextStream::new();
        if a.echo {
            text = TextStream::continuing();
        }
        let mut first = !a.echo;
        let mut write_err = None;
        let g = generate(&model, &prompt, a.n, &mut sampler, a.context, |id| {
            if !stream || write_err.is_some() {
                return;
            }
            let piece = match text_tok {
                Some(t) => for_terminal(&text.piece(t, id)),
                None if first => id.to_string(),
                None => format!(" {id}"),
            };
            first = false;
            if let Err(e) = out.write_all(piece.as_bytes()).and_then(|()| out.flush()) {
                write_err = Some(e);
            }
        })?;
        if let Some(e) = write_err {
            return Err(e).context("cannot write to stdout");
        }
        let text = tok.map(|t| decode(t, &g.generated));
        let report = RunReport { generation: g, text, unknown, asked: a.n, max_seq: model.config().max_seq };
        if a.json {
            writeln!(out, "{}", report.to_json())?;
        } else {
            writeln!(out)?;
        }
        drop(out);
        // The text itself was streamed; the summary goes to stderr, JSON or not.
        eprint!("{}", report.render());
        Ok(Outcome::Ok)
    }
}

/// What `run` reports once the text is out: the JSON object (with --json), and the summary
/// on stderr. Both are made from it.
struct RunReport {
    generation: Generation,
    /// The generated text, when the blob has a tokenizer.
    text: Option<String>,
    /// Unknown words in a --prompt (none for --tokens).
    unknown: Option<Unknown>,
    /// --max-tokens.
    asked: usize,
    max_seq: u32,
}

impl RunReport {
    fn to_json(&self) -> serde_json::Value {
        let g = &self.generation;
        json!({
            "prompt_tokens": g.prompt.len(),
            "prompt_ids": g.prompt,
            "prompt_unknown": self.unknown.map(|u| u.unknown),
            "generated": g.generated,
            "text": self.text,
            "tok_per_s": g.tok_per_s(),
            "prefill_tok_per_s": g.prefill_tok_per_s(),
            "stopped_at_max_seq": g.stopped_at_max_seq,
            "window_reruns": g.window_reruns,
        })
    }

    fn render(&self) -> String {
        let g = &self.generation;
        let mut s = String::new();
        if g.stopped_at_max_seq {
            s += &format!(
                "stopped: the session holds the model's {} positions (max_seq); {} of {} tokens generated\n",
                self.max_seq,
                g.generated.len(),
                self.asked
            );
        }
        if g.window_reruns > 0 {
            s += &format!(
                "--context slide: {} tokens past the window, each from a re-run of the last {} tokens\n",
                g.window_reruns, self.max_seq
            );
        }
        s += &format!(
            "prompt: {} tokens ({:.0} tok/s prefill), generated: {} tokens ({:.1} tok/s)\n",
            g.prompt.len(),
            g.prefill_tok_per_s(),
            g.generated.len(),
            g.tok_per_s()
        );
        s
    }
}

fn join_ids(ids: &[u32]) -> String {
    ids.iter().map(u32::to_string).collect::<Vec<_>>().join(" ")
}
