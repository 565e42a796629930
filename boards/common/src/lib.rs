//! The itera-edge demo every board runs, written once against `embedded-hal` 1.0.
//!
//! A board firmware provides four things, its [`Io`], and runs the [`Demo`] of its build:
//! - a text sink: anything `core::fmt::Write` (a UART, `esp-println`'s printer, or
//!   [`LineBuffer`] in front of `defmt`),
//! - a [`Clock`] in microseconds, for the cost per token,
//! - an `embedded_hal::digital::OutputPin` LED that toggles once per generated token,
//! - an `embedded_hal::delay::DelayNs`, for pacing between tokens and the idle blink.
//!
//! ```ignore
//! itera_board_common::include_model!();   // the blob, its constants, `demo()`, `arena()`
//! Io { console, clock, led, delay }.run_then_blink(&demo(50, None), arena())
//! ```
//!
//! The model comes from [`include_model!`], which links the blob and constants written by the
//! board's build script (`itera-board-build`) into flash. [`Io::run`] prefills the fixed
//! prompt, generates greedily with [`itera_edge::greedy::Greedy`] and prints:
//!
//! ```text
//! itera-edge on stm32f411 (Cortex-M4F, STM32F411CE Black Pill, 100 MHz)
//! blob: micro_int8.itb (ITERA_BLOB)  (the file the build got; or: synthetic …, random weights)
//! model: micro_int8.itb blob_bytes=… arena_bytes=… macs_per_token=… kernel=…
//! prompt: 41,13,6,42,182,43,4,16
//! tokens: …                       (ids, one line, as qemu-an386 and `itera-sim greedy` print)
//! text: …                         (decoded with the blob's tokenizer; ids when it has none)
//! logits_fnv1a: 0x…
//! prefill_us_per_token: …
//! us_per_token: …
//! tokens_per_second: …
//! done
//! ```
//!
//! `tokens:` and `logits_fnv1a:` match `itera-sim greedy BLOB --tokens PROMPT -n N` bit for bit.
//!
//! A board whose [`Clock`] counts instructions exactly (the QEMU boards, under
//! `-icount shift=0`) also gets `parse_instructions:`, `prefill_instructions_per_token:`,
//! `instructions_per_token:` and `instructions_per_mac:`, and one that paints its stack
//! ([`StackProbe`], in [`Demo::stack`]) `stack_bytes:`, before `done`. The QEMU boards run
//! [`run_counted`], which adds a `calibration:` line first.
//!
//! All the reporting is integer arithmetic: on boards without an FPU, the only float routines
//! the generation loop calls are the model's own (which `boards/no-soft-float.sh` counts
//! between [`itera_token_loop_begin`] and [`itera_token_loop_end`]).

#![no_std]

use core::fmt::{self, Write};

use embedded_hal::delay::DelayNs;
use embedded_hal::digital::OutputPin;
use itera_edge::{greedy::Greedy, Blob, Model, Session};

pub use itera_edge;

/// A free-running time source for the cost figures.
pub trait Clock {
    /// Microseconds since some fixed point; must not wrap during a run.
    fn now_us(&mut self) -> u64;

    /// Instructions executed since some fixed point, on a board that counts them exactly (QEMU
    /// under `-icount shift=0`); `None`, the default, elsewhere. When it is `Some`, [`Io::run`]
    /// also prints the cost in instructions.
    fn instructions(&mut self) -> Option<u64> {
        None
    }
}

/// The stack high-water mark, by painting: [`StackProbe::paint`] fills a band of free stack
/// below the caller's frame with a pattern, [`StackProbe::bytes_used`] finds how much of it
/// was overwritten since.
#[derive(Debug)]
pub struct StackProbe {
    /// Top of the stack (its highest address, exclusive).
    top: usize,
    /// The stack pointer when painting started.
    sp: usize,
    /// Bytes below `sp` that were painted (plus the margin below `sp` left alone).
    depth: usize,
}

/// Bytes just below the stack pointer that [`StackProbe::paint`] leaves alone (its own frame).
const PAINT_MARGIN: usize = 256;
const PAINT: u32 = 0x5A5A_A5A5;

