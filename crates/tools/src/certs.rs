//! A throw-away certificate authority for tests and the demo: a CA, a CRM server certificate
//! and per-store client certificates, generated with rcgen (ECDSA P-256) and written as PEM
//! files. Never meant for production: a real deployment gets its certificates from the
//! retailer's PKI.

use std::path::{Path, PathBuf};

/// Why certificates could not be made or written.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// rcgen refused the parameters.
    #[error("cannot generate a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// A PEM file could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// A certificate and its private key, as PEM.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The certificate (PEM).
    pub cert_pem: String,
    /// The private key (PKCS#8 PEM).
    pub key_pem: String,
}

/// Validity of an issued certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Validity {
    /// Valid from 2000 to 2999.
    Current,
    /// Expired at the end of 2020.
    Expired,
}

/// A test certificate authority.
pub struct TestCa {
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
}

impl TestCa {
    /// A new CA named `name`.
    pub fn new(name: &str) -> Result<TestCa, CertError> {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = rcgen::date_time_ymd(2000, 1, 1);
        params.not_after = rcgen::date_time_ymd(2999, 12, 31);
        let key = rcgen::KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        Ok(TestCa { cert, key })
    }

    /// The CA certificate (PEM).
    pub fn cert_pem(&self) -> String {
        self.cert.pem()
    }

    fn issue(
        &self,
        common_name: &str,
        names: &[&str],
        usage: rcgen::ExtendedKeyUsagePurpose,
        validity: Validity,
    ) -> Result<Issued, CertError> {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = rcgen::CertificateParams::new(names)?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, common_name);
        params.extended_key_usages = vec![usage];
        params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
        match validity {
            Validity::Current => {
                params.not_before = rcgen::date_time_ymd(2000, 1, 1);
                params.not_after = rcgen::date_time_ymd(2999, 12, 31);
            }
            Validity::Expired => {
                params.not_before = rcgen::date_time_ymd(2019, 1, 1);
                params.not_after = rcgen::date_time_ymd(2020, 12, 31);
            }
        }
        let key = rcgen::KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.cert, &self.key)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// A CRM server certificate valid for `names` (host names or IP addresses).
    pub fn server(&self, names: &[&str]) -> Result<Issued, CertError> {
        self.issue(
            names.first().copied().unwrap_or("crm"),
            names,
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            Validity::Current,
        )
    }

    /// A store's client certificate (common name and DNS name: the store id).
    pub fn client(&self, store_id: &str, validity: Validity) -> Result<Issued, CertError> {
        self.issue(
            store_id,
            &[store_id],
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
            validity,
        )
    }
}

/// Writes `contents` to `path` (mode 0600 for keys on Unix).
pub fn write_pem(path: &Path, contents: &str, private: bool) -> Result<(), CertError> {
    let write = || -> std::io::Result<()> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        if private {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        #[cfg(not(unix))]
        let _ = private;
        use std::io::Write;
        let mut file = options.open(path)?;
        file.write_all(contents.as_bytes())?;
        file.sync_all()
    };
    write().map_err(|source| CertError::Write {
        path: path.to_path_buf(),
        source,
    })
}

/// The PEM files of a complete local setup (one CA signing both sides).
#[derive(Debug, Clone)]
pub struct LocalPki {
    /// CA certificate: the gateway's `crm.ca_file` and the receiver's `--client-ca`.
    pub ca_file: PathBuf,
    /// The receiver's certificate (`--cert`), valid for `localhost` and `127.0.0.1`.
    pub server_cert_file: PathBuf,
    /// The receiver's key (`--key`).
    pub server_key_file: PathBuf,
    /// The store's certificate (`crm.client_cert_file`).
    pub client_cert_file: PathBuf,
    /// The store's key (`crm.client_key_file`).
    pub client_key_file: PathBuf,
}

/// Generates a CA, a server certificate for `localhost`/`127.0.0.1` and a client certificate
/// for `store_id`, and writes them into `dir` (for the demo and tests).
pub fn write_local_pki(dir: &Path, store_id: &str) -> Result<LocalPki, CertError> {
    let ca = TestCa::new("loyalty-gateway demo CA")?;
    let server = ca.server(&["localhost", "127.0.0.1"])?;
    let client = ca.client(store_id, Validity::Current)?;
    let pki = LocalPki {
        ca_file: dir.join("ca.pem"),
        server_cert_file: dir.join("crm-server.pem"),
        server_key_file: dir.join("crm-server.key"),
        client_cert_file: dir.join("store-client.pem"),
        client_key_file: dir.join("store-client.key"),
    };
    write_pem(&pki.ca_file, &ca.cert_pem(), false)?;
    write_pem(&pki.server_cert_file, &server.cert_pem, false)?;
    write_pem(&pki.server_key_file, &server.key_pem, true)?;
    write_pem(&pki.client_cert_file, &client.cert_pem, false)?;
    write_pem(&pki.client_key_file, &client.key_pem, true)?;
    Ok(pki)
}
