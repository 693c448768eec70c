//! Accounts and the checks that turn a request's credentials into a caller.

use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::Mac as _;
use manta_types::{ErrorCode, HasErrorCode};
use serde::{Deserialize, Serialize};

use crate::httpsig::{self, Authorization, KeyId};
use crate::keys::{Algorithm, KeyError, SshPublicKey};
use crate::presign::Presigned;

/// Account record version written by this code.
pub const ACCOUNT_VERSION: u32 = 1;

/// One SSH public key of an account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountKey {
    /// A name for people (the key's comment, or given at `add-key`).
    pub name: String,
    /// MD5 fingerprint, colon hex.
    pub fingerprint: String,
    /// SHA-256 fingerprint, `SHA256:...`.
    pub sha256: String,
    /// The key as an OpenSSH line.
    pub key: String,
}

impl AccountKey {
    /// A key record from an OpenSSH public key line.
    ///
    /// # Errors
    /// When the line is not a supported key.
    pub fn from_openssh(line: &str, name: Option<&str>) -> Result<AccountKey, KeyError> {
        let pk = SshPublicKey::parse(line)?;
        let comment = line.split_whitespace().nth(2).unwrap_or("").to_owned();
        Ok(AccountKey {
            name: name.map(str::to_owned).unwrap_or(comment),
            fingerprint: pk.md5_fingerprint().to_owned(),
            sha256: pk.sha256_fingerprint().to_owned(),
            key: pk.to_openssh(),
        })
    }
}

/// An S3 access key pair of an account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct S3Key {
    /// Access key id (public).
    pub access_key_id: String,
    /// Secret access key.
    pub secret_access_key: String,
    /// Creation time, epoch ms.
    pub created: u64,
}

/// An account: a login, a stable id, and the keys that may act for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    /// Record version.
    #[serde(rename = "v", default = "one")]
    pub version: u32,
    /// Stable id; metadata keys use it instead of the login.
    pub uuid: String,
    /// The login (the first segment of every path).
    pub login: String,
    /// SSH keys.
    #[serde(default)]
    pub keys: Vec<AccountKey>,
    /// Role tags of the account's area roots (`stor`, `public`), which have no entry of
    /// their own to keep them, by area name.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub area_roles: std::collections::BTreeMap<String, Vec<String>>,
    /// S3 access keys.
    #[serde(default)]
    pub s3_keys: Vec<S3Key>,
    /// Blocked accounts cannot authenticate.
    #[serde(default)]
    pub blocked: bool,
    /// Creation time, epoch ms.
    #[serde(default)]
    pub created: u64,
    /// What this account may use at most; unset limits are the region's defaults.
    #[serde(default, skip_serializing_if = "Limits::is_unset")]
    pub limits: Limits,
    /// Sub-users ([`crate::rbac`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<crate::rbac::SubUser>,
    /// Roles.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<crate::rbac::Role>,
    /// Policies.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub policies: Vec<crate::rbac::Policy>,
}

/// An account's own limits, each overriding the region's default when set
/// (`manta-adm account set-limits`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Limits {
    /// Requests in progress at once on one front door (an upload counts until its last byte
    /// is stored); more are refused with `ThrottledError` (S3: `SlowDown`), 503.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrent_requests: Option<u32>,
    /// S3 buckets the account may own; one more is refused with `TooManyBuckets`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub buckets: Option<u32>,
    /// Jobs running at once; one more is refused with `ThrottledError`, 503.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jobs: Option<u32>,
    /// Tasks dispatched or running at once, over all the account's jobs; the rest of its
    /// inputs wait their turn.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tasks: Option<u32>,
    /// Bytes one task may emit as outputs (`mpipe`, stdout), for jobs created after it is
    /// set; a task emitting more fails with a `TaskError` that says so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_output: Option<u64>,
}

impl Limits {
    /// True when no limit is set (every one is the region's default).
    pub fn is_unset(&self) -> bool {
        *self == Limits::default()
    }
}

