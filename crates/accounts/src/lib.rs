//! Accounts at the metadata layer: kept in Moray (bucket `manta_accounts` on the system
//! shard), read by the front door through [`MorayAccounts`] (the `AccountStore` it
//! authenticates against), and changed by operators through [`AccountAdmin`] (what
//! `manta-adm account` and `manta-adm s3-key` run). It depends only on Moray and the account
//! types of `manta-auth`, so operator tools need not link the front door.
//!
//! A record is the [`Account`] JSON plus a derived `s3AccessKeyIds` array so S3 requests find
//! their account through an index. Logins are unique (a unique index); lookups are cached for a
//! short time (`account_cache_ttl`) so each request does not cost a metadata round trip, which
//! bounds how long a removed key keeps working.

use std::time::Duration;

use async_trait::async_trait;
use manta_auth::rbac::{Policy, Role, SubUser};
use manta_auth::{Account, AccountKey, AccountStore, Limits, S3Key, StoreError};
use manta_util::cache::TtlCache;
use moray::types::{BucketConfig, FindOptions, IndexSpec, IndexType, PutOptions};
use moray::{EtagCondition, MorayClient};
use serde_json::Value;

/// The accounts bucket.
pub const BUCKET: &str = "manta_accounts";

/// The bucket's configuration.
pub fn bucket_config() -> BucketConfig {
    BucketConfig::new(1)
        .with_index("login", IndexSpec::unique(IndexType::String))
        .with_index("s3AccessKeyIds", IndexSpec::new(IndexType::StringArray))
}

/// Creates the accounts bucket if it is missing.
///
/// # Errors
/// When Moray fails.
pub async fn ensure_bucket(moray: &MorayClient) -> moray::Result<()> {
    moray.put_bucket(BUCKET, bucket_config()).await.map(|_| ())
}

fn to_value(a: &Account) -> Value {
    let mut v = serde_json::to_value(a).expect("accounts serialise");
    v["s3AccessKeyIds"] = a.s3_key_ids().map(|k| Value::String(k.into())).collect();
    v
}

fn from_value(v: Value) -> Result<Account, StoreError> {
    serde_json::from_value(v).map_err(|e| StoreError(format!("malformed account record: {e}")))
}

/// SSH public keys (OpenSSH lines) as key records, each fingerprint once.
fn parse_keys(lines: &[String]) -> Result<Vec<AccountKey>, AdminError> {
    let mut keys: Vec<AccountKey> = Vec::new();
    for k in lines {
        let key =
            AccountKey::from_openssh(k, None).map_err(|e| AdminError::InvalidKey(e.to_string()))?;
        if !keys.iter().any(|x| x.fingerprint == key.fingerprint) {
            keys.push(key);
        }
    }
    Ok(keys)
}

/// The sub-user `user` of `a`, to change.
fn user_mut<'a>(a: &'a mut Account, user: &str) -> Result<&'a mut SubUser, AdminError> {
    let account = a.login.clone();
    a.users
        .iter_mut()
        .find(|u| u.login == user)
        .ok_or_else(|| AdminError::Access(format!("{account} has no user {user}")))
}

/// Checks that a role or policy (`kind`) named `name` of `account` is absent before it is
/// created, or present before it is replaced or deleted (`want_present`).
fn presence(
    account: &str,
    kind: &str,
    name: &str,
    present: bool,
    want_present: bool,
) -> Result<(), AdminError> {
    match (present, want_present) {
        (true, false) => Err(AdminError::Access(format!(
            "{account} already has a {kind} {name}"
        ))),
        (false, true) => Err(AdminError::Access(format!(
            "{account} has no {kind} {name}"
        ))),
        _ => Ok(()),
    }
}

/// The account store over Moray, with a short read cache.
#[derive(Debug)]
pub struct MorayAccounts {
    moray: MorayClient,
    ttl: Duration,
    cache: TtlCache<Account>,
}

impl MorayAccounts {
    /// A store over the system shard's client.
    pub fn new(moray: MorayClient, ttl: Duration) -> MorayAccounts {
        MorayAccounts {
            moray,
            ttl,
            cache: TtlCache::new(100_000),
        }
    }

