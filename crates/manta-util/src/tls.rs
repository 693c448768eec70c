//! TLS configuration for the services that serve HTTPS: one place that loads a certificate
//! chain and its key from PEM files into a rustls server configuration (aws-lc-rs provider,
//! safe default protocol versions).

use std::io;
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// A server configuration presenting the chain in `cert` (PEM, leaf first) with the private
/// key in `key` (PEM), without client authentication.
///
/// # Errors
/// When a file cannot be read or parsed, or the key does not fit the certificate; the error
/// names the file.
pub fn server_config(cert: &Path, key: &Path) -> io::Result<Arc<rustls::ServerConfig>> {
    let bad = |what: &str, path: &Path, e: &dyn std::fmt::Display| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{what} {}: {e}", path.display()),
        )
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| bad("read certificates", cert, &e))?
        .collect::<Result<_, _>>()
        .map_err(|e| bad("parse certificates in", cert, &e))?;
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| bad("read key", key, &e))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(io::Error::other)?
        .with_no_client_auth()
        .with_single_cert(certs, key_der)
        .map_err(|e| bad("use the key in", key, &e))?;
    Ok(Arc::new(cfg))
}
