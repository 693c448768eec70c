//! SSH public keys: parsing, the two fingerprint forms clients name keys by, and signature
//! verification in the encodings HTTP Signature clients send.
//!
//! Clients name a key by its MD5 fingerprint in colon-separated hex (`a1:b2:...`, what
//! `ssh-keygen -E md5 -l` prints after `MD5:`), and newer ones by `SHA256:<base64>`. Signatures
//! arrive base64-encoded: PKCS#1 v1.5 for RSA, an ASN.1 DER `SEQUENCE { r, s }` for ECDSA, the
//! raw 64 bytes for Ed25519.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use md5::{Digest as _, Md5};
use ssh_key::public::{EcdsaPublicKey, KeyData};
use ssh_key::{HashAlg, PublicKey};

/// A key type a client signs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyType {
    /// RSA.
    Rsa,
    /// ECDSA on NIST P-256.
    EcdsaP256,
    /// ECDSA on NIST P-384.
    EcdsaP384,
    /// Ed25519.
    Ed25519,
}

impl KeyType {
    /// The key-type half of an algorithm name (`rsa`, `ecdsa`, `ed25519`).
    pub const fn family(self) -> &'static str {
        match self {
            KeyType::Rsa => "rsa",
            KeyType::EcdsaP256 | KeyType::EcdsaP384 => "ecdsa",
            KeyType::Ed25519 => "ed25519",
        }
    }

    /// The hash clients use with this key when they do not choose one.
    pub const fn default_hash(self) -> HashName {
        match self {
            KeyType::Rsa | KeyType::EcdsaP256 => HashName::Sha256,
            KeyType::EcdsaP384 => HashName::Sha384,
            KeyType::Ed25519 => HashName::Sha512,
        }
    }
}

/// The hash half of an algorithm name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HashName {
    /// SHA-1 (accepted from old clients for RSA only).
    Sha1,
    /// SHA-256.
    Sha256,
    /// SHA-384.
    Sha384,
    /// SHA-512.
    Sha512,
}

impl HashName {
    /// Lower-case name (`sha256`).
    pub const fn as_str(self) -> &'static str {
        match self {
            HashName::Sha1 => "sha1",
            HashName::Sha256 => "sha256",
            HashName::Sha384 => "sha384",
            HashName::Sha512 => "sha512",
        }
    }

    fn digest(self, data: &[u8]) -> Vec<u8> {
        use sha2::Digest as _;
        match self {
            HashName::Sha1 => sha1::Sha1::digest(data).to_vec(),
            HashName::Sha256 => sha2::Sha256::digest(data).to_vec(),
            HashName::Sha384 => sha2::Sha384::digest(data).to_vec(),
            HashName::Sha512 => sha2::Sha512::digest(data).to_vec(),
        }
    }
}

/// A signing algorithm as named in `algorithm="..."`: key family plus hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Algorithm {
    /// `rsa`, `ecdsa` or `ed25519`.
    pub family: &'static str,
    /// The hash.
    pub hash: HashName,
}

impl Algorithm {
    /// Parses `rsa-sha256`, `ECDSA-SHA384`, `ed25519-sha512`, ... (case-insensitive).
    pub fn parse(s: &str) -> Option<Algorithm> {
        let lower = s.to_ascii_lowercase();
        let (fam, hash) = lower.split_once('-')?;
        let family = match fam {
            "rsa" => "rsa",
            "ecdsa" => "ecdsa",
            "ed25519" => "ed25519",
            _ => return None,
        };
        let hash = match hash {
            "sha1" => HashName::Sha1,
            "sha256" => HashName::Sha256,
            "sha384" => HashName::Sha384,
            "sha512" => HashName::Sha512,
            _ => return None,
        };
        if family == "ed25519" && hash != HashName::Sha512 {
            return None;
        }
        if family != "rsa" && hash == HashName::Sha1 {
            return None;
        }
        Some(Algorithm { family, hash })
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.family, self.hash.as_str())
    }
}

