//! What the boards need from the host: the reference run a firmware's output is compared
//! with, and whether a blob fits a board's flash and RAM.

use std::sync::LazyLock;

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

/// Every board's figures (flash, RAM, clock, target, core, the firmware's own cost and
/// stack): `boards/table.rs`, the table the board build scripts read too
/// (`itera-board-build`), so `fit` and the firmware build agree.
#[path = "../../boards/table.rs"]
pub mod table;

/// A board's memory, core and clock, and what our firmware costs on it besides the model:
/// its row of [`table::BOARDS`], with the instruction set its target implies.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Board {
    /// Name used by `--board` (and the folder under `boards/`).
    pub name: &'static str,
    /// Chip and core.
    pub chip: &'static str,
    /// Rust target.
    pub target: &'static str,
    /// The instruction set the firmware is compiled for (whose measured instruction counts
    /// give the speed estimate).
    pub isa: Isa,
    /// Core clock the firmware sets, in MHz; `None` for the QEMU boards, which have none
    /// (under `-icount shift=0` one instruction is one virtual nanosecond).
    pub clock_mhz: Option<u32>,
    /// Flash the firmware can link into, in bytes (its memory.x).
    pub flash_bytes: usize,
    /// RAM the firmware can link into, in bytes (its memory.x).
    pub ram_bytes: usize,
    /// What our firmware for this board costs besides the blob and the arena.
    pub firmware: FirmwareCost,
}

impl Board {
    /// The board of one row of the table.
    const fn from_table(row: &table::Board) -> Board {
        Board {
            name: row.name,
            chip: row.chip,
            target: row.target,
            isa: Isa::of_target(row.target),
            clock_mhz: row.clock_mhz,
            flash_bytes: row.flash_bytes,
            ram_bytes: row.ram_bytes,
            firmware: FirmwareCost {
                code_bytes: row.code_bytes,
                static_bytes: row.static_bytes,
                stack_bytes: row.stack_bytes,
            },
        }
    }
}

/// An instruction set the firmware is built for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Isa {
    /// ARMv7E-M with the single-precision FPU (Cortex-M4F, `thumbv7em-none-eabihf`).
    #[serde(rename = "armv7e-m+fpu")]
    Armv7emFpu,
    /// ARMv6-M (Cortex-M0+, `thumbv6m-none-eabi`): no FPU, f32 in compiler-builtins.
    #[serde(rename = "armv6-m")]
    Armv6m,
    /// RV32IMC (ESP32-C3, `riscv32imc-unknown-none-elf`): no FPU, f32 in compiler-builtins.
    #[serde(rename = "rv32imc")]
    Rv32imc,
}

impl Isa {
    /// Every instruction set, with the Rust target that compiles for it.
    const TARGETS: [(Isa, &'static str); 3] = [
        (Isa::Armv7emFpu, "thumbv7em-none-eabihf"),
        (Isa::Armv6m, "thumbv6m-none-eabi"),
        (Isa::Rv32imc, "riscv32imc-unknown-none-elf"),
    ];

    /// The instruction set a board's target compiles for; a target of none fails the build
    /// (the table is a constant).
    const fn of_target(target: &str) -> Isa {
        let mut i = 0;
        while i < Isa::TARGETS.len() {
            if same_str(Isa::TARGETS[i].1, target) {
                return Isa::TARGETS[i].0;
            }
            i += 1;
        }
        panic!("a board of boards/table.rs has a target no Isa compiles for");
    }

    /// The name `fit` prints (as serialized).
    pub fn name(self) -> &'static str {
        match self {
            Isa::Armv7emFpu => "armv7e-m+fpu",
            Isa::Armv6m => "armv6-m",
            Isa::Rv32imc => "rv32imc",
        }
    }

    /// The QEMU board that measures this instruction set.
    pub fn measured_on(self) -> &'static str {
        match self {
            Isa::Armv7emFpu => "qemu-an386",
            Isa::Armv6m => "qemu-v6m",
            Isa::Rv32imc => "qemu-rv32",
        }
    }
}

