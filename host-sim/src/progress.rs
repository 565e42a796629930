//! Progress lines on stderr for long work, shown only on a terminal so logs and pipes
//! stay clean.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// Prints `label: done/total` on one rewritten stderr line, at most ten times a second,
/// and only after the work has run for half a second (short runs print nothing).
pub struct Progress {
    label: String,
    enabled: bool,
    start: Instant,
    last: Option<Instant>,
}

impl Progress {
    /// A progress line for `label`, enabled when stderr is a terminal.
    pub fn new(label: &str) -> Self {
        Self::with_enabled(label, std::io::stderr().is_terminal())
    }

    /// A progress line, explicitly on or off.
    pub fn with_enabled(label: &str, enabled: bool) -> Self {
        Progress { label: label.into(), enabled, start: Instant::now(), last: None }
    }

    /// Reports `done` of `total`.
    pub fn update(&mut self, done: usize, total: usize) {
        if !self.enabled || self.start.elapsed() < Duration::from_millis(500) {
            return;
        }
        let now = Instant::now();
        if done < total && self.last.is_some_and(|t| now - t < Duration::from_millis(100)) {
            return;
        }
        self.last = Some(now);
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r{}: {done}/{total}", self.label);
        let _ = err.flush();
    }

    /// Ends the line if anything was printed.
    pub fn finish(self) {
        if self.last.is_some() {
            eprintln!();
        }
    }
}
