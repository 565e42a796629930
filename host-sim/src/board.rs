//! What the boards need from the host: the reference run a firmware's output is compared
//! with, and whether a blob fits a board's flash and RAM.

use anyhow::bail;
use itera_edge::{greedy::Greedy, Model};
use serde::Serialize;

use crate::engine::{check_tokens, new_arena, new_session};
use crate::limits;

/// The greedy run a firmware performs, computed on the host with the same core.
#[derive(Debug, Serialize, PartialEq)]
pub struct GreedyReference {
    /// Generated token ids.
    pub tokens: Vec<u32>,
    /// FNV-1a over the bits of every logit vector (see `itera_edge::greedy`).
    pub logits_fnv1a: String,
}

/// Prefills `prompt`, generates `n` tokens greedily and returns them with the checksum.
///
/// A firmware's greedy run feeds every token it emits back into the session, so the prompt
/// plus `n` must fit the model's `max_seq` positions: checked, with the `n` that fits,
/// before any work (a run that stopped part-way would print no checksum to compare).
pub fn greedy_reference(model: &Model<'_>, prompt: &[u32], n: usize) -> anyhow::Result<GreedyReference> {
    limits::GREEDY_TOKENS.check(n)?;
    check_tokens(prompt, model.config())?;
    let max_seq = model.config().max_seq as usize;
    if prompt.len().saturating_add(n) > max_seq {
        bail!(
            "the prompt's {} tokens plus -n {n} need {} positions, but the model has {max_seq} (max_seq): give -n {} or less, or a shorter --tokens",
            prompt.len(),
            prompt.len().saturating_add(n),
            max_seq - prompt.len()
        );
    }
    let mut arena = new_arena(model);
    let mut session = new_session(model, &mut arena)?;
    let mut run = Greedy::start(&mut session, prompt)?;
    let tokens = (0..n).map(|_| run.step()).collect::<Result<Vec<_>, _>>()?;
    Ok(GreedyReference { tokens, logits_fnv1a: format!("{:#018x}", run.checksum()) })
}

impl GreedyReference {
    /// The lines a firmware prints for the same run, byte for byte.
    pub fn firmware_lines(&self) -> String {
        let ids: Vec<String> = self.tokens.iter().map(u32::to_string).collect();
        format!("tokens: {}\nlogits_fnv1a: {}\n", ids.join(","), self.logits_fnv1a)
    }
}

/// A board's memory and what our firmware costs on it besides the model.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Board {
    /// Name used by `--board` (and the folder under `boards/`).
    pub name: &'static str,
    /// Chip and core.
    pub chip: &'static str,
    /// Rust target.
    pub target: &'static str,
    /// Flash (or the flash the firmware can map) in bytes.
    pub flash_bytes: usize,
    /// RAM in bytes.
    pub ram_bytes: usize,
    /// What our firmware for this board costs besides the blob and the arena.
    pub firmware: FirmwareCost,
}

/// Stack high-water mark of the firmware, measured by painting on qemu-an386 (64,092 bytes
/// for the micro mixed blob: 18,330 in `main`'s frame, which holds the `Model`'s weight
/// views, since this round in two copies, and 35,516 below it), rounded up.
const STACK: usize = 64 << 10;

/// How far the estimates may be from a firmware ELF (code and statics): they are the ELF
/// sizes measured when the boards were last built, rounded up to 4 KiB.
pub const ESTIMATE_MARGIN: usize = 4 << 10;

/// The boards the project ships firmware for.
pub const BOARDS: [Board; 4] = [
    Board {
        name: "qemu-an386",
        chip: "MPS2 AN386, Cortex-M4F (QEMU)",
        target: "thumbv7em-none-eabihf",
        flash_bytes: 4 << 20,
        ram_bytes: 4 << 20,
        firmware: FirmwareCost { code_bytes: 76 << 10, static_bytes: 1 << 10, stack_bytes: STACK },
    },
    Board {
        name: "stm32f411",
        chip: "STM32F411CE Black Pill, Cortex-M4F 100 MHz",
        target: "thumbv7em-none-eabihf",
        flash_bytes: 512 << 10,
        ram_bytes: 128 << 10,
        firmware: FirmwareCost { code_bytes: 88 << 10, static_bytes: 2 << 10, stack_bytes: STACK },
    },
    Board {
        name: "rp2040",
        chip: "RP2040 Pico, Cortex-M0+ (no FPU), 2 MiB QSPI flash",
        target: "thumbv6m-none-eabi",
        flash_bytes: 2 << 20,
        ram_bytes: 264 << 10,
        firmware: FirmwareCost { code_bytes: 72 << 10, static_bytes: 2 << 10, stack_bytes: STACK },
    },
    Board {
        name: "esp32c3",
        chip: "ESP32-C3, RISC-V rv32imc",
        target: "riscv32imc-unknown-none-elf",
        flash_bytes: 4 << 20,
        ram_bytes: 400 << 10,
        firmware: FirmwareCost { code_bytes: 116 << 10, static_bytes: 2 << 10, stack_bytes: STACK },
    },
];

/// Firmware cost besides the blob and the arena: code and constants in flash, statics in
/// RAM, and the deepest stack. Per board, measured from its ELF (code: flash sections minus
/// the blob; statics: RAM sections minus the arena) and rounded up, see [`BOARDS`].
#[derive(Debug, Clone, Copy, Serialize)]
pub struct FirmwareCost {
    /// Code, vector table and constants other than the blob.
    pub code_bytes: usize,
    /// Statics other than the arena (`.data` + `.bss`).
    pub static_bytes: usize,
    /// Stack high-water mark.
    pub stack_bytes: usize,
}