/// `a == b`, in a `const fn`.
const fn same_str(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// How far the estimates may be from a firmware ELF (code and statics): they are the ELF
/// sizes measured when the boards were last built, rounded up to 4 KiB.
pub const ESTIMATE_MARGIN: usize = 4 << 10;

/// The boards the project ships firmware for: the rows of [`table::BOARDS`], in its order.
pub const BOARDS: [Board; table::BOARDS.len()] = {
    let mut boards = [Board::from_table(&table::BOARDS[0]); table::BOARDS.len()];
    let mut i = 1;
    while i < boards.len() {
        boards[i] = Board::from_table(&table::BOARDS[i]);
        i += 1;
    }
    boards
};

/// MACs per token of the micro model, on which [`MEASURED`] was taken.
pub const MEASURED_MACS_PER_TOKEN: u64 = 275_200;

/// The committed golden outputs (`boards/golden/BOARD/micro_PRESET.txt`) of one QEMU board,
/// for the micro checkpoint packed with each measured `--quant` preset.
macro_rules! micro_goldens {
    ($board:literal) => {
        [
            ("f32", include_str!(concat!("../../boards/golden/", $board, "/micro_f32.txt"))),
            ("int8", include_str!(concat!("../../boards/golden/", $board, "/micro_int8.txt"))),
            ("mixed", include_str!(concat!("../../boards/golden/", $board, "/micro_mixed.txt"))),
            ("integer", include_str!(concat!("../../boards/golden/", $board, "/micro_integer.txt"))),
        ]
    };
}

/// One board's golden outputs: (`--quant` preset, file text) for each measured preset.
type MicroGoldens = [(&'static str, &'static str); 4];

/// Each instruction set, the QEMU board that measures it, and that board's goldens.
const GOLDENS: [(Isa, &str, MicroGoldens); 3] = [
    (Isa::Armv7emFpu, "qemu-an386", micro_goldens!("qemu-an386")),
    (Isa::Armv6m, "qemu-v6m", micro_goldens!("qemu-v6m")),
    (Isa::Rv32imc, "qemu-rv32", micro_goldens!("qemu-rv32")),
];

/// Instructions per generated token, measured: the micro checkpoint packed with each
/// `--quant` preset, on the QEMU board of each instruction set under `-icount shift=0`
/// (exact, repeatable counts of the model step, 16 tokens after the 8-token prompt). Read
/// from the committed golden outputs that CI checks the firmware against (`boards/golden`),
/// so a change in cost that updates them updates `fit` too.
pub static MEASURED: LazyLock<Vec<Measured>> = LazyLock::new(|| {
    GOLDENS
        .iter()
        .flat_map(|&(isa, board, goldens)| {
            goldens.into_iter().map(move |(quant, golden)| Measured {
                isa,
                quant,
                instructions_per_token: golden_instructions_per_token(golden).unwrap_or_else(|| {
                    panic!("boards/golden/{board}/micro_{quant}.txt has no instructions_per_token line")
                }),
            })
        })
        .collect()
});

/// The `instructions_per_token:` figure of a golden firmware output.
fn golden_instructions_per_token(golden: &str) -> Option<u64> {
    golden.lines().find_map(|line| line.strip_prefix("instructions_per_token: ")).and_then(|n| n.parse().ok())
}

/// One measured instruction count (see [`MEASURED`]).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Measured {
    /// The instruction set.
    pub isa: Isa,
    /// The `--quant` preset the micro checkpoint was packed with.
    pub quant: &'static str,
    /// Instructions per generated token.
    pub instructions_per_token: u64,
}

/// What `fit` says about speed, and on what basis.
pub const SPEED_BASIS: &str = "an instruction count, not a cycle count: instructions per token measured in QEMU \
(-icount) for the board's instruction set and the preset the blob was packed with (itera-pack convert --quant) on the micro model, scaled by the blob's MACs \
per token; tokens/s assumes 1 instruction = 1 cycle at the board's clock, with no flash wait states or cache misses";

