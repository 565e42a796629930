//! Bounds on every size-like number `itera-sim` takes from a user: token counts, repeats,
//! text sizes. Each count sizes an allocation or a loop, so an unchecked one either panics
//! (`Vec::with_capacity(u64::MAX)`: capacity overflow), aborts (a 4 TB allocation) or runs
//! until killed. The command line checks each at parse time with [`Count::parser`], so
//! nothing is printed or read before a bad number is refused; the library checks the same
//! [`Count`] with [`Count::check`], so a caller of the library gets the same refusal.

use anyhow::bail;
use itera_edge::sample::MAX_CANDIDATES;

/// Most positions any blob can have: `Blob::parse` refuses a dimension of
/// [`itera_edge::format::MAX_DIM`] or more, so no session holds more tokens than this.
pub const MAX_POSITIONS: usize = itera_edge::format::MAX_DIM as usize - 1;

/// A size-like argument: its name on the command line, the range it accepts and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Count {
    /// The flag, as the user types it (`-n`, `--repeat`).
    pub flag: &'static str,
    /// Smallest accepted value.
    pub min: usize,
    /// Largest accepted value.
    pub max: usize,
    /// Why the range is what it is, in a few words a user can act on.
    pub why: &'static str,
}

/// `run -n` / `demo -n`: generation stops cleanly when the session is full, so more than
/// a session's positions can never be generated.
pub const GENERATE_TOKENS: Count = Count {
    flag: "-n",
    min: 1,
    max: MAX_POSITIONS,
    why: "no blob holds 2^24 positions, and generation stops when the model's max_seq positions are used",
};

/// `greedy -n`: a board's greedy run feeds every token back, so the prompt plus N must fit
/// the model's positions (checked against the model in `board::greedy_reference`).
pub const GREEDY_TOKENS: Count = Count {
    flag: "-n",
    min: 0,
    max: MAX_POSITIONS,
    why: "the prompt plus N must fit the model's max_seq positions, below 2^24 in any blob",
};

/// `bench --length`: prefill is clamped to `max_seq`; generation past it restarts the
/// session, so more tokens only lengthen each timed run.
pub const BENCH_TOKENS: Count = Count {
    flag: "--length",
    min: 1,
    max: 8192,
    why: "tokens per timed run; prefill is clamped to max_seq and generation past it restarts, so more only lengthens the run",
};

/// `bench --repeat`: the medians are stable long before this; the automatic choice stops
/// at 101.
pub const BENCH_REPEATS: Count = Count {
    flag: "--repeat",
    min: 1,
    max: 1000,
    why:
        "timed repeats; the medians are stable long before 1000, and without --repeat about one second of repeats runs",
};

/// `eval --truncate`: one prediction needs two tokens; the encoded text is held in memory
/// (4 bytes per token), so at most 2^24 tokens (64 MiB) are evaluated.
pub const EVAL_TOKENS: Count = Count {
    flag: "--truncate",
    min: 2,
    max: 1 << 24,
    why: "one prediction needs 2 tokens, and eval holds at most 2^24 tokens, 64 MiB of ids, in memory",
};

/// `--top-k` of `run` and `demo` (sampling; the experts an MoE layer mixes are
/// `itera-pack convert --top-k-experts`): the core's sampler ranks at most [`MAX_CANDIDATES`] candidates.
pub const TOP_K: Count = Count {
    flag: "--top-k",
    min: 0,
    max: MAX_CANDIDATES,
    why: "0 keeps every token; the sampler ranks at most 64 candidates",
};

/// Most logits one table holds: `logits` and `check` keep every position's logits (f32,
/// and f64 in the reference), so 2^24 of them are 64 MiB (128 MiB in f64). An Itera-Lite
/// model needs 128 positions × 8000 = 1,024,000; a blob with a tiny width but a huge
/// vocabulary and max_seq would otherwise ask for terabytes.
pub const MAX_LOGITS: usize = 1 << 24;

