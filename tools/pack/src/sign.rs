//! Ed25519 keys and detached blob signatures, checked on the device by `itera_edge::verify`
//! (feature `verify`). Key files are raw bytes: `NAME.secret` (the 32-byte seed; keep it off
//! devices and out of repositories) and `NAME.public` (32 bytes, built into firmware).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use ed25519_dalek::{Signer, SigningKey};

/// Makes a new key pair from the operating system's random source; writes `base.secret`
/// and `base.public` and returns their paths.
pub fn keygen(base: &Path) -> anyhow::Result<(PathBuf, PathBuf)> {
    let mut seed = [0u8; 32];
    getrandom::getrandom(&mut seed).map_err(|e| anyhow::anyhow!("no random source: {e}"))?;
    let key = SigningKey::from_bytes(&seed);
    let secret = base.with_extension("secret");
    let public = base.with_extension("public");
    if secret.exists() {
        bail!("{} exists: refusing to overwrite a secret key", secret.display());
    }
    std::fs::write(&secret, seed).with_context(|| format!("cannot write {}", secret.display()))?;
    std::fs::write(&public, key.verifying_key().to_bytes())
        .with_context(|| format!("cannot write {}", public.display()))?;
    Ok((secret, public))
}

fn read_key<const N: usize>(path: &Path, what: &str) -> anyhow::Result<[u8; N]> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {what} {}", path.display()))?;
    bytes.try_into().map_err(|b: Vec<u8>| {
        anyhow::anyhow!(
            "{} holds {} bytes; a {what} has {N} (make one with `itera-pack keygen`)",
            path.display(),
            b.len()
        )
    })
}

/// Signs all of `blob` with the seed in `secret_path`; returns the 64-byte signature.
pub fn sign(blob: &[u8], secret_path: &Path) -> anyhow::Result<[u8; 64]> {
    let seed: [u8; 32] = read_key(secret_path, "secret key")?;
    Ok(SigningKey::from_bytes(&seed).sign(blob).to_bytes())
}

/// Checks a detached signature with the core's own verifier.
pub fn verify(blob: &[u8], signature_path: &Path, public_path: &Path) -> anyhow::Result<()> {
    let signature: [u8; 64] = read_key(signature_path, "signature")?;
    let public: [u8; 32] = read_key(public_path, "public key")?;
    itera_edge::verify::verify(blob, &signature, &public)?;
    Ok(())
}
