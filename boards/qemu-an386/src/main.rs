//! itera-edge on QEMU's mps2-an386 (Cortex-M4F): the model blob is linked into flash and read
//! in place, the arena is a static sized by the generated `ARENA_BYTES`. The firmware prefills
//! a fixed prompt, generates greedily, and prints over semihosting the tokens, a checksum of
//! every logit, the arena bytes and the cost per token, then exits QEMU (0 = ran to the end).
//!
//! Cost is read from SysTick on the processor clock (25 MHz in QEMU's MPS2 model). Under
//! `-icount shift=0` each instruction advances virtual time by exactly 1 ns, so one tick is
//! 40 instructions and the figures repeat exactly run to run.

#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU32, Ordering};

use cortex_m::peripheral::{syst::SystClkSource, SYST};
use cortex_m_rt::{entry, exception};
use cortex_m_semihosting::{debug, hprint, hprintln};
use itera_edge::{greedy::Greedy, Arena, Blob, Model, Session};

include!(concat!(env!("OUT_DIR"), "/model_consts.rs"));

/// Aligns the blob so its f32 weights are read in place.
#[repr(C, align(64))]
struct Aligned<B: ?Sized>(B);

static BLOB: &Aligned<[u8]> = &Aligned(*include_bytes!(concat!(env!("OUT_DIR"), "/model.itb")));

/// SysTick clock in QEMU's MPS2 model, and virtual nanoseconds (= instructions) per tick.
const SYSCLK_HZ: u64 = 25_000_000;
const INSTRUCTIONS_PER_TICK: u64 = 1_000_000_000 / SYSCLK_HZ;
const RELOAD: u32 = 0x00FF_FFFF;

static WRAPS: AtomicU32 = AtomicU32::new(0);

#[exception]
fn SysTick() {
    WRAPS.fetch_add(1, Ordering::Relaxed);
}

/// Ticks since the counter started (24-bit SysTick extended by its wrap count).
fn ticks() -> u64 {
    loop {
        let before = WRAPS.load(Ordering::Relaxed);
        let current = SYST::get_current();
        if WRAPS.load(Ordering::Relaxed) == before {
            return before as u64 * (RELOAD as u64 + 1) + (RELOAD - current) as u64;
        }
    }
}

/// Runs exactly `2 * n` instructions (a `subs`/`bne` loop) and returns the instructions the
/// SysTick figure accounts for them: checks the ticks-to-instructions conversion in the output.
fn calibrate(n: u32) -> u64 {
    let t = ticks();
    // SAFETY: a register-only countdown loop; it touches no memory and clobbers only the
    // register it is given and the flags.
    unsafe {
        core::arch::asm!("1:", "subs {0}, {0}, #1", "bne 1b", inout(reg) n => _, options(nomem, nostack));
    }
    (ticks() - t) * INSTRUCTIONS_PER_TICK
}

/// Stack below the entry point's frame that [`paint_stack`] marks and [`stack_used`] scans.
const STACK_PROBE: usize = 64 * 1024;
const PAINT: u32 = 0x5A5A_A5A5;

/// Fills the `STACK_PROBE` bytes below the current stack pointer with a pattern; returns the
/// stack pointer it started from.
fn paint_stack() -> usize {
    let sp = cortex_m::register::msp::read() as usize;
    let bottom = sp - STACK_PROBE;
    for addr in (bottom..sp - 256).step_by(4) {
        // SAFETY: QEMU's mps2-an386 has 4 MiB of RAM and the stack starts at its top, far from
        // .bss; these words lie below the live stack (256 bytes of margin for this frame), so
        // nothing uses them yet. Volatile so the writes are not elided.
        unsafe { core::ptr::write_volatile(addr as *mut u32, PAINT) };
    }
    sp
}

/// Bytes between the top of the stack (`_stack_start`, from cortex-m-rt's linker script) and `sp`:
/// the frames already live when painting starts (`main`'s own frame holds the `Model`).
fn stack_above(sp: usize) -> usize {
    extern "C" {
        static _stack_start: u32;
    }
    // Only the linker symbol's address is taken (safe since Rust 2024's rules); it is never read.
    let top = core::ptr::addr_of!(_stack_start) as usize;
    top.saturating_sub(sp)
}

