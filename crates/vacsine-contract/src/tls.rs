//! TLS on the clients' side: HTTPS clients that accept exactly the pinned certificate
//! (`sha256:<hex>` of its DER), and the pin of a certificate file. The orchestrator's own
//! certificate is made by `vacsine_orch::tls`.

use anyhow::{anyhow, Context};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use std::path::Path;
use std::sync::Arc;

/// The one crypto provider both ends use (ring).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Accepts the one certificate whose SHA-256 is the pin, whatever its name or issuer; the
/// handshake signatures are still verified.
#[derive(Debug)]
struct PinVerifier {
    pin: String,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let got = vacsine_wire::sha256_pin(end_entity.as_ref());
        if vacsine_wire::constant_time_eq(got.as_bytes(), self.pin.as_bytes()) {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(format!(
                "the orchestrator's certificate is {got}, not the pinned {}",
                self.pin
            )))
        }
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Normalise a pin given by a user: `sha256:` then 64 hex digits (case-insensitive; colons
/// between bytes allowed).
pub fn parse_pin(pin: &str) -> anyhow::Result<String> {
    let hex: String = pin
        .trim()
        .strip_prefix("sha256:")
        .ok_or_else(|| anyhow!("--pin {pin:?}: expected sha256:<64 hex digits>, as printed by `vacsine orchestrator`"))?
        .chars()
        .filter(|c| *c != ':')
        .collect::<String>()
        .to_ascii_lowercase();
    if hex.len() != 64 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(anyhow!(
            "--pin {pin:?}: expected sha256:<64 hex digits>, as printed by `vacsine orchestrator`"
        ));
    }
    Ok(format!("sha256:{hex}"))
}

/// An HTTPS client that trusts only the pinned certificate.
pub fn pinned_client(pin: &str, timeout: std::time::Duration) -> anyhow::Result<reqwest::Client> {
    let pin = parse_pin(pin)?;
    let p = provider();
    let cfg = rustls::ClientConfig::builder_with_provider(p.clone())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinVerifier { pin, provider: p }))
        .with_no_client_auth();
    reqwest::Client::builder()
        .use_preconfigured_tls(cfg)
        .timeout(timeout)
        .connect_timeout(std::time::Duration::from_secs(5))
        // The orchestrator closes a connection idle for 10 s (its request-head timeout):
        // the client lets go of it first, so a request never races that close.
        .pool_idle_timeout(std::time::Duration::from_secs(5))
        .build()
        .context("cannot build the HTTPS client")
}

/// The pin (`sha256:<hex>` of the DER) of the certificate in `path`: PEM (the first
/// certificate of a chain, the server's) or DER. The error names the file and what was
/// expected.
pub fn pin_of_file(path: &Path) -> anyhow::Result<String> {
    use rustls::pki_types::pem::PemObject;
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let der = if bytes.starts_with(b"-----") || bytes.windows(11).any(|w| w == b"-----BEGIN ") {
        CertificateDer::pem_slice_iter(&bytes)
            .next()
            .ok_or_else(|| {
                anyhow!(
                    "{}: no certificate in it (expected a PEM `-----BEGIN CERTIFICATE-----` block)",
                    path.display()
                )
            })?
            .with_context(|| format!("{}: not a PEM certificate", path.display()))?
            .as_ref()
            .to_vec()
    } else if bytes.first() == Some(&0x30) {
        bytes
    } else {
        return Err(anyhow!(
            "{}: neither a PEM certificate nor a DER one: give the proxy's certificate file (`openssl s_client -connect HOST:PORT </dev/null | openssl x509 > proxy.pem` fetches it)",
            path.display()
        ));
    };
    Ok(vacsine_wire::sha256_pin(&der))
}