    fn cached(&self, k: &str) -> Option<Account> {
        self.cache.get(k, self.ttl)
    }

    fn remember(&self, a: &Account) {
        if self.ttl.is_zero() {
            return;
        }
        self.cache.insert(&format!("login:{}", a.login), a.clone());
        self.cache.insert(&format!("uuid:{}", a.uuid), a.clone());
    }

    async fn find_one(&self, filter: &str) -> Result<Option<Account>, StoreError> {
        let found = self
            .moray
            .find_objects(
                BUCKET,
                filter,
                FindOptions {
                    limit: Some(1),
                    ..FindOptions::default()
                },
            )
            .await
            .map_err(|e| StoreError(e.to_string()))?;
        match found.into_iter().next() {
            Some(r) => {
                let a = from_value(r.value)?;
                self.remember(&a);
                Ok(Some(a))
            }
            None => Ok(None),
        }
    }
}

#[async_trait]
impl AccountStore for MorayAccounts {
    async fn by_login(&self, login: &str) -> Result<Option<Account>, StoreError> {
        if let Some(a) = self.cached(&format!("login:{login}")) {
            return Ok(Some(a));
        }
        self.find_one(&moray::filter::Filter::eq("login", login).to_string())
            .await
    }

    async fn by_uuid(&self, uuid: &str) -> Result<Option<Account>, StoreError> {
        if let Some(a) = self.cached(&format!("uuid:{uuid}")) {
            return Ok(Some(a));
        }
        match self.moray.get_object(BUCKET, uuid).await {
            Ok(r) => {
                let a = from_value(r.value)?;
                self.remember(&a);
                Ok(Some(a))
            }
            Err(moray::Error::ObjectNotFound { .. }) => Ok(None),
            Err(e) => Err(StoreError(e.to_string())),
        }
    }

    async fn by_s3_key(&self, access_key_id: &str) -> Result<Option<Account>, StoreError> {
        self.find_one(&moray::filter::Filter::eq("s3AccessKeyIds", access_key_id).to_string())
            .await
    }
}

/// Why an operator action on accounts failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdminError {
    /// The login is taken.
    #[error("account {0} already exists")]
    Exists(String),
    /// No such account.
    #[error("account {0} does not exist")]
    NotFound(String),
    /// The login breaks the naming rules.
    #[error("{0}")]
    InvalidLogin(String),
    /// The key is not a supported SSH public key.
    #[error("{0}")]
    InvalidKey(String),
    /// The account already has that key.
    #[error("account {login} already has key {fingerprint}")]
    DuplicateKey {
        /// The account.
        login: String,
        /// The key.
        fingerprint: String,
    },
    /// The account has no such key.
    #[error("account {login} has no key {fingerprint}")]
    NoSuchKey {
        /// The account.
        login: String,
        /// The key asked for.
        fingerprint: String,
    },
    /// A sub-user, role or policy change that cannot be made (named in the message).
    #[error("{0}")]
    Access(String),
    /// Moray failed.
    #[error("metadata tier: {0}")]
    Moray(#[from] moray::Error),
}

/// Operator actions on accounts.
#[derive(Debug, Clone)]
pub struct AccountAdmin {
    moray: MorayClient,
}

impl AccountAdmin {
    /// Actions over the system shard's client.
    pub fn new(moray: MorayClient) -> AccountAdmin {
        AccountAdmin { moray }
    }

    /// Looks an account up by login.
    ///
    /// # Errors
    /// [`AdminError::NotFound`] or a Moray failure.
    pub async fn get(&self, login: &str) -> Result<(Account, String), AdminError> {
        let found = self
            .moray
            .find_objects(
                BUCKET,
                &moray::filter::Filter::eq("login", login).to_string(),
                FindOptions::default(),
            )
            .await?;
        let r = found
            .into_iter()
            .next()
            .ok_or_else(|| AdminError::NotFound(login.to_owned()))?;
        let a = from_value(r.value)
            .map_err(|e| AdminError::Moray(moray::Error::Internal { message: e.0 }))?;
        Ok((a, r.etag))
    }

