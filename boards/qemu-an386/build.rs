//! Chooses the model blob at build time and generates its constants.
//!
//! `ITERA_BLOB=path/to/model.itb` links that blob; without it a seeded synthetic model of the
//! micro checkpoint's shape is packed here, so `cargo build` works on a fresh clone.
//! `ITERA_PROMPT=1,2,3` and `ITERA_GENERATE=N` set the fixed prompt and the tokens to generate.

use std::{env, fs, path::PathBuf};

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    for var in ["ITERA_BLOB", "ITERA_PROMPT", "ITERA_GENERATE"] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    println!("cargo:rerun-if-changed=memory.x");

    let blob = match env::var_os("ITERA_BLOB") {
        Some(path) => {
            println!("cargo:rerun-if-changed={}", PathBuf::from(&path).display());
            fs::read(&path).unwrap_or_else(|e| panic!("ITERA_BLOB={}: {e}", PathBuf::from(&path).display()))
        }
        None => {
            let sd = itera_pack::synthetic::state_dict(&itera_pack::synthetic::micro_config(), 42);
            let opts = itera_pack::PackOptions {
                meta: vec![("source".into(), "synthetic micro (seed 42)".into())],
                ..Default::default()
            };
            let builder = itera_pack::convert::build(&sd, &opts).unwrap_or_else(|e| panic!("synthetic model: {e}"));
            builder.finish().unwrap_or_else(|e| panic!("synthetic blob: {e}"))
        }
    };
    let aligned = itera_pack::inspect::AlignedBytes::from(blob.as_slice());
    let mut consts = itera_pack::emit::rust_consts(&aligned).unwrap_or_else(|e| panic!("model blob: {e}"));
    let prompt = env::var("ITERA_PROMPT").unwrap_or_else(|_| "41,13,6,42,182,43,4,16".into());
    let generate: usize = env::var("ITERA_GENERATE").ok().and_then(|v| v.parse().ok()).unwrap_or(16);
    consts += &format!(
        "/// The fixed prompt.\npub const PROMPT: &[u32] = &[{prompt}];\n/// Tokens to generate.\npub const GENERATE: usize = {generate};\n"
    );
    fs::write(out.join("model.itb"), &blob).expect("write blob");
    fs::write(out.join("model_consts.rs"), consts).expect("write consts");
    fs::copy("memory.x", out.join("memory.x")).expect("copy memory.x");
    println!("cargo:rustc-link-search={}", out.display());
}
