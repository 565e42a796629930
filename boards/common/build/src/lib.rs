//! The build script every board firmware shares.
//!
//! A board's `build.rs` is one call; the board is the one of the board table ([`table`], the
//! file `boards/table.rs`, which `itera-sim fit` reads too) that the crate `itera-board-NAME`
//! is named after:
//!
//! ```ignore
//! fn main() {
//!     itera_board_build::generate();
//! }
//! ```
//!
//! It writes into `OUT_DIR`:
//! - `model.itb`: the blob named by `ITERA_BLOB`, or, when unset, a seeded synthetic model of the
//!   micro checkpoint's shape packed here (quantized as `ITERA_QUANT` says, `int8` by default),
//!   so `cargo build` works on a fresh clone;
//! - `model_consts.rs`: `BLOB_BYTES`, `ARENA_BYTES`, `MACS_PER_TOKEN`, `VOCAB`, `MAX_SEQ` (from
//!   `itera_pack::emit::rust_consts`), plus `PROMPT` (`ITERA_PROMPT=1,2,3`), `GENERATE`
//!   (`ITERA_GENERATE=N`), `BLOB_SOURCE`, `BLOB_SYNTHETIC`, the banner `BOARD` and, on a board
//!   with a clock, `CLOCK_MHZ`, all from the table;
//! - `memory.x` from the table's memory map (unless the HAL brings its own), with `OUT_DIR`
//!   added to the linker search path.
//!
//! It fails the build with one plain message (which blob, its size, the board's memory, what
//! to do) when the blob is missing or unreadable, cannot fit the board's flash, or its arena
//! the board's RAM, and when cargo builds for another target than the table's: not with a
//! linker overflow or a build-script panic.

use std::{env, fmt::Write as _, fs, path::PathBuf};

/// Every board's figures: `boards/table.rs`, shared with `itera-sim fit`.
#[path = "../../../table.rs"]
pub mod table;

use table::{Board, MemoryMap};

/// The default fixed prompt (ids of the micro tokenizer) and number of tokens to generate; the
/// same as `boards/qemu-check.sh`, so outputs compare with `itera-sim greedy`.
pub const DEFAULT_PROMPT: &str = "41,13,6,42,182,43,4,16";
/// Tokens generated when `ITERA_GENERATE` is unset.
pub const DEFAULT_GENERATE: usize = 16;
/// Quantization of the synthetic model when neither `ITERA_BLOB` nor `ITERA_QUANT` is set.
pub const DEFAULT_QUANT: &str = "int8";
/// Seed of the synthetic model's weights.
const SYNTHETIC_SEED: u64 = 42;

/// Runs the build-script work for the board this crate is; on any problem, fails the build
/// with one line that says what to do (`cargo::error`) and exits.
pub fn generate() {
    if let Err(message) = try_generate() {
        // One line: cargo prints it as `error: …` and fails the build, without the build
        // script's backtrace and output that a panic would bring.
        println!("cargo::error={}", message.replace('\n', " "));
        std::process::exit(0);
    }
}

