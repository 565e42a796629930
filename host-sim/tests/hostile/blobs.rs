//! Hostile blobs (`.itb`) against `Blob::parse`, through `itera-sim` and `itera-pack inspect`.
//!
//! Each blob is the tiny synthetic model as the packer writes it, then crafted past the
//! packer's own checks (`itera_test_support::craft`, shared with the core's tests): its
//! manifest edited and re-encoded, or its bytes edited, and resealed, so the CRC holds and
//! only the core's structural and range checks stand between the blob and the kernels.

use std::path::Path;

use itera_edge::format::{Quant, Role};
use itera_test_support::craft::{self, edit_bytes, edit_manifest, scale_at, tiny, with_tokenizer, words, Storage};

use crate::support::{Case, Class, Scratch, Tool};

/// `itera-sim run BLOB --tokens 1,2 -n 2`: parse, model and a session.
fn sim_run(class: Class, name: &str, blob: &Path) -> Case {
    Case::new(class, name, Tool::Sim)
        .args(["run".as_ref(), blob.as_os_str(), "--tokens".as_ref(), "1,2".as_ref(), "-n".as_ref(), "2".as_ref()])
        .input(blob)
}

/// `itera-sim logits BLOB --tokens 1,2 --out OUT`: must not leave OUT behind when refused.
fn sim_logits(class: Class, name: &str, blob: &Path, out: &Path) -> Case {
    Case::new(class, name, Tool::Sim)
        .args([
            "logits".as_ref(),
            blob.as_os_str(),
            "--tokens".as_ref(),
            "1,2".as_ref(),
            "--out".as_ref(),
            out.as_os_str(),
        ])
        .input(blob)
        .no_output(out)
}

/// `itera-pack inspect BLOB`.
fn inspect(class: Class, name: &str, blob: &Path) -> Case {
    Case::new(class, name, Tool::Pack).args(["inspect".as_ref(), blob.as_os_str()]).input(blob)
}

/// The affine (per-tensor qint8) tiny blob with `role` of `layer`'s quantizer replaced.
fn affine_with(role: Role, layer: u16, scale: f32, zero_point: i32) -> Vec<u8> {
    edit_manifest(&tiny(Storage::Affine, None), |m| {
        m.tensor_mut(role, layer).quant = Quant::PerTensor { scale, zero_point }
    })
}

/// `storage`'s tiny blob with entry `index` of `role`/`layer`'s scale table set to `raw`.
fn table_entry(storage: Storage, role: Role, layer: u16, index: usize, raw: &[u8]) -> Vec<u8> {
    let base = tiny(storage, None);
    let m = craft::Manifest::of(&base);
    let e = m.tensors.iter().find(|e| e.role == role && e.layer == layer).expect("the tensor");
    let (at, width) = scale_at(e, index);
    assert_eq!(width, raw.len(), "scale width");
    edit_bytes(&base, |b| b[at..at + width].copy_from_slice(raw))
}

const CONVERT: &str = "itera-pack convert";

// ---- Class 2: quantization parameters out of range. --------------------------------------

#[test]
fn class2_a_zero_point_of_2_pow_31_wrapped_to_i32_min_is_refused_naming_the_tensor() {
    let s = Scratch::new("blob-zp-min");
    let blob = s.write("zp.itb", &affine_with(Role::InProj, 0, 0.01, i32::MIN));
    sim_run(Class::QuantParams, "zero point i32::MIN", &blob).refused(&[
        "InProj of layer 0",
        "zero point -2147483648",
        "-128..=127",
        CONVERT,
    ]);
}

#[test]
fn class2_a_zero_point_just_past_qint8_is_refused_by_inspect() {
    let s = Scratch::new("blob-zp-128");
    let blob = s.write("zp.itb", &affine_with(Role::ExpertW2, 1, 0.01, 128));
    inspect(Class::QuantParams, "zero point 128", &blob).refused(&[
        "ExpertW2 of expert 0 of layer 1",
        "zero point 128",
        "-128..=127",
    ]);
}

