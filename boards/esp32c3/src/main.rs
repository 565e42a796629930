//! itera-edge on the ESP32-C3 (RISC-V rv32imc, no FPU, so f32 is emulated in software; flash
//! mapped through the cache). Its clock and memory are in `boards/table.rs`.
//!
//! The model blob is linked into flash (.rodata, read in place through the flash cache); the
//! arena is a static sized by the generated `ARENA_BYTES`. The shared demo
//! (`itera-board-common`) prefills the fixed prompt, generates greedily, and prints the tokens,
//! text, logits checksum, arena bytes and time per token on the serial console
//! (`esp-println`: the USB-serial/JTAG port or UART0, whichever `espflash --monitor` opens).
//! The GPIO8 LED toggles per token, then blinks slowly (finished) or fast (failed). Time is
//! read from esp-hal's microsecond system timer.

#![no_std]
#![no_main]

use esp_backtrace as _;
use esp_hal::{
    clock::CpuClock,
    delay::Delay,
    gpio::{Level, Output, OutputConfig},
    main,
    time::Instant,
};
use esp_println::Printer;
use itera_board_common::{Clock, Io};

// The application descriptor the ESP-IDF second-stage bootloader (and espflash) expects.
esp_bootloader_esp_idf::esp_app_desc!();

itera_board_common::include_model!();

/// Microseconds from esp-hal's system timer.
struct SysTimerClock;

impl Clock for SysTimerClock {
    fn now_us(&mut self) -> u64 {
        Instant::now().duration_since_epoch().as_micros()
    }
}

#[main]
fn main() -> ! {
    // The C3's fastest clock, the table's CLOCK_MHZ.
    let peripherals = esp_hal::init(esp_hal::Config::default().with_cpu_clock(CpuClock::max()));
    // GPIO8: the LED of most ESP32-C3 boards (SuperMini: blue, lit when low; DevKitM-1: the
    // WS2812's data line, which only flickers). Change the pin here for other boards.
    let led = Output::new(peripherals.GPIO8, Level::Low, OutputConfig::default());
    Io { console: Printer, clock: SysTimerClock, led, delay: Delay::new() }.run_then_blink(&demo(50, None), arena())
}
