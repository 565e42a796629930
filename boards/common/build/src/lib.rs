//! The build script every board firmware shares.
//!
//! A board's `build.rs` is one call, with the board's memory from [`memory`] (the file
//! `boards/memory.rs`, which `itera-sim fit` reads too):
//!
//! ```ignore
//! fn main() {
//!     itera_board_build::Board::new(itera_board_build::memory::STM32F411).generate();
//! }
//! ```
//!
//! It writes into `OUT_DIR`:
//! - `model.itb`: the blob named by `ITERA_BLOB`, or, when unset, a seeded synthetic model of the
//!   micro checkpoint's shape packed here (quantized as `ITERA_QUANT` says, `int8` by default
//!   for real boards), so `cargo build` works on a fresh clone;
//! - `model_consts.rs`: `BLOB_BYTES`, `ARENA_BYTES`, `MACS_PER_TOKEN`, `VOCAB`, `MAX_SEQ` (from
//!   `itera_pack::emit::rust_consts`), plus `PROMPT` (`ITERA_PROMPT=1,2,3`), `GENERATE`
//!   (`ITERA_GENERATE=N`) and `BLOB_SOURCE`;
//! - `memory.x` copied from the board folder (when [`Board::memory_x`] is set), with `OUT_DIR`
//!   added to the linker search path.
//!
//! It fails the build with a plain message when the blob cannot fit the board's flash or its
//! arena the board's RAM, instead of a linker overflow error.

use std::{env, fs, path::PathBuf};

/// Each board's flash and RAM and the firmware's stack: `boards/memory.rs`, shared with
/// `itera-sim fit`.
#[path = "../../../memory.rs"]
pub mod memory;

/// What a board offers, for the fit checks, and what it defaults to.
#[derive(Clone, Debug)]
pub struct Board {
    /// Flash available to code + blob (0: do not check).
    pub flash_bytes: usize,
    /// RAM available to the arena, stack and statics (0: do not check).
    pub ram_bytes: usize,
    /// Flash bytes kept for the firmware's code when checking the blob fits.
    pub code_reserve: usize,
    /// RAM bytes kept for the stack (the `Model` and `Session` live there): the measured
    /// [`memory::STACK_BYTES`] unless set.
    pub stack_reserve: usize,
    /// Quantization of the synthetic model when `ITERA_BLOB` is unset and `ITERA_QUANT` too.
    pub default_quant: &'static str,
    /// Copy `memory.x` from the crate folder into `OUT_DIR` and add it to the link search path.
    pub memory_x: bool,
}

impl Default for Board {
    fn default() -> Self {
        Board {
            flash_bytes: 0,
            ram_bytes: 0,
            code_reserve: 128 * 1024,
            stack_reserve: memory::STACK_BYTES,
            default_quant: "int8",
            memory_x: true,
        }
    }
}

/// The default fixed prompt (ids of the micro tokenizer) and number of tokens to generate; the
/// same as `boards/qemu-an386`, so outputs compare with `itera-sim greedy`.
pub const DEFAULT_PROMPT: &str = "41,13,6,42,182,43,4,16";
/// Tokens generated when `ITERA_GENERATE` is unset.
pub const DEFAULT_GENERATE: usize = 16;

impl Board {
    /// A board with this memory (one of [`memory`]'s) and the defaults for the rest.
    pub fn new(memory: memory::Memory) -> Self {
        Board { flash_bytes: memory.flash_bytes, ram_bytes: memory.ram_bytes, ..Default::default() }
    }

