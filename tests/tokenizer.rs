//! The blob's tokenizer table decodes what the packer wrote, for both fixture layouts.

use itera_edge::format::TokenizerKind;
use itera_edge::{Blob, Model};
use itera_pack::convert::{read_tokenizer, PackOptions};
use itera_pack::synthetic::tiny_config;
use itera_pack::writer::TokenizerTable;
use itera_pack::AlignedBytes;
use itera_test_support::{fixtures, packed};

/// The tiny model with `tokenizer`, its vocab widened to the tokenizer's ids (a blob whose
/// tokenizer names more ids than the model has is refused).
fn blob_with(tokenizer: TokenizerTable) -> AlignedBytes {
    let vocab = tiny_config().vocab.max(tokenizer.tokens.len() as u32);
    let config = itera_edge::Config { vocab, ..tiny_config() };
    let opts = PackOptions { tokenizer: Some(tokenizer), ..PackOptions::default() };
    packed(&config, 5, &opts)
}

#[test]
fn word_tokens_decode_and_unnamed_ids_read_as_unk() {
    let table = TokenizerTable {
        kind: TokenizerKind::Word,
        unk_id: 1,
        tokens: ["<PAD>", "<UNK>", "", "über", "fox"].map(String::from).to_vec(),
    };
    let bytes = blob_with(table);
    let blob = Blob::parse(&bytes).expect("parse");
    let model = Model::new(&blob).expect("model");
    let t = model.tokenizer().expect("tokenizer present");
    assert_eq!(t.kind(), TokenizerKind::Word);
    assert_eq!((t.decode(3), t.decode(4), t.separator()), ("über", "fox", " "));
    assert_eq!(t.decode(2), "<UNK>", "an unnamed id decodes as the unknown token");
    assert_eq!(t.decode(4000), "<UNK>");
    assert_eq!((t.id_of("fox"), t.id_of("wolf")), (Some(4), None));
}

#[test]
fn both_fixture_tokenizers_round_trip_through_a_blob() {
    let Some(dir) = fixtures::dir() else { return };
    for (file, kind, probe) in
        [("tokenizer_2000.json", TokenizerKind::Word, "the"), ("tokenizer_tiny.json", TokenizerKind::Char, "e")]
    {
        let table = read_tokenizer(&dir.join(file)).expect("tokenizer reads");
        let id = table.tokens.iter().position(|t| t == probe).expect("probe token") as u32;
        let bytes = blob_with(table.clone());
        let blob = Blob::parse(&bytes).expect("parse");
        let t = blob.tokenizer().expect("tokenizer");
        assert_eq!(t.kind(), kind, "{file}");
        assert_eq!(t.len() as usize, table.tokens.len());
        assert_eq!(t.decode(id), probe);
        assert_eq!(t.id_of(probe), Some(id));
    }
}