/// Refuses a table of `positions` × `vocab` logits over [`MAX_LOGITS`], saying how many
/// positions fit.
pub fn check_logits_table(positions: usize, vocab: usize) -> anyhow::Result<()> {
    let n = positions.saturating_mul(vocab);
    if n > MAX_LOGITS {
        bail!(
            "{positions} positions × {vocab} logits is {n} logits, more than the {MAX_LOGITS} (64 MiB) itera-sim holds in one table: give at most {} tokens",
            MAX_LOGITS / vocab.max(1)
        );
    }
    Ok(())
}

/// Most memory the f64 reference forward pass (`check --reference`) may take for the
/// blob's weights, dequantized: the published Itera-Lite models need under 64 MiB.
pub const MAX_REFERENCE_BYTES: u64 = 1 << 30;

/// Largest text file `eval` reads: the text is held whole while it is encoded, and
/// [`EVAL_TOKENS`]' 2^24 tokens take about 80 MiB of English words.
pub const MAX_EVAL_TEXT_BYTES: u64 = 128 << 20;

/// Largest golden description (JSON) read: its tokens fit one session, and 16 MiB holds
/// over a million ids.
pub const MAX_GOLDEN_JSON_BYTES: u64 = 16 << 20;

/// Largest firmware ELF `fit --elf` reads: the boards have at most 4 MiB of flash; the
/// rest of a firmware ELF is symbols and debug information.
pub const MAX_ELF_BYTES: u64 = 64 << 20;

impl Count {
    /// "a whole number from MIN to MAX (WHY)".
    fn expected(&self) -> String {
        format!("expected a whole number from {} to {} ({})", self.min, self.max, self.why)
    }

    /// `n` if it is in range; otherwise an error naming the flag, the range and why.
    pub fn check(&self, n: usize) -> anyhow::Result<usize> {
        if !(self.min..=self.max).contains(&n) {
            bail!("{} {n} is out of range: {}", self.flag, self.expected());
        }
        Ok(n)
    }

    /// A clap value parser for this count. Its message (after clap's "invalid value 'X'
    /// for 'FLAG'") says the range and why, for garbage (`abc`, `-5`, `1e9`) as well as
    /// for numbers out of range, including those too large for a `usize`.
    pub fn parser(self) -> impl Fn(&str) -> Result<usize, String> + Clone + Send + Sync + 'static {
        move |s: &str| match s.trim().parse::<usize>() {
            Ok(n) if (self.min..=self.max).contains(&n) => Ok(n),
            _ => Err(self.expected()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_accept_their_range_and_refuse_the_rest_saying_why() {
        let p = BENCH_REPEATS.parser();
        assert_eq!(p("1"), Ok(1));
        assert_eq!(p(" 1000 "), Ok(1000));
        for bad in ["0", "1001", "-5", "abc", "", "1e3", "18446744073709551615", "99999999999999999999999"] {
            let e = p(bad).unwrap_err();
            assert!(e.contains("from 1 to 1000") && e.contains("medians"), "{bad}: {e}");
        }
        assert_eq!(GENERATE_TOKENS.check(MAX_POSITIONS).unwrap(), MAX_POSITIONS);
        let e = GENERATE_TOKENS.check(MAX_POSITIONS + 1).unwrap_err().to_string();
        assert!(e.starts_with("-n 16777216 is out of range: expected a whole number from 1 to 16777215"), "{e}");
        assert!(GREEDY_TOKENS.check(0).is_ok() && EVAL_TOKENS.check(1).is_err());
        assert_eq!(TOP_K.max, MAX_CANDIDATES);
        assert!(check_logits_table(128, 8000).is_ok() && check_logits_table(1 << 12, 1 << 12).is_ok());
        let e = check_logits_table(65_536, 1 << 20).unwrap_err().to_string();
        assert!(e.contains("65536 positions × 1048576 logits") && e.contains("give at most 16 tokens"), "{e}");
        assert!(TOP_K.parser()("64").is_ok() && TOP_K.parser()("65").unwrap_err().contains("64 candidates"));
    }
}
