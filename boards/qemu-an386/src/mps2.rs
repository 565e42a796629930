//! The two QEMU MPS2 firmwares, whole: `qemu-an386` (Cortex-M4F, `thumbv7em-none-eabihf`) and
//! `qemu-v6m` (`thumbv6m-none-eabi` code on the Cortex-M3 `mps2-an385`) are this module and
//! their build's blob. The model blob is linked into flash and read in place, the arena is a
//! static sized by the generated `ARENA_BYTES`; the shared demo (`itera-board-common`) prints
//! over semihosting, and the firmware exits QEMU through it (0 = ran to the end). Instructions
//! are counted with SysTick.
//!
//! SysTick runs on the processor clock (25 MHz in QEMU's MPS2 models). Under `-icount shift=0`
//! each instruction advances virtual time by exactly 1 ns, so one tick is 40 instructions and
//! the figures repeat exactly run to run; the `calibration:` line checks the conversion.

use core::fmt;
use core::sync::atomic::{AtomicU32, Ordering};

use cortex_m::peripheral::{syst::SystClkSource, SYST};
use cortex_m_rt::exception;
use cortex_m_semihosting::{debug, hio};
use itera_board_common::{Clock, StackProbe};

itera_board_common::include_model!();

/// SysTick clock in QEMU's MPS2 models, and virtual nanoseconds (= instructions) per tick.
const SYSCLK_HZ: u64 = 25_000_000;
const INSTRUCTIONS_PER_TICK: u64 = 1_000_000_000 / SYSCLK_HZ;
const RELOAD: u32 = 0x00FF_FFFF;

/// SysTick wraps. Only the handler writes it, so a load and a store do (ARMv6-M has no atomic
/// read-modify-write).
static WRAPS: AtomicU32 = AtomicU32::new(0);

#[exception]
fn SysTick() {
    WRAPS.store(WRAPS.load(Ordering::Relaxed).wrapping_add(1), Ordering::Relaxed);
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

/// Instructions (= virtual nanoseconds under `-icount shift=0`) from SysTick.
struct IcountClock;

impl Clock for IcountClock {
    fn now_us(&mut self) -> u64 {
        ticks() * INSTRUCTIONS_PER_TICK / 1000
    }
    fn instructions(&mut self) -> Option<u64> {
        Some(ticks() * INSTRUCTIONS_PER_TICK)
    }
}

/// Runs exactly `2 * n` instructions (a `subs`/`bne` loop, valid Thumb-1 and Thumb-2) and
/// returns the instructions the SysTick figure accounts for them.
fn calibrate(n: u32) -> u64 {
    let t = ticks();
    // SAFETY: a register-only countdown loop; it touches no memory and clobbers only the
    // register it is given and the flags.
    unsafe {
        core::arch::asm!("1:", "subs {0}, {0}, #1", "bne 1b", inout(reg) n => _, options(nomem, nostack));
    }
    (ticks() - t) * INSTRUCTIONS_PER_TICK
}

/// The semihosting console: each write is one SYS_WRITE to QEMU's stdout.
struct Semihosting(hio::HostStream);

impl fmt::Write for Semihosting {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0.write_all(s.as_bytes()).map_err(|_| fmt::Error)
    }
}

/// Stack below `main`'s frame that is painted to find the high-water mark (QEMU's MPS2 RAM
/// is 4 MiB with the stack at its top, far above `.bss`).
const STACK_PROBE: usize = 128 * 1024;

/// Starts SysTick, paints the stack, runs the shared demo and exits QEMU with its outcome.
#[cortex_m_rt::entry]
fn main() -> ! {
    let mut core = cortex_m::Peripherals::take().unwrap_or_else(|| exit(false));
    core.SYST.set_clock_source(SystClkSource::Core);
    core.SYST.set_reload(RELOAD);
    core.SYST.clear_current();
    core.SYST.enable_interrupt();
    core.SYST.enable_counter();

    extern "C" {
        static _stack_start: u32;
    }
    // Only the linker symbol's address is taken; it is never read.
    let top = core::ptr::addr_of!(_stack_start) as usize;
    let sp = cortex_m::register::msp::read() as usize;
    // SAFETY: the STACK_PROBE bytes below the current stack pointer are stack RAM that no frame
    // uses yet (the stack grows down from the top of the 4 MiB RAM; .bss is at its bottom).
    let stack = unsafe { StackProbe::paint(top, sp & !3, STACK_PROBE) };

    let console = Semihosting(hio::hstdout().unwrap_or_else(|_| exit(false)));
    let calibrated = calibrate(1_000_000);
    exit(itera_board_common::run_counted(console, IcountClock, &demo(0, Some(&stack)), arena(), calibrated))
}

/// Ends the QEMU run: exit status 0 when `ok`, 1 otherwise.
fn exit(ok: bool) -> ! {
    debug::exit(if ok { debug::EXIT_SUCCESS } else { debug::EXIT_FAILURE });
    loop {}
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    if let Ok(out) = hio::hstdout() {
        let _ = fmt::Write::write_fmt(&mut Semihosting(out), format_args!("panic: {info}\n"));
    }
    exit(false)
}