#[test]
fn class2_a_nan_per_tensor_scale_is_refused_and_leaves_no_logits() {
    let s = Scratch::new("blob-nan-scale");
    let blob = s.write("nan.itb", &affine_with(Role::OutProj, 1, f32::NAN, 0));
    sim_logits(Class::QuantParams, "NaN scale", &blob, &s.path("out.f32")).refused(&[
        "OutProj of layer 1",
        "its scale is NaN",
        CONVERT,
    ]);
}

#[test]
fn class2_a_zero_per_tensor_scale_is_refused() {
    let s = Scratch::new("blob-zero-scale");
    let blob = s.write("zero.itb", &affine_with(Role::FfnW1, 0, 0.0, 0));
    sim_run(Class::QuantParams, "zero scale", &blob).refused(&["FfnW1 of layer 0", "its scale is zero", "(0, 65536]"]);
}

#[test]
fn class2_a_subnormal_per_tensor_scale_is_refused() {
    let s = Scratch::new("blob-subnormal-scale");
    let blob = s.write("sub.itb", &affine_with(Role::DeltaProj, 1, f32::from_bits(1), 0));
    inspect(Class::QuantParams, "subnormal scale", &blob).refused(&["DeltaProj of layer 1", "its scale is subnormal"]);
}

#[test]
fn class2_a_huge_per_tensor_scale_is_refused() {
    let s = Scratch::new("blob-huge-scale");
    let blob = s.write("huge.itb", &affine_with(Role::Embedding, 0, 1e30, 0));
    sim_run(Class::QuantParams, "huge scale", &blob).refused(&[
        "Embedding of layer 0",
        "its scale is too large",
        "65536",
    ]);
}

#[test]
fn class2_a_nan_entry_in_an_f16_scale_table_is_refused_naming_the_entry() {
    let s = Scratch::new("blob-f16-nan");
    let bytes = table_entry(Storage::Int8F16, Role::FfnW1, 0, 3, &0x7E00u16.to_le_bytes());
    let blob = s.write("f16nan.itb", &bytes);
    sim_run(Class::QuantParams, "NaN f16 table entry", &blob).refused(&[
        "FfnW1 of layer 0",
        "scale 3 of its table is NaN",
        CONVERT,
    ]);
}

#[test]
fn class2_an_infinite_int4_scale_is_refused() {
    let s = Scratch::new("blob-f16-inf");
    let bytes = table_entry(Storage::Int4F16, Role::InProj, 1, 0, &0x7C00u16.to_le_bytes());
    let blob = s.write("f16inf.itb", &bytes);
    inspect(Class::QuantParams, "infinite int4 scale", &blob)
        .refused(&["InProj of layer 1", "scale 0 of its table is infinite"]);
}

#[test]
fn class2_a_negative_f32_table_scale_is_refused() {
    let s = Scratch::new("blob-f32-neg");
    let bytes = table_entry(Storage::Int8F32, Role::OutProj, 0, 2, &(-0.5f32).to_le_bytes());
    let blob = s.write("f32neg.itb", &bytes);
    sim_logits(Class::QuantParams, "negative f32 table scale", &blob, &s.path("out.f32"))
        .refused(&["OutProj of layer 0", "scale 2 of its table is negative"]);
}

/// The accepted edges run to the end: a zero point of -128 and of 127 with values at both
/// extremes (`q - zero_point` spans -255..=255), through a whole `run`.
#[test]
fn class2_the_edge_zero_points_run() {
    for zero_point in [-128, 127] {
        let s = Scratch::new("blob-zp-edge");
        let crafted = affine_with(Role::InProj, 0, 0.01, zero_point);
        let e = *craft::Manifest::of(&crafted).tensor_mut(Role::InProj, 0);
        let crafted = edit_bytes(&crafted, |b| {
            for (i, v) in b[e.offset as usize..(e.offset + e.len) as usize].iter_mut().enumerate() {
                *v = if i % 2 == 0 { 0x80 } else { 0x7F };
            }
        });
        let blob = s.write("edge.itb", &crafted);
        let o = sim_run(Class::QuantParams, "edge zero point runs", &blob).run();
        assert_eq!(o.code, 0, "zero point {zero_point}: {}", o.stderr);
    }
}