fn one() -> u32 {
    1
}

impl Account {
    /// A new account with a random id.
    pub fn new(login: &str) -> Account {
        Account {
            version: ACCOUNT_VERSION,
            uuid: uuid::Uuid::new_v4().to_string(),
            login: login.to_owned(),
            keys: Vec::new(),
            area_roles: std::collections::BTreeMap::new(),
            s3_keys: Vec::new(),
            blocked: false,
            created: manta_types::time::now_ms(),
            limits: Limits::default(),
            users: Vec::new(),
            roles: Vec::new(),
            policies: Vec::new(),
        }
    }

    /// The sub-user with this login.
    pub fn user(&self, login: &str) -> Option<&crate::rbac::SubUser> {
        self.users.iter().find(|u| u.login == login)
    }

    /// The key with this fingerprint (either form).
    pub fn key(&self, fingerprint: &str) -> Option<&AccountKey> {
        let md5 = fingerprint.strip_prefix("MD5:").unwrap_or(fingerprint);
        self.keys
            .iter()
            .find(|k| k.fingerprint.eq_ignore_ascii_case(md5) || k.sha256 == fingerprint)
    }

    /// The S3 access key with this id, and the sub-user holding it (`None`: the account's
    /// own key).
    pub fn s3_key(&self, access_key_id: &str) -> Option<(&S3Key, Option<&crate::rbac::SubUser>)> {
        let own = self
            .s3_keys
            .iter()
            .find(|k| k.access_key_id == access_key_id);
        own.map(|k| (k, None)).or_else(|| {
            self.users.iter().find_map(|u| {
                u.s3_keys
                    .iter()
                    .find(|k| k.access_key_id == access_key_id)
                    .map(|k| (k, Some(u)))
            })
        })
    }

    /// Every S3 access key id of the account and its sub-users (what the account store
    /// indexes).
    pub fn s3_key_ids(&self) -> impl Iterator<Item = &str> {
        self.s3_keys
            .iter()
            .chain(self.users.iter().flat_map(|u| u.s3_keys.iter()))
            .map(|k| k.access_key_id.as_str())
    }
}

/// A failure of the account store itself (not "no such account").
#[derive(Debug, Clone, thiserror::Error)]
#[error("account store unavailable: {0}")]
pub struct StoreError(pub String);

/// Where accounts live. The front door implements it over Moray; tests may use
/// [`MemoryAccounts`]. Lookups must reflect writes that completed before them.
#[async_trait]
pub trait AccountStore: Send + Sync + std::fmt::Debug {
    /// The account with this login.
    async fn by_login(&self, login: &str) -> Result<Option<Account>, StoreError>;
    /// The account with this id.
    async fn by_uuid(&self, uuid: &str) -> Result<Option<Account>, StoreError>;
    /// The account owning this S3 access key id.
    async fn by_s3_key(&self, access_key_id: &str) -> Result<Option<Account>, StoreError>;
}

/// Accounts in memory (for tests of the checks in this crate).
#[derive(Debug, Default)]
pub struct MemoryAccounts(RwLock<Vec<Account>>);

impl MemoryAccounts {
    /// Adds or replaces an account.
    pub fn put(&self, a: Account) {
        let mut v = self.0.write().unwrap_or_else(|p| p.into_inner());
        v.retain(|x| x.uuid != a.uuid);
        v.push(a);
    }
}

#[async_trait]
impl AccountStore for MemoryAccounts {
    async fn by_login(&self, login: &str) -> Result<Option<Account>, StoreError> {
        Ok(self
            .0
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .find(|a| a.login == login)
            .cloned())
    }
    async fn by_uuid(&self, uuid: &str) -> Result<Option<Account>, StoreError> {
        Ok(self
            .0
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .find(|a| a.uuid == uuid)
            .cloned())
    }
    async fn by_s3_key(&self, id: &str) -> Result<Option<Account>, StoreError> {
        let v = self.0.read().unwrap_or_else(|p| p.into_inner());
        Ok(v.iter().find(|a| a.s3_key(id).is_some()).cloned())
    }
}

