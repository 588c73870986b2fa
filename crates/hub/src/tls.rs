//! Mutual TLS for the hub's server: the server configuration (TLS 1.3 only, `ring`, the stores'
//! CA as the only client trust anchor, ALPN `http/1.1`) and the store id of a connection, which
//! is its client certificate's common name. The same choices as the gateway's `tls` module
//! (which the hub does not link: the hub must not carry the gateway's sled-backed crates).

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{RootCertStore, ServerConfig};
use std::path::Path;
use std::sync::Arc;

/// Why the TLS configuration could not be built (the message names the setting).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TlsError(pub String);

fn read(what: &str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| {
        TlsError(format!(
            "cannot read {what} {}: {e} (check {what} and the file's permissions)",
            path.display()
        ))
    })
}

fn certs(what: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(what, path)?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut &pem[..])
        .filter_map(Result::ok)
        .collect();
    if certs.is_empty() {
        return Err(TlsError(format!(
            "{what} {} holds no CERTIFICATE in PEM form",
            path.display()
        )));
    }
    Ok(certs)
}

fn key(what: &str, path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read(what, path)?;
    match rustls_pemfile::private_key(&mut &pem[..]) {
        Ok(Some(key)) => Ok(key),
        _ => Err(TlsError(format!(
            "{what} {} holds no PRIVATE KEY in PEM form",
            path.display()
        ))),
    }
}

/// The server configuration from `[server]`'s files.
pub fn server_config(
    cert_file: &Path,
    key_file: &Path,
    client_ca_file: &Path,
) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    for cert in certs("server.client_ca_file", client_ca_file)? {
        roots
            .add(cert)
            .map_err(|e| TlsError(format!("server.client_ca_file: {e}")))?;
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .map_err(|e| TlsError(format!("server.client_ca_file: {e}")))?;
    let chain = certs("server.cert_file", cert_file)?;
    let key = key("server.key_file", key_file)?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsError(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| {
            TlsError(format!(
                "server.key_file does not fit server.cert_file (or is unusable): {e}"
            ))
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The common name of a verified client certificate: the store id.
pub fn common_name(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let cn = parsed.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_string)
}