    /// Runs the build-script work; panics (failing the build) with a message on any problem.
    pub fn generate(&self) {
        let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
        for var in ["ITERA_BLOB", "ITERA_QUANT", "ITERA_PROMPT", "ITERA_GENERATE"] {
            println!("cargo:rerun-if-env-changed={var}");
        }

        let (blob, source) = match env::var_os("ITERA_BLOB") {
            Some(path) => {
                let path = PathBuf::from(path);
                println!("cargo:rerun-if-changed={}", path.display());
                let bytes = fs::read(&path).unwrap_or_else(|e| panic!("ITERA_BLOB={}: {e}", path.display()));
                let name = path.file_name().map_or_else(|| "blob".into(), |n| n.to_string_lossy().into_owned());
                (bytes, name)
            }
            None => {
                let quant = env::var("ITERA_QUANT").unwrap_or_else(|_| self.default_quant.into());
                (synthetic(&quant), format!("synthetic micro {quant} (seed 42)"))
            }
        };

        let aligned = itera_pack::AlignedBytes::from(blob.as_slice());
        let mut consts = itera_pack::emit::rust_consts(&aligned).unwrap_or_else(|e| panic!("model blob: {e}"));
        let (arena, vocab) = {
            let b = itera_edge::Blob::parse(&aligned).unwrap_or_else(|e| panic!("model blob: {e}"));
            let m = itera_edge::Model::new(&b).unwrap_or_else(|e| panic!("model blob: {e}"));
            (m.arena_bytes(), m.config().vocab)
        };
        self.check_fit(blob.len(), arena);

        let prompt = env::var("ITERA_PROMPT").unwrap_or_else(|_| DEFAULT_PROMPT.into());
        let ids: Vec<u32> = prompt
            .split(',')
            .map(|t| t.trim().parse().unwrap_or_else(|_| panic!("ITERA_PROMPT: `{t}` is not a token id")))
            .collect();
        if ids.is_empty() || ids.iter().any(|&t| t >= vocab) {
            panic!("ITERA_PROMPT={prompt}: needs at least one id, each below the vocabulary ({vocab})");
        }
        let generate: usize = match env::var("ITERA_GENERATE") {
            Ok(v) => v.parse().unwrap_or_else(|_| panic!("ITERA_GENERATE={v}: not a number")),
            Err(_) => DEFAULT_GENERATE,
        };
        let ids: Vec<String> = ids.iter().map(u32::to_string).collect();
        consts += &format!(
            "/// The fixed prompt.\npub const PROMPT: &[u32] = &[{}];\n\
             /// Tokens to generate.\npub const GENERATE: usize = {generate};\n\
             /// Where the blob came from.\npub const BLOB_SOURCE: &str = \"{}\";\n",
            ids.join(","),
            source.escape_default(),
        );
        fs::write(out.join("model.itb"), &blob).expect("write model.itb");
        fs::write(out.join("model_consts.rs"), consts).expect("write model_consts.rs");
        if self.memory_x {
            println!("cargo:rerun-if-changed=memory.x");
            fs::copy("memory.x", out.join("memory.x")).expect("copy memory.x");
            println!("cargo:rustc-link-search={}", out.display());
        }
    }

    fn check_fit(&self, blob: usize, arena: usize) {
        if self.flash_bytes > 0 && blob + self.code_reserve > self.flash_bytes {
            panic!(
                "the model blob is {blob} bytes; with ~{} KiB of code it does not fit this board's {} KiB of flash. \
                 Pack a smaller or more quantized model (itera-pack convert … --quant int8 or int4).",
                self.code_reserve / 1024,
                self.flash_bytes / 1024
            );
        }
        if self.ram_bytes > 0 && arena + self.stack_reserve > self.ram_bytes {
            panic!(
                "the model needs an arena of {arena} bytes; with ~{} KiB of stack it does not fit this board's {} KiB of RAM.",
                self.stack_reserve / 1024,
                self.ram_bytes / 1024
            );
        }
    }
}

/// Packs the seeded synthetic micro model with the quantization preset `quant`.
fn synthetic(quant: &str) -> Vec<u8> {
    let sd = itera_pack::synthetic::state_dict(&itera_pack::synthetic::micro_config(), 42);
    let opts = itera_pack::PackOptions {
        quant: itera_pack::quant::QuantPolicy::parse_spec(quant).unwrap_or_else(|e| panic!("ITERA_QUANT: {e}")),
        meta: vec![("source".into(), format!("synthetic micro {quant} (seed 42)"))],
        ..Default::default()
    };
    let builder = itera_pack::convert::build(&sd, &opts).unwrap_or_else(|e| panic!("synthetic model: {e}"));
    builder.finish().unwrap_or_else(|e| panic!("synthetic blob: {e}"))
}
