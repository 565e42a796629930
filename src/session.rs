//! `Session`: one sequence being generated, on a caller-provided arena.

use crate::error::Error;
use crate::fixed_model::FixedBuffers;
use crate::model::{Body, FloatBuffers, Model, PREFILL_BLOCK};

/// A 16-byte-aligned byte buffer to hand to [`Session::new`], e.g. as a `static`.
///
/// Size it with the constant `itera-pack` prints for the blob (`Model::arena_bytes()`).
#[repr(C, align(16))]
pub struct Arena<const N: usize>(pub [u8; N]);

impl<const N: usize> Arena<N> {
    /// A zeroed arena.
    pub const fn new() -> Self {
        Arena([0; N])
    }

    /// The buffer.
    pub fn as_mut_bytes(&mut self) -> &mut [u8] {
        &mut self.0
    }
}

impl<const N: usize> Default for Arena<N> {
    fn default() -> Self {
        Self::new()
    }
}

/// A sequence in progress: the recurrent state of every layer plus scratch, all in the arena.
///
/// A token costs the same at every position: the conv keeps its last K-1 inputs and the
/// scan its N-value state, nothing is recomputed. The learned position table bounds a
/// session to `max_seq` tokens; past that, [`Session::step`] returns
/// [`Error::ContextFull`] and the caller decides (typically [`Session::reset`]).
pub struct Session<'s, 'a> {
    model: &'s Model<'a>,
    buffers: Buffers<'s>,
    pos: u32,
}

