//! Client-side signing: a private key from a file (OpenSSH format, or PEM PKCS#1/SEC1/PKCS#8),
//! or a key held by `ssh-agent`, producing signatures in the encodings the server verifies.
//!
//! [`KeySigner::find`] picks the key the way the original tools do: `MANTA_KEY_ID` names a
//! fingerprint (MD5 colon hex or `SHA256:`), looked up among `~/.ssh/*.pub` with their private
//! halves, then among the agent's identities; without a key id, the first usable key wins.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ssh_key::private::{EcdsaKeypair, KeypairData};
use ssh_key::public::{EcdsaPublicKey, KeyData};

use crate::keys::{Algorithm, KeyType, SshPublicKey};

/// Why no signer could be made or a signature not produced.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SignerError {
    /// Reading a key file failed.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not a private key this code understands.
    #[error(
        "{0}: not a supported private key (RSA, ECDSA P-256/P-384 or Ed25519, OpenSSH or PEM format)"
    )]
    Unsupported(PathBuf),
    /// The key is protected by a passphrase.
    #[error("{0} is encrypted with a passphrase: add it to ssh-agent (ssh-add) instead")]
    Encrypted(PathBuf),
    /// No key matched.
    #[error("no SSH key found{0}")]
    NotFound(String),
    /// Talking to ssh-agent failed.
    #[error("ssh-agent: {0}")]
    Agent(String),
    /// Signing failed.
    #[error("signing failed: {0}")]
    Sign(String),
}

#[derive(Clone)]
enum Secret {
    Rsa(Box<rsa::RsaPrivateKey>),
    P256(p256::ecdsa::SigningKey),
    P384(p384::ecdsa::SigningKey),
    Ed25519(Box<ed25519_dalek::SigningKey>),
    Agent(PathBuf),
}

/// Something that signs request data with one SSH key.
#[derive(Clone)]
pub struct KeySigner {
    secret: Secret,
    public: SshPublicKey,
}

impl std::fmt::Debug for KeySigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let via = if matches!(self.secret, Secret::Agent(_)) {
            "agent"
        } else {
            "file"
        };
        f.debug_struct("KeySigner")
            .field("key", &self.public)
            .field("via", &via)
            .finish()
    }
}

fn public_from(data: KeyData) -> Result<SshPublicKey, SignerError> {
    let pk = ssh_key::PublicKey::new(data, "");
    SshPublicKey::parse(
        &pk.to_openssh()
            .map_err(|e| SignerError::Sign(e.to_string()))?,
    )
    .map_err(|e| SignerError::Sign(e.to_string()))
}

/// An RSA key from its OpenSSH components. (ssh-key 0.6's own conversion passes `p` twice
/// instead of `p` and `q`, so the key fails validation; build it here.)
fn rsa_from_openssh(kp: &ssh_key::private::RsaKeypair) -> Option<rsa::RsaPrivateKey> {
    let big = |m: &ssh_key::Mpint| m.as_positive_bytes().map(rsa::BigUint::from_bytes_be);
    let key = rsa::RsaPrivateKey::from_components(
        big(&kp.public.n)?,
        big(&kp.public.e)?,
        big(&kp.private.d)?,
        vec![big(&kp.private.p)?, big(&kp.private.q)?],
    )
    .ok()?;
    key.validate().ok()?;
    Some(key)
}

impl KeySigner {
    /// Loads a private key file.
    ///
    /// # Errors
    /// When the file cannot be read, is encrypted, or holds an unsupported key.
    pub fn from_file(path: &Path) -> Result<KeySigner, SignerError> {
        let text = std::fs::read_to_string(path).map_err(|source| SignerError::Io {
            path: path.to_owned(),
            source,
        })?;
        KeySigner::from_pem(&text).map_err(|e| match e {
            SignerError::Unsupported(_) => SignerError::Unsupported(path.to_owned()),
            SignerError::Encrypted(_) => SignerError::Encrypted(path.to_owned()),
            other => other,
        })
    }

