//! itera-edge built for RV32IMC (`riscv32imc-unknown-none-elf`, the ESP32-C3's instruction
//! set: no FPU, so f32 runs in compiler-builtins' IEEE soft float) on QEMU's `virt` machine.
//!
//! The model blob is linked into the first 8 MiB of DRAM (our "flash") and read in place; the
//! arena is a static sized by the generated `ARENA_BYTES`. The shared demo
//! (`itera-board-common`) prefills a fixed prompt, generates greedily and prints, on the
//! 16550 UART at 0x1000_0000, the tokens, the logits checksum, instructions per token and the
//! stack high-water mark; then the SiFive test device at 0x10_0000 ends QEMU (exit status 0
//! when the run finished, 1 otherwise).
//!
//! Instructions come from `rdinstret`: under `-icount shift=0` QEMU counts every instruction
//! exactly (without icount it reads the host's clock instead, so the flag matters).

#![no_std]
#![no_main]

use core::fmt;

use itera_board_common::{Clock, StackProbe};

itera_board_common::include_model!();

/// QEMU virt's 16550 UART: transmit holding register, and the line status register whose
/// bit 5 says the transmitter can take a byte.
const UART_THR: *mut u8 = 0x1000_0000 as *mut u8;
const UART_LSR: *const u8 = 0x1000_0005 as *const u8;
const LSR_THR_EMPTY: u8 = 1 << 5;

/// QEMU virt's SiFive test device: 0x5555 ends QEMU with status 0, `(code << 16) | 0x3333`
/// with status `code`.
const TEST_DEVICE: *mut u32 = 0x0010_0000 as *mut u32;

/// The console: bytes to the UART, which QEMU connects to its stdout (`-nographic`).
struct Uart;

impl Uart {
    fn put(byte: u8) {
        // SAFETY: the UART's registers in QEMU virt's memory map; byte-wide MMIO, volatile.
        unsafe {
            while core::ptr::read_volatile(UART_LSR) & LSR_THR_EMPTY == 0 {}
            core::ptr::write_volatile(UART_THR, byte);
        }
    }
}

impl fmt::Write for Uart {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        s.bytes().for_each(Uart::put);
        Ok(())
    }
}

/// Ends the QEMU run: exit status 0 when `ok`, 1 otherwise.
fn exit(ok: bool) -> ! {
    let code = if ok { 0x5555 } else { (1 << 16) | 0x3333 };
    // SAFETY: the test device's one register in QEMU virt's memory map.
    unsafe { core::ptr::write_volatile(TEST_DEVICE, code) };
    loop {}
}

/// Instructions retired (`instret`, 64 bits read as two halves), exact under `-icount shift=0`.
fn instret() -> u64 {
    loop {
        let (hi, lo, hi2): (u32, u32, u32);
        // SAFETY: reads of the user-level counter CSRs; machine mode may always read them.
        unsafe {
            core::arch::asm!("rdinstreth {0}", "rdinstret {1}", "rdinstreth {2}", out(reg) hi, out(reg) lo, out(reg) hi2,
                options(nomem, nostack));
        }
        if hi == hi2 {
            return (hi as u64) << 32 | lo as u64;
        }
    }
}

/// Instructions, and virtual time (1 ns per instruction under `-icount shift=0`).
struct InstretClock;

impl Clock for InstretClock {
    fn now_us(&mut self) -> u64 {
        instret() / 1000
    }
    fn instructions(&mut self) -> Option<u64> {
        Some(instret())
    }
}

/// Runs exactly `2 * n` instructions (an `addi`/`bnez` loop) and returns what `instret` counts
/// for them: the `calibration:` line, `2 * n` plus the half-dozen instructions of the reading
/// itself, which shows the counter counts instructions, one for one.
fn calibrate(n: u32) -> u64 {
    let t = instret();
    // SAFETY: a register-only countdown loop; it touches no memory and clobbers only the
    // register it is given.
    unsafe {
        core::arch::asm!("1:", "addi {0}, {0}, -1", "bnez {0}, 1b", inout(reg) n => _, options(nomem, nostack));
    }
    instret() - t
}

/// Stack below `main`'s frame that is painted to find the high-water mark.
const STACK_PROBE: usize = 128 * 1024;

#[riscv_rt::entry]
fn main() -> ! {
    extern "C" {
        static _stack_start: u32;
    }
    // Only the linker symbol's address is taken; it is never read.
    let top = core::ptr::addr_of!(_stack_start) as usize;
    let sp: usize;
    // SAFETY: reads the stack pointer.
    unsafe { core::arch::asm!("mv {0}, sp", out(reg) sp, options(nomem, nostack)) };
    // SAFETY: the STACK_PROBE bytes below the current stack pointer are stack RAM that no frame
    // uses yet (the stack grows down from the top of the 8 MiB RAM region; .bss is at its bottom).
    let stack = unsafe { StackProbe::paint(top, sp & !3, STACK_PROBE) };

    let calibrated = calibrate(1_000_000);
    exit(itera_board_common::run_counted(Uart, InstretClock, &demo(0, Some(&stack)), arena(), calibrated))
}

/// A trap nothing handles (riscv-rt's `ExceptionHandler` and `DefaultHandler` default to this):
/// say so and end the run as failed, instead of spinning until the check's timeout.
#[no_mangle]
extern "C" fn abort() -> ! {
    b"error: unhandled trap\n".iter().copied().for_each(Uart::put);
    exit(false)
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    let _ = fmt::Write::write_fmt(&mut Uart, format_args!("panic: {info}\n"));
    exit(false)
}