/// Why a request's credentials were refused.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// The `Authorization` header is malformed.
    #[error("{0}")]
    MalformedHeader(String),
    /// The scheme is not one this server accepts.
    #[error("authorization scheme {0:?} is not allowed")]
    SchemeNotAllowed(String),
    /// The `keyId` is malformed.
    #[error("keyId {0:?} is invalid")]
    InvalidKeyId(String),
    /// No such account.
    #[error("account {0} does not exist")]
    AccountDoesNotExist(String),
    /// No such sub-user.
    #[error("user {0} does not exist")]
    UserDoesNotExist(String),
    /// A role the request asks for is not one the sub-user may take.
    #[error("{0}")]
    InvalidRole(String),
    /// The account is blocked.
    #[error("account {0} is blocked")]
    AccountBlocked(String),
    /// No key with that fingerprint.
    #[error("key {0} does not exist")]
    KeyDoesNotExist(String),
    /// Unknown or unusable algorithm.
    #[error("{0}")]
    InvalidAlgorithm(String),
    /// The signature did not verify, or a signed header is missing.
    #[error("{0}")]
    InvalidSignature(String),
    /// The request's `Date` is too far from the server's clock.
    #[error("{0}")]
    RequestExpired(String),
    /// A presigned URL is malformed, expired or does not verify.
    #[error("{0}")]
    Presign(String),
    /// A token is malformed or expired.
    #[error("{0}")]
    InvalidToken(String),
    /// The account store failed.
    #[error("{0}")]
    Store(#[from] StoreError),
}

impl HasErrorCode for AuthError {
    fn code(&self) -> ErrorCode {
        match self {
            AuthError::MalformedHeader(_) => ErrorCode::InvalidHttpAuthenticationToken,
            AuthError::SchemeNotAllowed(_) => ErrorCode::AuthorizationSchemeNotAllowed,
            AuthError::InvalidKeyId(_) => ErrorCode::InvalidKeyId,
            AuthError::AccountDoesNotExist(_) => ErrorCode::AccountDoesNotExist,
            AuthError::UserDoesNotExist(_) => ErrorCode::UserDoesNotExist,
            AuthError::InvalidRole(_) => ErrorCode::InvalidRole,
            AuthError::AccountBlocked(_) => ErrorCode::AccountBlocked,
            AuthError::KeyDoesNotExist(_) => ErrorCode::KeyDoesNotExist,
            AuthError::InvalidAlgorithm(_) => ErrorCode::InvalidAlgorithm,
            AuthError::InvalidSignature(_) => ErrorCode::InvalidSignature,
            AuthError::RequestExpired(_) => ErrorCode::RequestExpired,
            AuthError::Presign(_) => ErrorCode::InvalidQueryStringAuthentication,
            AuthError::InvalidToken(_) => ErrorCode::InvalidAuthenticationToken,
            AuthError::Store(_) => ErrorCode::ServiceUnavailable,
        }
    }
}

/// How a caller proved who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// `Authorization: Signature`.
    Signature,
    /// A presigned URL.
    Presigned,
    /// A token issued by the front door (jobs act for their owner with one).
    Token,
}

/// Who is making a request.
// One per request, moved rarely: the size of the account in it does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum Caller {
    /// No credentials.
    Anonymous,
    /// An authenticated account.
    Account {
        /// The account.
        account: Account,
        /// How it authenticated.
        via: Via,
        /// For presigned URLs: the methods the URL allows.
        methods: Option<Vec<String>>,
        /// A sub-user of the account acting through its roles; `None` for the account itself.
        user: Option<Box<crate::rbac::Acting>>,
    },
}

impl Caller {
    /// The account, when authenticated.
    pub fn account(&self) -> Option<&Account> {
        match self {
            Caller::Anonymous => None,
            Caller::Account { account, .. } => Some(account),
        }
    }