    /// Parses a private key from its text.
    ///
    /// # Errors
    /// When the key is encrypted or unsupported.
    pub fn from_pem(text: &str) -> Result<KeySigner, SignerError> {
        let unsupported = || SignerError::Unsupported(PathBuf::from("key"));
        if text.contains("BEGIN OPENSSH PRIVATE KEY") {
            let key = match ssh_key::PrivateKey::from_openssh(text) {
                Ok(k) => k,
                // ssh-key 0.6 refuses an ECDSA scalar shorter than the curve (OpenSSH writes a
                // minimal integer, so about one P-256 key in 256 has one): read those here.
                Err(_) => return openssh_ecdsa(text).ok_or_else(unsupported),
            };
            if key.is_encrypted() {
                return Err(SignerError::Encrypted(PathBuf::from("key")));
            }
            let public =
                SshPublicKey::parse(&key.public_key().to_openssh().map_err(|_| unsupported())?)
                    .map_err(|_| unsupported())?;
            let secret = match key.key_data() {
                KeypairData::Rsa(kp) => {
                    Secret::Rsa(Box::new(rsa_from_openssh(kp).ok_or_else(unsupported)?))
                }
                KeypairData::Ecdsa(EcdsaKeypair::NistP256 { private, .. }) => Secret::P256(
                    p256::ecdsa::SigningKey::from_slice(private.as_slice())
                        .map_err(|_| unsupported())?,
                ),
                KeypairData::Ecdsa(EcdsaKeypair::NistP384 { private, .. }) => Secret::P384(
                    p384::ecdsa::SigningKey::from_slice(private.as_slice())
                        .map_err(|_| unsupported())?,
                ),
                KeypairData::Ed25519(kp) => Secret::Ed25519(Box::new(
                    ed25519_dalek::SigningKey::try_from(kp).map_err(|_| unsupported())?,
                )),
                _ => return Err(unsupported()),
            };
            return Ok(KeySigner { secret, public });
        }
        if text.contains("ENCRYPTED") {
            return Err(SignerError::Encrypted(PathBuf::from("key")));
        }
        if text.contains("BEGIN RSA PRIVATE KEY") {
            use rsa::pkcs1::DecodeRsaPrivateKey as _;
            let k = rsa::RsaPrivateKey::from_pkcs1_pem(text).map_err(|_| unsupported())?;
            return KeySigner::from_rsa(k);
        }
        if text.contains("BEGIN EC PRIVATE KEY") {
            if let Ok(sk) = p256::SecretKey::from_sec1_pem(text) {
                return KeySigner::from_p256(sk.into());
            }
            if let Ok(sk) = p384::SecretKey::from_sec1_pem(text) {
                return KeySigner::from_p384(sk.into());
            }
            return Err(unsupported());
        }
        if text.contains("BEGIN PRIVATE KEY") {
            use rsa::pkcs8::DecodePrivateKey as _;
            if let Ok(k) = rsa::RsaPrivateKey::from_pkcs8_pem(text) {
                return KeySigner::from_rsa(k);
            }
            if let Ok(sk) = p256::SecretKey::from_pkcs8_pem(text) {
                return KeySigner::from_p256(sk.into());
            }
            if let Ok(sk) = p384::SecretKey::from_pkcs8_pem(text) {
                return KeySigner::from_p384(sk.into());
            }
        }
        Err(unsupported())
    }

    fn from_rsa(k: rsa::RsaPrivateKey) -> Result<KeySigner, SignerError> {
        let pk = ssh_key::public::RsaPublicKey::try_from(&k.to_public_key())
            .map_err(|e| SignerError::Sign(e.to_string()))?;
        Ok(KeySigner {
            public: public_from(KeyData::Rsa(pk))?,
            secret: Secret::Rsa(Box::new(k)),
        })
    }

    fn from_p256(sk: p256::ecdsa::SigningKey) -> Result<KeySigner, SignerError> {
        let point = sk.verifying_key().to_encoded_point(false);
        let public = public_from(KeyData::Ecdsa(EcdsaPublicKey::NistP256(point)))?;
        Ok(KeySigner {
            public,
            secret: Secret::P256(sk),
        })
    }

    fn from_p384(sk: p384::ecdsa::SigningKey) -> Result<KeySigner, SignerError> {
        let point = sk.verifying_key().to_encoded_point(false);
        let public = public_from(KeyData::Ecdsa(EcdsaPublicKey::NistP384(point)))?;
        Ok(KeySigner {
            public,
            secret: Secret::P384(sk),
        })
    }

    /// A signer for a key held by the ssh-agent at `socket`.
    pub fn agent(socket: PathBuf, public: SshPublicKey) -> KeySigner {
        KeySigner {
            secret: Secret::Agent(socket),
            public,
        }
    }

    /// The public half.
    pub fn public_key(&self) -> &SshPublicKey {
        &self.public
    }

    /// The algorithm this signer uses: the key family with its default hash.
    pub fn algorithm(&self) -> Algorithm {
        let kind = self.public.kind();
        Algorithm {
            family: kind.family(),
            hash: kind.default_hash(),
        }
    }