impl StackProbe {
    /// Paints the words from `sp - depth` up to `sp - 256`; `top` is the stack's top
    /// (`_stack_start` of cortex-m-rt and riscv-rt), `sp` the caller's stack pointer.
    ///
    /// # Safety
    ///
    /// `sp - depth .. sp` must be RAM that belongs to the stack, below every live frame but
    /// this call's (256 bytes of margin are left below `sp` for it), and used by nothing else
    /// (no heap, no statics there). `sp` must be 4-byte aligned and `depth` at least 256.
    pub unsafe fn paint(top: usize, sp: usize, depth: usize) -> Self {
        for addr in (sp - depth..sp - PAINT_MARGIN).step_by(4) {
            // SAFETY: the caller guarantees these words are unused stack RAM, aligned. Volatile
            // so the writes are not elided.
            unsafe { core::ptr::write_volatile(addr as *mut u32, PAINT) };
        }
        StackProbe { top, sp, depth }
    }

    /// Stack bytes in use at the deepest point since [`paint`](Self::paint): the frames above
    /// `sp` when it was called plus the deepest overwritten word below it. Saturates at the
    /// painted depth (the stack may then have gone deeper).
    pub fn bytes_used(&self) -> usize {
        let untouched = (self.sp - self.depth..self.sp - PAINT_MARGIN)
            .step_by(4)
            // SAFETY: the words `paint` wrote, which its caller vouched for as stack RAM that
            // stays mapped; reading them is harmless even where frames now live.
            .take_while(|&addr| unsafe { core::ptr::read_volatile(addr as *const u32) } == PAINT)
            .count();
        self.top.saturating_sub(self.sp) + self.depth - untouched * 4
    }
}

/// An LED for boards without one (QEMU): every call succeeds and does nothing.
#[derive(Debug, Default)]
pub struct NoLed;

impl embedded_hal::digital::ErrorType for NoLed {
    type Error = core::convert::Infallible;
}

impl OutputPin for NoLed {
    fn set_low(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }
    fn set_high(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }
}

/// A delay that returns at once, for boards that have nothing to show between tokens (QEMU:
/// `pause_ms: 0` already skips it between tokens; [`blink_forever`] is never reached there).
#[derive(Debug, Default)]
pub struct NoDelay;

impl DelayNs for NoDelay {
    fn delay_ns(&mut self, _ns: u32) {}
}

/// Where the generation loop starts: [`Io::run`] calls it just before the first generated token,
/// and [`itera_token_loop_end`] just after the last one. `boards/no-soft-float.sh` finds the
/// two by name in the ELF and counts the float routines executed between them. Not inlined,
/// each with a volatile store of its own so that neither is removed nor merged with the other.
#[inline(never)]
#[no_mangle]
pub extern "C" fn itera_token_loop_begin() {
    // SAFETY: a plain word that only these two functions touch, volatile so it is kept.
    unsafe { core::ptr::write_volatile(core::ptr::addr_of_mut!(IN_TOKEN_LOOP), 1) };
}

/// Where the generation loop ends; see [`itera_token_loop_begin`].
#[inline(never)]
#[no_mangle]
pub extern "C" fn itera_token_loop_end() {
    // SAFETY: as in `itera_token_loop_begin`.
    unsafe { core::ptr::write_volatile(core::ptr::addr_of_mut!(IN_TOKEN_LOOP), 0) };
}

/// 1 between [`itera_token_loop_begin`] and [`itera_token_loop_end`] (only ever written; a
/// debugger may read it).
static mut IN_TOKEN_LOOP: u32 = 0;

/// Aligns the blob so its weights are read in place from flash.
#[repr(C, align(64))]
pub struct Aligned<B: ?Sized>(pub B);

