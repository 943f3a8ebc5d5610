//! Vacsine's wire: message envelopes sealed end to end on top of HTTPS, and signed bundles.
//!
//! * [`seal`] / [`Opener::open`]: HPKE (RFC 9180) in **auth mode** with
//!   DHKEM(X25519, HKDF-SHA256), HKDF-SHA256 and ChaCha20-Poly1305. The sender proves its
//!   identity key; the additional data binds the protocol version, HTTP method, path, agent
//!   id, timestamp, a random nonce, the sender's key id and (for a response) the nonce of the
//!   request it answers. A TLS-terminating proxy can neither read nor alter a body, nor move
//!   it to another path or agent.
//! * The receiver refuses, each with its own [`WireError`]: another binding (method, path,
//!   agent or request answered), a timestamp outside the allowed clock window, a sender key
//!   that is not the expected one (another agent's keys), a ciphertext or binding altered in
//!   transit, and a nonce already seen within the window (replay).
//! * [`BundleSigner`] / [`verify_bundle`]: ed25519 signatures over bundles (domain separated).
//!
//! Pure apart from the crypto and the operating system's random numbers: the clock is a
//! parameter.
#![forbid(unsafe_code)]

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use hpke::aead::ChaCha20Poly1305;
use hpke::kdf::HkdfSha256;
use hpke::kem::X25519HkdfSha256;
use hpke::{Deserializable, Kem as _, OpModeR, OpModeS, Serializable};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

type Kem = X25519HkdfSha256;

/// Version of the envelope format; also the HPKE `info` (domain separation).
pub const PROTOCOL: &str = "vacsine-wire/1";
const BUNDLE_DOMAIN: &[u8] = b"vacsine-bundle/1\0";
/// Default clock window: a message more than this far from the receiver's clock, in the past
/// or the future, is refused; nonces are remembered this long.
pub const DEFAULT_WINDOW_MS: i64 = 120_000;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("envelope version {0} is not supported (this side speaks {PROTOCOL})")]
    Version(u32),
    #[error("malformed envelope: {0}")]
    Malformed(String),
    #[error("envelope is bound to {field} `{got}`, but arrived for `{want}`")]
    Misbound {
        field: &'static str,
        got: String,
        want: String,
    },
    #[error("envelope timestamp is {skew_ms} ms away from this clock (allowed: {window_ms} ms); check the clocks")]
    Stale { skew_ms: i64, window_ms: i64 },
    #[error("envelope is sealed with key {got}, not with the key {want} of its sender (another agent's keys?)")]
    WrongSender { got: String, want: String },
    #[error("envelope does not open: altered in transit, or sealed for another recipient")]
    Tampered,
    #[error("envelope nonce was already seen: a replayed message")]
    Replay,
    #[error("bad bundle signature")]
    BadSignature,
    #[error("cannot seal: {0}")]
    Seal(String),
}

/// Random bytes from the operating system.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    // The OS random generator failing leaves no safe way on: abort loudly rather than seal
    // with a predictable key.
    #[allow(clippy::expect_used)]
    getrandom::fill(&mut b).expect("the operating system's random generator failed");
    b
}

/// An HPKE public key (X25519), 32 bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey([u8; 32]);

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PublicKey({})", self.key_id())
    }
}

impl PublicKey {
    /// Short, stable name of the key: the first 16 hex digits of its SHA-256.
    pub fn key_id(&self) -> String {
        let d = Sha256::digest(self.0);
        d[..8].iter().map(|b| format!("{b:02x}")).collect()
    }
    pub fn to_b64(&self) -> String {
        B64.encode(self.0)
    }
    pub fn from_b64(s: &str) -> Result<Self, WireError> {
        let v = B64
            .decode(s)
            .map_err(|e| WireError::Malformed(format!("public key: {e}")))?;
        let a: [u8; 32] = v
            .try_into()
            .map_err(|_| WireError::Malformed("public key: expected 32 bytes".into()))?;
        Ok(PublicKey(a))
    }
    fn hpke(&self) -> Result<<Kem as hpke::Kem>::PublicKey, WireError> {
        <Kem as hpke::Kem>::PublicKey::from_bytes(&self.0)
            .map_err(|e| WireError::Malformed(format!("public key: {e}")))
    }
}

