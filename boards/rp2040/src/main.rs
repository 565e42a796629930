//! itera-edge on the Raspberry Pi Pico (RP2040: Cortex-M0+, no FPU, so f32 is emulated in
//! software; external flash read through XIP). Its clock and memory are in `boards/table.rs`.
//!
//! The model blob is linked into flash and read in place; the arena is a static sized by the
//! generated `ARENA_BYTES`. The shared demo (`itera-board-common`) prefills the fixed prompt,
//! generates greedily, and logs the tokens, text, logits checksum, arena bytes and time per
//! token over defmt/RTT (read it with a debug probe: `probe-rs run --chip RP2040`). The GPIO25
//! LED toggles per token, then blinks slowly (finished) or fast (failed), which is all a Pico
//! flashed over USB (UF2) shows. Time is read from the 1 MHz 64-bit timer.

#![no_std]
#![no_main]

use defmt_rtt as _;
use embedded_hal::digital::OutputPin;
use itera_board_common::{Clock, Io, LineBuffer};
use panic_probe as _;
use rp2040_hal::{self as hal, pac};

/// The second-stage bootloader for the Pico's W25Q080 flash, at the start of flash.
#[link_section = ".boot2"]
#[used]
pub static BOOT2: [u8; 256] = rp2040_boot2::BOOT_LOADER_W25Q080;

itera_board_common::include_model!();

/// The Pico's crystal.
const XTAL_FREQ_HZ: u32 = 12_000_000;

/// Microseconds from the RP2040's 64-bit, 1 MHz timer.
struct TimerClock(hal::Timer);

impl Clock for TimerClock {
    fn now_us(&mut self) -> u64 {
        self.0.get_counter().ticks()
    }
}

#[hal::entry]
fn main() -> ! {
    let mut pac = pac::Peripherals::take().unwrap();
    let mut watchdog = hal::Watchdog::new(pac.WATCHDOG);
    let clocks = hal::clocks::init_clocks_and_plls(
        XTAL_FREQ_HZ,
        pac.XOSC,
        pac.CLOCKS,
        pac.PLL_SYS,
        pac.PLL_USB,
        &mut pac.RESETS,
        &mut watchdog,
    )
    .unwrap_or_else(|_| panic!("clock setup failed"));
    // rp2040-hal's default PLL settings: a 125 MHz system clock, the table's CLOCK_MHZ.
    let timer = hal::Timer::new(pac.TIMER, &mut pac.RESETS, &clocks);
    let sio = hal::Sio::new(pac.SIO);
    let pins = hal::gpio::Pins::new(pac.IO_BANK0, pac.PADS_BANK0, sio.gpio_bank0, &mut pac.RESETS);
    // The Pico's green LED (on the Pico W it hangs off the radio chip instead).
    let mut led = pins.gpio25.into_push_pull_output();
    let _ = led.set_low();
    let console = LineBuffer::<96, _>::new(|line: &str| defmt::info!("{=str}", line));
    Io { console, clock: TimerClock(timer), led, delay: timer }.run_then_blink(&demo(50, None), arena())
}