    /// Signs `data`, returning the base64 signature.
    ///
    /// # Errors
    /// When the agent fails or refuses.
    pub async fn sign(&self, data: &[u8]) -> Result<String, SignerError> {
        let raw = match &self.secret {
            Secret::Rsa(k) => k
                .sign(rsa::Pkcs1v15Sign::new::<sha2::Sha256>(), &{
                    use sha2::Digest as _;
                    sha2::Sha256::digest(data).to_vec()
                })
                .map_err(|e| SignerError::Sign(e.to_string()))?,
            Secret::P256(k) => {
                use p256::ecdsa::signature::Signer as _;
                let s: p256::ecdsa::Signature = k.sign(data);
                s.to_der().as_bytes().to_vec()
            }
            Secret::P384(k) => {
                use p384::ecdsa::signature::Signer as _;
                let s: p384::ecdsa::Signature = k.sign(data);
                s.to_der().as_bytes().to_vec()
            }
            Secret::Ed25519(k) => {
                use ed25519_dalek::Signer as _;
                k.sign(data).to_bytes().to_vec()
            }
            Secret::Agent(sock) => agent::sign(sock, &self.public, data)
                .await
                .map_err(SignerError::Agent)?,
        };
        Ok(STANDARD.encode(raw))
    }

    /// Finds a key as the command line tools do (see the module docs).
    ///
    /// # Errors
    /// [`SignerError::NotFound`] when no key matches.
    pub async fn find(key_id: Option<&str>, ssh_dir: &Path) -> Result<KeySigner, SignerError> {
        let mut errors = Vec::new();
        // Private key files with a .pub beside them, then bare id_* files.
        let mut candidates: Vec<PathBuf> = std::fs::read_dir(ssh_dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "pub"))
            .map(|p| p.with_extension(""))
            .filter(|p| p.exists())
            .collect();
        candidates.sort();
        // Conventional names first.
        candidates.sort_by_key(|p| {
            let n = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            match n {
                "id_ed25519" => 0,
                "id_ecdsa" => 1,
                "id_rsa" => 2,
                _ => 3,
            }
        });
        for path in &candidates {
            // Match on the public half first, so encrypted keys we do not need are not an error.
            let pub_line = std::fs::read_to_string(path.with_extension("pub")).unwrap_or_default();
            if let (Some(id), Ok(pk)) = (key_id, SshPublicKey::parse(&pub_line))
                && !pk.matches_fingerprint(id)
            {
                continue;
            }
            match KeySigner::from_file(path) {
                Ok(s) => return Ok(s),
                Err(e) => errors.push(e.to_string()),
            }
        }
        if let Some(sock) = std::env::var_os("SSH_AUTH_SOCK").map(PathBuf::from) {
            match agent::identities(&sock).await {
                Ok(ids) => {
                    for pk in ids {
                        if key_id.is_none_or(|id| pk.matches_fingerprint(id)) {
                            return Ok(KeySigner::agent(sock, pk));
                        }
                    }
                }
                Err(e) => errors.push(format!("ssh-agent: {e}")),
            }
        }
        let what = match key_id {
            Some(id) => format!(
                " with fingerprint {id} in {} or ssh-agent",
                ssh_dir.display()
            ),
            None => format!(" in {} or ssh-agent", ssh_dir.display()),
        };
        let detail = if errors.is_empty() {
            String::new()
        } else {
            format!(" ({})", errors.join("; "))
        };
        Err(SignerError::NotFound(format!("{what}{detail}")))
    }
}

/// A minimal ssh-agent client: list identities, sign with one.
pub mod agent {
    use std::path::Path;

    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::net::UnixStream;

    use super::*;

    const REQUEST_IDENTITIES: u8 = 11;
    const IDENTITIES_ANSWER: u8 = 12;
    const SIGN_REQUEST: u8 = 13;
    const SIGN_RESPONSE: u8 = 14;
    const RSA_SHA2_256: u32 = 2;

    fn put_string(buf: &mut Vec<u8>, s: &[u8]) {
        buf.extend_from_slice(&(s.len() as u32).to_be_bytes());
        buf.extend_from_slice(s);
    }