/// An HPKE key pair (X25519). The secret is 32 bytes; keep it private.
#[derive(Clone)]
pub struct KeyPair {
    secret: [u8; 32],
    public: PublicKey,
}

impl std::fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyPair({})", self.public.key_id())
    }
}

impl KeyPair {
    pub fn generate() -> Self {
        let (sk, _) = Kem::derive_keypair(&random_bytes::<32>());
        let mut secret = [0u8; 32];
        secret.copy_from_slice(&sk.to_bytes());
        // Derivation of the public key from the secret cannot fail for 32 bytes made here.
        #[allow(clippy::expect_used)]
        Self::from_secret_bytes(&secret).expect("a freshly derived X25519 key is valid")
    }
    pub fn from_secret_bytes(secret: &[u8; 32]) -> Result<Self, WireError> {
        let sk = <Kem as hpke::Kem>::PrivateKey::from_bytes(secret)
            .map_err(|e| WireError::Malformed(format!("secret key: {e}")))?;
        let pk = Kem::sk_to_pk(&sk);
        let mut p = [0u8; 32];
        p.copy_from_slice(&pk.to_bytes());
        Ok(KeyPair {
            secret: *secret,
            public: PublicKey(p),
        })
    }
    pub fn secret_b64(&self) -> String {
        B64.encode(self.secret)
    }
    pub fn from_secret_b64(s: &str) -> Result<Self, WireError> {
        let v = B64
            .decode(s)
            .map_err(|e| WireError::Malformed(format!("secret key: {e}")))?;
        let a: [u8; 32] = v
            .try_into()
            .map_err(|_| WireError::Malformed("secret key: expected 32 bytes".into()))?;
        Self::from_secret_bytes(&a)
    }
    pub fn public(&self) -> &PublicKey {
        &self.public
    }
    fn hpke(
        &self,
    ) -> Result<
        (
            <Kem as hpke::Kem>::PrivateKey,
            <Kem as hpke::Kem>::PublicKey,
        ),
        WireError,
    > {
        let sk = <Kem as hpke::Kem>::PrivateKey::from_bytes(&self.secret)
            .map_err(|e| WireError::Malformed(format!("secret key: {e}")))?;
        Ok((sk, self.public.hpke()?))
    }
}

/// What an envelope is bound to, besides its timestamp and nonce.
#[derive(Debug, Clone, Copy)]
pub struct Binding<'a> {
    pub method: &'a str,
    pub path: &'a str,
    /// The agent the exchange is about (its id, or its name while it enrols).
    pub agent: &'a str,
}

/// A sealed message, as sent in an HTTP body (JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    pub v: u32,
    pub method: String,
    pub path: String,
    pub agent: String,
    /// Milliseconds since the Unix epoch, on the sender's clock.
    pub ts: i64,
    /// 16 random bytes, base64.
    pub nonce: String,
    /// Key id of the sender's identity key.
    pub sender: String,
    /// For a response: the nonce of the request it answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<String>,
    /// HPKE encapsulated key, base64.
    pub enc: String,
    /// Ciphertext with its tag, base64.
    pub ct: String,
}

impl Envelope {
    fn aad(&self) -> Vec<u8> {
        // Length-prefixed fields: no two different bindings give the same bytes.
        let mut out = Vec::new();
        for f in [
            PROTOCOL,
            &self.method,
            &self.path,
            &self.agent,
            &self.ts.to_string(),
            &self.nonce,
            &self.sender,
            self.reply_to.as_deref().unwrap_or(""),
        ] {
            out.extend_from_slice(&(f.len() as u32).to_be_bytes());
            out.extend_from_slice(f.as_bytes());
        }
        out
    }
}

