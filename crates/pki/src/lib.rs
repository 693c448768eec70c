//! The region's identity: a certificate authority of the region's own, which issues each
//! service a private key and a certificate naming the service's [`Role`] (and the addresses it
//! is reached at). `manta-adm` makes them when it brings a region up, and the test harness makes
//! them for the regions it starts; the services only read them, through
//! [`manta_util::tls`].
//!
//! # Layout of a region's `pki/` directory
//! - `ca.pem`: the CA's certificate (public: every service trusts it and nothing else);
//! - `ca-key.pem`: the CA's key (mode 0600; only `manta-adm` reads it, to issue);
//! - `<service>/{cert.pem,key.pem,ca.pem}`: one service's identity ([`Identity::in_dir`]), the
//!   key mode 0600, the directory 0700, owned by the user the service runs as.
//!
//! # Guarantees
//! - Keys are ECDSA P-256, made here, written 0600 and never leave the directory.
//! - Every certificate expires: the CA after ten years, a service's after a year (they are
//!   issued again on every `up`); none is valid for a name it was not issued for.
//! - A service certificate can only be used as an end entity (it is not a CA).

use std::io;
use std::path::{Path, PathBuf};

pub use manta_util::tls::{Identity, Role};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use time::{Duration, OffsetDateTime};

/// How long the CA's certificate is valid.
pub const CA_LIFETIME: Duration = Duration::days(3650);

/// How long a service's certificate is valid.
pub const SERVICE_LIFETIME: Duration = Duration::days(365);

/// A failure to make, read or write the region's keys and certificates.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing a file.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: io::Error,
    },
    /// Making a key or a certificate, or reading a key back.
    #[error("{0}")]
    Cert(#[from] rcgen::Error),
    /// A name or address a certificate cannot hold.
    #[error("{0:?} cannot be a certificate's subject name")]
    BadName(String),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_owned(),
        source,
    }
}

/// The region's certificate authority, loaded with its key to issue service identities.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca").finish_non_exhaustive()
    }
}

/// The CA's parameters; the same for the region named `region` whenever rebuilt, so a
/// loaded key issues certificates that chain to the stored CA certificate.
fn ca_params(region: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "Manta region CA");
    dn.push(DnType::OrganizationName, region);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params
}

impl Ca {
    /// Opens the CA of region `region` kept in `dir` (`ca.pem`, `ca-key.pem`), making it (and
    /// `dir`, mode 0700) first when there is none.
    ///
    /// # Errors
    /// When the files cannot be read or written, or the key is not one.
    pub fn open_or_create(dir: &Path, region: &str) -> Result<Ca, Error> {
        let (cert_path, key_path) = (dir.join("ca.pem"), dir.join("ca-key.pem"));
        if cert_path.exists() && key_path.exists() {
            let key_pem = std::fs::read_to_string(&key_path).map_err(io_err(&key_path))?;
            let cert_pem = std::fs::read_to_string(&cert_path).map_err(io_err(&cert_path))?;
            let key = KeyPair::from_pem(&key_pem)?;
            return Ok(Ca {
                issuer: Issuer::new(ca_params(region), key),
                cert_pem,
            });
        }
        private_dir(dir)?;
        let key = KeyPair::generate()?;
        let mut params = ca_params(region);
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::hours(1);
        params.not_after = now + CA_LIFETIME;
        let cert_pem = params.self_signed(&key)?.pem();
        write_private(&key_path, key.serialize_pem().as_bytes())?;
        std::fs::write(&cert_path, &cert_pem).map_err(io_err(&cert_path))?;
        Ok(Ca {
            issuer: Issuer::new(ca_params(region), key),
            cert_pem,
        })
    }

    /// The CA's certificate (PEM).
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// Issues a service an identity in `dir` (made 0700): a new key (0600), a certificate for
    /// `role` named `name`, valid for the `hosts` (DNS names or IP addresses) it is reached at,
    /// for a year, and a copy of the CA certificate. What was there is replaced.
    ///
    /// # Errors
    /// When a name cannot be a subject name, or the files cannot be written.
    pub fn issue(
        &self,
        dir: &Path,
        name: &str,
        role: Role,
        hosts: &[String],
    ) -> Result<Identity, Error> {
        let mut sans = vec![SanType::DnsName(
            role.subject_name()
                .try_into()
                .map_err(|_| Error::BadName(role.subject_name()))?,
        )];
        for h in hosts {
            sans.push(match h.parse() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName(
                    h.clone()
                        .try_into()
                        .map_err(|_| Error::BadName(h.clone()))?,
                ),
            });
        }
        let mut params = CertificateParams::default();
        params.subject_alt_names = sans;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name);
        dn.push(DnType::OrganizationalUnitName, role.as_str());
        params.distinguished_name = dn;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::hours(1);
        params.not_after = now + SERVICE_LIFETIME;
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        private_dir(dir)?;
        let id = Identity::in_dir(dir);
        write_private(&id.key, key.serialize_pem().as_bytes())?;
        std::fs::write(&id.cert, cert.pem()).map_err(io_err(&id.cert))?;
        std::fs::write(&id.ca, &self.cert_pem).map_err(io_err(&id.ca))?;
        Ok(id)
    }
}

