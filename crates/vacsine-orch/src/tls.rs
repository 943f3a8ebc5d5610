//! TLS on the orchestrator's side: its self-signed certificate (made on first start, kept in
//! its data folder), or a given chain and key (PEM), as a rustls server configuration. The
//! clients' side (pinning) is [`vacsine_contract::tls`].

use anyhow::{anyhow, Context};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::path::Path;
use vacsine_contract::tls::provider;

/// The certificate (DER) and its key (PKCS#8 DER) in `dir`, made on first use.
pub fn load_or_create_cert(dir: &Path) -> anyhow::Result<(Vec<u8>, Vec<u8>)> {
    let (cp, kp) = (dir.join("cert.der"), dir.join("key.der"));
    if cp.exists() && kp.exists() {
        let c = std::fs::read(&cp).with_context(|| format!("reading {}", cp.display()))?;
        let k = std::fs::read(&kp).with_context(|| format!("reading {}", kp.display()))?;
        return Ok((c, k));
    }
    vacsine_private::private_dir(dir).with_context(|| format!("creating {}", dir.display()))?;
    let ck = rcgen::generate_simple_self_signed(vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "vacsine-orchestrator".to_string(),
    ])
    .map_err(|e| anyhow!("cannot make a self-signed certificate: {e}"))?;
    let c = ck.cert.der().to_vec();
    let k = ck.signing_key.serialize_der();
    vacsine_private::write_private(&kp, &k).with_context(|| format!("writing {}", kp.display()))?;
    vacsine_private::write_private(&cp, &c).with_context(|| format!("writing {}", cp.display()))?;
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
