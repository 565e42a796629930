//! itera-edge built for ARMv6-M (`thumbv6m-none-eabi`, the RP2040's Cortex-M0+ instruction
//! set: no FPU, so f32 runs in compiler-builtins' IEEE soft float) and run on QEMU's
//! mps2-an385, a Cortex-M3. QEMU's one Cortex-M0 board (`microbit`, an nRF51) has 16 KiB of
//! RAM and 256 KiB of flash, too small for the model; ARMv6-M code is a subset of ARMv7-M, so
//! it runs unchanged on the M3: the instructions counted are exactly the v6-M build's (not
//! the cycles of an M0+, which QEMU does not model).
//!
//! The same firmware as `qemu-an386` (its `mps2.rs`, built here for ARMv6-M): the shared demo
//! prints the tokens, the logits checksum, instructions per token and the stack over
//! semihosting, then exits QEMU.

#![no_std]
#![no_main]

#[path = "../../qemu-an386/src/mps2.rs"]
mod mps2;
