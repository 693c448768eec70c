//! TLS, in one place for every service (aws-lc-rs, safe default protocol versions):
//! - the public front door's server configuration from its PEM certificate and key
//!   ([`server_config`]);
//! - inside the region, mutual TLS: each service holds an [`Identity`] issued by the region's
//!   own CA (`manta-pki`), serves with [`internal_server_config`] (only clients of the same CA
//!   get in), calls others with [`internal_client_config`] (only servers of the same CA are
//!   trusted), and reads a caller's [`Role`] with [`peer_role`].

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// A server configuration presenting the chain in `cert` (PEM, leaf first) with the private
/// key in `key` (PEM), without client authentication.
///
/// # Errors
/// When a file cannot be read or parsed, or the key does not fit the certificate; the error
/// names the file.
pub fn server_config(cert: &Path, key: &Path) -> io::Result<Arc<rustls::ServerConfig>> {
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| bad("read key", key, &e))?;
    let cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(io::Error::other)?
        .with_no_client_auth()
        .with_single_cert(read_certs(cert)?, key_der)
        .map_err(|e| bad("use the key in", key, &e))?;
    Ok(Arc::new(cfg))
}

/// What a service is in the region, as its certificate says: a DNS name
/// `<role>.role.manta.internal` among the certificate's subject names, which only the region's
/// certificate authority can put there. Endpoints that matter check it (only the front door,
/// the jobs agents and the storage nodes' own GC change objects on a node; only operators reach
/// admin endpoints).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// The public front door (Manta and S3 APIs).
    Frontdoor,
    /// A Moray server.
    Moray,
    /// A storage node (and its garbage collector).
    Storage,
    /// A Manatee sitter.
    Sitter,
    /// The jobs supervisor.
    Supervisor,
    /// A jobs agent.
    Agent,
    /// The jobs API gateway.
    JobsApi,
    /// An operator's tool (`manta-adm`, `manatee-adm`, `moray-cli`).
    Adm,
    /// An etcd member.
    Etcd,
}

impl Role {
    /// Every role.
    pub const ALL: [Role; 9] = [
        Role::Frontdoor,
        Role::Moray,
        Role::Storage,
        Role::Sitter,
        Role::Supervisor,
        Role::Agent,
        Role::JobsApi,
        Role::Adm,
        Role::Etcd,
    ];

    /// The role's name (`frontdoor`, `storage`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Frontdoor => "frontdoor",
            Role::Moray => "moray",
            Role::Storage => "storage",
            Role::Sitter => "sitter",
            Role::Supervisor => "supervisor",
            Role::Agent => "agent",
            Role::JobsApi => "jobs-api",
            Role::Adm => "adm",
            Role::Etcd => "etcd",
        }
    }

    /// The subject name that marks a certificate as this role's.
    pub fn subject_name(self) -> String {
        format!("{}.role.manta.internal", self.as_str())
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a service's region identity lies: its certificate (`cert.pem`), its private key
/// (`key.pem`, private to the service) and the region's CA certificate (`ca.pem`), the only
/// authority its peers are checked against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The service's certificate (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM).
    pub key: PathBuf,
    /// The region CA's certificate (PEM).
    pub ca: PathBuf,
}

impl Identity {
    /// The identity kept in `dir` (`cert.pem`, `key.pem`, `ca.pem`).
    pub fn in_dir(dir: &Path) -> Identity {
        Identity {
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
            ca: dir.join("ca.pem"),
        }
    }

    /// The directory holding the three files (what the services' `--tls-dir` takes).
    pub fn dir(&self) -> &Path {
        self.cert.parent().unwrap_or(Path::new("."))
    }

    fn certs(&self) -> io::Result<Vec<CertificateDer<'static>>> {
        read_certs(&self.cert)
    }

    fn private_key(&self) -> io::Result<PrivateKeyDer<'static>> {
        PrivateKeyDer::from_pem_file(&self.key).map_err(|e| bad("read key", &self.key, &e))
    }

    fn roots(&self) -> io::Result<Arc<rustls::RootCertStore>> {
        let mut roots = rustls::RootCertStore::empty();
        for c in read_certs(&self.ca)? {
            roots
                .add(c)
                .map_err(|e| bad("use the CA certificate in", &self.ca, &e))?;
        }
        Ok(Arc::new(roots))
    }
}

fn bad(what: &str, path: &Path, e: &dyn std::fmt::Display) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("{what} {}: {e}", path.display()),
    )
}

fn read_certs(path: &Path) -> io::Result<Vec<CertificateDer<'static>>> {
    CertificateDer::pem_file_iter(path)
        .map_err(|e| bad("read certificates", path, &e))?
        .collect::<Result<_, _>>()
        .map_err(|e| bad("parse certificates in", path, &e))
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// The server configuration of an internal service: presents `id`'s certificate and accepts
/// only clients holding a certificate of the same region CA (mutual TLS). The client's role is
/// then read per request with [`peer_role`].
///
/// # Errors
/// When a file cannot be read or parsed, or the key does not fit the certificate.
pub fn internal_server_config(id: &Identity) -> io::Result<Arc<rustls::ServerConfig>> {
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(id.roots()?, provider())
            .build()
            .map_err(|e| bad("build the client verifier from", &id.ca, &e))?;
    let cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(io::Error::other)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(id.certs()?, id.private_key()?)
        .map_err(|e| bad("use the key in", &id.key, &e))?;
    Ok(Arc::new(cfg))
}