/// Links the model written by `itera-board-build` into the calling crate: the generated
/// constants (`BLOB_BYTES`, `ARENA_BYTES`, `MACS_PER_TOKEN`, `VOCAB`, `MAX_SEQ`, `PROMPT`,
/// `GENERATE`, `BLOB_NAME`, `BLOB_ORIGIN`, `BOARD`, and `CLOCK_MHZ` on a board with a clock),
/// `static BLOB: &Aligned<[u8]>`, `fn demo(pause_ms, stack) -> Demo`, this build's [`Demo`],
/// and `fn arena() -> &'static mut [u8]`, the arena it runs in.
#[macro_export]
macro_rules! include_model {
    () => {
        /// The constants `itera-board-build` wrote for this build's blob and board.
        // A firmware uses some of them; the others are there for the next one.
        #[allow(dead_code)]
        mod model_consts {
            include!(concat!(env!("OUT_DIR"), "/model_consts.rs"));
        }
        use model_consts::*;
        /// The model blob, in flash, aligned for in-place reads.
        static BLOB: &$crate::Aligned<[u8]> = &$crate::Aligned(*include_bytes!(concat!(env!("OUT_DIR"), "/model.itb")));

        /// This build's demo: its blob, prompt and banner, with the board's pause between
        /// tokens and its stack probe.
        fn demo(pause_ms: u32, stack: Option<&$crate::StackProbe>) -> $crate::Demo<'_> {
            $crate::Demo {
                board: BOARD,
                blob: &BLOB.0,
                source: BLOB_NAME,
                origin: BLOB_ORIGIN,
                prompt: PROMPT,
                generate: GENERATE,
                pause_ms,
                stack,
            }
        }

        /// The arena, a zeroed static of `ARENA_BYTES` in `.bss`: the first call gets it, a
        /// later one an empty slice (its run then stops with an arena error).
        fn arena() -> &'static mut [u8] {
            static mut ARENA: $crate::itera_edge::Arena<ARENA_BYTES> = $crate::itera_edge::Arena::new();
            static TAKEN: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);
            // A load and a store, not a swap, which ARMv6-M lacks: the firmware calls this from
            // `main` only, never from an interrupt handler, so nothing runs in between.
            if TAKEN.load(core::sync::atomic::Ordering::Relaxed) {
                return &mut [];
            }
            TAKEN.store(true, core::sync::atomic::Ordering::Relaxed);
            // SAFETY: ARENA is named only here, and this line runs once (TAKEN), so this is the
            // one reference to it.
            unsafe { &mut (*core::ptr::addr_of_mut!(ARENA)).0 }
        }
    };
}

/// What one demo run prints about.
pub struct Demo<'a> {
    /// Board name, core and clock, for the banner (`BOARD`).
    pub board: &'a str,
    /// The blob bytes (`&BLOB.0`).
    pub blob: &'a [u8],
    /// The blob's name (`BLOB_NAME`: its file name, or the synthetic model's).
    pub source: &'a str,
    /// Where the blob came from (`BLOB_ORIGIN`: the file the build was given, or the synthetic
    /// model's name and that its weights are random).
    pub origin: &'a str,
    /// The prompt to prefill (`PROMPT`).
    pub prompt: &'a [u32],
    /// Tokens to generate (`GENERATE`).
    pub generate: usize,
    /// Pause after each token, so the LED blink is visible (not counted in the timing).
    pub pause_ms: u32,
    /// The painted stack, on a board that measures it: `stack_bytes:` is printed.
    pub stack: Option<&'a StackProbe>,
}

/// The figures of a finished run.
#[derive(Clone, Copy, Debug, Default)]
pub struct Summary {
    /// FNV-1a over every logit vector (as `itera-sim greedy` computes it).
    pub checksum: u64,
    /// Arena bytes the session used.
    pub arena_bytes: usize,
    /// Prefill microseconds per prompt token.
    pub prefill_us_per_token: u64,
    /// Generation microseconds per token (model step only).
    pub us_per_token: u64,
    /// Generation instructions per token (model step only), where the clock counts them.
    pub instructions_per_token: Option<u64>,
}

/// Why a run stopped.
#[derive(Debug)]
pub enum DemoError {
    /// The engine refused the blob, the arena or a step.
    Engine(&'static str, itera_edge::Error),
    /// The text sink failed.
    Console,
}

impl From<fmt::Error> for DemoError {
    fn from(_: fmt::Error) -> Self {
        DemoError::Console
    }
}

impl fmt::Display for DemoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DemoError::Engine(what, e) => write!(f, "{what}: {e}"),
            DemoError::Console => f.write_str("console write failed"),
        }
    }
}

fn engine(what: &'static str) -> impl FnOnce(itera_edge::Error) -> DemoError {
    move |e| DemoError::Engine(what, e)
}

/// What a board's demo runs on: its console, clock, LED and delay.
pub struct Io<W, C, L, D> {
    /// Where the report goes.
    pub console: W,
    /// Time (and, on the QEMU boards, instructions) for the cost figures.
    pub clock: C,
    /// Toggles once per generated token, then blinks.
    pub led: L,
    /// Pacing between tokens and the idle blink.
    pub delay: D,
}

impl<W: Write, C: Clock, L: OutputPin, D: DelayNs> Io<W, C, L, D> {
    /// Runs the demo once in `arena`: parse the blob in place, prefill, generate, print the
    /// figures. The LED toggles once per generated token and is left off at the end. Errors
    /// are returned (and a `error: …` line printed when the console still works).
    pub fn run(&mut self, demo: &Demo<'_>, arena: &mut [u8]) -> Result<Summary, DemoError> {
        let result = run_inner(demo, arena, &mut self.console, &mut self.clock, &mut self.led, &mut self.delay);
        if let Err(e) = &result {
            let _ = writeln!(self.console, "error: {e}");
        }
        result
    }

