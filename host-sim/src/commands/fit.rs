//! `itera-sim fit`: whether a blob fits each board's flash and RAM, and how fast it would run there.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::Args;
use itera_pack::untrusted::shown;
use itera_sim::board::{
    elf_sizes, fit, quant_preset, BlobCost, ElfSizes, FirmwareCost, Fit, BOARDS, ESTIMATE_MARGIN, MEASURED, SPEED_BASIS,
};
use itera_sim::{limits, read_blob};
use serde::Serialize;

use super::{load, say, Outcome};

/// Does a blob fit each board's flash and RAM, and how fast would it run there?
///
/// Flash needed = blob + firmware code; RAM needed = arena (exact) + stack + statics.
/// Firmware costs are estimates measured on each board's ELF (the stack on the QEMU
/// boards); with `--elf` the firmware's real section sizes replace the flash and static
/// estimates (the stack, which no ELF shows, stays estimated). Speed: instructions per
/// token measured in QEMU for the board's instruction set and the preset the blob was
/// packed with (`itera-pack convert --quant`; micro model), scaled by the blob's MACs per token; tokens/s at the board's clock
/// assumes one instruction per cycle: an instruction count, not a cycle count.
#[derive(Args)]
#[command(after_help = "\
Examples:
  itera-sim fit micro_int8.itb                      # every board; exit 0 whatever fits
  itera-sim fit micro_int8.itb --board stm32f411    # exit 1 if it does not fit the STM32F411
  itera-sim fit micro_int8.itb --board stm32f411 --elf firmware.elf --json

