//! The hostile-input suite: checkpoints, blobs, tokenizers, key files and command lines made
//! by code (nothing binary is committed), each run through `itera-pack` or `itera-sim` as a
//! child process. Every case asserts the exit code (1 for a refusal; never 101, 134 or 139),
//! the class of its one-line message, that no output file is left behind, and a peak RSS
//! within 256 MB + 2x the input's size (`support`).
//!
//! One module per part of the toolchain a case attacks; each case names its class (the
//! numbered list of docs/SECURITY.md, "Hostile input").

mod support;

mod blobs;
mod checkpoints;
mod command_line;
mod packer;

use itera_test_support::torch::{pt_bytes, tiny_tensors};
use support::{Case, Class, Scratch, Tool};

/// Not a case: the process `support` starts each command from, so that the command's peak
/// RSS is its own (see `support::spawn_measured`). Run directly, it checks the measurement.
#[test]
#[ignore = "started by the harness for every case; run directly it checks the RSS measurement"]
fn measuring_trampoline() {
    support::trampoline();
}

/// The `.pt` writer the cases use (`itera_test_support::torch`) makes checkpoints the packer
/// reads: without this, a refusal in the cases below could be the writer's bug, not the
/// input's.
#[test]
fn the_harness_checkpoint_packs_cleanly() {
    let s = Scratch::new("harness");
    let pt = s.write("tiny.pt", &pt_bytes(&tiny_tensors()));
    let out = s.path("tiny.itb");
    let o = Case::new(Class::Messages, "harness checkpoint packs", Tool::Pack)
        .args(["convert".as_ref(), pt.as_os_str(), "-o".as_ref(), out.as_os_str()])
        .input(&pt)
        .run();
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(out.is_file());
    assert!(o.peak_rss > 0, "wait4 reported no RSS");
}
