//! itera-edge on QEMU's mps2-an386 (Cortex-M4F): the shared demo (`itera-board-common`)
//! prefills a fixed prompt, generates greedily, and prints over semihosting the tokens, a
//! checksum of every logit, the arena bytes, the instructions per token and the stack
//! high-water mark, then exits QEMU (0 = ran to the end). The whole firmware is `mps2.rs`,
//! which `qemu-v6m` builds too; see there for the instruction count (SysTick under
//! `-icount shift=0`).

#![no_std]
#![no_main]

mod mps2;
