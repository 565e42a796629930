//! Ed25519 keys and detached blob signatures, checked on the device by `itera_edge::verify`
//! (feature `verify`).
//!
//! Key files:
//! - `NAME.public`: the 32 raw bytes of the public key (built into firmware).
//! - `NAME.secret`: [`SECRET_MAGIC`] (8 bytes), the 32-byte seed, then the 32-byte public key
//!   it derives (72 bytes), written with mode 0600 from creation. The magic makes the kind
//!   checkable (a public key, a signature or a blob given as `--key` is refused by name),
//!   and the trailing public key catches a damaged seed. Keep it off devices and out of
//!   repositories.
//! - Secret keys written before this format are the raw 32-byte seed, which alone cannot be
//!   told from a public key. Such a file is still read when its `NAME.public` lies beside it
//!   and is the public key of that seed (which a public key passed as `--key` never is);
//!   otherwise it is refused, asking for a new key pair.
//! - A signature (`BLOB.sig`): the 64 raw bytes of the Ed25519 signature.

use std::path::{Path, PathBuf};

use anyhow::bail;
use ed25519_dalek::{Signer, SigningKey};

use crate::files::{at, read_within, write_atomically, write_new, Access, ReadWithin};

/// First 8 bytes of a secret key file: "itera-edge secret key, format 1".
pub const SECRET_MAGIC: [u8; 8] = *b"ITSECK01";

/// Bytes of a secret key file: magic, seed, public key.
pub const SECRET_FILE_LEN: usize = 8 + 32 + 32;

/// Most bytes read from a key or signature file: all are far smaller, and a huge file
/// given by mistake is refused without reading it whole.
const MAX_KEY_FILE: u64 = 4096;

/// The contents of a secret key file for `seed`.
fn secret_file(seed: &[u8; 32]) -> Vec<u8> {
    let public = SigningKey::from_bytes(seed).verifying_key().to_bytes();
    [&SECRET_MAGIC[..], seed, &public].concat()
}

/// Makes a new key pair from the operating system's random source; writes `base.secret`
/// (mode 0600, never over an existing file) and `base.public` and returns their paths.
pub fn keygen(base: &Path) -> anyhow::Result<(PathBuf, PathBuf)> {
    let mut seed = [0u8; 32];
    getrandom::getrandom(&mut seed).map_err(|e| anyhow::anyhow!("no random source: {e}; cannot make a key"))?;
    let secret = base.with_extension("secret");
    let public = base.with_extension("public");
    if secret.exists() {
        bail!("{} exists: refusing to overwrite a secret key; pass another -o NAME", at(&secret));
    }
    write_new(&secret, &secret_file(&seed), Access::Private)?;
    let public_key = SigningKey::from_bytes(&seed).verifying_key().to_bytes();
    if let Err(e) = write_atomically(&public, &public_key, Access::Public) {
        // A secret without its public key is of no use: leave neither.
        let _ = std::fs::remove_file(&secret);
        return Err(e);
    }
    Ok((secret, public))
}

/// The bytes of a key or signature file ([`read_within`]), or `None` when it holds more than
/// [`MAX_KEY_FILE`] (a regular file is refused unread).
fn read_small(path: &Path, what: &str) -> anyhow::Result<Option<Vec<u8>>> {
    match read_within(path, MAX_KEY_FILE) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(ReadWithin::TooLarge) => Ok(None),
        Err(ReadWithin::Io(e)) => bail!("cannot read {what} {}: {e}; check the path", at(path)),
    }
}

/// A file of exactly `N` bytes; `make` says how such a file is made.
fn read_exact<const N: usize>(path: &Path, what: &str, make: &str) -> anyhow::Result<[u8; N]> {
    let Some(bytes) = read_small(path, what)? else {
        bail!("{} holds over {MAX_KEY_FILE} bytes; a {what} has {N}: {make}", at(path));
    };
    if bytes.len() == SECRET_FILE_LEN && bytes.starts_with(&SECRET_MAGIC) {
        bail!("{} is a secret key, not a {what}: {make}", at(path));
    }
    let len = bytes.len();
    bytes.try_into().map_err(|_| anyhow::anyhow!("{} holds {len} bytes; a {what} has {N}: {make}", at(path)))
}

