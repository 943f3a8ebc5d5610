//! Encryption at rest of what the journal must keep but must not show: the real values of a
//! run's inputs and step outputs (a resumed run needs them; records show them masked) and
//! undo data (the prior content of files and rulesets, which may hold secrets).
//!
//! ChaCha20-Poly1305 (ring) with a random 96-bit nonce per value and the value's place in the
//! journal as associated data, so a sealed value cannot be moved to another run or column.
//! The 256-bit key lives in a file of its own next to the journal (mode 0600, created on first
//! use): a copy of the journal alone reveals nothing.

use base64::Engine as _;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Prefix of a sealed value as stored.
const PREFIX: &str = "sealed:v1:";

/// Seals and opens values with one key.
pub(crate) struct Sealer {
    key: LessSafeKey,
    rng: SystemRandom,
    /// Where the key came from (for error messages); None for an ephemeral key.
    path: Option<PathBuf>,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer").field("path", &self.path).finish()
    }
}

impl Sealer {
    /// A key that lives only in memory (in-memory journals).
    pub fn ephemeral() -> Result<Self, String> {
        let rng = SystemRandom::new();
        let mut bytes = [0u8; 32];
        rng.fill(&mut bytes)
            .map_err(|_| "no randomness available".to_string())?;
        Self::from_bytes(&bytes, rng, None)
    }

    /// Load the key file, or create it (0600, in a 0700 directory when the directory is new).
    pub fn load_or_create(path: &Path) -> Result<Self, String> {
        let rng = SystemRandom::new();
        match std::fs::read(path) {
            Ok(bytes) => {
                let mode = std::fs::metadata(path)
                    .map(|m| m.permissions().mode() & 0o777)
                    .unwrap_or(0);
                if mode & 0o077 != 0 {
                    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
                        .map_err(|e| {
                            format!("cannot restrict `{}` to 0600: {e}", path.display())
                        })?;
                }
                if bytes.len() != 32 {
                    return Err(format!(
                        "journal key `{}` is {} bytes long, expected 32: restore the original key file (values sealed with another key cannot be read)",
                        path.display(),
                        bytes.len()
                    ));
                }
                Self::from_bytes(&bytes, rng, Some(path.to_path_buf()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut bytes = [0u8; 32];
                rng.fill(&mut bytes)
                    .map_err(|_| "no randomness available".to_string())?;
                match vacsine_private::create_private(path, &bytes) {
                    Ok(()) => Self::from_bytes(&bytes, rng, Some(path.to_path_buf())),
                    // Another process made it first, whole: that key is the journal's.
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                        Self::load_or_create(path)
                    }
                    Err(e) => Err(format!(
                        "cannot create journal key `{}`: {e}",
                        path.display()
                    )),
                }
            }
            Err(e) => Err(format!("cannot read journal key `{}`: {e}", path.display())),
        }
    }

    fn from_bytes(bytes: &[u8], rng: SystemRandom, path: Option<PathBuf>) -> Result<Self, String> {
        let key = UnboundKey::new(&CHACHA20_POLY1305, bytes)
            .map_err(|_| "invalid journal key".to_string())?;
        Ok(Sealer {
            key: LessSafeKey::new(key),
            rng,
            path,
        })
    }

    /// Seal `plain`, bound to `place` (e.g. `run/<id>/inputs`).
    pub fn seal(&self, place: &str, plain: &[u8]) -> Result<String, String> {
        let mut nonce = [0u8; NONCE_LEN];
        self.rng
            .fill(&mut nonce)
            .map_err(|_| "no randomness available".to_string())?;
        let mut buf = plain.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(place.as_bytes()),
                &mut buf,
            )
            .map_err(|_| "sealing failed".to_string())?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&buf);
        Ok(format!(
            "{PREFIX}{}",
            base64::engine::general_purpose::STANDARD.encode(out)
        ))
    }

    /// Whether a stored value is sealed (older journals stored plain JSON).
    pub fn is_sealed(stored: &str) -> bool {
        stored.starts_with(PREFIX)
    }

    /// Open a value sealed at `place`.
    pub fn open(&self, place: &str, stored: &str) -> Result<Vec<u8>, String> {
        let b64 = stored
            .strip_prefix(PREFIX)
            .ok_or_else(|| "not a sealed value".to_string())?;
        let raw = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|e| format!("corrupt sealed value: {e}"))?;
        if raw.len() < NONCE_LEN {
            return Err("corrupt sealed value: too short".into());
        }
        let (nonce, rest) = raw.split_at(NONCE_LEN);
        let mut buf = rest.to_vec();
        let nonce = Nonce::try_assume_unique_for_key(nonce)
            .map_err(|_| "corrupt sealed value: bad nonce".to_string())?;
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(place.as_bytes()), &mut buf)
            .map_err(|_| match &self.path {
                Some(p) => format!(
                    "cannot decrypt a journaled value with the key `{}` (was the key file replaced, or the journal copied without its key?)",
                    p.display()
                ),
                None => "cannot decrypt a journaled value".to_string(),
            })?;
        Ok(plain.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seals_opens_and_binds_to_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.key");
        let s = Sealer::load_or_create(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let sealed = s.seal("run/a/inputs", b"Pa55word").unwrap();
        assert!(Sealer::is_sealed(&sealed));
        assert!(!sealed.contains("Pa55word"));
        assert_eq!(s.open("run/a/inputs", &sealed).unwrap(), b"Pa55word");
        assert!(
            s.open("run/b/inputs", &sealed).is_err(),
            "moved value refused"
        );
        // The same key file opens it again; another key does not.
        let again = Sealer::load_or_create(&path).unwrap();
        assert_eq!(again.open("run/a/inputs", &sealed).unwrap(), b"Pa55word");
        assert!(Sealer::ephemeral()
            .unwrap()
            .open("run/a/inputs", &sealed)
            .is_err());
        std::fs::write(&path, b"short").unwrap();
        assert!(Sealer::load_or_create(&path)
            .unwrap_err()
            .contains("expected 32"));
    }
}