/// The `--quant` preset a blob was packed with: its `quant` provenance entry (itera-pack
/// writes the preset and any policy rules after it, `int8; *.B=f32`), or `f32` for a blob
/// whose tensors are all f32 (itera-pack records no `quant` for those); `None` otherwise.
pub fn quant_preset(bytes: &[u8]) -> Option<String> {
    let blob = itera_edge::Blob::parse(bytes).ok()?;
    if let Some((_, quant)) = blob.provenance().find(|(k, _)| *k == "quant") {
        return Some(quant.to_string());
    }
    let all_f32 = blob.tensors().all(|t| t.dtype == itera_edge::DType::F32);
    all_f32.then(|| "f32".to_string())
}

/// The estimated speed of one blob on one board.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Speed {
    /// The QEMU board the instruction count was measured on.
    pub measured_on: &'static str,
    /// Instructions per MAC measured for the board's instruction set and the blob's preset.
    pub instructions_per_mac: f64,
    /// That times the blob's MACs per token.
    pub instructions_per_token: u64,
    /// The board's clock over that (boards with a clock only).
    pub tokens_per_second: Option<f64>,
}

/// The speed estimate for a blob packed with `quant` (its `quant` provenance) with
/// `macs_per_token`, on `board`: `None` when that preset was not measured on its ISA.
pub fn speed(board: &Board, quant: Option<&str>, macs_per_token: usize) -> Option<Speed> {
    let m = MEASURED.iter().find(|m| m.isa == board.isa && Some(m.quant) == quant)?;
    let instructions_per_token = u64::try_from(
        u128::from(m.instructions_per_token) * macs_per_token as u128 / u128::from(MEASURED_MACS_PER_TOKEN),
    )
    .unwrap_or(u64::MAX);
    Some(Speed {
        measured_on: board.isa.measured_on(),
        instructions_per_mac: m.instructions_per_token as f64 / MEASURED_MACS_PER_TOKEN as f64,
        instructions_per_token,
        tokens_per_second: board
            .clock_mhz
            .filter(|_| instructions_per_token > 0)
            .map(|mhz| f64::from(mhz) * 1e6 / instructions_per_token as f64),
    })
}

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
    /// The speed estimate (see [`SPEED_BASIS`]), when the blob's preset was measured.
    pub speed: Option<Speed>,
}

/// What `fit` needs to know of a blob.
#[derive(Debug, Clone, Copy)]
pub struct BlobCost<'a> {
    /// Bytes of the blob.
    pub blob_bytes: usize,
    /// Arena bytes a session needs.
    pub arena_bytes: usize,
    /// MACs per token.
    pub macs_per_token: usize,
    /// The `--quant` preset it was packed with (its `quant` provenance), if known.
    pub quant: Option<&'a str>,
}

