//! Feature `verify`: a blob signed with the packer's key passes; any other blob or key fails.
#![cfg(feature = "verify")]

use itera_edge::verify::{parse_signed, verify};
use itera_edge::Error;
use itera_pack::AlignedBytes;
use itera_test_support::tiny_blob;

fn keypair(seed: u8) -> (ed25519_dalek::SigningKey, [u8; 32]) {
    let key = ed25519_dalek::SigningKey::from_bytes(&[seed; 32]);
    let public = key.verifying_key().to_bytes();
    (key, public)
}

#[test]
fn a_signed_blob_verifies_and_any_change_is_refused() {
    use ed25519_dalek::Signer;
    let bytes = tiny_blob(4);
    let (key, public) = keypair(7);
    let signature = key.sign(&bytes).to_bytes();
    assert!(parse_signed(&bytes, &signature, &public).is_ok());

    // One flipped bit anywhere in the blob (CRC recomputed or not): refused before parsing.
    for at in [0, 40, bytes.len() / 2, bytes.len() - 1] {
        let mut copy = AlignedBytes::from(&bytes[..]);
        copy.as_mut()[at] ^= 0x10;
        assert_eq!(verify(&copy, &signature, &public), Err(Error::BadSignature), "byte {at}");
    }
    // Another key, a damaged signature, a non-key.
    let (_, other) = keypair(8);
    assert_eq!(verify(&bytes, &signature, &other), Err(Error::BadSignature));
    let mut bad = signature;
    bad[10] ^= 1;
    assert_eq!(verify(&bytes, &bad, &public), Err(Error::BadSignature));
    assert!(parse_signed(&bytes, &signature, &[0xFF; 32]).is_err());
}