/// Makes `dir` (and its parents) and sets it to mode 0700.
fn private_dir(dir: &Path) -> Result<(), Error> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io_err(dir))
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    manta_util::write_private(path, bytes).map_err(io_err(path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use manta_util::tls::{internal_client_config, internal_server_config, role_of};
    use rustls::pki_types::pem::PemObject as _;
    use std::os::unix::fs::PermissionsExt as _;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn keys_are_private_and_certificates_name_their_role() {
        let tmp = tempfile::tempdir().unwrap();
        let pki = tmp.path().join("pki");
        let ca = Ca::open_or_create(&pki, "r1").unwrap();
        assert_eq!(mode(&pki), 0o700);
        assert_eq!(mode(&pki.join("ca-key.pem")), 0o600);
        let id = ca
            .issue(
                &pki.join("stor1"),
                "stor1",
                Role::Storage,
                &["127.0.0.1".into(), "localhost".into()],
            )
            .unwrap();
        assert_eq!(mode(&id.key), 0o600);
        assert_eq!(mode(&pki.join("stor1")), 0o700);
        let der = rustls::pki_types::CertificateDer::from_pem_file(&id.cert).unwrap();
        assert_eq!(role_of(&der), Some(Role::Storage));
        internal_server_config(&id).unwrap();
        internal_client_config(&id).unwrap();
    }

    #[test]
    fn a_reopened_ca_issues_certificates_that_chain_to_it() {
        let tmp = tempfile::tempdir().unwrap();
        let pki = tmp.path().join("pki");
        let first = Ca::open_or_create(&pki, "r1")
            .unwrap()
            .cert_pem()
            .to_owned();
        let again = Ca::open_or_create(&pki, "r1").unwrap();
        assert_eq!(again.cert_pem(), first, "the CA is kept, not replaced");
        let server = loopback(&again, tmp.path(), "s", Role::Moray);
        let client = loopback(&again, tmp.path(), "c", Role::Frontdoor);
        handshake(&server, &client).expect("a certificate of the reopened CA is accepted");
    }

    #[test]
    fn another_regions_certificate_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let ours = Ca::open_or_create(&tmp.path().join("a"), "a").unwrap();
        let theirs = Ca::open_or_create(&tmp.path().join("b"), "b").unwrap();
        let server = loopback(&ours, tmp.path(), "s", Role::Moray);
        let stranger = loopback(&theirs, tmp.path(), "c", Role::Adm);
        assert!(handshake(&server, &stranger).is_err());
    }

    /// `name`'s identity of `role`, valid for 127.0.0.1, issued by `ca` into `dir/name`.
    fn loopback(ca: &Ca, dir: &Path, name: &str, role: Role) -> Identity {
        ca.issue(&dir.join(name), name, role, &["127.0.0.1".into()])
            .unwrap()
    }

    /// A TLS handshake over loopback between `server` and `client`: the client's role as the
    /// server saw it.
    fn handshake(server: &Identity, client: &Identity) -> Result<Option<Role>, String> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let acceptor = tokio_rustls::TlsAcceptor::from(internal_server_config(server).unwrap());
            let accept = tokio::spawn(async move {
                let (tcp, _) = listener.accept().await.unwrap();
                let tls = acceptor.accept(tcp).await.map_err(|e| e.to_string())?;
                let peer = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|c| c.first().cloned());
                Ok::<_, String>(peer.and_then(|c| role_of(&c)))
            });
            let connector =
                tokio_rustls::TlsConnector::from(internal_client_config(client).unwrap());
            let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
            let client_side = connector
                .connect(name, tcp)
                .await
                .map_err(|e| e.to_string());
            let server_side = accept.await.unwrap();
            client_side?;
            server_side
        })
    }
}