/// The working memory of the model's forward pass.
enum Buffers<'s> {
    Float(FloatBuffers<'s>),
    Fixed(FixedBuffers<'s>),
}

/// The logits after a token: f32 for a float model, Q16 integers (`value = raw / 2^16`) for
/// a fixed-point one, which never leave integer arithmetic on the way to the next token.
#[derive(Clone, Copy, Debug)]
pub enum Logits<'s> {
    /// A float model's logits.
    F32(&'s [f32]),
    /// A fixed-point model's logits, Q16.
    Q16(&'s [i32]),
}

impl Logits<'_> {
    /// Number of logits (`vocab`).
    pub fn len(&self) -> usize {
        match self {
            Logits::F32(v) => v.len(),
            Logits::Q16(v) => v.len(),
        }
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The id of the largest logit; ties (and NaN) as [`crate::sample::argmax`] resolves them.
    pub fn argmax(&self) -> u32 {
        match self {
            Logits::F32(v) => crate::sample::argmax(v),
            // The first position of the maximum: integer compares only.
            Logits::Q16(v) => {
                v.iter().enumerate().fold((0, i32::MIN), |b, (i, &x)| if x > b.1 { (i, x) } else { b }).0 as u32
            }
        }
    }

    /// FNV-1a of the logits' bits (f32 bits, or the `i32` words), continuing from `state`:
    /// what the firmware and `itera-sim greedy` print as `logits_fnv1a`.
    pub fn checksum(&self, state: u64) -> u64 {
        match self {
            Logits::F32(v) => crate::checksum::fnv1a_f32(state, v),
            Logits::Q16(v) => crate::checksum::fnv1a_words(state, v.iter().map(|&x| x as u32)),
        }
    }

    /// Copies the logits into `out` as f32 (Q16 converted: a float operation per value, for
    /// host tools such as evaluation; boards use [`Logits::argmax`] and [`Logits::checksum`]).
    pub fn copy_to_f32(&self, out: &mut [f32]) {
        match self {
            Logits::F32(v) => out.iter_mut().zip(*v).for_each(|(o, &x)| *o = x),
            Logits::Q16(v) => out.iter_mut().zip(*v).for_each(|(o, &x)| *o = x as f32 * (1.0 / 65536.0)),
        }
    }
}

impl<'s, 'a> Session<'s, 'a> {
    /// Starts an empty session working in `arena`, which must be 4-aligned and at least
    /// `model.arena_bytes()` long. With `model.prefill_arena_bytes()` or more, prompts run
    /// in blocks of [`crate::model::PREFILL_BLOCK`] tokens (faster, same results); extra
    /// bytes beyond what is used are left untouched.
    pub fn new(model: &'s Model<'a>, arena: &'s mut [u8]) -> Result<Self, Error> {
        let needed = model.arena_bytes();
        if arena.len() < needed {
            return Err(Error::ArenaTooSmall { needed, available: arena.len() });
        }
        let too_small = Error::ArenaTooSmall { needed, available: arena.len() };
        let buffers = match model.body() {
            Body::Float(m) => {
                let block = if arena.len() >= model.prefill_arena_bytes() { PREFILL_BLOCK } else { 1 };
                let used = m.arena_bytes_for(block);
                // Both `None`s are impossible (`used` fits, and the floats are part of it);
                // they map to the same refusal rather than a panic.
                let (floats, scratch) = arena
                    .get_mut(..used)
                    .and_then(|a| a.split_at_mut_checked(m.float_count(block) * 4))
                    .ok_or(too_small)?;
                let floats: &mut [f32] = bytemuck::try_cast_slice_mut(floats).map_err(|_| Error::ArenaNotAligned)?;
                let mut buffers = FloatBuffers::carve(model.config(), block, floats, bytemuck::cast_slice_mut(scratch))
                    .ok_or(too_small)?;
                buffers.reset();
                Buffers::Float(buffers)
            }
            Body::Fixed(m) => {
                let (words, scratch) = arena
                    .get_mut(..m.arena_bytes())
                    .and_then(|a| a.split_at_mut_checked(m.word_count() * 4))
                    .ok_or(too_small)?;
                let words: &mut [i32] = bytemuck::try_cast_slice_mut(words).map_err(|_| Error::ArenaNotAligned)?;
                let mut buffers =
                    FixedBuffers::carve(model.config(), words, bytemuck::cast_slice_mut(scratch)).ok_or(too_small)?;
                buffers.reset();
                Buffers::Fixed(buffers)
            }
        };
        Ok(Session { model, buffers, pos: 0 })
    }

    /// Feeds one token and returns the logits for the next one (`vocab` values), as f32.
    /// A fixed-point model's logits are integers: [`Session::step_logits`] returns them
    /// (here: [`Error::FixedPointLogits`]).
    pub fn step(&mut self, token: u32) -> Result<&[f32], Error> {
        match self.step_logits(token)? {
            Logits::F32(v) => Ok(v),
            Logits::Q16(_) => Err(Error::FixedPointLogits),
        }
    }

    /// Feeds one token and returns the logits for the next one, in the model's arithmetic.
    pub fn step_logits(&mut self, token: u32) -> Result<Logits<'_>, Error> {
        let c = self.model.config();
        if token >= c.vocab {
            return Err(Error::TokenOutOfRange { token, vocab: c.vocab });
        }
        if self.pos >= c.max_seq {
            return Err(Error::ContextFull { max_seq: c.max_seq, needed: self.pos.saturating_add(1) });
        }
        let pos = self.pos as usize;
        match (self.model.body(), &mut self.buffers) {
            (Body::Float(m), Buffers::Float(s)) => m.forward(s, &[token], pos, true),
            (Body::Fixed(m), Buffers::Fixed(s)) => m.forward(s, token, pos, true),
            // `new` made the buffers for this model.
            _ => return Err(Error::Malformed("session buffers do not match the model")),
        }
        self.pos += 1;
        Ok(self.logits_view())
    }

    /// Feeds `tokens` in order and returns the logits after the last one, as f32 (a
    /// fixed-point model: [`Session::prefill_logits`]). Every token is checked before any is
    /// run, so a bad id leaves the session unchanged. Tokens run in blocks (see
    /// [`Session::new`]) and only the last token's logits are computed (the output
    /// projection is the largest matrix of a small model); the state and logits are bit for
    /// bit what feeding them one by one with [`Session::step`] leaves.
    pub fn prefill(&mut self, tokens: &[u32]) -> Result<&[f32], Error> {
        match self.prefill_logits(tokens)? {
            Logits::F32(v) => Ok(v),
            Logits::Q16(_) => Err(Error::FixedPointLogits),
        }
    }

    /// [`Session::prefill`] in the model's arithmetic.
    pub fn prefill_logits(&mut self, tokens: &[u32]) -> Result<Logits<'_>, Error> {
        let c = self.model.config();
        if let Some(&token) = tokens.iter().find(|&&t| t >= c.vocab) {
            return Err(Error::TokenOutOfRange { token, vocab: c.vocab });
        }
        if tokens.len() > (c.max_seq - self.pos) as usize {
            let needed = u32::try_from(tokens.len()).unwrap_or(u32::MAX).saturating_add(self.pos);
            return Err(Error::ContextFull { max_seq: c.max_seq, needed });
        }
        match (self.model.body(), &mut self.buffers) {
            (Body::Float(m), Buffers::Float(s)) => {
                let blocks = tokens.chunks(s.block);
                let count = blocks.len();
                for (i, block) in blocks.enumerate() {
                    m.forward(s, block, self.pos as usize, i + 1 == count);
                    self.pos += block.len() as u32;
                }
            }
            (Body::Fixed(m), Buffers::Fixed(s)) => {
                for (i, &token) in tokens.iter().enumerate() {
                    m.forward(s, token, self.pos as usize, i + 1 == tokens.len());
                    self.pos += 1;
                }
            }
            _ => return Err(Error::Malformed("session buffers do not match the model")),
        }
        Ok(self.logits_view())
    }

    /// Forgets the sequence: position 0, zero state.
    pub fn reset(&mut self) {
        match &mut self.buffers {
            Buffers::Float(s) => s.reset(),
            Buffers::Fixed(s) => s.reset(),
        }
        self.pos = 0;
    }

    /// Tokens fed so far.
    pub fn position(&self) -> u32 {
        self.pos
    }

    /// Logits after the last token (zeros before the first), as f32; empty for a
    /// fixed-point model ([`Session::logits_view`]).
    pub fn logits(&self) -> &[f32] {
        match &self.buffers {
            Buffers::Float(s) => s.logits,
            Buffers::Fixed(_) => &[],
        }
    }

    /// Logits after the last token, in the model's arithmetic.
    pub fn logits_view(&self) -> Logits<'_> {
        match &self.buffers {
            Buffers::Float(s) => Logits::F32(s.logits),
            Buffers::Fixed(s) => Logits::Q16(s.logits),
        }
    }

    /// The model this session runs.
    pub fn model(&self) -> &'s Model<'a> {
        self.model
    }
}