    /// Creates an account with the given SSH public keys (OpenSSH lines).
    ///
    /// # Errors
    /// When the login is invalid or taken, or a key is not a supported SSH key.
    pub async fn create(&self, login: &str, keys: &[String]) -> Result<Account, AdminError> {
        manta_types::path::validate_login(login)
            .map_err(|e| AdminError::InvalidLogin(e.to_string()))?;
        let mut a = Account::new(login);
        a.keys = parse_keys(keys)?;
        match self
            .moray
            .put_object(BUCKET, &a.uuid, to_value(&a), PutOptions::must_not_exist())
            .await
        {
            Ok(_) => Ok(a),
            Err(moray::Error::UniqueAttribute { .. }) => Err(AdminError::Exists(login.to_owned())),
            Err(e) => Err(e.into()),
        }
    }

    async fn update(
        &self,
        login: &str,
        f: impl Fn(&mut Account) -> Result<(), AdminError>,
    ) -> Result<Account, AdminError> {
        loop {
            let (mut a, etag) = self.get(login).await?;
            f(&mut a)?;
            let opts = PutOptions {
                etag: EtagCondition::MustMatch(etag),
            };
            match self
                .moray
                .put_object(BUCKET, &a.uuid, to_value(&a), opts)
                .await
            {
                Ok(_) => return Ok(a),
                Err(moray::Error::EtagConflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Changes an account's own limits: `change` is applied to the stored ones (a limit set to
    /// `None` goes back to the region's default). Gives the account as written.
    ///
    /// # Errors
    /// When the account does not exist.
    pub async fn set_limits(
        &self,
        login: &str,
        change: impl Fn(&mut Limits),
    ) -> Result<Account, AdminError> {
        self.update(login, |a| {
            change(&mut a.limits);
            Ok(())
        })
        .await
    }

    /// Adds an SSH key.
    ///
    /// # Errors
    /// When the account does not exist, the key is invalid or already present.
    pub async fn add_key(
        &self,
        login: &str,
        key_line: &str,
        name: Option<&str>,
    ) -> Result<AccountKey, AdminError> {
        let key = AccountKey::from_openssh(key_line, name)
            .map_err(|e| AdminError::InvalidKey(e.to_string()))?;
        let k2 = key.clone();
        self.update(login, move |a| {
            if a.keys.iter().any(|x| x.fingerprint == k2.fingerprint) {
                return Err(AdminError::DuplicateKey {
                    login: a.login.clone(),
                    fingerprint: k2.fingerprint.clone(),
                });
            }
            a.keys.push(k2.clone());
            Ok(())
        })
        .await?;
        Ok(key)
    }

    /// Removes an SSH key by fingerprint (MD5 or SHA-256 form).
    ///
    /// # Errors
    /// When the account or key does not exist.
    pub async fn remove_key(&self, login: &str, fingerprint: &str) -> Result<(), AdminError> {
        self.update(login, |a| {
            let fp = fingerprint.strip_prefix("MD5:").unwrap_or(fingerprint);
            let before = a.keys.len();
            a.keys
                .retain(|k| !(k.fingerprint.eq_ignore_ascii_case(fp) || k.sha256 == fingerprint));
            if a.keys.len() == before {
                return Err(AdminError::NoSuchKey {
                    login: a.login.clone(),
                    fingerprint: fingerprint.to_owned(),
                });
            }
            Ok(())
        })
        .await
        .map(|_| ())
    }

    /// Creates an S3 access key pair for the account, or for its sub-user `user` (whose
    /// S3 requests then act with that user's roles).
    ///
    /// # Errors
    /// When the account or the user does not exist.
    pub async fn create_s3_key(
        &self,
        login: &str,
        user: Option<&str>,
    ) -> Result<S3Key, AdminError> {
        use rand::RngExt as _;
        let mut rng = rand::rng();
        const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
        const B64ISH: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let id: String = (0..16)
            .map(|_| ALNUM[rng.random_range(0..ALNUM.len())] as char)
            .collect();
        let secret: String = (0..40)
            .map(|_| B64ISH[rng.random_range(0..B64ISH.len())] as char)
            .collect();
        let key = S3Key {
            access_key_id: format!("MK{id}"),
            secret_access_key: secret,
            created: manta_types::time::now_ms(),
        };
        let k2 = key.clone();
        self.update(login, move |a| {
            let keys = match user {
                None => &mut a.s3_keys,
                Some(user) => &mut user_mut(a, user)?.s3_keys,
            };
            keys.push(k2.clone());
            Ok(())
        })
        .await?;
        Ok(key)
    }

    /// Creates a sub-user of `login` with the given SSH public keys (OpenSSH lines).
    ///
    /// # Errors
    /// When the account does not exist, the user exists, its name is invalid or a key is not
    /// a supported SSH key.
    pub async fn create_user(
        &self,
        login: &str,
        user: &str,
        keys: &[String],
    ) -> Result<SubUser, AdminError> {
        manta_types::path::validate_login(user)
            .map_err(|e| AdminError::InvalidLogin(e.to_string()))?;
        let mut u = SubUser::new(user);
        u.keys = parse_keys(keys)?;
        let u2 = u.clone();
        self.update(login, move |a| {
            if a.user(&u2.login).is_some() {
                return Err(AdminError::Access(format!(
                    "{} already has a user {}",
                    a.login, u2.login
                )));
            }
            a.users.push(u2.clone());
            Ok(())
        })
        .await?;
        Ok(u)
    }

    /// Adds an SSH key to a sub-user.
    ///
    /// # Errors
    /// When the account or user does not exist, or the key is invalid or present.
    pub async fn add_user_key(
        &self,
        login: &str,
        user: &str,
        key_line: &str,
    ) -> Result<AccountKey, AdminError> {
        let key = AccountKey::from_openssh(key_line, None)
            .map_err(|e| AdminError::InvalidKey(e.to_string()))?;
        let k2 = key.clone();
        self.update(login, move |a| {
            let account = a.login.clone();
            let u = user_mut(a, user)?;
            if u.keys.iter().any(|x| x.fingerprint == k2.fingerprint) {
                return Err(AdminError::DuplicateKey {
                    login: format!("{account}/{user}"),
                    fingerprint: k2.fingerprint.clone(),
                });
            }
            u.keys.push(k2.clone());
            Ok(())
        })
        .await?;
        Ok(key)
    }

    /// Sets the role tags of an area root (`stor`, `public`) of `login`: every tag must be
    /// a role of the account. Gives the account as written.
    ///
    /// # Errors
    /// When the account does not exist or a tag is not one of its roles.
    pub async fn set_area_roles(
        &self,
        login: &str,
        area: &str,
        tags: &[String],
    ) -> Result<Account, AdminError> {
        self.update(login, |a| {
            manta_auth::rbac::parse_role_tags(a, &tags.join(","))
                .map_err(|e| AdminError::Access(e.message))?;
            if tags.is_empty() {
                a.area_roles.remove(area);
            } else {
                a.area_roles.insert(area.to_owned(), tags.to_vec());
            }
            Ok(())
        })
        .await
    }

    /// Removes a sub-user (and its role memberships).
    ///
    /// # Errors
    /// When the account or user does not exist.
    pub async fn delete_user(&self, login: &str, user: &str) -> Result<(), AdminError> {
        self.update(login, |a| {
            if a.user(user).is_none() {
                return Err(AdminError::Access(format!(
                    "{} has no user {user}",
                    a.login
                )));
            }
            a.users.retain(|u| u.login != user);
            for r in &mut a.roles {
                r.members.retain(|m| m != user);
                r.default_members.retain(|m| m != user);
            }
            Ok(())
        })
        .await
        .map(|_| ())
    }

    /// Creates (`create`) or replaces (otherwise) a role. Its members must be users of the
    /// account, its default members among its members, its policies the account's.
    ///
    /// # Errors
    /// When any of those does not hold, or the role exists (create) or not (replace).
    pub async fn put_role(&self, login: &str, role: Role, create: bool) -> Result<(), AdminError> {
        self.update(login, |a| {
            let exists = a.roles.iter().any(|r| r.name == role.name);
            if role.name.is_empty()
                || role.name.contains([',', '*'])
                || role.name.trim() != role.name
            {
                return Err(AdminError::Access(format!(
                    "{:?} is not a role name",
                    role.name
                )));
            }
            presence(&a.login, "role", &role.name, exists, !create)?;
            if let Some(m) = role.members.iter().find(|m| a.user(m).is_none()) {
                return Err(AdminError::Access(format!("{} has no user {m}", a.login)));
            }
            if let Some(m) = role
                .default_members
                .iter()
                .find(|m| !role.members.contains(m))
            {
                return Err(AdminError::Access(format!(
                    "default member {m} is not a member of {}",
                    role.name
                )));
            }
            if let Some(p) = role
                .policies
                .iter()
                .find(|p| !a.policies.iter().any(|x| x.name == **p))
            {
                return Err(AdminError::Access(format!("{} has no policy {p}", a.login)));
            }
            a.roles.retain(|r| r.name != role.name);
            a.roles.push(role.clone());
            Ok(())
        })
        .await
        .map(|_| ())
    }

    /// Removes a role (entries tagged with it keep the tag, which then grants nothing).
    ///
    /// # Errors
    /// When the account or role does not exist.
    pub async fn delete_role(&self, login: &str, role: &str) -> Result<(), AdminError> {
        self.update(login, |a| {
            let present = a.roles.iter().any(|r| r.name == role);
            presence(&a.login, "role", role, present, true)?;
            a.roles.retain(|r| r.name != role);
            Ok(())
        })
        .await
        .map(|_| ())
    }

    /// Creates (`create`) or replaces a policy; every rule must parse.
    ///
    /// # Errors
    /// When a rule does not parse, or the policy exists (create) or not (replace).
    pub async fn put_policy(
        &self,
        login: &str,
        policy: Policy,
        create: bool,
    ) -> Result<(), AdminError> {
        for r in &policy.rules {
            manta_auth::rbac::parse_rule(r).map_err(AdminError::Access)?;
        }
        self.update(login, |a| {
            let exists = a.policies.iter().any(|p| p.name == policy.name);
            if policy.name.is_empty() {
                return Err(AdminError::Access("a policy needs a name".into()));
            }
            presence(&a.login, "policy", &policy.name, exists, !create)?;
            a.policies.retain(|p| p.name != policy.name);
            a.policies.push(policy.clone());
            Ok(())
        })
        .await
        .map(|_| ())
    }

    /// Removes a policy no role has.
    ///
    /// # Errors
    /// When the account or policy does not exist, or a role still has it.
    pub async fn delete_policy(&self, login: &str, policy: &str) -> Result<(), AdminError> {
        self.update(login, |a| {
            let present = a.policies.iter().any(|p| p.name == policy);
            presence(&a.login, "policy", policy, present, true)?;
            if let Some(r) = a
                .roles
                .iter()
                .find(|r| r.policies.iter().any(|p| p == policy))
            {
                return Err(AdminError::Access(format!(
                    "role {} has policy {policy}: take it off the role first",
                    r.name
                )));
            }
            a.policies.retain(|p| p.name != policy);
            Ok(())
        })
        .await
        .map(|_| ())
    }

    /// Every account, by login.
    ///
    /// # Errors
    /// When Moray fails.
    pub async fn list(&self) -> Result<Vec<Account>, AdminError> {
        let found = self
            .moray
            .find_objects(
                BUCKET,
                "(login=*)",
                FindOptions {
                    limit: Some(100_000),
                    sort: vec![moray::Sort::asc("login")],
                    ..FindOptions::default()
                },
            )
            .await?;
        found
            .into_iter()
            .map(|r| {
                from_value(r.value)
                    .map_err(|e| AdminError::Moray(moray::Error::Internal { message: e.0 }))
            })
            .collect()
    }
}