/// How one board fares.
#[derive(Debug, Serialize)]
pub struct Fit {
    /// The board.
    pub board: Board,
    /// Flash needed: blob + firmware code.
    pub flash_needed: usize,
    /// RAM needed: arena + stack + statics.
    pub ram_needed: usize,
    /// Whether both fit.
    pub fits: bool,
}

/// Flash and RAM a blob needs on each board, with each board's firmware estimate, or with
/// `measured` (from an ELF) when given.
pub fn fit(blob_bytes: usize, arena_bytes: usize, measured: Option<&FirmwareCost>, boards: &[Board]) -> Vec<Fit> {
    boards
        .iter()
        .map(|&board| {
            let cost = measured.unwrap_or(&board.firmware);
            let flash_needed = blob_bytes + cost.code_bytes;
            let ram_needed = arena_bytes + cost.stack_bytes + cost.static_bytes;
            Fit {
                board,
                flash_needed,
                ram_needed,
                fits: flash_needed <= board.flash_bytes && ram_needed <= board.ram_bytes,
            }
        })
        .collect()
}

/// Section sizes of a firmware ELF (32-bit little-endian): what `size -A` reports.
#[derive(Debug, Default, Serialize, PartialEq)]
pub struct ElfSizes {
    /// Allocated, non-writable sections (code, vectors, constants, the linked blob).
    pub flash_bytes: usize,
    /// Writable sections that occupy RAM (`.data`, `.bss`, `.uninit`).
    pub ram_bytes: usize,
}

/// Reads the section table of an ELF32 little-endian file. `.data` counts in both flash
/// (its initial values) and RAM.
pub fn elf_sizes(elf: &[u8]) -> Result<ElfSizes, String> {
    let u16_at = |o: usize| elf.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]) as usize);
    let u32_at = |o: usize| elf.get(o..o + 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize);
    if elf.get(..6) != Some(&[0x7f, b'E', b'L', b'F', 1, 1][..]) {
        return Err("not a 32-bit little-endian ELF file".into());
    }
    let bad = || "truncated ELF section table".to_string();
    let shoff = u32_at(0x20).ok_or_else(bad)?;
    let shentsize = u16_at(0x2E).ok_or_else(bad)?;
    let shnum = u16_at(0x30).ok_or_else(bad)?;
    const SHF_WRITE: usize = 1;
    const SHF_ALLOC: usize = 2;
    const SHT_NOBITS: usize = 8;
    let mut sizes = ElfSizes::default();
    for i in 0..shnum {
        let sh = shoff + i * shentsize;
        let (kind, flags, size) =
            (u32_at(sh + 4).ok_or_else(bad)?, u32_at(sh + 8).ok_or_else(bad)?, u32_at(sh + 20).ok_or_else(bad)?);
        if flags & SHF_ALLOC == 0 {
            continue;
        }
        match (flags & SHF_WRITE != 0, kind == SHT_NOBITS) {
            // .data: initial values in flash, copied to RAM.
            (true, false) => {
                sizes.ram_bytes += size;
                sizes.flash_bytes += size;
            }
            // .bss, .uninit.
            (true, true) => sizes.ram_bytes += size,
            // Code and constants.
            (false, false) => sizes.flash_bytes += size,
            // Address space a linker script reserves (ESP's *_dummy sections): no bytes.
            (false, true) => {}
        }
    }
    Ok(sizes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stm32f411_profile_counts_blob_code_arena_and_stack() {
        let cost = FirmwareCost { code_bytes: 60_000, static_bytes: 1_000, stack_bytes: 40_000 };
        let f = fit(400_000, 20_000, Some(&cost), &BOARDS[1..2]);
        assert_eq!((f[0].flash_needed, f[0].ram_needed, f[0].fits), (460_000, 61_000, true));
        let f = fit(400_000, 20_000, None, &BOARDS[1..2]);
        assert_eq!(f[0].flash_needed, 400_000 + (88 << 10), "the board's own estimate");
        let f = fit(500_000, 20_000, Some(&cost), &BOARDS[1..2]);
        assert!(!f[0].fits, "560 kB of flash does not fit 512 KiB");
    }

    #[test]
    fn greedy_runs_that_do_not_fit_the_positions_are_refused_with_the_n_that_fits() {
        let config = itera_pack::synthetic::tiny_config();
        let bytes = crate::engine::tests::tiny_blob(&config, 2);
        let model = crate::open_model(&bytes).unwrap();
        let max_seq = config.max_seq as usize;
        let run = greedy_reference(&model, &[1, 2, 3], max_seq - 3).unwrap();
        assert_eq!(run.tokens.len(), max_seq - 3, "the prompt plus N filling every position runs");
        let e = greedy_reference(&model, &[1, 2, 3], max_seq - 2).unwrap_err().to_string();
        assert!(e.contains(&format!("give -n {} or less", max_seq - 3)) && e.contains("max_seq"), "{e}");
        let e = greedy_reference(&model, &[1], usize::MAX).unwrap_err().to_string();
        assert!(e.contains("-n") && e.contains("out of range"), "{e}");
        let e = greedy_reference(&model, &[config.vocab], 1).unwrap_err().to_string();
        assert!(e.contains("out of range"), "{e}");
    }

    #[test]
    fn elf_reader_refuses_what_it_cannot_read() {
        assert!(elf_sizes(b"not an elf").is_err());
        let mut header = vec![0x7f, b'E', b'L', b'F', 1, 1];
        header.resize(0x34, 0);
        header[0x20] = 0xff; // section table past the end
        header[0x30] = 1;
        assert!(elf_sizes(&header).is_err());
    }
}
