//! Loading blobs and running the core: the same calls a board makes, on host memory.

use std::path::Path;

use anyhow::bail;
use itera_edge::{Blob, Config, Model, Session};
use itera_pack::untrusted::shown;
use itera_pack::AlignedBytes;

/// Reads a blob file into a 4-aligned buffer (the core reads f32 weights in place), no
/// further than its header declares: [`itera_pack::inspect::read_aligned`], which both
/// tools use. A file longer than its header says is refused; [`Blob::parse`] then says what
/// is wrong with what was read (bad magic, truncated).
///
/// The error names the path and says why it could not be read
/// ([`itera_pack::inspect::read_blob`] in itera-sim's words: "cannot read blob PATH: why").
pub fn read_blob(path: &Path) -> anyhow::Result<AlignedBytes> {
    itera_pack::inspect::read_blob(path, "blob ", "")
}

/// Validates `bytes` as a blob ([`Blob::parse`]: magic, version, CRC, manifest, every tensor)
/// and builds the model's weight views ([`Model::new`]). `bytes` must be 4-aligned, as
/// [`read_blob`] and [`AlignedBytes`] provide.
pub fn open_model(bytes: &[u8]) -> Result<Model<'_>, itera_edge::Error> {
    let blob = Blob::parse(bytes)?;
    Model::new(&blob)
}

/// The `source` provenance entry of a blob (the checkpoint file it was packed from), if the
/// blob parses and records one.
pub fn provenance_source(bytes: &[u8]) -> Option<String> {
    let blob = Blob::parse(bytes).ok()?;
    let source = blob.provenance().find(|(k, _)| *k == "source").map(|(_, v)| v.to_string());
    source
}

/// A zeroed, 4-aligned arena of [`Model::prefill_arena_bytes`] for one session: the host
/// has RAM to spare, so prompts run in blocks (same results as one token at a time).
pub fn new_arena(model: &Model<'_>) -> Vec<u32> {
    vec![0u32; model.prefill_arena_bytes().div_ceil(4)]
}

/// Starts an empty session of `model` working in `arena` (from [`new_arena`]).
pub fn new_session<'s, 'a>(model: &'s Model<'a>, arena: &'s mut [u32]) -> Result<Session<'s, 'a>, itera_edge::Error> {
    Session::new(model, bytemuck::cast_slice_mut(arena))
}

/// Parses a token list such as `5,17,2` (commas and/or whitespace between ids).
///
/// ```
/// assert_eq!(itera_sim::parse_tokens("5, 17 2").unwrap(), vec![5, 17, 2]);
/// assert!(itera_sim::parse_tokens("5,x").is_err());
/// ```
pub fn parse_tokens(list: &str) -> anyhow::Result<Vec<u32>> {
    let ids = list
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<u32>().map_err(|_| {
                anyhow::anyhow!(
                    "'{}' is not a token id: expected non-negative integers separated by commas, e.g. 5,17,2",
                    shown(s)
                )
            })
        })
        .collect::<anyhow::Result<Vec<u32>>>()?;
    if ids.is_empty() {
        bail!("the token list is empty: give at least one id, e.g. 5,17,2");
    }
    Ok(ids)
}

/// Checks that every id is below the vocabulary size and that the sequence fits the
/// model's positions, so a run never stops half-way on bad input.
pub fn check_tokens(tokens: &[u32], config: &Config) -> anyhow::Result<()> {
    if let Some((i, &t)) = tokens.iter().enumerate().find(|(_, &t)| t >= config.vocab) {
        bail!(
            "token id {t} (position {i}) is out of range: the model's vocabulary has {v} ids (0..{v}); give ids below {v}",
            v = config.vocab
        );
    }
    if tokens.len() > config.max_seq as usize {
        bail!(
            "{} tokens do not fit: the model holds at most {m} positions (max_seq); give at most {m} tokens",
            tokens.len(),
            m = config.max_seq
        );
    }
    Ok(())
}

/// [`check_tokens`], and that a table of the logits after each of `tokens` stays within
/// [`limits::MAX_LOGITS`](crate::limits::MAX_LOGITS): for the commands that keep every
/// position's logits.
pub fn check_table_tokens(tokens: &[u32], config: &Config) -> anyhow::Result<()> {
    check_tokens(tokens, config)?;
    crate::limits::check_logits_table(tokens.len(), config.vocab as usize)
}