    struct Reader<'a>(&'a [u8]);
    impl<'a> Reader<'a> {
        fn u32(&mut self) -> Result<u32, String> {
            let (a, b) = self.0.split_at_checked(4).ok_or("short agent message")?;
            self.0 = b;
            Ok(u32::from_be_bytes([a[0], a[1], a[2], a[3]]))
        }
        fn string(&mut self) -> Result<&'a [u8], String> {
            let n = self.u32()? as usize;
            let (a, b) = self.0.split_at_checked(n).ok_or("short agent message")?;
            self.0 = b;
            Ok(a)
        }
    }

    async fn roundtrip(sock: &Path, msg: &[u8]) -> Result<Vec<u8>, String> {
        let mut s = UnixStream::connect(sock)
            .await
            .map_err(|e| format!("connect {}: {e}", sock.display()))?;
        let mut framed = (msg.len() as u32).to_be_bytes().to_vec();
        framed.extend_from_slice(msg);
        s.write_all(&framed).await.map_err(|e| e.to_string())?;
        let len = s.read_u32().await.map_err(|e| e.to_string())? as usize;
        if len > 256 * 1024 {
            return Err("agent reply too large".into());
        }
        let mut reply = vec![0; len];
        s.read_exact(&mut reply).await.map_err(|e| e.to_string())?;
        Ok(reply)
    }

    /// The agent's keys that this code can use.
    ///
    /// # Errors
    /// When the agent cannot be reached or answers nonsense.
    pub async fn identities(sock: &Path) -> Result<Vec<SshPublicKey>, String> {
        let reply = roundtrip(sock, &[REQUEST_IDENTITIES]).await?;
        let (&kind, rest) = reply.split_first().ok_or("empty agent reply")?;
        if kind != IDENTITIES_ANSWER {
            return Err(format!("unexpected agent reply {kind}"));
        }
        let mut r = Reader(rest);
        let n = r.u32()?;
        let mut out = Vec::new();
        for _ in 0..n {
            let blob = r.string()?;
            let _comment = r.string()?;
            let Ok(key) = ssh_key::PublicKey::from_bytes(blob) else {
                continue;
            };
            if let Ok(line) = key.to_openssh()
                && let Ok(pk) = SshPublicKey::parse(&line)
            {
                out.push(pk);
            }
        }
        Ok(out)
    }

    fn mpint_to_fixed(m: &[u8], size: usize) -> Result<Vec<u8>, String> {
        let m = if m.first() == Some(&0) { &m[1..] } else { m };
        if m.len() > size {
            return Err("agent ECDSA signature component too long".into());
        }
        let mut v = vec![0; size - m.len()];
        v.extend_from_slice(m);
        Ok(v)
    }

    /// Asks the agent to sign `data` with `key`; returns the raw signature in HTTP Signature
    /// encoding (PKCS#1 bytes, ECDSA DER, Ed25519 64 bytes).
    ///
    /// # Errors
    /// When the agent refuses or cannot be reached.
    pub async fn sign(sock: &Path, key: &SshPublicKey, data: &[u8]) -> Result<Vec<u8>, String> {
        let mut msg = vec![SIGN_REQUEST];
        put_string(&mut msg, &key.wire_blob());
        put_string(&mut msg, data);
        let flags = if key.kind() == KeyType::Rsa {
            RSA_SHA2_256
        } else {
            0
        };
        msg.extend_from_slice(&flags.to_be_bytes());
        let reply = roundtrip(sock, &msg).await?;
        let (&kind, rest) = reply.split_first().ok_or("empty agent reply")?;
        if kind != SIGN_RESPONSE {
            return Err("the agent refused to sign".into());
        }
        let mut r = Reader(rest);
        let sig = r.string()?;
        let mut r = Reader(sig);
        let _alg = r.string()?;
        let blob = r.string()?;
        match key.kind() {
            KeyType::Rsa | KeyType::Ed25519 => Ok(blob.to_vec()),
            KeyType::EcdsaP256 | KeyType::EcdsaP384 => {
                let mut r = Reader(blob);
                let (rr, ss) = (r.string()?, r.string()?);
                let size = if key.kind() == KeyType::EcdsaP256 {
                    32
                } else {
                    48
                };
                let mut fixed = mpint_to_fixed(rr, size)?;
                fixed.extend(mpint_to_fixed(ss, size)?);
                if size == 32 {
                    let s =
                        p256::ecdsa::Signature::from_slice(&fixed).map_err(|e| e.to_string())?;
                    Ok(s.to_der().as_bytes().to_vec())
                } else {
                    let s =
                        p384::ecdsa::Signature::from_slice(&fixed).map_err(|e| e.to_string())?;
                    Ok(s.to_der().as_bytes().to_vec())
                }
            }
        }
    }
}

