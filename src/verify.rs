//! Authenticity (feature `verify`): an Ed25519 signature over the whole blob, checked before
//! the blob is used. The CRC32 inside a blob catches accidents; only a signature, made by
//! `itera-pack sign` with a key the device does not hold, catches a deliberate edit.
//!
//! The signature is detached (64 bytes, usually a `.sig` file beside the `.itb`), so a signed
//! blob is byte for byte the blob `Blob::parse` reads.

use ed25519_dalek::{Signature, VerifyingKey};

use crate::blob::Blob;
use crate::error::Error;

/// Bytes of an Ed25519 public key.
pub const PUBLIC_KEY_LEN: usize = 32;
/// Bytes of an Ed25519 signature.
pub const SIGNATURE_LEN: usize = 64;

/// Checks `signature` over all of `bytes` with `public_key`, then parses the blob. A blob
/// whose signature does not verify is refused before any of it is decoded.
pub fn parse_signed<'a>(
    bytes: &'a [u8],
    signature: &[u8; SIGNATURE_LEN],
    public_key: &[u8; PUBLIC_KEY_LEN],
) -> Result<Blob<'a>, Error> {
    verify(bytes, signature, public_key)?;
    Blob::parse(bytes)
}

/// Ed25519 (RFC 8032, strict: no malleable signatures, no weak keys) over all of `bytes`.
pub fn verify(bytes: &[u8], signature: &[u8; SIGNATURE_LEN], public_key: &[u8; PUBLIC_KEY_LEN]) -> Result<(), Error> {
    let key = VerifyingKey::from_bytes(public_key).map_err(|_| Error::BadSignature)?;
    key.verify_strict(bytes, &Signature::from_bytes(signature)).map_err(|_| Error::BadSignature)
}