    /// The sub-user acting, when it is one.
    pub fn user(&self) -> Option<&crate::rbac::Acting> {
        match self {
            Caller::Account { user: Some(u), .. } => Some(u),
            _ => None,
        }
    }

    /// Who is calling, for messages and logs: `login`, `login/user` or `anonymous`.
    pub fn name(&self) -> String {
        match (self.account(), self.user()) {
            (None, _) => "anonymous".into(),
            (Some(a), None) => a.login.clone(),
            (Some(a), Some(u)) => format!("{}/{}", a.login, u.login),
        }
    }
}

/// The parts of a request that authentication looks at.
#[derive(Debug, Clone, Copy)]
pub struct RequestInfo<'a> {
    /// The HTTP method.
    pub method: &'a str,
    /// The path exactly as sent (still percent-encoded), without the query.
    pub path: &'a str,
    /// The raw query string, if any.
    pub query: Option<&'a str>,
    /// The request headers (`authorization`, `date`, `host`, and any other signed header).
    pub headers: &'a http::HeaderMap,
}

impl<'a> RequestInfo<'a> {
    fn header(&self, name: &str) -> Option<&'a str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// A token the front door issues so a job can act as its owner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenClaims {
    /// The account id.
    pub uuid: String,
    /// The login at issue time.
    pub login: String,
    /// Expiry, Unix seconds.
    pub expires: u64,
    /// What it was issued for (e.g. a job id).
    pub purpose: String,
}

/// Issues and verifies tokens with a secret only the front doors hold.
#[derive(Clone)]
pub struct TokenKey(Arc<Vec<u8>>);

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKey(..)")
    }
}

impl TokenKey {
    /// A key from secret bytes (at least 16).
    pub fn new(secret: &[u8]) -> TokenKey {
        TokenKey(Arc::new(secret.to_vec()))
    }

    fn mac(&self, payload: &[u8]) -> Vec<u8> {
        let mut m = HmacSha256::new_from_slice(&self.0).expect("HMAC accepts any key length");
        m.update(payload);
        m.finalize().into_bytes().to_vec()
    }

    /// A token for `claims`.
    pub fn issue(&self, claims: &TokenClaims) -> String {
        let payload = serde_json::to_vec(claims).expect("claims serialise");
        format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(&payload),
            URL_SAFE_NO_PAD.encode(self.mac(&payload))
        )
    }

    /// Checks a token's MAC and expiry.
    ///
    /// # Errors
    /// [`AuthError::InvalidToken`] when malformed, forged or expired.
    pub fn verify(&self, token: &str, now: u64) -> Result<TokenClaims, AuthError> {
        let bad = || AuthError::InvalidToken("the token is invalid".into());
        let (p, m) = token.trim().split_once('.').ok_or_else(bad)?;
        let payload = URL_SAFE_NO_PAD.decode(p).map_err(|_| bad())?;
        let mac = URL_SAFE_NO_PAD.decode(m).map_err(|_| bad())?;
        let mut check = HmacSha256::new_from_slice(&self.0).expect("HMAC accepts any key length");
        check.update(&payload);
        check.verify_slice(&mac).map_err(|_| bad())?;
        let claims: TokenClaims = serde_json::from_slice(&payload).map_err(|_| bad())?;
        if claims.expires < now {
            return Err(AuthError::InvalidToken("the token has expired".into()));
        }
        Ok(claims)
    }
}