fn try_generate() -> Result<(), String> {
    let out = PathBuf::from(env::var_os("OUT_DIR").ok_or("cargo sets OUT_DIR for build scripts")?);
    for var in ["ITERA_BLOB", "ITERA_QUANT", "ITERA_PROMPT", "ITERA_GENERATE"] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    let board = this_board()?;
    let target = env::var("TARGET").unwrap_or_default();
    if target != board.target {
        return Err(format!(
            "{} firmware is built for {} (boards/table.rs), not {target}: build it from boards/{} (its .cargo/config.toml picks the target) or with --target {}",
            board.name, board.target, board.name, board.target
        ));
    }

    let blob = Source::from_env()?;
    let aligned = itera_pack::AlignedBytes::from(blob.bytes.as_slice());
    let not_a_blob =
        |e: &dyn std::fmt::Display| format!("{}: not a model blob ({e}): pack one with itera-pack convert", blob.name);
    let mut consts = itera_pack::emit::rust_consts(&aligned).map_err(|e| not_a_blob(&e))?;
    let (arena, vocab) = {
        let b = itera_edge::Blob::parse(&aligned).map_err(|e| not_a_blob(&e))?;
        let m = itera_edge::Model::new(&b).map_err(|e| not_a_blob(&e))?;
        (m.arena_bytes(), m.config().vocab)
    };
    check_fit(board, &blob.name, blob.bytes.len(), arena)?;

    let prompt = env::var("ITERA_PROMPT").unwrap_or_else(|_| DEFAULT_PROMPT.into());
    let ids = prompt
        .split(',')
        .map(|t| t.trim().parse::<u32>().ok().filter(|&id| id < vocab))
        .collect::<Option<Vec<u32>>>()
        .filter(|ids| !ids.is_empty())
        .ok_or_else(|| {
            format!("ITERA_PROMPT={prompt}: give comma-separated token ids, each below the vocabulary ({vocab})")
        })?;
    let generate: usize = match env::var("ITERA_GENERATE") {
        Ok(v) => v.parse().map_err(|_| format!("ITERA_GENERATE={v}: give the number of tokens to generate"))?,
        Err(_) => DEFAULT_GENERATE,
    };
    let ids: Vec<String> = ids.iter().map(u32::to_string).collect();
    let _ = write!(
        consts,
        "/// The fixed prompt.\npub const PROMPT: &[u32] = &[{}];\n\
         /// Tokens to generate.\npub const GENERATE: usize = {generate};\n\
         /// The blob's name: its file name, or the synthetic model's.\n\
         pub const BLOB_NAME: &str = \"{}\";\n\
         /// Where the blob came from: the file named by ITERA_BLOB, or the synthetic model, said to be one.\n\
         pub const BLOB_ORIGIN: &str = \"{}\";\n\
         /// The board, its core and clock, for the banner (boards/table.rs).\n\
         pub const BOARD: &str = \"{}\";\n",
        ids.join(","),
        blob.file_name.escape_default(),
        blob.origin().escape_default(),
        banner(board).escape_default(),
    );
    if let Some(mhz) = board.clock_mhz {
        let _ = write!(
            consts,
            "/// The core clock the firmware sets, in MHz (boards/table.rs).\npub const CLOCK_MHZ: u32 = {mhz};\n"
        );
    }
    let write = |name: &str, bytes: &[u8]| {
        fs::write(out.join(name), bytes).map_err(|e| format!("writing {name} into OUT_DIR: {e}"))
    };
    write("model.itb", &blob.bytes)?;
    write("model_consts.rs", consts.as_bytes())?;
    if let Some(script) = memory_x(board) {
        write("memory.x", script.as_bytes())?;
        println!("cargo:rustc-link-search={}", out.display());
    }
    Ok(())
}

/// The table's entry for the crate being built (`itera-board-NAME`).
fn this_board() -> Result<&'static Board, String> {
    let package = env::var("CARGO_PKG_NAME").unwrap_or_default();
    package.strip_prefix("itera-board-").and_then(table::board).ok_or_else(|| {
        let names: Vec<_> = table::BOARDS.iter().map(|b| b.name).collect();
        format!("crate {package} is no board of boards/table.rs (itera-board-NAME, NAME one of {})", names.join(", "))
    })
}

/// The blob a firmware links: its bytes, where it came from, and whether it is synthetic.
struct Source {
    bytes: Vec<u8>,
    /// The `ITERA_BLOB` path as given, or the synthetic model's name.
    name: String,
    /// The path's file name, or the synthetic model's name.
    file_name: String,
    synthetic: bool,
}

impl Source {
    fn from_env() -> Result<Self, String> {
        match env::var_os("ITERA_BLOB") {
            Some(path) => {
                let path = PathBuf::from(path);
                println!("cargo:rerun-if-changed={}", path.display());
                let name = path.display().to_string();
                let bytes = fs::read(&path).map_err(|e| {
                    format!("ITERA_BLOB={name}: {e}: give the path of a blob packed by itera-pack convert (absolute, or relative to the board's folder)")
                })?;
                let file_name = path.file_name().map_or_else(|| name.clone(), |n| n.to_string_lossy().into_owned());
                Ok(Source { bytes, name, file_name, synthetic: false })
            }
            None => {
                let quant = env::var("ITERA_QUANT").unwrap_or_else(|_| DEFAULT_QUANT.into());
                let name = format!("synthetic micro {quant} (seed {SYNTHETIC_SEED})");
                Ok(Source { bytes: synthetic(&quant, &name)?, file_name: name.clone(), name, synthetic: true })
            }
        }
    }

    /// What the firmware's `blob:` line says: the file `ITERA_BLOB` named, by its file name
    /// (not its folder, so that a firmware built from the same blob anywhere is the same image
    /// and runs the same instructions), or the synthetic model, said to be one.
    fn origin(&self) -> String {
        if self.synthetic {
            format!(
                "{}, random weights: the text is noise (build with ITERA_BLOB=path.itb for a real model)",
                self.name
            )
        } else {
            format!("{} (ITERA_BLOB)", self.file_name)
        }
    }
}

