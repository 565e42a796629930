//! itera-edge on QEMU's mps2-an386 (Cortex-M4F): the model blob is linked into flash and read
//! in place, the arena is a static sized by the generated `ARENA_BYTES`. The shared demo
//! (`itera-board-common`) prefills a fixed prompt, generates greedily, and prints over
//! semihosting the tokens, a checksum of every logit, the arena bytes, the instructions per
//! token and the stack high-water mark, then exits QEMU (0 = ran to the end). See `mps2.rs`
//! for the instruction count (SysTick under `-icount shift=0`).

#![no_std]
#![no_main]

mod mps2;

use itera_board_common::itera_edge::Arena;

itera_board_common::include_model!();

/// The arena: a zeroed static in .bss, borrowed once by `main`.
static mut ARENA: Arena<ARENA_BYTES> = Arena::new();

#[cortex_m_rt::entry]
fn main() -> ! {
    // SAFETY: `main` runs once and is the only code that names ARENA, so this is the one
    // reference to it.
    let arena = unsafe { &mut *core::ptr::addr_of_mut!(ARENA) };
    mps2::run(
        "qemu-an386 (Cortex-M4F, QEMU mps2-an386, -icount: 1 instruction = 1 ns)",
        &BLOB.0,
        BLOB_SOURCE,
        PROMPT,
        GENERATE,
        &mut arena.0,
    )
}