    /// Runs the demo, then blinks the LED forever: slowly when it ran to the end, quickly when
    /// it failed.
    pub fn run_then_blink(mut self, demo: &Demo<'_>, arena: &mut [u8]) -> ! {
        let ok = self.run(demo, arena).is_ok();
        blink_forever(&mut self.led, &mut self.delay, ok)
    }
}

/// The QEMU boards' run: the `calibration:` line (`calibrated`: what the clock counts for a
/// loop of 2,000,000 instructions), then the demo with no LED and no pauses. Returns whether
/// it ran to the end, for the board's exit status.
pub fn run_counted<W: Write, C: Clock>(
    console: W,
    clock: C,
    demo: &Demo<'_>,
    arena: &mut [u8],
    calibrated: u64,
) -> bool {
    let mut io = Io { console, clock, led: NoLed, delay: NoDelay };
    let _ = writeln!(io.console, "calibration: 2000000 instructions measure as {calibrated}");
    io.run(demo, arena).is_ok()
}

// The counts in boards/golden include the clock readings around each measured call, so how
// this function compiles shows there: a change to it moves them by a few instructions.
fn run_inner<W, C, L, D>(
    demo: &Demo<'_>,
    arena: &mut [u8],
    out: &mut W,
    clock: &mut C,
    led: &mut L,
    delay: &mut D,
) -> Result<Summary, DemoError>
where
    W: Write,
    C: Clock,
    L: OutputPin,
    D: DelayNs,
{
    writeln!(out, "itera-edge on {}", demo.board)?;
    writeln!(out, "blob: {}", demo.origin)?;
    let t0 = clock.now_us();
    let i0 = clock.instructions();
    let blob = Blob::parse(demo.blob).map_err(engine("blob"))?;
    let model = Model::new(&blob).map_err(engine("model"))?;
    let parse_insn = since(i0, clock.instructions());
    let parse_us = clock.now_us() - t0;
    let arena_bytes = model.arena_bytes();
    writeln!(
        out,
        "model: {} blob_bytes={} arena_bytes={} macs_per_token={} kernel={} parse_us={}",
        demo.source,
        demo.blob.len(),
        arena_bytes,
        model.macs_per_token(),
        model.kernel_name(),
        parse_us
    )?;
    write_ids(out, "prompt:", demo.prompt.iter().copied())?;

    let tokenizer = model.tokenizer().copied();
    let mut session = Session::new(&model, arena).map_err(engine("session"))?;
    let t1 = clock.now_us();
    let i1 = clock.instructions();
    let mut run = Greedy::start(&mut session, demo.prompt).map_err(engine("prefill"))?;
    let prefill_insn = since(i1, clock.instructions());
    let prefill_us = clock.now_us() - t1;

    // Tokens are printed as they come (the `tokens:` line, comparable with `itera-sim greedy`);
    // the decoded text follows once the line is complete.
    let mut step_us = 0;
    let mut step_insn = Some(0u64);
    let mut led_on = false;
    write!(out, "tokens:")?;
    let mut tokens = [0u32; 64];
    itera_token_loop_begin();
    for i in 0..demo.generate {
        // The instruction count is read innermost, so it holds the step and no clock reading.
        let s = clock.now_us();
        let si = clock.instructions();
        let token = run.step().map_err(engine("step"))?;
        let step = since(si, clock.instructions());
        step_us += clock.now_us() - s;
        step_insn = step_insn.zip(step).map(|(a, b)| a + b);
        if let Some(slot) = tokens.get_mut(i) {
            *slot = token;
        }
        write!(out, "{}{}", if i == 0 { " " } else { "," }, token)?;
        led_on = !led_on;
        // An LED that cannot be driven does not stop the demo.
        let _ = if led_on { led.set_high() } else { led.set_low() };
        if demo.pause_ms > 0 {
            delay.delay_ms(demo.pause_ms);
        }
    }
    itera_token_loop_end();
    writeln!(out)?;
    let _ = led.set_low();

    let shown = demo.generate.min(tokens.len());
    match tokenizer {
        Some(t) => {
            write!(out, "text:")?;
            for (i, &id) in tokens[..shown].iter().enumerate() {
                write!(out, "{}{}", if i == 0 { " " } else { t.separator() }, t.decode(id))?;
            }
            if shown < demo.generate {
                write!(out, " …")?;
            }
            writeln!(out)?;
        }
        None => writeln!(out, "text: (the blob has no tokenizer; ids above)")?,
    }

    let summary = Summary {
        checksum: run.checksum(),
        arena_bytes,
        prefill_us_per_token: prefill_us / demo.prompt.len().max(1) as u64,
        us_per_token: step_us / demo.generate.max(1) as u64,
        instructions_per_token: step_insn.map(|n| n / demo.generate.max(1) as u64),
    };
    writeln!(out, "logits_fnv1a: {:#018x}", summary.checksum)?;
    writeln!(out, "prefill_us_per_token: {}", summary.prefill_us_per_token)?;
    writeln!(out, "us_per_token: {}", summary.us_per_token)?;
    if summary.us_per_token > 0 {
        let milli = 1_000_000_000 / summary.us_per_token;
        writeln!(out, "tokens_per_second: {}.{:03}", milli / 1000, milli % 1000)?;
    }
    if let (Some(parse), Some(prefill), Some(per_token)) = (parse_insn, prefill_insn, summary.instructions_per_token) {
        writeln!(out, "parse_instructions: {parse}")?;
        writeln!(out, "prefill_instructions_per_token: {}", prefill / demo.prompt.len().max(1) as u64)?;
        writeln!(out, "instructions_per_token: {per_token}")?;
        // Thousandths, in integers: the demo does no float arithmetic of its own.
        let milli = per_token * 1000 / (model.macs_per_token() as u64).max(1);
        writeln!(out, "instructions_per_mac: {}.{:03}", milli / 1000, milli % 1000)?;
    }
    if let Some(stack) = demo.stack {
        writeln!(out, "stack_bytes: {}", stack.bytes_used())?;
    }
    writeln!(out, "done")?;
    Ok(summary)
}

