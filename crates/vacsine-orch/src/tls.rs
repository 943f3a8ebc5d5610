//! TLS: the orchestrator's self-signed certificate (made on first start, kept in its data
//! folder) and clients that accept exactly the pinned certificate (`sha256:<hex>` of its DER).

use anyhow::{anyhow, Context};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use std::path::Path;
use std::sync::Arc;

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The certificate (DER) and its key (PKCS#8 DER) in `dir`, made on first use.
pub fn load_or_create_cert(dir: &Path) -> anyhow::Result<(Vec<u8>, Vec<u8>)> {
    let (cp, kp) = (dir.join("cert.der"), dir.join("key.der"));
    if cp.exists() && kp.exists() {
        let c = std::fs::read(&cp).with_context(|| format!("reading {}", cp.display()))?;
        let k = std::fs::read(&kp).with_context(|| format!("reading {}", kp.display()))?;
        return Ok((c, k));
    }
    crate::files::private_dir(dir).with_context(|| format!("creating {}", dir.display()))?;
    let ck = rcgen::generate_simple_self_signed(vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "vacsine-orchestrator".to_string(),
    ])
    .map_err(|e| anyhow!("cannot make a self-signed certificate: {e}"))?;
    let c = ck.cert.der().to_vec();
    let k = ck.signing_key.serialize_der();
    crate::files::write_private(&kp, &k).with_context(|| format!("writing {}", kp.display()))?;
    crate::files::write_private(&cp, &c).with_context(|| format!("writing {}", cp.display()))?;
    Ok((c, k))
}

/// A given certificate chain and key (PEM files, as a CA or an ACME client issues them):
/// the server configuration and the leaf certificate (DER, for its pin).
pub fn server_config_pem(
    cert: &Path,
    key: &Path,
) -> anyhow::Result<(rustls::ServerConfig, Vec<u8>)> {
    use rustls::pki_types::pem::PemObject;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("reading the certificate {}", cert.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("{}: not a PEM certificate chain", cert.display()))?;
    let Some(leaf) = chain.first().map(|c| c.as_ref().to_vec()) else {
        return Err(anyhow!(
            "{}: no certificate in it (expected PEM `-----BEGIN CERTIFICATE-----` blocks, the server's first)",
            cert.display()
        ));
    };
    let key = PrivateKeyDer::from_pem_file(key).with_context(|| {
        format!(
            "{}: no private key in it (expected a PEM PKCS#8, PKCS#1 or SEC1 key)",
            key.display()
        )
    })?;
    let cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .with_context(|| {
            format!(
                "the certificate {} and its key do not fit together",
                cert.display()
            )
        })?;
    Ok((cfg, leaf))
}

pub fn server_config(cert: Vec<u8>, key: Vec<u8>) -> anyhow::Result<rustls::ServerConfig> {
    let cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(cert)],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key)),
        )
        .context("the certificate and key in the data folder do not fit together")?;
    Ok(cfg)
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
