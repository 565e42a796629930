//! Where the project's test fixtures (real Itera-Lite checkpoints, tokenizers, golden logits)
//! live: `$ITERA_FIXTURES`, else `../shared/fixtures/itera-lite` beside the repository.

use std::path::PathBuf;

/// The fixtures folder, or `None` (with a note on stderr) when it is missing on a user's
/// machine. Under `CI=true` a missing folder is a failure: this panics, failing the test.
pub fn dir() -> Option<PathBuf> {
    let dir = match std::env::var_os("ITERA_FIXTURES") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures/itera-lite"),
    };
    if dir.join("README.md").is_file() {
        return Some(dir);
    }
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    assert!(!ci, "fixtures missing at {} under CI=true (set ITERA_FIXTURES)", dir.display());
    eprintln!("note: fixtures missing at {}; skipping (set ITERA_FIXTURES to run this test)", dir.display());
    None
}