/// Feeds `tokens` one by one from an empty session and returns the logits after each,
/// row-major `[tokens.len()][vocab]`: row `p` is what the model predicts after
/// `tokens[0..=p]`. `progress(done, total)` is called after each token.
pub fn logits_for_tokens(
    model: &Model<'_>,
    tokens: &[u32],
    mut progress: impl FnMut(usize, usize),
) -> anyhow::Result<Vec<f32>> {
    check_table_tokens(tokens, model.config())?;
    let vocab = model.config().vocab as usize;
    let mut arena = new_arena(model);
    let mut session = new_session(model, &mut arena)?;
    let mut out = Vec::with_capacity(tokens.len() * vocab);
    for (i, &t) in tokens.iter().enumerate() {
        let logits = session.step_logits(t)?;
        let row = out.len();
        out.resize(row + vocab, 0.0);
        logits.copy_to_f32(&mut out[row..]);
        progress(i + 1, tokens.len());
    }
    Ok(out)
}

/// The values `ITERA_KERNELS` takes: the fastest path this CPU has when unset.
pub const KERNEL_CHOICES: [&str; 2] = ["scalar", "avx2"];

/// The kernel path `ITERA_KERNELS` asks for: `None` when unset (or empty), the value when
/// it is one of [`KERNEL_CHOICES`], and an error that says what to give otherwise (a typo
/// would silently measure or check the wrong kernels).
pub fn kernels_asked(value: Option<&std::ffi::OsStr>) -> anyhow::Result<Option<&'static str>> {
    let Some(value) = value.filter(|v| !v.is_empty()) else { return Ok(None) };
    let text = value.to_string_lossy();
    match KERNEL_CHOICES.iter().find(|c| **c == text) {
        Some(choice) => Ok(Some(choice)),
        None => anyhow::bail!(
            "ITERA_KERNELS={} is not a kernel path: unset it for the fastest this CPU has, or give one of {}",
            shown(&text),
            KERNEL_CHOICES.join(", ")
        ),
    }
}

/// Switches the core's kernels to the path `ITERA_KERNELS` asks for ([`kernels_asked`]),
/// refusing a value it does not know; returns the path in use. What `itera-sim` runs first.
pub fn select_kernels_checked() -> anyhow::Result<&'static str> {
    let asked = kernels_asked(std::env::var_os("ITERA_KERNELS").as_deref())?;
    Ok(enable_kernels(asked))
}

/// [`select_kernels_checked`] for callers with no way to report an error (benchmarks): a
/// value `ITERA_KERNELS` does not know selects the fastest path, as unset does.
pub fn select_kernels() -> &'static str {
    enable_kernels(kernels_asked(std::env::var_os("ITERA_KERNELS").as_deref()).ok().flatten())
}

/// Switches the core's kernels to the fastest path this CPU supports (AVX2 on x86-64 when
/// it and F16C are detected) unless `asked` is `scalar` (or `avx2`: no AVX-512 VNNI);
/// returns the path in use.
#[allow(unsafe_code)] // the one call that needs the detection above
fn enable_kernels(asked: Option<&str>) -> &'static str {
    #[cfg(target_arch = "x86_64")]
    if asked != Some("scalar") && std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("f16c") {
        // SAFETY: AVX2 and F16C were just detected on this CPU.
        unsafe { itera_edge::kernels::enable_avx2() };
        if asked != Some("avx2")
            && std::is_x86_feature_detected!("avx512vnni")
            && std::is_x86_feature_detected!("avx512vl")
        {
            // SAFETY: AVX-512 VNNI and VL were just detected, AVX2 above.
            unsafe { itera_edge::kernels::enable_avx512_vnni() };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = asked;
    itera_edge::kernels::simd_path()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_lists_parse_and_reject_garbage() {
        assert_eq!(parse_tokens("1,2,3").unwrap(), vec![1, 2, 3]);
        assert_eq!(parse_tokens(" 4 ,5\n6 ").unwrap(), vec![4, 5, 6]);
        assert!(parse_tokens("").is_err());
        assert!(parse_tokens("-1").unwrap_err().to_string().contains("not a token id"));
        let e = parse_tokens("5,\u{1b}[31m").unwrap_err().to_string();
        assert!(e.contains("'\\u{1b}[31m' is not a token id") && !e.chars().any(char::is_control), "{e}");
    }

    #[test]
    fn logits_have_one_row_per_token_and_bad_ids_are_refused() {
        let bytes = itera_test_support::tiny_blob(3);
        let model = open_model(&bytes).unwrap();
        let vocab = model.config().vocab as usize;
        let mut calls = 0;
        let logits = logits_for_tokens(&model, &[1, 2, 3], |_, _| calls += 1).unwrap();
        assert_eq!((logits.len(), calls), (3 * vocab, 3));
        assert!(logits.iter().all(|v| v.is_finite()));
        let err = logits_for_tokens(&model, &[1, vocab as u32], |_, _| ()).unwrap_err();
        assert!(err.to_string().contains("out of range"), "{err}");
        let long = vec![1; model.config().max_seq as usize + 1];
        assert!(logits_for_tokens(&model, &long, |_, _| ()).is_err());
    }
}
