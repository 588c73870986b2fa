//! TLS for the CRM link: builds the rustls client configuration (TLS 1.3 only, the `ring`
//! provider named explicitly, the CRM's CA from a file and never the system store, the store's
//! client certificate) and the server configuration of the reference receiver (mutual TLS with
//! `WebPkiClientVerifier`). Also turns rustls failures into sentences an operator can act on.

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Why a TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    /// A configured file could not be read.
    #[error("cannot read {what} {path}: {source} (check crm.{what} and the file's permissions)")]
    Read {
        /// Which setting (`client_cert_file`, ...).
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A file held no usable PEM item.
    #[error("{what} {path} holds no {expected} in PEM form")]
    Empty {
        /// Which setting.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What was looked for.
        expected: &'static str,
    },
    /// A setting is missing from the configuration.
    #[error("crm.{0} is not set")]
    Missing(&'static str),
    /// rustls refused the material (key does not match the certificate, bad CA, ...).
    #[error("TLS setup failed: {0}")]
    Rustls(String),
}

/// The crypto provider used everywhere on the CRM link: `ring`, named explicitly so that no
/// process-wide default provider is needed.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads every certificate of a PEM file.
pub fn read_certs(
    what: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsSetupError> {
    let bytes = std::fs::read(path).map_err(|source| TlsSetupError::Read {
        what,
        path: path.to_path_buf(),
        source,
    })?;
    certs_from_pem(what, path, &bytes)
}

fn certs_from_pem(
    what: &'static str,
    path: &Path,
    pem: &[u8],
) -> Result<Vec<CertificateDer<'static>>, TlsSetupError> {
    let certs: Vec<_> = rustls_pemfile::certs(&mut &pem[..])
        .filter_map(Result::ok)
        .collect();
    if certs.is_empty() {
        return Err(TlsSetupError::Empty {
            what,
            path: path.to_path_buf(),
            expected: "CERTIFICATE",
        });
    }
    Ok(certs)
}

/// Reads the first private key of a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn read_key(what: &'static str, path: &Path) -> Result<PrivateKeyDer<'static>, TlsSetupError> {
    let bytes = std::fs::read(path).map_err(|source| TlsSetupError::Read {
        what,
        path: path.to_path_buf(),
        source,
    })?;
    match rustls_pemfile::private_key(&mut &bytes[..]) {
        Ok(Some(key)) => Ok(key),
        _ => Err(TlsSetupError::Empty {
            what,
            path: path.to_path_buf(),
            expected: "PRIVATE KEY",
        }),
    }
}

fn roots(what: &'static str, path: &Path) -> Result<RootCertStore, TlsSetupError> {
    let mut roots = RootCertStore::empty();
    for cert in read_certs(what, path)? {
        roots
            .add(cert)
            .map_err(|err| TlsSetupError::Rustls(format!("{what} {}: {err}", path.display())))?;
    }
    Ok(roots)
}

/// The files of one TLS client identity.
#[derive(Debug, Clone)]
pub struct ClientTlsFiles {
    /// CA of the CRM's server certificate.
    pub ca_file: Option<PathBuf>,
    /// The store's certificate chain.
    pub cert_file: Option<PathBuf>,
    /// The store's private key.
    pub key_file: Option<PathBuf>,
}

/// Builds the client configuration: TLS 1.3 only, ring, the CA from `ca_file` as the only trust
/// anchor, the store's certificate as client identity. Read afresh on every new connection, so
/// a renewed certificate or a fixed CA file is picked up without a restart.
pub fn client_config(files: &ClientTlsFiles) -> Result<Arc<ClientConfig>, TlsSetupError> {
    let ca = files
        .ca_file
        .as_deref()
        .ok_or(TlsSetupError::Missing("ca_file"))?;
    let cert = files
        .cert_file
        .as_deref()
        .ok_or(TlsSetupError::Missing("client_cert_file"))?;
    let key = files
        .key_file
        .as_deref()
        .ok_or(TlsSetupError::Missing("client_key_file"))?;
    let roots = roots("ca_file", ca)?;
    let chain = read_certs("client_cert_file", cert)?;
    let key = read_key("client_key_file", key)?;
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|err| TlsSetupError::Rustls(err.to_string()))?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(|err| {
            TlsSetupError::Rustls(format!(
                "the client key does not fit the client certificate: {err}"
            ))
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Builds a mutual-TLS server configuration (TLS 1.3 only): the server's certificate and key,
/// and the CA whose client certificates are accepted (a client without one is refused).
pub fn server_config(
    cert_file: &Path,
    key_file: &Path,
    client_ca_file: &Path,
) -> Result<Arc<ServerConfig>, TlsSetupError> {
    let roots = roots("client_ca", client_ca_file)?;
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .map_err(|err| TlsSetupError::Rustls(format!("client CA: {err}")))?;
    let chain = read_certs("cert", cert_file)?;
    let key = read_key("key", key_file)?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|err| TlsSetupError::Rustls(err.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|err| TlsSetupError::Rustls(format!("server certificate and key: {err}")))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Finds a rustls error in an error's source chain and explains it to an operator; `None` when
/// the failure was not a TLS one.
pub fn explain(err: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = current {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(explain_rustls(tls));
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if let Some(inner) = io.get_ref() {
                if let Some(tls) = inner.downcast_ref::<rustls::Error>() {
                    return Some(explain_rustls(tls));
                }
            }
        }
        current = e.source();
    }
    None
}

/// One operator sentence per rustls failure that a misconfigured CRM link produces.
pub fn explain_rustls(err: &rustls::Error) -> String {
    use rustls::{AlertDescription as A, CertificateError as C, Error as E};
    match err {
        E::InvalidCertificate(C::UnknownIssuer) | E::InvalidCertificate(C::BadSignature) => {
            "TLS: the CRM's server certificate is not signed by the CA in crm.ca_file (unknown issuer): check crm.ca_file".into()
        }
        E::InvalidCertificate(C::NotValidForName)
        | E::InvalidCertificate(C::NotValidForNameContext { .. }) => {
            "TLS: the CRM's server certificate is not valid for the host name in crm.url (wrong host name): check crm.url".into()
        }
        E::InvalidCertificate(C::Expired) | E::InvalidCertificate(C::ExpiredContext { .. }) => {
            "TLS: the CRM's server certificate has expired (or this box's clock is wrong)".into()
        }
        E::InvalidCertificate(other) => format!("TLS: the CRM's server certificate was refused: {other:?}"),
        E::AlertReceived(A::CertificateExpired) => {
            "TLS: the CRM refused this store's client certificate: it has expired (renew crm.client_cert_file, or check the clock)".into()
        }
        E::AlertReceived(A::CertificateRequired) => {
            "TLS: the CRM requires a client certificate and none was sent (check crm.client_cert_file)".into()
        }
        E::AlertReceived(A::UnknownCA) | E::AlertReceived(A::BadCertificate) | E::AlertReceived(A::CertificateUnknown) => {
            "TLS: the CRM refused this store's client certificate (unknown CA or bad certificate): check crm.client_cert_file".into()
        }
        E::AlertReceived(A::ProtocolVersion) => {
            "TLS: the CRM does not speak TLS 1.3, which the gateway requires".into()
        }
        E::AlertReceived(alert) => format!("TLS: the CRM ended the handshake with alert {alert:?}"),
        other => format!("TLS: {other}"),
    }
}
