//! Writes a seed corpus for the fuzz targets: `seeds OUT_DIR [FIXTURES_DIR]`.
//!
//! - `OUT/blob_session`: synthetic tiny blobs (f32, int8, int4, f32 with a tokenizer table).
//! - `OUT/safetensors` and `OUT/checkpoint`: the tiny synthetic state dict as safetensors.
//! - `OUT/checkpoint`: each fixture `.pt` (when FIXTURES_DIR is given) with every tensor
//!   storage cut to 64 bytes, so the pickle, zip layout and names are real but an input
//!   stays a few KiB (full-size multi-MiB inputs would slow libFuzzer to a crawl).
//! - `OUT/tokenizer_json`: a synthetic word and char tokenizer, plus the fixture JSONs.
//!
//! Nothing here is committed: the corpus is built on the fly by `scripts/fuzz-smoke`.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use itera_pack::checkpoint::safetensors::safetensors_to_vec;
use itera_pack::convert::{build, PackOptions};
use itera_pack::quant::QuantPolicy;
use itera_pack::synthetic::{state_dict, tiny_config};
use itera_pack::tokenizer_json::parse_tokenizer;

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn write(dir: &Path, name: &str, bytes: &[u8]) -> Res<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join(name), bytes)?;
    Ok(())
}

/// A copy of the zip at `path` with every `*/data/*` entry cut to at most 64 bytes.
fn shrink_pt(path: &Path) -> Res<Vec<u8>> {
    let mut archive = zip::ZipArchive::new(std::fs::File::open(path)?)?;
    let mut out = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let stored = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for i in 0..archive.len() {
        let mut entry = archive.by_index(i)?;
        let name = entry.name().to_string();
        let mut bytes = Vec::new();
        let cap = if name.contains("/data/") { 64 } else { 1 << 20 };
        (&mut entry).take(cap).read_to_end(&mut bytes)?;
        out.start_file(name, stored)?;
        out.write_all(&bytes)?;
    }
    Ok(out.finish()?.into_inner())
}

fn main() -> Res<()> {
    let mut args = std::env::args_os().skip(1);
    let out = PathBuf::from(args.next().ok_or("usage: seeds OUT_DIR [FIXTURES_DIR]")?);
    let fixtures = args.next().map(PathBuf::from);

    let config = tiny_config();
    let sd = state_dict(&config, 1);
    let words: Vec<String> = (1..config.vocab).map(|i| format!("\"w{i}\": {i}")).collect();
    let word_json = format!("{{\"token_to_id\": {{\"<unk>\": 0, {}}}}}", words.join(", "));
    let chars: Vec<String> = (0..config.vocab).map(|i| format!("\"{}\": {i}", char::from(b'0' + i as u8))).collect();
    let char_json = format!("{{\"level\": \"char\", \"token2id\": {{{}}}}}", chars.join(", "));

    let blobs = out.join("blob_session");
    for (name, quant, tokenizer) in [
        ("f32.itb", "f32", None),
        ("int8.itb", "int8", None),
        ("int4.itb", "int4", None),
        ("f32-tok.itb", "f32", Some(parse_tokenizer(&word_json)?)),
    ] {
        let opts = PackOptions { quant: QuantPolicy::parse_spec(quant)?, tokenizer, ..PackOptions::default() };
        write(&blobs, name, &build(&sd, &opts)?.finish()?)?;
    }

    let st = safetensors_to_vec(&sd.tensors)?;
    write(&out.join("safetensors"), "tiny.safetensors", &st)?;
    write(&out.join("checkpoint"), "tiny.safetensors", &st)?;

    let tok = out.join("tokenizer_json");
    write(&tok, "word.json", word_json.as_bytes())?;
    write(&tok, "char.json", char_json.as_bytes())?;

    if let Some(dir) = fixtures {
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()).map(String::from) else { continue };
            if name.ends_with(".pt") {
                write(&out.join("checkpoint"), &name, &shrink_pt(&path)?)?;
            } else if name.starts_with("tokenizer") && name.ends_with(".json") {
                write(&tok, &name, &std::fs::read(&path)?)?;
            }
        }
    }
    Ok(())
}