/// The seed in the secret key file `path` (either format, see the module docs).
pub fn read_secret(path: &Path) -> anyhow::Result<[u8; 32]> {
    let new_pair = "make a key pair with `itera-pack keygen` and pass its NAME.secret";
    let not_secret = |len: &str| {
        anyhow::anyhow!(
            "{} holds {len} bytes and is not a secret key (a {SECRET_FILE_LEN}-byte file starting with `{}`): {new_pair}",
            at(path),
            String::from_utf8_lossy(&SECRET_MAGIC)
        )
    };
    let Some(bytes) = read_small(path, "secret key")? else {
        return Err(not_secret(&format!("over {MAX_KEY_FILE}")));
    };
    if bytes.len() == SECRET_FILE_LEN && bytes.starts_with(&SECRET_MAGIC) {
        let mut seed = [0u8; 32];
        seed.copy_from_slice(&bytes[8..40]);
        if secret_file(&seed) != bytes {
            bail!("secret key {} is damaged (its seed does not give the public key it holds): {new_pair}", at(path));
        }
        return Ok(seed);
    }
    if bytes.len() == 32 {
        let mut seed = [0u8; 32];
        seed.copy_from_slice(&bytes);
        let beside = path.with_extension("public");
        let public = SigningKey::from_bytes(&seed).verifying_key().to_bytes();
        let matches = beside != path && read_within(&beside, MAX_KEY_FILE).is_ok_and(|b| b == public);
        if matches {
            return Ok(seed);
        }
        bail!(
            "{} holds 32 raw bytes, which may be a public key: a secret key is the 72-byte file that keygen writes (an older 32-byte one is accepted only beside its NAME.public); {new_pair}",
            at(path)
        );
    }
    Err(not_secret(&bytes.len().to_string()))
}

/// Signs all of `blob` with the secret key in `secret_path`; returns the 64-byte signature.
pub fn sign(blob: &[u8], secret_path: &Path) -> anyhow::Result<[u8; 64]> {
    let seed = read_secret(secret_path)?;
    Ok(SigningKey::from_bytes(&seed).sign(blob).to_bytes())
}

/// Checks a detached signature with the core's own verifier.
pub fn verify(blob: &[u8], signature_path: &Path, public_path: &Path) -> anyhow::Result<()> {
    let signature: [u8; 64] =
        read_exact(signature_path, "signature", "sign the blob with `itera-pack sign BLOB --key NAME.secret`")?;
    let public: [u8; 32] =
        read_exact(public_path, "public key", "pass the NAME.public that `itera-pack keygen` wrote")?;
    itera_edge::verify::verify(blob, &signature, &public)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_files_are_told_from_public_keys() {
        let d = std::env::temp_dir().join(format!("itera-pack-sign-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("temp dir");
        let (secret, public) = keygen(&d.join("k")).expect("keygen");
        let seed = read_secret(&secret).expect("a new secret key reads");
        let err = read_secret(&public).expect_err("a public key is no secret key");
        assert!(err.to_string().contains("may be a public key"), "{err}");
        // An older raw seed beside its public key still signs.
        let legacy = d.join("old.secret");
        std::fs::write(&legacy, seed).expect("write");
        std::fs::copy(&public, d.join("old.public")).expect("copy");
        assert_eq!(read_secret(&legacy).expect("legacy secret reads"), seed);
        // A damaged seed is caught by the public key it holds.
        let mut bytes = std::fs::read(&secret).expect("read");
        bytes[10] ^= 1;
        let damaged = d.join("bad.secret");
        std::fs::write(&damaged, &bytes).expect("write");
        assert!(read_secret(&damaged).expect_err("damaged").to_string().contains("damaged"));
        let _ = std::fs::remove_dir_all(&d);
    }
}
