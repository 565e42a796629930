//! `Session`: one sequence being generated, on a caller-provided arena.

use crate::error::Error;
use crate::model::{Model, State, PREFILL_BLOCK};

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
    state: State<'s>,
    pos: u32,
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
        let block = if arena.len() >= model.prefill_arena_bytes() { PREFILL_BLOCK } else { 1 };
        let used = model.arena_bytes_for(block);
        // Both `None`s are impossible (`used` fits, and the floats are part of it); they map
        // to the same refusal rather than a panic.
        let too_small = Error::ArenaTooSmall { needed, available: arena.len() };
        let (floats, xq) = arena
            .get_mut(..used)
            .and_then(|a| a.split_at_mut_checked(model.float_count(block) * 4))
            .ok_or(too_small)?;
        let floats: &mut [f32] = bytemuck::try_cast_slice_mut(floats).map_err(|_| Error::ArenaNotAligned)?;
        let xq: &mut [i8] = bytemuck::cast_slice_mut(xq);
        let mut state = State::carve(model.config(), block, floats, xq);
        state.reset();
        Ok(Session { model, state, pos: 0 })
    }

    /// Feeds one token and returns the logits for the next one (`vocab` values).
    pub fn step(&mut self, token: u32) -> Result<&[f32], Error> {
        let c = self.model.config();
        if token >= c.vocab {
            return Err(Error::TokenOutOfRange { token, vocab: c.vocab });
        }
        if self.pos >= c.max_seq {
            return Err(Error::ContextFull { max_seq: c.max_seq, needed: self.pos.saturating_add(1) });
        }
        self.model.forward(&mut self.state, &[token], self.pos as usize, true);
        self.pos += 1;
        Ok(self.state.logits)
    }

    /// Feeds `tokens` in order and returns the logits after the last one. Every token is
    /// checked before any is run, so a bad id leaves the session unchanged. Tokens run in
    /// blocks (see [`Session::new`]) and only the last token's logits are computed (the
    /// output projection is the largest matrix of a small model); the state and logits are
    /// bit for bit what feeding them one by one with [`Session::step`] leaves.
    pub fn prefill(&mut self, tokens: &[u32]) -> Result<&[f32], Error> {
        let c = self.model.config();
        if let Some(&token) = tokens.iter().find(|&&t| t >= c.vocab) {
            return Err(Error::TokenOutOfRange { token, vocab: c.vocab });
        }
        if tokens.len() > (c.max_seq - self.pos) as usize {
            let needed = u32::try_from(tokens.len()).unwrap_or(u32::MAX).saturating_add(self.pos);
            return Err(Error::ContextFull { max_seq: c.max_seq, needed });
        }
        let blocks = tokens.chunks(self.state.block);
        let count = blocks.len();
        for (i, block) in blocks.enumerate() {
            self.model.forward(&mut self.state, block, self.pos as usize, i + 1 == count);
            self.pos += block.len() as u32;
        }
        Ok(self.state.logits)
    }

    /// Forgets the sequence: position 0, zero state.
    pub fn reset(&mut self) {
        self.state.reset();
        self.pos = 0;
    }

    /// Tokens fed so far.
    pub fn position(&self) -> u32 {
        self.pos
    }

    /// Logits after the last token (zeros before the first).
    pub fn logits(&self) -> &[f32] {
        self.state.logits
    }

    /// The model this session runs.
    pub fn model(&self) -> &'s Model<'a> {
        self.model
    }
}