/// Seal `body` from `from` to `to`, bound to `b`, `now_ms` and a fresh nonce; `reply_to` is the
/// nonce of the request a response answers.
pub fn seal(
    from: &KeyPair,
    to: &PublicKey,
    b: Binding<'_>,
    reply_to: Option<&str>,
    now_ms: i64,
    body: &[u8],
) -> Result<Envelope, WireError> {
    let mut env = Envelope {
        v: 1,
        method: b.method.to_string(),
        path: b.path.to_string(),
        agent: b.agent.to_string(),
        ts: now_ms,
        nonce: B64.encode(random_bytes::<16>()),
        sender: from.public.key_id(),
        reply_to: reply_to.map(str::to_string),
        enc: String::new(),
        ct: String::new(),
    };
    let aad = env.aad();
    let (enc, ct) = hpke::single_shot_seal::<ChaCha20Poly1305, HkdfSha256, Kem>(
        &OpModeS::Auth(from.hpke()?),
        &to.hpke()?,
        PROTOCOL.as_bytes(),
        body,
        &aad,
    )
    .map_err(|e| WireError::Seal(e.to_string()))?;
    env.enc = B64.encode(enc.to_bytes());
    env.ct = B64.encode(ct);
    Ok(env)
}

/// Opens envelopes and remembers their nonces over the clock window (replay refusal). One
/// per receiver; shared by its request handlers.
pub struct Opener {
    window_ms: i64,
    seen: Mutex<Seen>,
}

#[derive(Default)]
struct Seen {
    set: HashMap<String, i64>,
    order: VecDeque<(i64, String)>,
}

impl Default for Opener {
    fn default() -> Self {
        Self::new(DEFAULT_WINDOW_MS)
    }
}

impl Opener {
    pub fn new(window_ms: i64) -> Self {
        Opener {
            window_ms,
            seen: Mutex::new(Seen::default()),
        }
    }

    /// Open `env` sealed by `from` for `to`, arrived as `b` (and answering the request of
    /// nonce `reply_to`, for a response). Checks in order: version, binding, clock window,
    /// sender key, decryption, nonce. A nonce is remembered only once the envelope opened, so
    /// forged envelopes cannot fill the cache.
    pub fn open(
        &self,
        to: &KeyPair,
        from: &PublicKey,
        b: Binding<'_>,
        reply_to: Option<&str>,
        env: &Envelope,
        now_ms: i64,
    ) -> Result<Vec<u8>, WireError> {
        if env.v != 1 {
            return Err(WireError::Version(env.v));
        }
        for (field, got, want) in [
            ("method", env.method.as_str(), b.method),
            ("path", env.path.as_str(), b.path),
            ("agent", env.agent.as_str(), b.agent),
            (
                "request",
                env.reply_to.as_deref().unwrap_or(""),
                reply_to.unwrap_or(""),
            ),
        ] {
            if got != want {
                return Err(WireError::Misbound {
                    field,
                    got: got.to_string(),
                    want: want.to_string(),
                });
            }
        }
        let skew = env.ts.saturating_sub(now_ms);
        if skew.abs() > self.window_ms {
            return Err(WireError::Stale {
                skew_ms: skew,
                window_ms: self.window_ms,
            });
        }
        let want = from.key_id();
        if env.sender != want {
            return Err(WireError::WrongSender {
                got: env.sender.clone(),
                want,
            });
        }
        let enc_bytes = B64
            .decode(&env.enc)
            .map_err(|e| WireError::Malformed(format!("enc: {e}")))?;
        let ct = B64
            .decode(&env.ct)
            .map_err(|e| WireError::Malformed(format!("ct: {e}")))?;
        let enc = <Kem as hpke::Kem>::EncappedKey::from_bytes(&enc_bytes)
            .map_err(|_| WireError::Tampered)?;
        let (sk, _) = to.hpke()?;
        let plain = hpke::single_shot_open::<ChaCha20Poly1305, HkdfSha256, Kem>(
            &OpModeR::Auth(from.hpke()?),
            &sk,
            &enc,
            PROTOCOL.as_bytes(),
            &ct,
            &env.aad(),
        )
        .map_err(|_| WireError::Tampered)?;
        self.remember(&env.nonce, now_ms)?;
        Ok(plain)
    }