// ---- Class 4: tokenizers that do not fit the model. ------------------------------------

#[test]
fn class4_an_unknown_id_equal_to_the_token_count_is_refused() {
    let s = Scratch::new("blob-unk-count");
    let blob = s.write("unk.itb", &with_tokenizer(&tiny(Storage::Int8F16, None), 5, &words(5).tokens));
    Case::new(Class::TokenizerFit, "unk_id == count", Tool::Sim)
        .args(["run".as_ref(), blob.as_os_str(), "--prompt".as_ref(), "w1 w2".as_ref(), "-n".as_ref(), "2".as_ref()])
        .input(&blob)
        .refused(&["unknown-token id 5 is not among its 5 ids", "--tokenizer"]);
}

#[test]
fn class4_an_unknown_id_far_past_the_table_is_refused_by_inspect() {
    let s = Scratch::new("blob-unk-far");
    let blob = s.write("unk.itb", &with_tokenizer(&tiny(Storage::Affine, None), u32::MAX, &words(3).tokens));
    inspect(Class::TokenizerFit, "unk_id u32::MAX", &blob).refused(&["unknown-token id 4294967295", "3 ids"]);
}

#[test]
fn class4_an_id_beyond_the_vocab_is_refused() {
    // Vocab 48: a table of 5001 names id 5000, as in the "id 5000 on a vocab of 2000".
    let s = Scratch::new("blob-id-5000");
    let blob = s.write("wide.itb", &with_tokenizer(&tiny(Storage::Int8F16, None), 0, &words(5001).tokens));
    sim_run(Class::TokenizerFit, "id 5000 on vocab 48", &blob).refused(&[
        "names 5001 ids",
        "vocabulary has 48",
        "--tokenizer",
    ]);
}

#[test]
fn class4_one_token_more_than_the_vocab_is_refused() {
    let s = Scratch::new("blob-vocab-plus-one");
    let blob = s.write("plus1.itb", &with_tokenizer(&tiny(Storage::Int4F16, None), 0, &words(49).tokens));
    inspect(Class::TokenizerFit, "vocab + 1 tokens", &blob).refused(&["names 49 ids", "vocabulary has 48"]);
}

#[test]
fn class4_a_million_entries_are_refused_within_the_memory_bound() {
    let s = Scratch::new("blob-million");
    let blob = s.write("million.itb", &with_tokenizer(&tiny(Storage::Int8F16, None), 0, &words(1_000_000).tokens));
    sim_logits(Class::TokenizerFit, "a million tokens", &blob, &s.path("out.f32"))
        .refused(&["names 1000000 ids", "vocabulary has 48"]);
}

// ---- Class 9: reserved and flag bytes of the header. ------------------------------------

fn header_byte(offset: usize, value: u8) -> Vec<u8> {
    edit_bytes(&tiny(Storage::Int8F16, None), |b| b[offset] = value)
}

#[test]
fn class9_an_undefined_flag_bit_is_refused() {
    // Bit 0 is the fixed-point flag; bit 1 is the lowest one v1 does not define.
    let s = Scratch::new("blob-flag-low");
    let blob = s.write("flag.itb", &header_byte(10, 0x02));
    sim_run(Class::FormatLaxity, "flag bit 1", &blob).refused(&[
        "header byte 10 (flags) is 0x02",
        "format v1",
        CONVERT,
    ]);
}

