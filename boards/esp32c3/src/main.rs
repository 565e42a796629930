//! itera-edge on the ESP32-C3 (RISC-V rv32imc at 160 MHz, no FPU, so f32 is emulated in
//! software; 400 KiB SRAM, 4 MiB flash mapped through the cache).
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
use itera_board_common::{itera_edge::Arena, Clock, Demo};

// The application descriptor the ESP-IDF second-stage bootloader (and espflash) expects.
esp_bootloader_esp_idf::esp_app_desc!();

itera_board_common::include_model!();

/// The arena: a zeroed static in .bss, borrowed once by `main`.
static mut ARENA: Arena<ARENA_BYTES> = Arena::new();

/// Microseconds from esp-hal's system timer.
struct SysTimerClock;

impl Clock for SysTimerClock {
    fn now_us(&mut self) -> u64 {
        Instant::now().duration_since_epoch().as_micros()
    }
}

#[main]
fn main() -> ! {
    let peripherals = esp_hal::init(esp_hal::Config::default().with_cpu_clock(CpuClock::max()));
    // GPIO8: the LED of most ESP32-C3 boards (SuperMini: blue, lit when low; DevKitM-1: the
    // WS2812's data line, which only flickers). Change the pin here for other boards.
    let mut led = Output::new(peripherals.GPIO8, Level::Low, OutputConfig::default());
    let mut delay = Delay::new();

    // SAFETY: `main` runs once and is the only code that names ARENA, so this is the one
    // reference to it.
    let arena = unsafe { &mut *core::ptr::addr_of_mut!(ARENA) };
    let demo = Demo {
        board: "esp32c3 (RISC-V rv32imc, 160 MHz, soft float)",
        blob: &BLOB.0,
        source: BLOB_SOURCE,
        prompt: PROMPT,
        generate: GENERATE,
        pause_ms: 50,
        stack: None,
    };
    let ok =
        itera_board_common::run(&demo, &mut arena.0, &mut Printer, &mut SysTimerClock, &mut led, &mut delay).is_ok();
    itera_board_common::blink_forever(&mut led, &mut delay, ok)
}