/// Bytes of stack used below `sp` since [`paint_stack`]: the deepest overwritten word.
fn stack_used(sp: usize) -> usize {
    let bottom = sp - STACK_PROBE;
    let untouched = (bottom..sp - 256)
        .step_by(4)
        // SAFETY: the same painted, in-RAM, aligned words as in `paint_stack`.
        .take_while(|&addr| unsafe { core::ptr::read_volatile(addr as *const u32) } == PAINT)
        .count();
    STACK_PROBE - untouched * 4
}

fn fail(what: &str, e: itera_edge::Error) -> ! {
    hprintln!("error: {}: {}", what, e);
    debug::exit(debug::EXIT_FAILURE);
    loop {}
}

#[entry]
fn main() -> ! {
    let mut core = cortex_m::Peripherals::take().unwrap_or_else(|| loop {});
    core.SYST.set_clock_source(SystClkSource::Core);
    core.SYST.set_reload(RELOAD);
    core.SYST.clear_current();
    core.SYST.enable_interrupt();
    core.SYST.enable_counter();

    let sp = paint_stack();
    let arena = cortex_m::singleton!(: Arena<ARENA_BYTES> = Arena::new()).unwrap_or_else(|| loop {});
    let t0 = ticks();
    let blob = Blob::parse(&BLOB.0).unwrap_or_else(|e| fail("blob", e));
    let model = Model::new(&blob).unwrap_or_else(|e| fail("model", e));
    let parse_ticks = ticks() - t0;
    let mut session = Session::new(&model, arena.as_mut_bytes()).unwrap_or_else(|e| fail("session", e));

    hprintln!("itera-edge on qemu-an386 (Cortex-M4F)");
    hprintln!("calibration: 2000000 instructions measure as {}", calibrate(1_000_000));
    hprintln!(
        "model: blob_bytes={} arena_bytes={} macs_per_token={} kernel={}",
        BLOB_BYTES,
        model.arena_bytes(),
        MACS_PER_TOKEN,
        model.kernel_name()
    );
    hprint!("prompt:");
    for (i, t) in PROMPT.iter().enumerate() {
        hprint!("{}{}", if i == 0 { " " } else { "," }, t);
    }
    hprintln!();

    let t1 = ticks();
    let mut run = Greedy::start(&mut session, PROMPT).unwrap_or_else(|e| fail("prefill", e));
    let prefill_ticks = ticks() - t1;
    hprint!("tokens:");
    let t2 = ticks();
    let mut step_ticks = 0;
    for i in 0..GENERATE {
        let s = ticks();
        let token = run.step().unwrap_or_else(|e| fail("step", e));
        step_ticks += ticks() - s;
        hprint!("{}{}", if i == 0 { " " } else { "," }, token);
    }
    let _wall = ticks() - t2;
    hprintln!();
    hprintln!("logits_fnv1a: {:#018x}", run.checksum());

    let per_token = step_ticks * INSTRUCTIONS_PER_TICK / GENERATE.max(1) as u64;
    hprintln!("stack_bytes: {}", stack_above(sp) + stack_used(sp));
    hprintln!("parse_instructions: {}", parse_ticks * INSTRUCTIONS_PER_TICK);
    hprintln!("prefill_instructions_per_token: {}", prefill_ticks * INSTRUCTIONS_PER_TICK / PROMPT.len().max(1) as u64);
    hprintln!("instructions_per_token: {}", per_token);
    let milli = per_token * 1000 / MACS_PER_TOKEN.max(1) as u64;
    hprintln!("instructions_per_mac: {}.{:03}", milli / 1000, milli % 1000);
    hprintln!("done");
    debug::exit(debug::EXIT_SUCCESS);
    loop {}
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    hprintln!("panic: {}", info);
    debug::exit(debug::EXIT_FAILURE);
    loop {}
}
