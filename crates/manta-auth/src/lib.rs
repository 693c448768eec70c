//! Who is calling: accounts and their SSH keys, the HTTP Signature scheme the `manta` tools
//! sign requests with, presigned URLs (`msign`), and tokens the front door issues so jobs can
//! act for their owner.
//!
//! The front door verifies with [`Authenticator`] over an [`AccountStore`] it implements on
//! Moray; the client and command line tools sign with [`KeySigner`] (a key file or
//! `ssh-agent`). Both sides share the signing-string code here, so they cannot drift apart.
//!
//! # Layout
//! - [`keys`]: SSH public keys, MD5/SHA-256 fingerprints, verification (RSA, ECDSA P-256/384,
//!   Ed25519).
//! - [`httpsig`]: `Authorization: Signature` parsing and signing strings; key ids.
//! - [`presign`]: presigned URL signing lines and query parsing.
//! - [`signer`]: private keys from files or ssh-agent; signing.
//! - [`account`]: accounts, the store trait, tokens, and [`Authenticator`].
//! - [`authz`]: [`authorize`], what a caller may do to a path.
//! - [`rbac`]: sub-users, roles, policies and their rule language, and the decision for a
//!   sub-user's request.
//!
//! # Guarantees
//! - A request is an account's only when a key of that account signed it, within the clock
//!   skew window (signatures), before its expiry and for an allowed method (presigned URLs),
//!   or with an unexpired token made with the front door's secret.
//! - Every refusal maps to the original's error code (`InvalidSignature`, `KeyDoesNotExist`,
//!   `AccountDoesNotExist`, ...) through [`manta_types::HasErrorCode`].
//!
//! # Example
//! ```
//! use manta_auth::httpsig::{parse_authorization, Authorization};
//! let h = r#"Signature keyId="/jill/keys/a1:b2",algorithm="rsa-sha256",signature="c2ln""#;
//! let Authorization::Signature(p) = parse_authorization(h).unwrap() else { unreachable!() };
//! assert_eq!(p.headers, ["date"]); // only the date is signed unless headers="..." says more
//! ```

pub mod account;
pub mod authz;
pub mod httpsig;
pub mod keys;
pub mod presign;
pub mod rbac;
pub mod signer;

pub use account::{
    Account, AccountKey, AccountStore, AuthError, Authenticator, Caller, Limits, MemoryAccounts,
    RequestInfo, S3Key, StoreError, TokenClaims, TokenKey, Via,
};
pub use authz::{Grant, authorize, authorize_granted};
pub use keys::{Algorithm, KeyType, SshPublicKey};
pub use signer::{KeySigner, SignerError};

/// The value of a `Date` header for now (what clients sign).
pub fn http_date_now() -> String {
    httpdate::fmt_http_date(std::time::SystemTime::now())
}