/// Why a key could not be parsed or a signature not verified.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// Not an OpenSSH public key line of a supported type.
    #[error("not a supported SSH public key: {0}")]
    Parse(String),
    /// The algorithm's family does not match the key.
    #[error("algorithm {alg} cannot be used with a {key} key")]
    AlgorithmMismatch {
        /// The algorithm requested.
        alg: String,
        /// The key's family.
        key: &'static str,
    },
    /// The signature is not valid base64 or not in the key type's encoding.
    #[error("malformed signature")]
    MalformedSignature,
    /// The signature does not verify.
    #[error("signature does not verify")]
    BadSignature,
}

/// A parsed SSH public key with its fingerprints.
#[derive(Clone)]
pub struct SshPublicKey {
    key: PublicKey,
    kind: KeyType,
    md5: String,
    sha256: String,
}

impl fmt::Debug for SshPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SshPublicKey")
            .field("kind", &self.kind)
            .field("md5", &self.md5)
            .finish()
    }
}

/// Colon-separated lower-case hex of the MD5 of `blob`.
pub fn md5_colon_hex(blob: &[u8]) -> String {
    let d = Md5::digest(blob);
    d.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

impl SshPublicKey {
    /// Parses an OpenSSH public key line (`ssh-ed25519 AAAA... comment`).
    ///
    /// # Errors
    /// [`KeyError::Parse`] for malformed lines and unsupported types (DSA, P-521, FIDO keys).
    pub fn parse(line: &str) -> Result<SshPublicKey, KeyError> {
        let key =
            PublicKey::from_openssh(line.trim()).map_err(|e| KeyError::Parse(e.to_string()))?;
        let kind = match key.key_data() {
            KeyData::Rsa(_) => KeyType::Rsa,
            KeyData::Ecdsa(EcdsaPublicKey::NistP256(_)) => KeyType::EcdsaP256,
            KeyData::Ecdsa(EcdsaPublicKey::NistP384(_)) => KeyType::EcdsaP384,
            KeyData::Ed25519(_) => KeyType::Ed25519,
            other => {
                return Err(KeyError::Parse(format!(
                    "unsupported key type {}",
                    other.algorithm()
                )));
            }
        };
        let blob = key.to_bytes().map_err(|e| KeyError::Parse(e.to_string()))?;
        let md5 = md5_colon_hex(&blob);
        let sha256 = key.fingerprint(HashAlg::Sha256).to_string();
        Ok(SshPublicKey {
            key,
            kind,
            md5,
            sha256,
        })
    }

    /// The key type.
    pub fn kind(&self) -> KeyType {
        self.kind
    }

    /// MD5 fingerprint, colon hex (`a1:b2:...`): what the `manta` clients put in `keyId`.
    pub fn md5_fingerprint(&self) -> &str {
        &self.md5
    }

    /// SHA-256 fingerprint, `SHA256:<base64 without padding>`.
    pub fn sha256_fingerprint(&self) -> &str {
        &self.sha256
    }

    /// True when `fp` names this key, in either form (an `MD5:` prefix is accepted).
    pub fn matches_fingerprint(&self, fp: &str) -> bool {
        let fp = fp.trim();
        let md5 = fp.strip_prefix("MD5:").unwrap_or(fp);
        md5.eq_ignore_ascii_case(&self.md5) || fp == self.sha256
    }

    /// The key as an OpenSSH line (without its comment).
    pub fn to_openssh(&self) -> String {
        let mut k = self.key.clone();
        k.set_comment("");
        k.to_openssh()
            .map(|s| s.trim().to_owned())
            .unwrap_or_default()
    }

    /// The SSH wire encoding of the key (what ssh-agent identifies keys by).
    pub fn wire_blob(&self) -> Vec<u8> {
        self.key.to_bytes().unwrap_or_default()
    }

    /// Verifies a base64 `signature` of `data` made with `alg`.
    ///
    /// # Errors
    /// [`KeyError::AlgorithmMismatch`], [`KeyError::MalformedSignature`] or
    /// [`KeyError::BadSignature`].
    pub fn verify(&self, alg: Algorithm, data: &[u8], signature_b64: &str) -> Result<(), KeyError> {
        if alg.family != self.kind.family() {
            return Err(KeyError::AlgorithmMismatch {
                alg: alg.to_string(),
                key: self.kind.family(),
            });
        }
        let sig = STANDARD
            .decode(signature_b64.trim())
            .map_err(|_| KeyError::MalformedSignature)?;
        self.verify_raw(alg.hash, data, &sig)
    }

    fn verify_raw(&self, hash: HashName, data: &[u8], sig: &[u8]) -> Result<(), KeyError> {
        match self.key.key_data() {
            KeyData::Rsa(k) => {
                let pk =
                    rsa::RsaPublicKey::try_from(k).map_err(|e| KeyError::Parse(e.to_string()))?;
                let digest = hash.digest(data);
                let scheme = match hash {
                    HashName::Sha1 => rsa::Pkcs1v15Sign::new::<sha1::Sha1>(),
                    HashName::Sha256 => rsa::Pkcs1v15Sign::new::<sha2::Sha256>(),
                    HashName::Sha384 => rsa::Pkcs1v15Sign::new::<sha2::Sha384>(),
                    HashName::Sha512 => rsa::Pkcs1v15Sign::new::<sha2::Sha512>(),
                };
                pk.verify(scheme, &digest, sig)
                    .map_err(|_| KeyError::BadSignature)
            }
            KeyData::Ecdsa(EcdsaPublicKey::NistP256(point)) => {
                use p256::ecdsa::signature::hazmat::PrehashVerifier as _;
                let vk = p256::ecdsa::VerifyingKey::from_sec1_bytes(point.as_bytes())
                    .map_err(|_| KeyError::Parse("bad P-256 point".into()))?;
                let s = p256::ecdsa::Signature::from_der(sig)
                    .map_err(|_| KeyError::MalformedSignature)?;
                vk.verify_prehash(&hash.digest(data), &s)
                    .map_err(|_| KeyError::BadSignature)
            }
            KeyData::Ecdsa(EcdsaPublicKey::NistP384(point)) => {
                use p384::ecdsa::signature::hazmat::PrehashVerifier as _;
                let vk = p384::ecdsa::VerifyingKey::from_sec1_bytes(point.as_bytes())
                    .map_err(|_| KeyError::Parse("bad P-384 point".into()))?;
                let s = p384::ecdsa::Signature::from_der(sig)
                    .map_err(|_| KeyError::MalformedSignature)?;
                vk.verify_prehash(&hash.digest(data), &s)
                    .map_err(|_| KeyError::BadSignature)
            }
            KeyData::Ed25519(pk) => {
                use ed25519_dalek::Verifier as _;
                let vk = ed25519_dalek::VerifyingKey::from_bytes(&pk.0)
                    .map_err(|_| KeyError::Parse("bad Ed25519 key".into()))?;
                let s = ed25519_dalek::Signature::from_slice(sig)
                    .map_err(|_| KeyError::MalformedSignature)?;
                vk.verify(data, &s).map_err(|_| KeyError::BadSignature)
            }
            _ => Err(KeyError::Parse("unsupported key type".into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn algorithm_names() {
        assert_eq!(
            Algorithm::parse("RSA-SHA256").unwrap().to_string(),
            "rsa-sha256"
        );
        assert_eq!(
            Algorithm::parse("ed25519-sha512").unwrap().family,
            "ed25519"
        );
        assert!(Algorithm::parse("ed25519-sha256").is_none());
        assert!(Algorithm::parse("ecdsa-sha1").is_none());
        assert!(Algorithm::parse("hmac-sha256").is_none());
        assert!(Algorithm::parse("rsa").is_none());
    }

    #[test]
    fn rejects_garbage_keys() {
        assert!(SshPublicKey::parse("ssh-rsa notbase64").is_err());
        assert!(SshPublicKey::parse("").is_err());
    }
}