/// Reads an unencrypted OpenSSH-format ECDSA private key directly: the `openssh-key-v1`
/// container, one key, its private section (`check, check, type, curve, Q, d, comment`). The
/// scalar `d` is a minimal big-endian integer, so it may be shorter than the curve's size.
fn openssh_ecdsa(text: &str) -> Option<KeySigner> {
    use base64::Engine as _;
    struct R<'a>(&'a [u8]);
    impl<'a> R<'a> {
        fn take(&mut self, n: usize) -> Option<&'a [u8]> {
            if self.0.len() < n {
                return None;
            }
            let (a, b) = self.0.split_at(n);
            self.0 = b;
            Some(a)
        }
        fn u32(&mut self) -> Option<u32> {
            self.take(4)
                .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        }
        fn string(&mut self) -> Option<&'a [u8]> {
            let n = usize::try_from(self.u32()?).ok()?;
            self.take(n)
        }
    }
    let body: String = text
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .map(str::trim)
        .collect();
    let blob = base64::engine::general_purpose::STANDARD
        .decode(body)
        .ok()?;
    let mut r = R(blob.strip_prefix(b"openssh-key-v1\0")?);
    if r.string()? != b"none" || r.string()? != b"none" {
        return None; // encrypted keys are reported before this is reached
    }
    r.string()?; // kdf options
    if r.u32()? != 1 {
        return None;
    }
    let public_blob = r.string()?;
    let mut p = R(r.string()?);
    if p.u32()? != p.u32()? {
        return None;
    }
    let kind = std::str::from_utf8(p.string()?).ok()?.to_owned();
    p.string()?; // curve name
    let q = p.string()?;
    let d = p.string()?;
    let d = &d[d.iter().position(|&b| b != 0)?..];
    let padded = |size: usize| -> Option<Vec<u8>> {
        (d.len() <= size).then(|| {
            let mut v = vec![0u8; size - d.len()];
            v.extend_from_slice(d);
            v
        })
    };
    // The scalar must be the one behind the public point the file names.
    let secret = match kind.as_str() {
        "ecdsa-sha2-nistp256" => {
            let sk = p256::ecdsa::SigningKey::from_slice(&padded(32)?).ok()?;
            (sk.verifying_key().to_encoded_point(false).as_bytes() == q)
                .then_some(Secret::P256(sk))?
        }
        "ecdsa-sha2-nistp384" => {
            let sk = p384::ecdsa::SigningKey::from_slice(&padded(48)?).ok()?;
            (sk.verifying_key().to_encoded_point(false).as_bytes() == q)
                .then_some(Secret::P384(sk))?
        }
        _ => return None,
    };
    let line = format!(
        "{kind} {}",
        base64::engine::general_purpose::STANDARD.encode(public_blob)
    );
    let public = SshPublicKey::parse(&line).ok()?;
    Some(KeySigner { secret, public })
}

#[cfg(test)]
mod short_scalar_tests {
    use super::KeySigner;

    /// A P-256 key made by ssh-keygen whose private scalar has a leading zero byte, so OpenSSH
    /// stored it in 31 bytes (a test key, made for this test only).
    const SHORT_SCALAR_P256: &str = "-----BEGIN OPENSSH PRIVATE KEY-----\n\
b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAaAAAABNlY2RzYS\n\
1zaGEyLW5pc3RwMjU2AAAACG5pc3RwMjU2AAAAQQQYwCxysDsIRHFqB2u/RKUKl8TGDHKe\n\
Zc94GDEJlhahB2tkl/pqBVDaLYHLMyemmMA9M43YPy6Bdpb9v0PJY8hpAAAAqHLYCgty2A\n\
oLAAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBBjALHKwOwhEcWoH\n\
a79EpQqXxMYMcp5lz3gYMQmWFqEHa2SX+moFUNotgcszJ6aYwD0zjdg/LoF2lv2/Q8ljyG\n\
kAAAAfPI7AWUdb7VDOsoCKmfqO7BlEVdH5Ik5wk6LViqrMHgAAAA1rMTc5LWVjZHNhMjU2\n\
AQIDBA==\n\
-----END OPENSSH PRIVATE KEY-----\n";

    #[test]
    fn an_ecdsa_key_with_a_short_scalar_loads_and_signs() {
        let s = KeySigner::from_pem(SHORT_SCALAR_P256).unwrap();
        assert!(
            s.public_key()
                .to_openssh()
                .starts_with("ecdsa-sha2-nistp256 ")
        );
        // A damaged scalar is refused rather than signing for the wrong key.
        let damaged = SHORT_SCALAR_P256.replacen("kAAAAfPI7", "kAAAAfPI8", 1);
        assert!(KeySigner::from_pem(&damaged).is_err());
    }
}
