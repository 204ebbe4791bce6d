//! Certificates made in the test (rcgen): a CA, a broker certificate for 127.0.0.1 and
//! localhost, and client certificates, written as PEM files.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// A certificate authority that signs broker and client certificates.
pub(crate) struct Authority {
    issuer: Issuer<'static, KeyPair>,
    /// The CA certificate, PEM.
    pub(crate) cert_file: PathBuf,
    dir: PathBuf,
}

/// A certificate and its key, as files.
pub(crate) struct Identity {
    pub(crate) cert_file: PathBuf,
    pub(crate) key_file: PathBuf,
}

impl Authority {
    /// A new CA named `name`, its certificate written to `dir/<name>.pem`.
    pub(crate) fn new(dir: &Path, name: &str) -> Self {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, name);
        let cert = params.self_signed(&key).unwrap();
        let cert_file = dir.join(format!("{name}.pem"));
        std::fs::write(&cert_file, cert.pem()).unwrap();
        Self { issuer: Issuer::new(params, key), cert_file, dir: dir.to_owned() }
    }

    /// A broker certificate for 127.0.0.1 and localhost, as `dir/<file>.pem` and `.key`.
    pub(crate) fn broker(&self, file: &str) -> Identity {
        let params =
            CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
        self.sign(params, file)
    }

    /// A client certificate with subject `CN=<common_name>,O=ringmq tests`.
    pub(crate) fn client(&self, common_name: &str, file: &str) -> Identity {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, common_name);
        params.distinguished_name.push(DnType::OrganizationName, "ringmq tests");
        self.sign(params, file)
    }

    fn sign(&self, params: CertificateParams, file: &str) -> Identity {
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let identity = Identity {
            cert_file: self.dir.join(format!("{file}.pem")),
            key_file: self.dir.join(format!("{file}.key")),
        };
        std::fs::write(&identity.cert_file, cert.pem()).unwrap();
        std::fs::write(&identity.key_file, key.serialize_pem()).unwrap();
        identity
    }
}
