//! Hostile checkpoints (`.pt` zips, pickles, safetensors) against the packer's readers.
//!
//! Every case runs `itera-pack convert IN -o OUT` and requires a refusal that names what is
//! wrong and where (entry, tensor, global), says what to do, and leaves no `OUT`; the last
//! ones check that what a training checkpoint holds beside its weights (a config object,
//! optimizer state, NumPy scalars) is read as data: it packs, or a config that contradicts
//! the weights is refused.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use crate::support::{Case, Class, Outcome, Scratch, Tool};
use itera_test_support::torch::{pickle_config_object, pickle_item, pickle_numpy_scalar, pt_entries_with};
use itera_test_support::torch::{pt_bytes, pt_entries, state_dict_pickle, tiny_tensors, training_pickle};
use itera_test_support::torch::{zip_entry, zip_of, PtTensor, ZipEntry};

/// `itera-pack convert IN -o OUT` on `input`, with OUT in `s`.
fn convert(class: Class, name: &str, s: &Scratch, input: &Path) -> Case {
    crate::support::convert(class, name, input, &s.path("out.itb"), &[])
}

/// The file name of `p`, which every checkpoint message must carry.
fn file_name(p: &Path) -> String {
    p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

/// The refusal's one line (the harness has checked there is exactly one).
fn line(o: &Outcome) -> &str {
    crate::support::error_line(&o.stderr).unwrap_or_default()
}

/// Offset of the central-directory record of entry `name` in `zip`.
fn central_record(zip: &[u8], name: &str) -> usize {
    let n = name.as_bytes();
    (0..zip.len().saturating_sub(46 + n.len()))
        .find(|&i| {
            zip[i..i + 4] == *b"PK\x01\x02"
                && usize::from(u16::from_le_bytes([zip[i + 28], zip[i + 29]])) == n.len()
                && zip[i + 46..i + 46 + n.len()] == *n
        })
        .expect("the entry's central record")
}

/// Adds `delta` to the little-endian u32 at `at`.
fn bump_u32(bytes: &mut [u8], at: usize, delta: i64) {
    let v = u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
    let v = (i64::from(v) + delta) as u32;
    bytes[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

/// The tiny model's `.pt`, stored as `torch.save` writes it.
fn tiny_pt() -> Vec<u8> {
    pt_bytes(&tiny_tensors())
}

/// The storage entry attacked in class 1: the embedding's (tensor 0, the largest).
const STORAGE: &str = "archive/data/0";

// ---- class 1: zip integrity --------------------------------------------------------------

#[test]
fn class1_flipped_storage_byte_is_refused_naming_the_entry() {
    let s = Scratch::new("c1-flip");
    let mut zip = tiny_pt();
    let ZipEntry { data: start, len, .. } = zip_entry(&zip, STORAGE);
    zip[start + len / 2] ^= 0x01;
    let pt = s.write("flipped.pt", &zip);
    let o = convert(Class::ZipIntegrity, "flipped storage byte, CRC untouched", &s, &pt).refused(&[
        &file_name(&pt),
        "zip entry 'archive/data/0' is damaged",
        "CRC-32",
        "download",
    ]);
    // The bytes' CRC and the recorded one are both shown, so the damage can be confirmed.
    assert!(line(&o).contains("the directory records"), "{}", line(&o));
}

#[test]
fn class1_wrong_crc_in_both_headers_is_refused() {
    // A CRC changed consistently in the local header and the central directory: only the
    // CRC of the bytes actually read can tell.
    let s = Scratch::new("c1-crc");
    let mut zip = tiny_pt();
    let (local, central) = (zip_entry(&zip, STORAGE).header, central_record(&zip, STORAGE));
    bump_u32(&mut zip, local + 14, 1);
    bump_u32(&mut zip, central + 16, 1);
    let pt = s.write("wrong-crc.pt", &zip);
    convert(Class::ZipIntegrity, "wrong CRC, headers agree", &s, &pt).refused(&[
        &file_name(&pt),
        "'archive/data/0' is damaged",
        "its bytes have CRC-32",
        "re-export it with torch.save",
    ]);
}

#[test]
fn class1_local_crc_differing_from_the_directory_is_refused() {
    let s = Scratch::new("c1-local-crc");
    let mut zip = tiny_pt();
    let local = zip_entry(&zip, STORAGE).header;
    bump_u32(&mut zip, local + 14, 1);
    let pt = s.write("local-crc.pt", &zip);
    convert(Class::ZipIntegrity, "local CRC differs from the directory", &s, &pt).refused(&[
        &file_name(&pt),
        "'archive/data/0' is damaged",
        "local header CRC-32",
        "download",
    ]);
}

#[test]
fn class1_understated_local_size_is_refused() {
    let s = Scratch::new("c1-under");
    let mut zip = tiny_pt();
    let h = zip_entry(&zip, STORAGE).header;
    bump_u32(&mut zip, h + 18, -4);
    bump_u32(&mut zip, h + 22, -4);
    let pt = s.write("understated.pt", &zip);
    convert(Class::ZipIntegrity, "local header understates the size", &s, &pt).refused(&[
        &file_name(&pt),
        "'archive/data/0' is damaged",
        "local header size",
        "download",
    ]);
}

#[test]
fn class1_overstated_local_size_is_refused() {
    let s = Scratch::new("c1-over");
    let mut zip = tiny_pt();
    let h = zip_entry(&zip, STORAGE).header;
    bump_u32(&mut zip, h + 18, 4);
    bump_u32(&mut zip, h + 22, 4);
    let pt = s.write("overstated.pt", &zip);
    convert(Class::ZipIntegrity, "local header overstates the size", &s, &pt).refused(&[
        &file_name(&pt),
        "'archive/data/0' is damaged",
        "local header size",
        "download",
    ]);
}

#[test]
fn class1_local_name_differing_from_the_directory_is_refused() {
    let s = Scratch::new("c1-name");
    let mut zip = tiny_pt();
    let h = zip_entry(&zip, STORAGE).header;
    // "archive/data/0" -> "archive/dat4/0" in the local header only.
    zip[h + 30 + 11] = b'4';
    let pt = s.write("local-name.pt", &zip);
    convert(Class::ZipIntegrity, "local header names another entry", &s, &pt).refused(&[
        &file_name(&pt),
        "'archive/data/0' is damaged",
        "its local header names it 'archive/dat4/0'",
    ]);
}

#[test]
fn class1_flipped_byte_in_a_deflated_pickle_is_refused() {
    let s = Scratch::new("c1-deflate");
    let mut zip = zip_of(&pt_entries(&tiny_tensors()), true);
    let ZipEntry { data: start, len, .. } = zip_entry(&zip, "archive/data.pkl");
    zip[start + len / 2] ^= 0x10;
    let pt = s.write("deflated.pt", &zip);
    convert(Class::ZipIntegrity, "flipped byte in deflated data.pkl", &s, &pt).refused(&[
        &file_name(&pt),
        "zip entry 'archive/data.pkl' is damaged",
        "download",
    ]);
}

// ---- class 3: memory budget --------------------------------------------------------------

/// A float32 tensor of `numel` elements whose values the pickle does not carry (only its
/// shape: the storage entry is written separately).
fn shape_only(numel: usize) -> PtTensor {
    PtTensor::F32 { shape: vec![numel], data: Vec::new() }
}

/// Writes `numel` float32 values that deflate about 150:1 (under the packer's 1000:1 ratio
/// cap, yet megabytes from kilobytes) to `w`, a chunk at a time: the test process itself
/// stays small, since a child's peak RSS counts what its parent held when it forked.
fn write_compressible_storage(w: &mut impl std::io::Write, numel: usize, seed: u32) {
    let mut state = seed | 1;
    let mut chunk = Vec::with_capacity(64 << 10);
    for i in 0..numel {
        let v = if i % 128 == 0 {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state
        } else {
            0
        };
        chunk.extend_from_slice(&v.to_le_bytes());
        if chunk.len() == chunk.capacity() || i + 1 == numel {
            w.write_all(&chunk).expect("zip write");
            chunk.clear();
        }
    }
}

/// The budget's refusal: what was being read, the default budget, and the flag to raise it.
const BUDGET_NEEDLES: [&str; 3] = ["reading ", "over the budget of 64 MiB", "pass --max-memory MIB to raise it"];

fn refused_over_budget(case: Case, pt: &Path, what: Option<&str>) -> Outcome {
    let mut needles = vec![file_name(pt)];
    needles.extend(what.map(str::to_string));
    needles.extend(BUDGET_NEEDLES.iter().map(|n| n.to_string()));
    let needles: Vec<&str> = needles.iter().map(String::as_str).collect();
    case.refused(&needles)
}

#[test]
fn class3_large_deflated_entries_are_summed_against_the_budget() {
    // Ten 8 MiB storages, each deflated within the ratio cap: 80 MiB in all from a file of
    // about half a megabyte. Each entry alone is fine; the sum is not.
    let s = Scratch::new("c3-entries");
    let numel = 2 << 20;
    let tensors: Vec<(String, PtTensor)> = (0..10).map(|i| (format!("w{i}"), shape_only(numel))).collect();
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let stored = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    let deflated = stored.compression_method(zip::CompressionMethod::Deflated);
    w.start_file("archive/data.pkl", stored).expect("zip entry");
    std::io::Write::write_all(&mut w, &state_dict_pickle(&tensors)).expect("zip write");
    w.start_file("archive/byteorder", stored).expect("zip entry");
    std::io::Write::write_all(&mut w, b"little").expect("zip write");
    for i in 0..10 {
        w.start_file(format!("archive/data/{i}"), deflated).expect("zip entry");
        write_compressible_storage(&mut w, numel, i + 1);
    }
    let zip = w.finish().expect("zip finish").into_inner();
    assert!(zip.len() < 2 << 20, "the input is {} bytes", zip.len());
    let pt = s.write("entries.pt", &zip);
    // Whether the entry or the tensor made from it crosses the line is the reader's affair.
    refused_over_budget(convert(Class::MemoryBudget, "deflated entries summed", &s, &pt), &pt, None);
}

#[test]
fn class3_views_sharing_one_storage_are_counted_each() {
    // Ten 8 MiB tensors over one deflated 8 MiB storage (as tied weights share one): each
    // view is materialised, so each counts, though the storage is read once.
    let s = Scratch::new("c3-views");
    let numel = 2 << 20;
    let tensors: Vec<(String, PtTensor)> = (0..10).map(|i| (format!("view{i}"), shape_only(numel))).collect();
    let mut pickle = state_dict_pickle(&tensors);
    // Storage keys "0".."9" are the pickle's only one-character strings: point them all at "0".
    for i in 0..pickle.len() - 6 {
        if pickle[i..i + 5] == *b"X\x01\x00\x00\x00" && pickle[i + 5].is_ascii_digit() {
            pickle[i + 5] = b'0';
        }
    }
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let stored = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    w.start_file("archive/data.pkl", stored).expect("zip entry");
    std::io::Write::write_all(&mut w, &pickle).expect("zip write");
    w.start_file("archive/data/0", stored.compression_method(zip::CompressionMethod::Deflated)).expect("zip entry");
    write_compressible_storage(&mut w, numel, 7);
    let pt = s.write("views.pt", &w.finish().expect("zip finish").into_inner());
    refused_over_budget(convert(Class::MemoryBudget, "views sharing one storage", &s, &pt), &pt, Some("tensor 'view"));
}

#[test]
fn class3_pickle_within_every_count_limit_is_bounded_by_its_bytes() {
    // A dict of 100,000 pairs, then OrderedDict(d) once per 6 bytes: a megabyte of pickle,
    // well within the stack, memo and value counts, that would copy 1.6 MB per opcode.
    let s = Scratch::new("c3-pickle");
    let mut p = b"\x80\x02K\x07q\x00ccollections\nOrderedDict\nq\x01}q\x02(".to_vec();
    for _ in 0..100_000 {
        p.extend_from_slice(b"h\x00h\x00");
    }
    p.push(b'u');
    for _ in 0..100_000 {
        p.extend_from_slice(b"h\x01h\x02\x85R");
    }
    p.push(b'.');
    let entries = vec![("archive/data.pkl".to_string(), p), ("archive/byteorder".to_string(), b"little".to_vec())];
    let pt = s.write("copies.pt", &zip_of(&entries, false));
    refused_over_budget(convert(Class::MemoryBudget, "pickle of dict copies", &s, &pt), &pt, Some("data.pkl's values"));
}

/// A safetensors file: the 8-byte header length, `header`, then `data_len` zero bytes.
fn safetensors(header: &str, data_len: usize) -> Vec<u8> {
    let mut v = (header.len() as u64).to_le_bytes().to_vec();
    v.extend_from_slice(header.as_bytes());
    v.resize(v.len() + data_len, 0);
    v
}

/// One header entry: `"name":{"dtype":"F32","shape":[n],"data_offsets":[begin,end]}`.
fn st_entry(name: &str, begin: usize, end: usize) -> String {
    format!(r#""{name}":{{"dtype":"F32","shape":[{}],"data_offsets":[{begin},{end}]}}"#, (end - begin) / 4)
}

#[test]
fn class3_aliased_safetensors_offsets_do_not_multiply_the_data() {
    // 500 tensors over the same 4 MiB: 2 GB of output from a 4 MB file, if accepted.
    let s = Scratch::new("c3-alias");
    let len = 4 << 20;
    let entries: Vec<String> = (0..500).map(|i| st_entry(&format!("t{i:03}"), 0, len)).collect();
    let st = s.write("aliased.safetensors", &safetensors(&format!("{{{}}}", entries.join(",")), len));
    convert(Class::MemoryBudget, "aliased safetensors offsets", &s, &st).refused(&[
        &file_name(&st),
        "tensors 't000' (bytes 0..4194304) and 't001' (bytes 0..4194304) overlap",
        "re-export",
    ]);
}

#[test]
fn class3_safetensors_header_of_many_entries_is_refused() {
    // 120,000 empty tensors: a 6 MB header, under the 8 MiB cap, over the tensor count.
    let s = Scratch::new("c3-entries-st");
    let mut header = String::from("{");
    for i in 0..120_000 {
        let sep = if i == 0 { "" } else { "," };
        header.push_str(&format!(r#"{sep}"t{i}":{{"dtype":"F32","shape":[0],"data_offsets":[0,0]}}"#));
    }
    header.push('}');
    let st = s.write("many.safetensors", &safetensors(&header, 0));
    convert(Class::MemoryBudget, "safetensors header of many entries", &s, &st).refused(&[
        &file_name(&st),
        "the header lists more than 16384 tensors",
        "re-export",
    ]);
}

#[test]
fn class3_safetensors_header_of_numbers_is_refused() {
    // A shape of three million dimensions (6 MB of "1,"): never collected into a vector.
    let s = Scratch::new("c3-numbers");
    let ones = "1,".repeat(3_000_000);
    let ones = ones.trim_end_matches(',');
    let header = format!(r#"{{"t":{{"dtype":"F32","shape":[{ones}],"data_offsets":[0,4]}}}}"#);
    let st = s.write("numbers.safetensors", &safetensors(&header, 4));
    convert(Class::MemoryBudget, "safetensors header of numbers", &s, &st).refused(&[
        &file_name(&st),
        "tensor 't'",
        "shape has more than 8 dimensions",
        "re-export",
    ]);
}

#[test]
fn class3_safetensors_header_over_the_size_cap_is_refused() {
    // Metadata padding the header to 9 MiB: refused on its length, before it is parsed.
    let s = Scratch::new("c3-big-header");
    let mut header = String::from(r#"{"__metadata__":{"pad":""#);
    header.extend(std::iter::repeat_n('x', 9 << 20));
    header.push_str(&format!(r#""}},{}}}"#, st_entry("t", 0, 4)));
    let st = s.write("big-header.safetensors", &safetensors(&header, 4));
    convert(Class::MemoryBudget, "safetensors header over the cap", &s, &st).refused(&[
        &file_name(&st),
        "exceeds the limit of 8388608 bytes",
        "re-export",
    ]);
}

// ---- class 9: format laxity --------------------------------------------------------------

/// The tiny model's `.pt` with one more entry, `extra`, renamed after writing to `dupe`
/// (a zip writer refuses to write a name twice; a hostile file simply has it twice).
fn pt_with_duplicate(extra: &str, dupe: &str, content: Vec<u8>) -> Vec<u8> {
    assert_eq!(extra.len(), dupe.len());
    let mut entries = pt_entries(&tiny_tensors());
    entries.push((extra.to_string(), content));
    let mut zip = zip_of(&entries, false);
    let (from, to) = (extra.as_bytes(), dupe.as_bytes());
    let mut i = 0;
    while i + from.len() <= zip.len() {
        if &zip[i..i + from.len()] == from {
            zip[i..i + from.len()].copy_from_slice(to);
        }
        i += 1;
    }
    zip
}

#[test]
fn class9_duplicate_storage_entry_is_refused_naming_it() {
    let s = Scratch::new("c9-dup");
    let zip = pt_with_duplicate("archive/dupe/0", STORAGE, vec![0; 64]);
    let pt = s.write("dup.pt", &zip);
    convert(Class::FormatLaxity, "duplicate storage entry", &s, &pt).refused(&[
        &file_name(&pt),
        "zip entry 'archive/data/0' appears more than once",
        "re-export it with torch.save",
    ]);
}

#[test]
fn class9_duplicate_data_pkl_is_refused() {
    // A second data.pkl (the one a last-wins reader would use) calling os.system.
    let s = Scratch::new("c9-dup-pkl");
    let evil = b"\x80\x02cos\nsystem\nX\x02\x00\x00\x00lsR.".to_vec();
    let zip = pt_with_duplicate("archive/data.pkX", "archive/data.pkl", evil);
    let pt = s.write("dup-pkl.pt", &zip);
    convert(Class::FormatLaxity, "duplicate data.pkl", &s, &pt)
        .refused(&[&file_name(&pt), "zip entry 'archive/data.pkl' appears more than once"]);
}

#[test]
fn class9_overlapping_safetensors_ranges_are_refused_naming_both() {
    let s = Scratch::new("c9-overlap");
    let header = format!("{{{},{}}}", st_entry("a", 0, 16), st_entry("b", 8, 24));
    let st = s.write("overlap.safetensors", &safetensors(&header, 24));
    convert(Class::FormatLaxity, "overlapping safetensors ranges", &s, &st).refused(&[
        &file_name(&st),
        "tensors 'a' (bytes 0..16) and 'b' (bytes 8..24) overlap",
        "re-export",
    ]);
}

#[test]
fn class9_aliased_safetensors_ranges_are_refused_naming_both() {
    let s = Scratch::new("c9-alias");
    let header = format!("{{{},{}}}", st_entry("embedding.weight", 0, 32), st_entry("lm_head.weight", 0, 32));
    let st = s.write("alias.safetensors", &safetensors(&header, 32));
    convert(Class::FormatLaxity, "aliased safetensors ranges", &s, &st).refused(&[
        &file_name(&st),
        "tensors 'embedding.weight' (bytes 0..32) and 'lm_head.weight' (bytes 0..32) overlap",
    ]);
}

#[test]
fn class9_safetensors_range_inside_another_is_refused() {
    // The inner range starts after the outer one: an overlap with the tensor before it.
    let s = Scratch::new("c9-inner");
    let header = format!("{{{},{},{}}}", st_entry("outer", 0, 64), st_entry("inner", 16, 32), st_entry("tail", 64, 68));
    let st = s.write("inner.safetensors", &safetensors(&header, 68));
    convert(Class::FormatLaxity, "range inside another", &s, &st)
        .refused(&[&file_name(&st), "tensors 'outer' (bytes 0..64) and 'inner' (bytes 16..32) overlap"]);
}

#[test]
fn class9_duplicate_safetensors_names_are_refused() {
    let s = Scratch::new("c9-dup-st");
    let header = format!("{{{},{}}}", st_entry("w", 0, 8), st_entry("w", 8, 16));
    let st = s.write("dup.safetensors", &safetensors(&header, 16));
    convert(Class::FormatLaxity, "duplicate safetensors names", &s, &st)
        .refused(&[&file_name(&st), "tensor 'w' appears twice"]);
}

// ---- class 10: messages ------------------------------------------------------------------

/// A `.pt` whose data.pkl is `pickle`.
fn pt_with_pickle(s: &Scratch, name: &str, pickle: &[u8]) -> PathBuf {
    let entries =
        vec![("archive/data.pkl".to_string(), pickle.to_vec()), ("archive/byteorder".to_string(), b"little".to_vec())];
    s.write(name, &zip_of(&entries, false))
}

/// A pickle error's line: the pickle text once (no cause repeated through the error chain),
/// and no allow-list.
fn assert_said_once(o: &Outcome, phrase: &str) {
    let l = line(o);
    assert_eq!(l.matches(phrase).count(), 1, "'{phrase}' should appear once in: {l}");
    assert!(!l.contains("torch.FloatStorage") && !l.contains("collections.OrderedDict"), "allow-list in: {l}");
}

#[test]
fn class10_os_system_pickle_is_one_short_line_naming_the_global() {
    let s = Scratch::new("c10-os");
    let pt = pt_with_pickle(&s, "evil.pt", b"\x80\x02cos\nsystem\nX\x02\x00\x00\x00lsR.");
    let o = convert(Class::Messages, "os.system pickle", &s, &pt).refused(&[
        &file_name(&pt),
        "data.pkl: pickle global 'os.system' is refused",
        "docs/SECURITY.md",
        "torch.save(model.state_dict(), path)",
    ]);
    assert_said_once(&o, "is refused");
}

#[test]
fn class10_stack_global_builtins_eval_is_named() {
    let s = Scratch::new("c10-eval");
    let pt = pt_with_pickle(&s, "eval.pt", b"\x80\x04\x8c\x08builtins\x8c\x04eval\x93\x8c\x011\x85R.");
    let o = convert(Class::Messages, "builtins.eval via STACK_GLOBAL", &s, &pt).refused(&[
        &file_name(&pt),
        "pickle global 'builtins.eval' is refused",
        "safetensors",
    ]);
    assert_said_once(&o, "builtins.eval");
}

#[test]
fn class10_global_with_escape_sequences_is_escaped_and_shortened() {
    // A terminal escape in the module name, and a name long enough to flood the line.
    let s = Scratch::new("c10-escape");
    let mut p = b"\x80\x02cos\x1b[2J\n".to_vec();
    p.extend_from_slice("x".repeat(5000).as_bytes());
    p.extend_from_slice(b"\n)R.");
    let pt = pt_with_pickle(&s, "escape.pt", &p);
    let o = convert(Class::Messages, "escaped global name", &s, &pt).refused(&[
        &file_name(&pt),
        "pickle global 'os\\u{1b}[2J.xxx",
        "...' is refused",
    ]);
    assert_said_once(&o, "is refused");
}

#[test]
fn class10_truncated_pickle_says_where_and_what_to_do() {
    let s = Scratch::new("c10-truncated");
    let full = state_dict_pickle(&tiny_tensors());
    let pt = pt_with_pickle(&s, "truncated.pt", &full[..full.len() / 2]);
    let o = convert(Class::Messages, "truncated pickle", &s, &pt).refused(&[
        &file_name(&pt),
        "data.pkl: pickle is truncated at byte",
        "download it again",
    ]);
    assert_said_once(&o, "pickle is truncated");
}

#[test]
fn class10_inst_and_obj_are_refused_naming_the_class() {
    // INST and OBJ call the class they name: refused by name, whatever the class.
    let s = Scratch::new("c10-inst");
    for (name, pickle) in [
        ("inst.pt", &b"\x80\x02(X\x02\x00\x00\x00lsios\nsystem\n."[..]),
        ("obj.pt", &b"\x80\x02(cos\nsystem\nX\x02\x00\x00\x00lso."[..]),
    ] {
        let pt = pt_with_pickle(&s, name, pickle);
        let o =
            convert(Class::Messages, name, &s, &pt).refused(&[&file_name(&pt), "pickle global 'os.system' is refused"]);
        assert_said_once(&o, "is refused");
    }
}

// ---- what a training checkpoint holds beside its weights -----------------------------------

/// The tiny model's tensors (3 experts, MoE layer 1) in a training checkpoint with `extra`.
fn training_pt(s: &Scratch, name: &str, extra: &[u8]) -> PathBuf {
    let tensors = tiny_tensors();
    s.write(name, &zip_of(&pt_entries_with(training_pickle(&tensors, extra), &tensors), false))
}

/// `itera-pack convert PT -o OUT EXTRA...` that must succeed, then `itera-pack inspect OUT`:
/// the convert's stderr and the inspect's stdout.
fn packs(s: &Scratch, pt: &Path, extra: &[&str]) -> (String, String) {
    let out = s.path(&format!("{}.itb", file_name(pt)));
    let o = Case::new(Class::Messages, "training checkpoint packs", Tool::Pack)
        .args([OsStr::new("convert"), pt.as_os_str(), OsStr::new("-o"), out.as_os_str()])
        .args(extra.iter().map(OsStr::new))
        .input(pt)
        .run();
    assert_eq!(o.code, 0, "{}", o.stderr);
    let i = Case::new(Class::Messages, "inspect", Tool::Pack).args([OsStr::new("inspect"), out.as_os_str()]).run();
    assert_eq!(i.code, 0, "{}", i.stderr);
    (o.stderr, i.stdout)
}

#[test]
fn class10_a_config_object_sets_top_k_and_is_named_in_the_provenance() {
    let s = Scratch::new("c10-config-top-k");
    let config = pickle_config_object(
        "config",
        "models.config",
        "IteraLiteConfig",
        &[("top_k_experts", 3), ("num_experts", 3), ("num_layers", 2), ("vocab_size", 48)],
    );
    let pt = training_pt(&s, "top3.pt", &config);
    let (_, inspect) = packs(&s, &pt, &[]);
    assert!(inspect.contains("\"top_k\":3"), "{inspect}");
    assert!(inspect.contains("config: config (models.config.IteraLiteConfig)"), "{inspect}");
    // --top-k overrides it, with a warning that names both.
    let (warning, inspect) = packs(&s, &pt, &["--top-k", "2"]);
    assert!(inspect.contains("\"top_k\":2"), "{inspect}");
    assert!(warning.contains("--top-k-experts 2 overrides") && warning.contains("top_k_experts 3"), "{warning}");
}

#[test]
fn class10_a_config_that_disagrees_with_the_weights_is_refused_naming_both() {
    let s = Scratch::new("c10-config-mismatch");
    let config = pickle_config_object("config", "models.config", "IteraLiteConfig", &[("num_experts", 8)]);
    let pt = training_pt(&s, "eight.pt", &config);
    let o = convert(Class::Messages, "config says 8 experts", &s, &pt).refused(&[
        &file_name(&pt),
        "config (models.config.IteraLiteConfig) says num_experts 8",
        "layers.1.moe.layer.router.gate.weight has 3 experts",
    ]);
    assert_said_once(&o, "num_experts 8");
    // A top_k_experts above the experts there are is refused naming the config.
    let config = pickle_config_object("config", "models.config", "IteraLiteConfig", &[("top_k_experts", 4)]);
    let pt = training_pt(&s, "top4.pt", &config);
    convert(Class::Messages, "config top-k 4 of 3", &s, &pt).refused(&[
        &file_name(&pt),
        "top_k_experts 4 is out of range",
        "the 3 experts",
    ]);
}

#[test]
fn class10_optimizer_state_numpy_scalars_and_a_namespace_beside_the_weights_pack() {
    let s = Scratch::new("c10-training");
    let mut extra = pickle_item(
        "optimizer_state_dict",
        b"}(X\x05\x00\x00\x00state}X\x0c\x00\x00\x00param_groups]}(X\x02\x00\x00\x00lrG?PbM\xd2\xf1\xa9\xfcuau",
    );
    extra.extend(pickle_numpy_scalar("epoch", ".core", "i8", &7i64.to_le_bytes()));
    extra.extend(pickle_numpy_scalar("best_loss", "._core", "f8", &2.75f64.to_le_bytes()));
    extra.extend(pickle_config_object("args", "argparse", "Namespace", &[("epochs", 7), ("seed", 1)]));
    extra.extend(pickle_item("seen_ids", b"cbuiltins\nset\n](K\x01K\x02e\x85R"));
    let pt = training_pt(&s, "training.pt", &extra);
    let (_, inspect) = packs(&s, &pt, &[]);
    assert!(inspect.contains("config: args (argparse.Namespace)"), "{inspect}");
    assert!(inspect.contains("ignored: optimizer_state_dict, epoch, best_loss, seen_ids"), "{inspect}");
}