/// The client configuration of a service calling another inside the region: trusts only the
/// region CA (never the system's roots) and presents `id`'s certificate.
///
/// It remembers nothing of one server for the next (no session resumption, no key-exchange
/// hint): every service of a one-machine region is `127.0.0.1`, so what etcd (Go's TLS) said
/// was offered to the next service called, which asked for its own key exchange, and the
/// retried hello (the ticket withdrawn) was refused; `manta-adm status` then saw that service
/// as down. Connections are pooled, so little is lost.
///
/// # Errors
/// When a file cannot be read or parsed, or the key does not fit the certificate.
pub fn internal_client_config(id: &Identity) -> io::Result<Arc<rustls::ClientConfig>> {
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(io::Error::other)?
        .with_root_certificates(id.roots()?)
        .with_client_auth_cert(id.certs()?, id.private_key()?)
        .map_err(|e| bad("use the key in", &id.key, &e))?;
    cfg.resumption = rustls::client::Resumption::disabled();
    Ok(Arc::new(cfg))
}

/// [`internal_client_config`] of a service's identity when it has one (`None`: the service
/// calls others over plain HTTP).
///
/// # Errors
/// As [`internal_client_config`].
pub fn internal_client_of(id: Option<&Identity>) -> io::Result<Option<Arc<rustls::ClientConfig>>> {
    id.map(internal_client_config).transpose()
}

/// The command-line options of a service that serves mutual TLS inside a region: its identity,
/// or an explicit choice to serve plain HTTP (a service tested alone).
#[derive(Debug, Clone, clap::Args)]
pub struct ServerTlsArgs {
    /// The service's region identity (`cert.pem`, `key.pem`, `ca.pem`, made by `manta-adm`):
    /// it then serves mutual TLS to region certificates only.
    #[arg(
        long,
        env = "MANTA_TLS_DIR",
        required_unless_present = "insecure_plain_http"
    )]
    pub tls_dir: Option<PathBuf>,
    /// Serve plain HTTP to anyone who connects, without a region identity (the service tested
    /// alone; never in a region).
    #[arg(long, env = "MANTA_INSECURE_PLAIN_HTTP", conflicts_with = "tls_dir")]
    pub insecure_plain_http: bool,
}

impl ServerTlsArgs {
    /// The identity given, if any.
    pub fn identity(&self) -> Option<Identity> {
        self.tls_dir.as_deref().map(Identity::in_dir)
    }
}

/// The role a client's certificate names on a mutually authenticated connection (`None`: it
/// names none), found once per connection and inserted into every request's extensions by
/// [`crate::http::serve`].
#[derive(Debug, Clone, Copy)]
pub struct PeerRole(pub Option<Role>);

/// The role a request's client certificate names, if any (`None` on a connection without a
/// client certificate). The certificate's chain was checked when the connection was made.
pub fn peer_role(extensions: &http::Extensions) -> Option<Role> {
    extensions.get::<PeerRole>().and_then(|r| r.0)
}

/// The one authorisation decision of the internal endpoints: the caller's role when it is
/// one of `allowed`, else why not (for the refusal each service words its own way).
///
/// # Errors
/// A caller without a role, or of another role.
pub fn check_role(extensions: &http::Extensions, allowed: &[Role]) -> Result<Role, String> {
    match peer_role(extensions) {
        Some(role) if allowed.contains(&role) => Ok(role),
        role => {
            let who = role.map_or_else(
                || "a caller without a role".to_owned(),
                |r| format!("role {r}"),
            );
            let wanted: Vec<&str> = allowed.iter().map(|r| r.as_str()).collect();
            Err(format!(
                "{who} may not do this (allowed: {})",
                wanted.join(", ")
            ))
        }
    }
}

/// The role a certificate names among its subject names.
pub fn role_of(cert: &CertificateDer<'_>) -> Option<Role> {
    let ee = webpki::EndEntityCert::try_from(cert).ok()?;
    Role::ALL.into_iter().find(|r| {
        let name = r.subject_name();
        ServerName::try_from(name.as_str())
            .is_ok_and(|n| ee.verify_is_valid_for_subject_name(&n).is_ok())
    })
}

/// A client configuration that trusts no one: what `https://` gets from a client whose caller
/// gave no identity (every handshake fails, so nothing is sent to an unverified peer).
pub fn trust_nothing() -> Arc<rustls::ClientConfig> {
    let cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map(|b| {
            b.with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth()
        })
        .unwrap_or_else(|e| unreachable!("the default protocol versions are supported: {e}"));
    Arc::new(cfg)
}