#[test]
fn class9_the_fixed_point_flag_on_a_float_blob_is_refused() {
    let s = Scratch::new("blob-flag-fixed");
    let blob = s.write("flag.itb", &header_byte(10, 0x01));
    sim_run(Class::FormatLaxity, "fixed-point flag on a float blob", &blob).refused(&["tensor", CONVERT]);
}

#[test]
fn class9_the_highest_flag_bit_is_refused_by_inspect() {
    let s = Scratch::new("blob-flag-high");
    let blob = s.write("flag.itb", &header_byte(11, 0x80));
    inspect(Class::FormatLaxity, "flag bit 15", &blob).refused(&["header byte 11 (flags) is 0x80"]);
}

#[test]
fn class9_a_nonzero_reserved_byte_is_refused() {
    let s = Scratch::new("blob-reserved-first");
    let blob = s.write("reserved.itb", &header_byte(24, 0x01));
    sim_logits(Class::FormatLaxity, "reserved byte 24", &blob, &s.path("out.f32"))
        .refused(&["header byte 24 (reserved) is 0x01"]);
}

#[test]
fn class9_the_last_reserved_byte_is_refused() {
    let s = Scratch::new("blob-reserved-last");
    let blob = s.write("reserved.itb", &header_byte(31, 0xFF));
    sim_run(Class::FormatLaxity, "reserved byte 31", &blob).refused(&["header byte 31 (reserved) is 0xff"]);
}

// ---- Class 10: messages a user can act on. ------------------------------------------------

/// The tiny blob with the first entries of `a` and `b` (role, layer, expert) swapped.
fn swapped(a: (Role, u16, u16), b: (Role, u16, u16)) -> Vec<u8> {
    edit_manifest(&tiny(Storage::Int8F16, None), |m| {
        let at = |(role, layer, expert): (Role, u16, u16)| {
            m.tensors.iter().position(|e| e.role == role && e.layer == layer && e.expert == expert).expect("tensor")
        };
        let (i, j) = (at(a), at(b));
        m.tensors.swap(i, j);
    })
}

#[test]
fn class10_a_tensor_out_of_order_names_the_layer_it_found() {
    let s = Scratch::new("blob-order-layer");
    let blob = s.write("order.itb", &swapped((Role::SsmNormWeight, 0, 0), (Role::SsmNormWeight, 1, 0)));
    sim_run(Class::Messages, "norm weights of layers 0 and 1 swapped", &blob)
        .refused(&["expected SsmNormWeight of layer 0, found SsmNormWeight of layer 1", CONVERT]);
}

#[test]
fn class10_experts_out_of_order_name_the_expert_found() {
    let s = Scratch::new("blob-order-expert");
    let blob = s.write("order.itb", &swapped((Role::ExpertW1, 1, 0), (Role::ExpertW1, 1, 2)));
    inspect(Class::Messages, "experts 0 and 2 swapped", &blob)
        .refused(&["expected ExpertW1 of expert 0 of layer 1, found ExpertW1 of expert 2 of layer 1"]);
}

#[test]
fn class10_a_top_k_of_zero_says_so_not_how_many_experts_there_are() {
    let s = Scratch::new("blob-top-k-0");
    let blob = s.write("topk.itb", &edit_manifest(&tiny(Storage::Int8F16, None), |m| m.head.config.top_k = 0));
    let o = sim_run(Class::Messages, "top_k 0", &blob).refused(&["top_k is 0", "at least one expert", "K from 1 to 3"]);
    assert!(!o.stderr.contains("only"), "{}", o.stderr);
}

#[test]
fn class10_a_top_k_above_the_experts_names_both() {
    let s = Scratch::new("blob-top-k-9");
    let blob = s.write("topk.itb", &edit_manifest(&tiny(Storage::Int8F16, None), |m| m.head.config.top_k = 9));
    inspect(Class::Messages, "top_k 9 of 3", &blob).refused(&["top_k is 9 but MoE layers have 3 experts", "--top-k"]);
}
