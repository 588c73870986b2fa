//! TLS for the daemon's outgoing links and the reference CRM: the one place that reads PEM
//! files, names the crypto provider (`ring`, explicitly, so no process-wide default is needed)
//! and builds rustls configurations:
//!
//! - [`client_config`]: the CRM link (TLS 1.3 only, the CRM's CA from a file and never the
//!   system store, the store's client certificate);
//! - [`build_client_config`]: any client, from a [`ClientSpec`] (the MQTT broker: TLS 1.2 and
//!   1.3, its CA file or the compiled-in Mozilla roots, an optional client certificate);
//! - [`server_config`]: mutual TLS 1.3 with `WebPkiClientVerifier` (the reference receiver).
//!
//! Private keys are wiped: the PEM bytes read from the file and the DER key after rustls has
//! turned it into its signing key. Also turns rustls failures into sentences an operator can
//! act on.

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use zeroize::{Zeroize, Zeroizing};

/// Why a TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    /// A configured file could not be read.
    #[error("cannot read {what} {path}: {source} (check {what} and the file's permissions)")]
    Read {
        /// Which setting (`crm.client_cert_file`, ...).
        what: String,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A file held no usable PEM item.
    #[error("{what} {path} holds no {expected} in PEM form")]
    Empty {
        /// Which setting.
        what: String,
        /// The file.
        path: PathBuf,
        /// What was looked for.
        expected: &'static str,
    },
    /// A setting is missing from the configuration.
    #[error("{0} is not set")]
    Missing(String),
    /// rustls refused the material (key does not match the certificate, bad CA, ...).
    #[error("TLS setup failed: {0}")]
    Rustls(String),
}

/// The crypto provider used for every TLS configuration: `ring`, named explicitly so that no
/// process-wide default provider is needed.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// `section.field` (`crm.ca_file`), or `field` alone outside a configuration section.
fn setting(section: &str, field: &str) -> String {
    if section.is_empty() {
        field.to_string()
    } else {
        format!("{section}.{field}")
    }
}

fn read_file(what: &str, path: &Path) -> Result<Zeroizing<Vec<u8>>, TlsSetupError> {
    std::fs::read(path)
        .map(Zeroizing::new)
        .map_err(|source| TlsSetupError::Read {
            what: what.to_string(),
            path: path.to_path_buf(),
            source,
        })
}

/// Reads every certificate of a PEM file; `what` names the setting in errors.
pub fn read_certs(what: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsSetupError> {
    let pem = read_file(what, path)?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut &pem[..])
        .filter_map(Result::ok)
        .collect();
    if certs.is_empty() {
        return Err(TlsSetupError::Empty {
            what: what.to_string(),
            path: path.to_path_buf(),
            expected: "CERTIFICATE",
        });
    }
    Ok(certs)
}

/// Reads the first private key of a PEM file (PKCS#8, PKCS#1 or SEC1). The file's bytes are
/// wiped once parsed, the returned key when dropped.
pub fn read_key(
    what: &str,
    path: &Path,
) -> Result<Zeroizing<PrivateKeyDer<'static>>, TlsSetupError> {
    let pem = read_file(what, path)?;
    match rustls_pemfile::private_key(&mut &pem[..]) {
        Ok(Some(key)) => Ok(Zeroizing::new(key)),
        _ => Err(TlsSetupError::Empty {
            what: what.to_string(),
            path: path.to_path_buf(),
            expected: "PRIVATE KEY",
        }),
    }
}

fn roots(what: &str, path: &Path) -> Result<RootCertStore, TlsSetupError> {
    let mut roots = RootCertStore::empty();
    for cert in read_certs(what, path)? {
        roots
            .add(cert)
            .map_err(|err| TlsSetupError::Rustls(format!("{what} {}: {err}", path.display())))?;
    }
    Ok(roots)
}

/// A certificate chain with its key, read from PEM files and checked to belong together. The
/// DER key is wiped as soon as rustls holds its own signing key.
fn certified_key(
    cert_what: &str,
    cert_file: &Path,
    key_what: &str,
    key_file: &Path,
) -> Result<Arc<CertifiedKey>, TlsSetupError> {
    let chain = read_certs(cert_what, cert_file)?;
    let mut der = read_key(key_what, key_file)?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&der)
        .map_err(|err| TlsSetupError::Rustls(format!("{key_what} {}: {err}", key_file.display())));
    der.zeroize();
    let key = CertifiedKey::new(chain, signing?);
    match key.keys_match() {
        // rustls itself tolerates keys whose public half it cannot compute.
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {
            Ok(Arc::new(key))
        }
        Err(err) => Err(TlsSetupError::Rustls(format!(
            "the key in {key_what} does not fit the certificate in {cert_what}: {err}"
        ))),
    }
}

/// What a TLS client trusts and presents.
#[derive(Debug, Clone, Copy)]
pub struct ClientSpec<'a> {
    /// The configuration section the files come from (`crm`, `mqtt`), for error messages.
    pub section: &'static str,
    /// The CA (PEM) trusted for the server's certificate; `None`: the Mozilla roots compiled
    /// into the binary (webpki-roots).
    pub ca_file: Option<&'a Path>,
    /// Client certificate chain and key (PEM) for mutual TLS.
    pub identity: Option<(&'a Path, &'a Path)>,
    /// TLS 1.3 only; otherwise rustls's safe defaults (1.2 and 1.3).
    pub tls13_only: bool,
    /// ALPN protocols offered (empty: none).
    pub alpn: &'a [&'a [u8]],
}