/// Instructions between two readings of [`Clock::instructions`], when the clock counts them.
fn since(start: Option<u64>, end: Option<u64>) -> Option<u64> {
    start.zip(end).map(|(a, b)| b.wrapping_sub(a))
}

fn write_ids<W: Write>(out: &mut W, label: &str, ids: impl Iterator<Item = u32>) -> fmt::Result {
    out.write_str(label)?;
    for (i, t) in ids.enumerate() {
        write!(out, "{}{}", if i == 0 { " " } else { "," }, t)?;
    }
    writeln!(out)
}

/// Blinks the LED forever: slowly after a run that finished, quickly after one that failed.
pub fn blink_forever<L: OutputPin, D: DelayNs>(led: &mut L, delay: &mut D, ok: bool) -> ! {
    let half_period = if ok { 500 } else { 100 };
    loop {
        let _ = led.set_high();
        delay.delay_ms(half_period);
        let _ = led.set_low();
        delay.delay_ms(half_period);
    }
}

/// A `core::fmt::Write` that collects text into lines of up to `N` bytes and hands each
/// complete line (without its newline) to a function: puts `defmt::info!("{=str}", line)`
/// or any line-oriented logger behind the demo's `write!`s. Longer lines are split.
pub struct LineBuffer<const N: usize, F: FnMut(&str)> {
    buf: [u8; N],
    len: usize,
    emit: F,
}

impl<const N: usize, F: FnMut(&str)> LineBuffer<N, F> {
    /// A buffer that calls `emit` for each line.
    pub fn new(emit: F) -> Self {
        LineBuffer { buf: [0; N], len: 0, emit }
    }

    /// Emits the pending partial line, if any.
    pub fn flush(&mut self) {
        if self.len > 0 {
            // Only whole UTF-8 characters are ever pushed, so the buffer is valid UTF-8.
            let line = core::str::from_utf8(&self.buf[..self.len]).unwrap_or("<utf8>");
            (self.emit)(line);
            self.len = 0;
        }
    }
}

impl<const N: usize, F: FnMut(&str)> Write for LineBuffer<N, F> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for c in s.chars() {
            if c == '\n' {
                self.flush();
                continue;
            }
            let mut utf8 = [0u8; 4];
            let bytes = c.encode_utf8(&mut utf8).as_bytes();
            if self.len + bytes.len() > N {
                self.flush();
            }
            self.buf[self.len..self.len + bytes.len()].copy_from_slice(bytes);
            self.len += bytes.len();
        }
        Ok(())
    }
}
