//! itera-edge on the STM32F411 Black Pill (Cortex-M4F, its clock, `CLOCK_MHZ` of
//! `boards/table.rs`, from the 25 MHz crystal).
//!
//! The model blob is linked into flash and read in place; the arena is a static sized by the
//! generated `ARENA_BYTES`. The demo (shared with every board, `itera-board-common`) prefills
//! the fixed prompt, generates greedily, and logs the tokens, text, logits checksum, arena
//! bytes and time per token over defmt/RTT (`cargo run --release` runs `probe-rs run`, which
//! flashes the chip and prints the log). The PC13 LED toggles per token, then blinks slowly
//! (finished) or fast (failed). Time is read from the DWT cycle counter.

#![no_std]
#![no_main]

use cortex_m::peripheral::DWT;
use cortex_m_rt::entry;
use defmt_rtt as _;
use itera_board_common::{Clock, Io, LineBuffer};
use panic_probe as _;
use stm32f4xx_hal::{pac, prelude::*, rcc::Config};

itera_board_common::include_model!();

/// Microseconds from the 32-bit DWT cycle counter, extended to 64 bits on each read
/// (it wraps every ~43 s at 100 MHz; the demo reads it far more often than that).
struct DwtClock {
    last: u32,
    high: u64,
}

impl Clock for DwtClock {
    fn now_us(&mut self) -> u64 {
        let now = DWT::cycle_count();
        if now < self.last {
            self.high += 1 << 32;
        }
        self.last = now;
        (self.high | now as u64) / CLOCK_MHZ as u64
    }
}

#[entry]
fn main() -> ! {
    let dp = pac::Peripherals::take().unwrap();
    let mut cp = cortex_m::Peripherals::take().unwrap();
    let mut rcc = dp.RCC.freeze(Config::hse(25.MHz()).sysclk(CLOCK_MHZ.MHz()));
    cp.DCB.enable_trace();
    cp.DWT.enable_cycle_counter();

    let gpioc = dp.GPIOC.split(&mut rcc);
    // The Black Pill's blue LED is on PC13, lit when low; "high" in the demo means lit.
    let mut led = gpioc.pc13.into_push_pull_output();
    led.set_high();
    let delay = cp.SYST.delay(&rcc.clocks);
    let console = LineBuffer::<96, _>::new(|line: &str| defmt::info!("{=str}", line));
    let clock = DwtClock { last: 0, high: 0 };
    Io { console, clock, led: ActiveLow(led), delay }.run_then_blink(&demo(50, None), arena())
}

/// An LED wired to light when its pin is low.
struct ActiveLow<P>(P);

impl<P: embedded_hal::digital::OutputPin> embedded_hal::digital::ErrorType for ActiveLow<P> {
    type Error = P::Error;
}

impl<P: embedded_hal::digital::OutputPin> embedded_hal::digital::OutputPin for ActiveLow<P> {
    fn set_low(&mut self) -> Result<(), Self::Error> {
        self.0.set_high()
    }
    fn set_high(&mut self) -> Result<(), Self::Error> {
        self.0.set_low()
    }
}