    fn remember(&self, nonce: &str, now_ms: i64) -> Result<(), WireError> {
        let mut s = self
            .seen
            .lock()
            .map_err(|_| WireError::Seal("nonce cache lock poisoned".into()))?;
        // Forget nonces older than twice the window: their envelopes are refused as stale.
        let horizon = now_ms - 2 * self.window_ms;
        while s.order.front().is_some_and(|(t, _)| *t < horizon) {
            if let Some((t, n)) = s.order.pop_front() {
                if s.set.get(&n) == Some(&t) {
                    s.set.remove(&n);
                }
            }
        }
        if s.set.contains_key(nonce) {
            return Err(WireError::Replay);
        }
        s.set.insert(nonce.to_string(), now_ms);
        s.order.push_back((now_ms, nonce.to_string()));
        Ok(())
    }

    /// Nonces remembered (for tests and metrics).
    pub fn remembered(&self) -> usize {
        self.seen.lock().map_or(0, |s| s.set.len())
    }
}

/// An ed25519 key that signs bundles.
#[derive(Clone)]
pub struct BundleSigner(SigningKey);

impl BundleSigner {
    pub fn generate() -> Self {
        BundleSigner(SigningKey::from_bytes(&random_bytes::<32>()))
    }
    pub fn from_secret_b64(s: &str) -> Result<Self, WireError> {
        let v = B64
            .decode(s)
            .map_err(|e| WireError::Malformed(format!("signing key: {e}")))?;
        let a: [u8; 32] = v
            .try_into()
            .map_err(|_| WireError::Malformed("signing key: expected 32 bytes".into()))?;
        Ok(BundleSigner(SigningKey::from_bytes(&a)))
    }
    pub fn secret_b64(&self) -> String {
        B64.encode(self.0.to_bytes())
    }
    /// The verifying key, base64.
    pub fn public_b64(&self) -> String {
        B64.encode(self.0.verifying_key().to_bytes())
    }
    /// Signature of `bundle`, base64.
    pub fn sign(&self, bundle: &[u8]) -> String {
        let mut m = BUNDLE_DOMAIN.to_vec();
        m.extend_from_slice(bundle);
        B64.encode(self.0.sign(&m).to_bytes())
    }
}

/// Verify a bundle's signature (base64) with a verifying key (base64).
pub fn verify_bundle(public_b64: &str, bundle: &[u8], sig_b64: &str) -> Result<(), WireError> {
    let pk: [u8; 32] = B64
        .decode(public_b64)
        .ok()
        .and_then(|v| v.try_into().ok())
        .ok_or_else(|| WireError::Malformed("verifying key: expected 32 bytes, base64".into()))?;
    let vk = VerifyingKey::from_bytes(&pk).map_err(|_| WireError::BadSignature)?;
    let sig: [u8; 64] = B64
        .decode(sig_b64)
        .ok()
        .and_then(|v| v.try_into().ok())
        .ok_or(WireError::BadSignature)?;
    let mut m = BUNDLE_DOMAIN.to_vec();
    m.extend_from_slice(bundle);
    vk.verify_strict(&m, &ed25519_dalek::Signature::from_bytes(&sig))
        .map_err(|_| WireError::BadSignature)
}

/// SHA-256 of bytes, as `sha256:<hex>` (certificate pins, digests).
pub fn sha256_pin(bytes: &[u8]) -> String {
    let d = Sha256::digest(bytes);
    let hex: String = d.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// Compare two byte strings in time independent of where they differ (tokens).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests;