Exit status: 0 when the blob fits the board named with --board (or, without --board, after
the table of every board); 1 when it does not fit that board, when the ELF's firmware cost
is outside the estimate's margin, or on any error.")]
pub struct FitArgs {
    /// The blob.
    blob: PathBuf,
    /// Only this board (qemu-an386, qemu-v6m, qemu-rv32, stm32f411, rp2040, esp32c3).
    #[arg(long, value_name = "NAME")]
    board: Option<String>,
    /// A firmware ELF built with this blob linked in: use its section sizes.
    #[arg(long, value_name = "FILE")]
    elf: Option<PathBuf>,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

impl FitArgs {
    /// Runs the command.
    pub fn run(&self) -> anyhow::Result<Outcome> {
        cmd_fit(&self.blob, self.board.as_deref(), self.elf.as_deref(), self.json)
    }
}

fn cmd_fit(blob: &Path, board: Option<&str>, elf: Option<&Path>, json: bool) -> anyhow::Result<Outcome> {
    let bytes = read_blob(blob)?;
    let model = load(blob, &bytes)?;
    let boards: Vec<_> = match board {
        Some(name) => vec![*BOARDS.iter().find(|b| b.name == name).with_context(|| {
            let names: Vec<_> = BOARDS.iter().map(|b| b.name).collect();
            format!("unknown board '{}' (known: {})", shown(name), names.join(", "))
        })?],
        None => BOARDS.to_vec(),
    };
    let mut measured = None;
    let mut elf_report = None;
    let mut within_margin = None;
    if let Some(path) = elf {
        let [board] = boards[..] else { bail!("--elf describes one firmware: name its board with --board") };
        let file = itera_pack::files::read_at_most(
            path,
            limits::MAX_ELF_BYTES,
            "firmware ELF",
            "give the board's firmware ELF",
        )?;
        let sizes = elf_sizes(&file).map_err(anyhow::Error::msg).with_context(|| path.display().to_string())?;
        // The ELF already holds the blob and the arena: what is left is the firmware's own.
        let cost = FirmwareCost {
            code_bytes: sizes.flash_bytes.saturating_sub(bytes.len()),
            static_bytes: sizes.ram_bytes.saturating_sub(model.arena_bytes()),
            stack_bytes: board.firmware.stack_bytes,
        };
        within_margin = Some(
            board.firmware.code_bytes.abs_diff(cost.code_bytes) <= ESTIMATE_MARGIN
                && board.firmware.static_bytes.abs_diff(cost.static_bytes) <= ESTIMATE_MARGIN,
        );
        measured = Some(cost);
        elf_report = Some(sizes);
    }
    let quant = quant_preset(&bytes);
    let cost = BlobCost {
        blob_bytes: bytes.len(),
        arena_bytes: model.arena_bytes(),
        macs_per_token: model.macs_per_token(),
        quant: quant.as_deref(),
    };
    let report = FitReport {
        blob_bytes: bytes.len(),
        arena_bytes: model.arena_bytes(),
        macs_per_token: model.macs_per_token(),
        boards: fit(&cost, measured.as_ref(), &boards),
        quant,
        elf: elf_report,
        elf_firmware: measured,
        estimate_within_margin: within_margin,
        estimate_margin_bytes: ESTIMATE_MARGIN,
        speed_basis: SPEED_BASIS,
    };
    say(&if json {
        format!("{}\n", serde_json::to_string_pretty(&serde_json::to_value(&report)?)?)
    } else {
        report.render()
    })?;
    Ok(report.verdict(board.is_some()))
}

/// What `fit` reports: the blob's costs, the firmware's measured from an ELF, and each
/// board's verdict. The text and the JSON are both made from it.
#[derive(Serialize)]
struct FitReport {
    blob_bytes: usize,
    arena_bytes: usize,
    macs_per_token: usize,
    /// The blob's `--quant` preset, from its provenance.
    quant: Option<String>,
    elf: Option<ElfSizes>,
    /// The firmware's own cost, from the ELF (blob and arena taken out).
    elf_firmware: Option<FirmwareCost>,
    estimate_within_margin: Option<bool>,
    estimate_margin_bytes: usize,
    speed_basis: &'static str,
    boards: Vec<Fit>,
}

impl FitReport {
    fn render(&self) -> String {
        let mut text = format!(
            "blob {} B, arena {} B, {} MACs/token, --quant {}\n",
            self.blob_bytes,
            self.arena_bytes,
            self.macs_per_token,
            self.quant.as_deref().map_or_else(|| "unknown (no quant provenance)".to_string(), shown)
        );
        if let (Some(m), Some(ok), [f]) = (&self.elf_firmware, self.estimate_within_margin, &self.boards[..]) {
            text += &format!(
                "firmware from ELF: code {} B, statics {} B (estimate {} B, {} B: {} the {} B margin); stack {} B (measured on the QEMU boards)\n",
                m.code_bytes,
                m.static_bytes,
                f.board.firmware.code_bytes,
                f.board.firmware.static_bytes,
                if ok { "within" } else { "OUTSIDE" },
                self.estimate_margin_bytes,
                m.stack_bytes
            );
        }
        text += &format!(
            "{:<12} {:>10} {:>10} {:>10} {:>10}  {:<4}  {:<12} {:>5} {:>12} {:>8}\n",
            "board", "flash need", "flash has", "RAM need", "RAM has", "fits", "isa", "MHz", "insn/token", "tok/s"
        );
        for f in &self.boards {
            let mhz = f.board.clock_mhz.map_or_else(|| "-".to_string(), |m| m.to_string());
            let (insn, tps) = match f.speed {
                Some(s) => (
                    s.instructions_per_token.to_string(),
                    s.tokens_per_second.map_or_else(|| "-".to_string(), |t| format!("{t:.1}")),
                ),
                None => ("-".to_string(), "-".to_string()),
            };
            text += &format!(
                "{:<12} {:>10} {:>10} {:>10} {:>10}  {:<4}  {:<12} {:>5} {:>12} {:>8}\n",
                f.board.name,
                f.flash_needed,
                f.board.flash_bytes,
                f.ram_needed,
                f.board.ram_bytes,
                if f.fits { "yes" } else { "NO" },
                f.board.isa.name(),
                mhz,
                insn,
                tps
            );
        }
        if self.boards.iter().any(|f| f.speed.is_some()) {
            text += &format!("speed: {}\n", self.speed_basis);
        } else {
            // The presets boards/golden measures, in its order, each once.
            let mut measured: Vec<&str> = Vec::new();
            for m in MEASURED.iter() {
                if !measured.contains(&m.quant) {
                    measured.push(m.quant);
                }
            }
            text += &format!(
                "speed: no estimate: instructions per token are measured (boards/golden) for the presets {} only\n",
                measured.join(", ")
            );
        }
        text
    }

    /// The exit status: with an ELF, the firmware must match its estimate; with a named
    /// board, the blob must fit it (a gate a CI script can use).
    fn verdict(&self, named_board: bool) -> Outcome {
        if self.estimate_within_margin == Some(false) {
            return Outcome::Failed(format!(
                "the ELF's firmware cost is outside the {} B margin of the board's estimate; update its code_bytes and static_bytes in boards/table.rs",
                self.estimate_margin_bytes
            ));
        }
        match self.boards.iter().find(|f| !f.fits) {
            Some(f) if named_board => {
                let what = if self.elf_firmware.is_some() { "the firmware with this blob" } else { "this blob" };
                Outcome::Failed(format!(
                    "{what} does not fit {}: flash {} of {} B, RAM {} of {} B; pack it smaller (itera-pack convert --quant int8 or mixed) or pick a larger board",
                    f.board.name, f.flash_needed, f.board.flash_bytes, f.ram_needed, f.board.ram_bytes
                ))
            }
            _ => Outcome::Ok,
        }
    }
}