/// Flash and RAM a blob needs on each board, with each board's firmware estimate, or with
/// `measured` (from an ELF) when given, and its estimated speed there.
pub fn fit(blob: &BlobCost<'_>, measured: Option<&FirmwareCost>, boards: &[Board]) -> Vec<Fit> {
    boards
        .iter()
        .map(|&board| {
            let cost = measured.unwrap_or(&board.firmware);
            let flash_needed = blob.blob_bytes + cost.code_bytes;
            let ram_needed = blob.arena_bytes + cost.stack_bytes + cost.static_bytes;
            Fit {
                board,
                flash_needed,
                ram_needed,
                fits: flash_needed <= board.flash_bytes && ram_needed <= board.ram_bytes,
                speed: speed(&board, blob.quant, blob.macs_per_token),
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
/// (its initial values) and RAM. A `.stack` section (riscv-rt's: the address range from the
/// end of the statics to the top of RAM, where the stack grows) is not counted: the stack is
/// `fit`'s measured [`FirmwareCost::stack_bytes`].
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
    // Section names, from the section-name string table (`e_shstrndx`).
    let shstrndx = u16_at(0x32).ok_or_else(bad)?;
    let names = u32_at(shoff + shstrndx * shentsize + 16).unwrap_or(usize::MAX);
    let is_stack = |name: usize| {
        names.checked_add(name).and_then(|at| elf.get(at..at.saturating_add(7))) == Some(&b".stack\0"[..])
    };
    const SHF_WRITE: usize = 1;
    const SHF_ALLOC: usize = 2;
    const SHT_NOBITS: usize = 8;
    let mut sizes = ElfSizes::default();
    for i in 0..shnum {
        let sh = shoff + i * shentsize;
        let (kind, flags, size) =
            (u32_at(sh + 4).ok_or_else(bad)?, u32_at(sh + 8).ok_or_else(bad)?, u32_at(sh + 20).ok_or_else(bad)?);
        if flags & SHF_ALLOC == 0 || (kind == SHT_NOBITS && is_stack(u32_at(sh).ok_or_else(bad)?)) {
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

    fn board(name: &str) -> Board {
        *BOARDS.iter().find(|b| b.name == name).unwrap()
    }

    fn blob(blob_bytes: usize, quant: Option<&str>) -> BlobCost<'_> {
        BlobCost { blob_bytes, arena_bytes: 20_000, macs_per_token: MEASURED_MACS_PER_TOKEN as usize, quant }
    }

    #[test]
    fn the_stm32f411_profile_counts_blob_code_arena_and_stack() {
        let stm = [board("stm32f411")];
        let cost = FirmwareCost { code_bytes: 60_000, static_bytes: 1_000, stack_bytes: 40_000 };
        let f = fit(&blob(400_000, None), Some(&cost), &stm);
        assert_eq!((f[0].flash_needed, f[0].ram_needed, f[0].fits), (460_000, 61_000, true));
        let f = fit(&blob(400_000, None), None, &stm);
        assert_eq!(f[0].flash_needed, 400_000 + (128 << 10), "the board's own estimate");
        let f = fit(&blob(500_000, None), Some(&cost), &stm);
        assert!(!f[0].fits, "560 kB of flash does not fit 512 KiB");
    }

    /// The measured count of one instruction set and preset.
    fn measured(isa: Isa, quant: &str) -> u64 {
        MEASURED.iter().find(|m| m.isa == isa && m.quant == quant).unwrap().instructions_per_token
    }

    #[test]
    fn speed_is_the_measured_count_of_the_isa_and_preset_scaled_by_macs_at_the_board_clock() {
        // The micro int8 blob on the Pico: exactly the ARMv6-M measurement, at 125 MHz.
        let v6m_int8 = measured(Isa::Armv6m, "int8");
        let s = speed(&board("rp2040"), Some("int8"), 275_200).unwrap();
        assert_eq!(s.instructions_per_token, v6m_int8);
        assert!((s.tokens_per_second.unwrap() - 125e6 / v6m_int8 as f64).abs() < 1e-9);
        assert!((s.instructions_per_mac - v6m_int8 as f64 / 275_200.0).abs() < 1e-12);
        // The integer preset has its own count.
        let s = speed(&board("rp2040"), Some("integer"), 275_200).unwrap();
        assert_eq!(s.instructions_per_token, measured(Isa::Armv6m, "integer"));
        assert_ne!(s.instructions_per_token, v6m_int8);
        // Twice the MACs, twice the instructions; the ESP32-C3 runs the RV32IMC figure.
        let s = speed(&board("esp32c3"), Some("f32"), 2 * 275_200).unwrap();
        assert_eq!(s.instructions_per_token, 2 * measured(Isa::Rv32imc, "f32"));
        // A QEMU board has a count but no clock; an unmeasured preset or none has no estimate.
        let s = speed(&board("qemu-v6m"), Some("mixed"), 275_200).unwrap();
        assert_eq!((s.instructions_per_token, s.tokens_per_second), (measured(Isa::Armv6m, "mixed"), None));
        assert_eq!(speed(&board("stm32f411"), Some("f16"), 275_200), None);
        assert_eq!(speed(&board("stm32f411"), Some("int8; *.B=f32"), 275_200), None, "a preset with rules");
        assert_eq!(speed(&board("stm32f411"), None, 275_200), None);
        let f = fit(&blob(300_000, Some("int8")), None, &[board("stm32f411")]);
        assert_eq!(f[0].speed.unwrap().instructions_per_token, measured(Isa::Armv7emFpu, "int8"));
    }

    #[test]
    fn the_measured_counts_are_the_goldens_of_every_ci_preset() {
        // The presets CI packs and checks (boards/qemu-blobs.sh) are the ones measured.
        let blobs = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../boards/qemu-blobs.sh")).unwrap();
        let presets = blobs.lines().find_map(|l| l.strip_prefix("QEMU_PRESETS=(")).unwrap().trim_end_matches(')');
        for isa in [Isa::Armv7emFpu, Isa::Armv6m, Isa::Rv32imc] {
            let quants: Vec<_> = MEASURED.iter().filter(|m| m.isa == isa).map(|m| m.quant).collect();
            assert_eq!(quants.join(" "), presets, "{isa:?}");
        }
        // Each count is the golden's own line; a golden without one has none.
        let golden = "tokens: 1,2\nlogits_fnv1a: 0x1\ninstructions_per_token: 542202\n";
        assert_eq!(golden_instructions_per_token(golden), Some(542_202));
        assert_eq!(golden_instructions_per_token("prefill_instructions_per_token: 7\n"), None);
        assert!(MEASURED.iter().all(|m| m.instructions_per_token > 0));
        for (isa, board, _) in GOLDENS {
            assert_eq!(board, isa.measured_on());
        }
    }

    #[test]
    fn every_isa_and_measured_preset_has_one_count_and_every_real_board_a_clock() {
        for isa in [Isa::Armv7emFpu, Isa::Armv6m, Isa::Rv32imc] {
            for quant in ["f32", "int8", "mixed", "integer"] {
                assert_eq!(MEASURED.iter().filter(|m| m.isa == isa && m.quant == quant).count(), 1, "{isa:?} {quant}");
            }
            assert!(BOARDS.iter().any(|b| b.name == isa.measured_on() && b.isa == isa && b.clock_mhz.is_none()));
        }
        for b in BOARDS.iter().filter(|b| !b.name.starts_with("qemu-")) {
            assert!(b.clock_mhz.is_some(), "{}", b.name);
        }
    }

    /// The board folders: every `boards/*/` with a `Cargo.toml`, less the shared crates.
    fn board_folders() -> Vec<(String, std::path::PathBuf)> {
        let boards = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../boards");
        let mut folders: Vec<_> = std::fs::read_dir(&boards)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.join("Cargo.toml").is_file() && !p.ends_with("common"))
            .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), p))
            .collect();
        folders.sort();
        folders
    }

    #[test]
    fn every_board_folder_is_one_row_of_the_table_and_builds_for_its_target() {
        let mut rows: Vec<_> = table::BOARDS.iter().map(|b| b.name.to_string()).collect();
        rows.sort();
        let folders = board_folders();
        assert_eq!(
            folders.iter().map(|(name, _)| name.clone()).collect::<Vec<_>>(),
            rows,
            "boards/*/ vs boards/table.rs"
        );
        for (name, folder) in &folders {
            let row = table::board(name).unwrap();
            // The build helper finds the row by the crate's name.
            let manifest = std::fs::read_to_string(folder.join("Cargo.toml")).unwrap();
            assert!(manifest.contains(&format!("name = \"itera-board-{name}\"")), "{name}: crate itera-board-{name}");
            // `cargo build` in the folder picks the target the table names (and the build
            // helper refuses any other).
            let config = std::fs::read_to_string(folder.join(".cargo/config.toml")).unwrap();
            assert!(
                config.contains(&format!("target = \"{}\"", row.target)),
                "{name}: .cargo/config.toml builds for {}",
                row.target
            );
            // memory.x comes from the table; one in the folder could shadow it at link time.
            assert!(!folder.join("memory.x").exists(), "{name}: memory.x is written from boards/table.rs");
        }
    }

    #[test]
    fn fit_reads_every_figure_from_the_table() {
        assert_eq!(BOARDS.len(), table::BOARDS.len());
        for (b, row) in BOARDS.iter().zip(&table::BOARDS) {
            assert_eq!((b.name, b.chip, b.target, b.clock_mhz), (row.name, row.chip, row.target, row.clock_mhz));
            assert_eq!((b.flash_bytes, b.ram_bytes), (row.flash_bytes, row.ram_bytes), "{}", b.name);
            let f = b.firmware;
            assert_eq!(
                (f.code_bytes, f.static_bytes, f.stack_bytes),
                (row.code_bytes, row.static_bytes, row.stack_bytes)
            );
            assert_eq!(Isa::TARGETS.iter().find(|(isa, _)| *isa == b.isa).unwrap().1, b.target, "{}", b.name);
        }
    }

    #[test]
    fn greedy_runs_that_do_not_fit_the_positions_are_refused_with_the_n_that_fits() {
        let config = itera_pack::synthetic::tiny_config();
        let bytes = itera_test_support::tiny_blob(2);
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

    /// A minimal ELF32 LE file with these sections (name, type, flags, size), plus the null
    /// section first and the section-name table last.
    fn elf_with(sections: &[(&str, u32, u32, u32)]) -> Vec<u8> {
        let mut names = vec![0u8];
        let mut at = Vec::new();
        for (name, ..) in sections.iter().chain([&(".shstrtab", 3, 0, 0)]) {
            at.push(names.len() as u32);
            names.extend(name.as_bytes());
            names.push(0);
        }
        let mut elf = vec![0x7f, b'E', b'L', b'F', 1, 1];
        elf.resize(0x34, 0);
        let strtab = elf.len() as u32;
        elf.extend(&names);
        while elf.len() % 4 != 0 {
            elf.push(0);
        }
        let shoff = elf.len();
        let n = sections.len() + 2;
        elf[0x20..0x24].copy_from_slice(&(shoff as u32).to_le_bytes());
        elf[0x2E..0x30].copy_from_slice(&40u16.to_le_bytes());
        elf[0x30..0x32].copy_from_slice(&(n as u16).to_le_bytes());
        elf[0x32..0x34].copy_from_slice(&((n - 1) as u16).to_le_bytes());
        elf.extend([0u8; 40]);
        let table = sections.iter().copied().chain([(".shstrtab", 3, 0, names.len() as u32)]);
        for (i, (_, kind, flags, size)) in table.enumerate() {
            let mut sh = [0u8; 40];
            sh[0..4].copy_from_slice(&at[i].to_le_bytes());
            sh[4..8].copy_from_slice(&kind.to_le_bytes());
            sh[8..12].copy_from_slice(&flags.to_le_bytes());
            let offset = if i == sections.len() { strtab } else { 0 };
            sh[16..20].copy_from_slice(&offset.to_le_bytes());
            sh[20..24].copy_from_slice(&size.to_le_bytes());
            elf.extend(sh);
        }
        elf
    }

    #[test]
    fn elf_sizes_count_code_data_and_bss_but_not_the_stack_range() {
        const PROGBITS: u32 = 1;
        const NOBITS: u32 = 8;
        const A: u32 = 2; // SHF_ALLOC
        const WA: u32 = 3; // SHF_WRITE | SHF_ALLOC
        let elf = elf_with(&[
            (".text", PROGBITS, A | 4, 1000),
            (".rodata", PROGBITS, A, 300),
            (".data", PROGBITS, WA, 20),
            (".bss", NOBITS, WA, 400),
            // riscv-rt's: the free RAM the stack grows down into, counted as the stack.
            (".stack", NOBITS, WA, 8 << 20),
            (".debug_info", PROGBITS, 0, 5000),
        ]);
        assert_eq!(elf_sizes(&elf).unwrap(), ElfSizes { flash_bytes: 1320, ram_bytes: 420 });
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
