//! Greedy generation with a running checksum of every logit it saw: the loop a board runs
//! and the host replays, so the two can be compared token for token and bit for bit.

use crate::checksum::FNV_OFFSET;
use crate::error::Error;
use crate::session::Session;

/// A greedy generation in progress over a session.
pub struct Greedy<'r, 's, 'a> {
    session: &'r mut Session<'s, 'a>,
    checksum: u64,
    next: u32,
}

impl<'r, 's, 'a> Greedy<'r, 's, 'a> {
    /// Prefills `prompt` (at least one token) and hashes the logits after it.
    pub fn start(session: &'r mut Session<'s, 'a>, prompt: &[u32]) -> Result<Self, Error> {
        let logits = session.prefill_logits(prompt)?;
        let (checksum, next) = (logits.checksum(FNV_OFFSET), logits.argmax());
        Ok(Greedy { session, checksum, next })
    }

    /// Emits the most likely next token, feeds it back, and hashes the new logits.
    pub fn step(&mut self) -> Result<u32, Error> {
        let token = self.next;
        let logits = self.session.step_logits(token)?;
        self.checksum = logits.checksum(self.checksum);
        self.next = logits.argmax();
        Ok(token)
    }

    /// FNV-1a over the bits of every logit vector so far (after the prompt, then after each
    /// emitted token).
    pub fn checksum(&self) -> u64 {
        self.checksum
    }
}