/// Builds a client configuration from `spec`, with the `ring` provider.
pub fn build_client_config(spec: &ClientSpec<'_>) -> Result<ClientConfig, TlsSetupError> {
    let roots = match spec.ca_file {
        Some(ca) => roots(&setting(spec.section, "ca_file"), ca)?,
        None => RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        },
    };
    let builder = ClientConfig::builder_with_provider(provider());
    let builder = if spec.tls13_only {
        builder.with_protocol_versions(&[&rustls::version::TLS13])
    } else {
        builder.with_safe_default_protocol_versions()
    }
    .map_err(|err| TlsSetupError::Rustls(err.to_string()))?
    .with_root_certificates(roots);
    let mut config = match spec.identity {
        Some((cert, key)) => {
            let key = certified_key(
                &setting(spec.section, "client_cert_file"),
                cert,
                &setting(spec.section, "client_key_file"),
                key,
            )?;
            builder.with_client_cert_resolver(Arc::new(SingleCertAndKey::from(key)))
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = spec.alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
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

/// Builds the CRM client configuration: TLS 1.3 only, ring, the CA from `ca_file` as the only
/// trust anchor, the store's certificate as client identity, ALPN `http/1.1`. Read afresh on
/// every new connection, so a renewed certificate or a fixed CA file is picked up without a
/// restart.
pub fn client_config(files: &ClientTlsFiles) -> Result<Arc<ClientConfig>, TlsSetupError> {
    fn required<'a>(file: &'a Option<PathBuf>, field: &str) -> Result<&'a Path, TlsSetupError> {
        file.as_deref()
            .ok_or_else(|| TlsSetupError::Missing(setting("crm", field)))
    }
    let ca = required(&files.ca_file, "ca_file")?;
    let cert = required(&files.cert_file, "client_cert_file")?;
    let key = required(&files.key_file, "client_key_file")?;
    let config = build_client_config(&ClientSpec {
        section: "crm",
        ca_file: Some(ca),
        identity: Some((cert, key)),
        tls13_only: true,
        alpn: &[b"http/1.1"],
    })?;
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
    let key = certified_key("cert", cert_file, "key", key_file)?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|err| TlsSetupError::Rustls(err.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(SingleCertAndKey::from(key)));
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

#[cfg(test)]
mod tests {
    use super::*;

    fn self_signed(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let issued =
            rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("rcgen");
        let cert = dir.join(format!("{name}.pem"));
        let key = dir.join(format!("{name}.key"));
        std::fs::write(&cert, issued.cert.pem()).expect("write cert");
        std::fs::write(&key, issued.key_pair.serialize_pem()).expect("write key");
        (cert, key)
    }

    fn mqtt_spec<'a>(
        ca: Option<&'a Path>,
        identity: Option<(&'a Path, &'a Path)>,
    ) -> ClientSpec<'a> {
        ClientSpec {
            section: "mqtt",
            ca_file: ca,
            identity,
            tls13_only: false,
            alpn: &[],
        }
    }

    #[test]
    fn a_client_with_its_own_identity_and_ca_builds() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (cert, key) = self_signed(dir.path(), "client");
        let config =
            build_client_config(&mqtt_spec(Some(&cert), Some((&cert, &key)))).expect("config");
        assert!(config.client_auth_cert_resolver.has_certs());
        // Without a CA file the compiled-in roots are trusted; without an identity none is sent.
        let config = build_client_config(&mqtt_spec(None, None)).expect("config");
        assert!(!config.client_auth_cert_resolver.has_certs());
    }

    #[test]
    fn a_key_that_does_not_fit_the_certificate_is_refused_naming_both_settings() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (cert, _) = self_signed(dir.path(), "client");
        let (_, other_key) = self_signed(dir.path(), "other");
        let err =
            build_client_config(&mqtt_spec(None, Some((&cert, &other_key)))).expect_err("mismatch");
        let message = err.to_string();
        assert!(
            message.contains("mqtt.client_key_file") && message.contains("mqtt.client_cert_file"),
            "{message}"
        );
        let err = server_config(&cert, &other_key, &cert).expect_err("mismatch");
        assert!(err.to_string().contains("does not fit"), "{err}");
    }

    #[test]
    fn missing_and_empty_files_name_the_setting() {
        let dir = tempfile::tempdir().expect("tempdir");
        let absent = dir.path().join("absent.pem");
        let message = build_client_config(&mqtt_spec(Some(&absent), None))
            .expect_err("absent")
            .to_string();
        assert!(message.contains("cannot read mqtt.ca_file"), "{message}");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not pem\n").expect("write");
        let (cert, _) = self_signed(dir.path(), "client");
        let message = build_client_config(&mqtt_spec(None, Some((&cert, &empty))))
            .expect_err("no key")
            .to_string();
        assert!(
            message.contains("mqtt.client_key_file") && message.contains("PRIVATE KEY"),
            "{message}"
        );
        let files = ClientTlsFiles {
            ca_file: Some(cert.clone()),
            cert_file: None,
            key_file: None,
        };
        let message = client_config(&files).expect_err("missing").to_string();
        assert_eq!(message, "crm.client_cert_file is not set");
    }
}