/// `NAME (CORE, CHIP, CLOCK)`: what the firmware's first line says it runs on.
fn banner(board: &Board) -> String {
    let clock = match board.clock_mhz {
        Some(mhz) => format!("{mhz} MHz"),
        None => "-icount: 1 instruction = 1 ns".into(),
    };
    format!("{} ({}, {}, {clock})", board.name, board.core, board.chip)
}

/// The blob must leave the firmware's code room in flash, its arena the stack and statics
/// room in RAM: the same sums as `itera-sim fit`, so a blob `fit` accepts builds, and one it
/// refuses is refused here with a message instead of a linker overflow.
fn check_fit(board: &Board, name: &str, blob: usize, arena: usize) -> Result<(), String> {
    let flash_needed = blob + board.code_bytes;
    if flash_needed > board.flash_bytes {
        return Err(format!(
            "{name} is {blob} bytes: with the firmware's ~{} KiB of code it needs {flash_needed} bytes of flash, and {} has {} ({} KiB). \
             Pack a smaller or more quantized model (itera-pack convert … --quant int8 or int4); itera-sim fit BLOB shows what fits where",
            board.code_bytes >> 10,
            board.name,
            board.flash_bytes,
            board.flash_bytes >> 10
        ));
    }
    let ram_needed = arena + board.stack_bytes + board.static_bytes;
    if ram_needed > board.ram_bytes {
        return Err(format!(
            "{name} needs an arena of {arena} bytes: with ~{} KiB of stack and statics that is {ram_needed} bytes of RAM, and {} has {} ({} KiB). \
             Pack a smaller model; itera-sim fit BLOB shows what fits where",
            (board.stack_bytes + board.static_bytes) >> 10,
            board.name,
            board.ram_bytes,
            board.ram_bytes >> 10
        ));
    }
    Ok(())
}

/// The `memory.x` the board's runtime crate links with, from the table; `None` when the HAL
/// brings its own.
pub fn memory_x(board: &Board) -> Option<String> {
    let region =
        |name: &str, origin: u32, bytes: u64| format!("  {name:<5} : ORIGIN = {origin:#010x}, LENGTH = {bytes:#x}\n");
    let (flash, ram) = (board.flash_bytes as u64, board.ram_bytes as u64);
    let header = format!("/* {}: written by itera-board-build from boards/table.rs. */\nMEMORY\n{{\n", board.name);
    let script = match board.memory_map {
        MemoryMap::CortexM { flash_origin, ram_origin } => {
            format!("{header}{}{}}}\n", region("FLASH", flash_origin, flash), region("RAM", ram_origin, ram))
        }
        MemoryMap::CortexMBoot2 { flash_origin, boot2_bytes, ram_origin } => format!(
            "{header}{}{}{}}}\n\nEXTERN(BOOT2_FIRMWARE)\n\nSECTIONS\n{{\n  \
             /* boot2 first, at the start of flash, where the boot ROM looks for it. */\n  \
             .boot2 ORIGIN(BOOT2) :\n  {{\n    KEEP(*(.boot2));\n  }} > BOOT2\n}} INSERT BEFORE .text;\n",
            region("BOOT2", flash_origin, boot2_bytes.into()),
            region("FLASH", flash_origin + boot2_bytes, flash),
            region("RAM", ram_origin, ram)
        ),
        MemoryMap::RiscvRt { flash_origin, ram_origin } => {
            let mut script =
                format!("{header}{}{}}}\n\n", region("FLASH", flash_origin, flash), region("RAM", ram_origin, ram));
            for (alias, to) in [
                ("TEXT", "FLASH"),
                ("RODATA", "FLASH"),
                ("DATA", "RAM"),
                ("BSS", "RAM"),
                ("HEAP", "RAM"),
                ("STACK", "RAM"),
            ] {
                let _ = writeln!(script, "REGION_ALIAS(\"REGION_{alias}\", {to});");
            }
            script
        }
        MemoryMap::Hal => return None,
    };
    Some(script)
}

/// Packs the seeded synthetic micro model with the quantization preset `quant`.
fn synthetic(quant: &str, name: &str) -> Result<Vec<u8>, String> {
    let sd = itera_pack::synthetic::state_dict(&itera_pack::synthetic::micro_config(), SYNTHETIC_SEED);
    let opts = itera_pack::PackOptions {
        quant: itera_pack::quant::QuantPolicy::parse_spec(quant).map_err(|e| format!("ITERA_QUANT={quant}: {e}"))?,
        meta: vec![("source".into(), name.into())],
        ..Default::default()
    };
    let builder = itera_pack::convert::build(&sd, &opts).map_err(|e| format!("synthetic model: {e}"))?;
    builder.finish().map_err(|e| format!("synthetic blob: {e}"))
}