/// Turns credentials into a [`Caller`].
#[derive(Debug, Clone)]
pub struct Authenticator {
    store: Arc<dyn AccountStore>,
    /// Largest allowed difference between the request's `Date` and the server clock.
    pub max_skew: Duration,
    tokens: Option<TokenKey>,
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Authenticator {
    /// An authenticator over `store` with the original's default skew (300 s).
    pub fn new(store: Arc<dyn AccountStore>) -> Authenticator {
        Authenticator {
            store,
            max_skew: Duration::from_secs(300),
            tokens: None,
        }
    }

    /// Also accept tokens issued with `key`.
    pub fn with_tokens(mut self, key: TokenKey) -> Authenticator {
        self.tokens = Some(key);
        self
    }

    /// The account store.
    pub fn store(&self) -> &Arc<dyn AccountStore> {
        &self.store
    }

    /// Authenticates a request at time `now`.
    ///
    /// # Errors
    /// An [`AuthError`] naming the first check that failed.
    pub async fn authenticate(
        &self,
        req: &RequestInfo<'_>,
        now: SystemTime,
    ) -> Result<Caller, AuthError> {
        if let Some(authz) = req.header("authorization") {
            return match httpsig::parse_authorization(authz)
                .map_err(|e| AuthError::MalformedHeader(e.to_string()))?
            {
                Authorization::Signature(p) => self.signature(req, p, now).await,
                Authorization::Token(t) => self.token(&t, now).await,
                Authorization::Other(s) => Err(AuthError::SchemeNotAllowed(s)),
            };
        }
        if let Some(q) = req.query
            && let Some(p) = Presigned::from_query(q)
        {
            let p = p.map_err(|e| AuthError::Presign(e.0))?;
            return self.presigned(req, p, now).await;
        }
        Ok(Caller::Anonymous)
    }

    /// The account (and sub-user) a key id names, and the key's record.
    async fn account_for(
        &self,
        key_id: &str,
    ) -> Result<(Account, Option<crate::rbac::SubUser>, AccountKey, KeyId), AuthError> {
        let kid = KeyId::parse(key_id).ok_or_else(|| AuthError::InvalidKeyId(key_id.to_owned()))?;
        let account = self
            .store
            .by_login(&kid.login)
            .await?
            .ok_or_else(|| AuthError::AccountDoesNotExist(kid.login.clone()))?;
        if account.blocked {
            return Err(AuthError::AccountBlocked(account.login));
        }
        let (user, key) = match &kid.subuser {
            Some(sub) => {
                let u = account
                    .user(sub)
                    .cloned()
                    .ok_or_else(|| AuthError::UserDoesNotExist(format!("{}/{sub}", kid.login)))?;
                let k = u.key(&kid.fingerprint).cloned();
                (Some(u), k)
            }
            None => (None, account.key(&kid.fingerprint).cloned()),
        };
        let key = key.ok_or_else(|| AuthError::KeyDoesNotExist(kid.render()))?;
        Ok((account, user, key, kid))
    }

    /// The caller `account` (acting as `user`, with the roles `asked`) is.
    fn caller(
        account: Account,
        user: Option<crate::rbac::SubUser>,
        asked: Option<&str>,
        via: Via,
        methods: Option<Vec<String>>,
    ) -> Result<Caller, AuthError> {
        let user = match user {
            None => None,
            Some(u) => {
                let roles = crate::rbac::active_roles(&account, &u, asked)
                    .map_err(|e| AuthError::InvalidRole(e.message))?;
                Some(Box::new(crate::rbac::Acting {
                    login: u.login,
                    uuid: u.uuid,
                    roles,
                }))
            }
        };
        Ok(Caller::Account {
            account,
            via,
            methods,
            user,
        })
    }

    async fn signature(
        &self,
        req: &RequestInfo<'_>,
        p: httpsig::SignatureParams,
        now: SystemTime,
    ) -> Result<Caller, AuthError> {
        let (account, user, key, _) = self.account_for(&p.key_id).await?;
        let pk = SshPublicKey::parse(&key.key)
            .map_err(|e| AuthError::InvalidSignature(e.to_string()))?;
        let alg = Algorithm::parse(&p.algorithm).ok_or_else(|| {
            AuthError::InvalidAlgorithm(format!("{} is not a supported algorithm", p.algorithm))
        })?;
        // A signature that does not cover the date never expires: whoever saw the request once
        // could replay it with a fresh date for as long as the key lives.
        if !p.headers.iter().any(|h| h.eq_ignore_ascii_case("date")) {
            return Err(AuthError::InvalidSignature(
                "the signature must cover the date header (headers=\"date ...\")".into(),
            ));
        }
        let date = req
            .header("date")
            .ok_or_else(|| AuthError::InvalidSignature("the date header is missing".into()))?;
        let when = httpdate::parse_http_date(date).map_err(|_| {
            AuthError::InvalidSignature(format!("date {date:?} is not an HTTP date"))
        })?;
        let skew = now
            .duration_since(when)
            .or_else(|e| Ok::<_, AuthError>(e.duration()))?;
        if skew > self.max_skew {
            return Err(AuthError::RequestExpired(format!(
                "the request date {date} is {} s away from the server clock (max {} s)",
                skew.as_secs(),
                self.max_skew.as_secs()
            )));
        }
        let target = match req.query {
            Some(q) => format!("{}?{q}", req.path),
            None => req.path.to_owned(),
        };
        let lines = httpsig::signing_string(&p.headers, req.method, &target, |h| req.header(h))
            .map_err(|e| AuthError::InvalidSignature(e.to_string()))?;
        pk.verify(alg, lines.as_bytes(), &p.signature)
            .map_err(|e| match e {
                KeyError::AlgorithmMismatch { .. } => AuthError::InvalidAlgorithm(e.to_string()),
                _ => AuthError::InvalidSignature("the signature does not verify".into()),
            })?;
        Self::caller(account, user, req.header("role"), Via::Signature, None)
    }

    async fn presigned(
        &self,
        req: &RequestInfo<'_>,
        p: Presigned,
        now: SystemTime,
    ) -> Result<Caller, AuthError> {
        if p.expires < unix(now) {
            return Err(AuthError::Presign("the presigned URL has expired".into()));
        }
        let methods = p.allowed_methods(req.method);
        if !methods.iter().any(|m| m.eq_ignore_ascii_case(req.method)) {
            return Err(AuthError::Presign(format!(
                "this URL does not allow {}",
                req.method
            )));
        }
        let (account, user, key, _) = self.account_for(&p.key_id).await.map_err(|e| match e {
            AuthError::Store(s) => AuthError::Store(s),
            other => AuthError::Presign(other.to_string()),
        })?;
        let pk = SshPublicKey::parse(&key.key).map_err(|e| AuthError::Presign(e.to_string()))?;
        let alg = Algorithm::parse(&p.algorithm).ok_or_else(|| {
            AuthError::Presign(format!("{} is not a supported algorithm", p.algorithm))
        })?;
        let host = req
            .header("host")
            .ok_or_else(|| AuthError::Presign("the host header is missing".into()))?;
        let line = p.signing_line(req.method, host, req.path);
        pk.verify(alg, line.as_bytes(), &p.signature)
            .map_err(|_| AuthError::Presign("the signature does not verify".into()))?;
        // The signed `role` parameter names the roles a sub-user's URL acts in.
        let role = p
            .params
            .iter()
            .find(|(k, _)| k == "role")
            .map(|(_, v)| v.clone());
        Self::caller(
            account,
            user,
            role.as_deref(),
            Via::Presigned,
            Some(methods),
        )
    }

    async fn token(&self, token: &str, now: SystemTime) -> Result<Caller, AuthError> {
        let key = self
            .tokens
            .as_ref()
            .ok_or_else(|| AuthError::SchemeNotAllowed("Token".into()))?;
        let claims = key.verify(token, unix(now))?;
        let account = self
            .store
            .by_uuid(&claims.uuid)
            .await?
            .ok_or_else(|| AuthError::AccountDoesNotExist(claims.login.clone()))?;
        if account.blocked {
            return Err(AuthError::AccountBlocked(account.login));
        }
        Ok(Caller::Account {
            account,
            via: Via::Token,
            methods: None,
            user: None,
        })
    }
}
