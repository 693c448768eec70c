//! The connection pool to the current Postgres primary, and the rules every database call
//! follows: bounded by a timeout, failed fast when the primary changes, and Postgres errors
//! mapped to Moray errors.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bb8_postgres::PostgresConnectionManager;
use bytes::BytesMut;
use tokio_postgres::NoTls;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{IsNull, ToSql, Type, to_sql_checked};
use tokio_util::sync::CancellationToken;

use super::buckets::BucketSchema;
use crate::error::Error;

pub(crate) type Manager = PostgresConnectionManager<NoTls>;
pub(crate) type Conn = bb8::PooledConnection<'static, Manager>;

/// Pool and timeout settings, from the server config.
#[derive(Debug, Clone)]
pub(crate) struct DbSettings {
    pub pool_size: u32,
    pub connect_timeout: Duration,
    pub query_timeout: Duration,
    pub bucket_cache_ttl: Duration,
    /// The role and password to log in with, in place of the URL's user.
    pub login: Option<manta_util::secret::PgLogin>,
}

/// A failure inside a database operation: a Moray error, or a raw Postgres error still to be
/// classified (the retry loop looks at deadlocks and stale schema before mapping).
#[derive(Debug)]
pub(crate) enum OpError {
    Moray(Error),
    Pg(tokio_postgres::Error),
}

impl From<Error> for OpError {
    fn from(e: Error) -> Self {
        OpError::Moray(e)
    }
}

impl From<tokio_postgres::Error> for OpError {
    fn from(e: tokio_postgres::Error) -> Self {
        OpError::Pg(e)
    }
}

pub(crate) type Op<T> = Result<T, OpError>;

impl OpError {
    pub fn code(&self) -> Option<&SqlState> {
        match self {
            OpError::Pg(e) => e.code(),
            OpError::Moray(_) => None,
        }
    }

    /// A transient conflict between transactions: the whole operation may simply run again.
    pub fn is_transient(&self) -> bool {
        matches!(
            self.code(),
            Some(c) if *c == SqlState::T_R_DEADLOCK_DETECTED || *c == SqlState::T_R_SERIALIZATION_FAILURE
        )
    }

    /// The table or column the cached bucket schema names is gone or new: reload and retry.
    pub fn is_stale_schema(&self) -> bool {
        matches!(
            self.code(),
            Some(c) if *c == SqlState::UNDEFINED_TABLE || *c == SqlState::UNDEFINED_COLUMN
        )
    }

    pub fn into_error(self) -> Error {
        match self {
            OpError::Moray(e) => e,
            OpError::Pg(e) => pg_error(&e),
        }
    }
}

/// Maps a Postgres error to what a Moray caller can act on.
pub(crate) fn pg_error(e: &tokio_postgres::Error) -> Error {
    let Some(db) = e.as_db_error() else {
        // No server error: the connection broke, or could not be made.
        return Error::no_peers(format!("database connection failed: {e}"));
    };
    let code = db.code();
    let msg = db.message().to_owned();
    if *code == SqlState::READ_ONLY_SQL_TRANSACTION {
        return Error::no_peers(format!(
            "the primary is read-only (not yet writable): {msg}"
        ));
    }
    if *code == SqlState::ADMIN_SHUTDOWN
        || *code == SqlState::CRASH_SHUTDOWN
        || *code == SqlState::CANNOT_CONNECT_NOW
        || code.code().starts_with("08")
    {
        return Error::no_peers(format!("database unavailable: {msg}"));
    }
    if *code == SqlState::QUERY_CANCELED {
        return Error::QueryTimeout { message: msg };
    }
    if *code == SqlState::UNIQUE_VIOLATION {
        return Error::UniqueAttribute {
            bucket: db.table().unwrap_or_default().to_owned(),
            message: match db.detail() {
                Some(d) => format!("{msg}: {d}"),
                None => msg,
            },
        };
    }
    if *code == SqlState::UNDEFINED_TABLE {
        // The bucket was dropped under us.
        return Error::BucketNotFound {
            bucket: db.table().unwrap_or_default().to_owned(),
        };
    }
    if code.code().starts_with("22") {
        // Data exceptions: a value Postgres cannot take (number out of range, bad cast).
        return Error::invalid_argument(msg);
    }
    if code.code() == super::vnodes::FENCED_SQLSTATE {
        return Error::no_peers(msg);
    }
    if *code == SqlState::LOCK_NOT_AVAILABLE {
        return Error::no_peers(format!("lock not available, try again: {msg}"));
    }
    Error::internal(format!("postgres error {}: {msg}", code.code()))
}

/// A bound parameter. Every value is sent with an explicit type (`query_typed`), so each
/// statement is one round trip without a separate prepare.
#[derive(Debug, Clone)]
pub(crate) enum Param {
    Text(Option<String>),
    TextArray(Option<Vec<String>>),
    Int8(Option<i64>),
}

impl Param {
    pub fn ty(&self) -> Type {
        match self {
            Param::Text(_) => Type::TEXT,
            Param::TextArray(_) => Type::TEXT_ARRAY,
            Param::Int8(_) => Type::INT8,
        }
    }
}

impl ToSql for Param {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self {
            Param::Text(v) => v.to_sql(ty, out),
            Param::TextArray(v) => v.to_sql(ty, out),
            Param::Int8(v) => v.to_sql(ty, out),
        }
    }

    fn accepts(_ty: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

/// Placeholders and their values, built up while composing a statement.
#[derive(Debug, Default, Clone)]
pub(crate) struct Params {
    values: Vec<Param>,
}

impl Params {
    pub fn new() -> Params {
        Params::default()
    }

    /// Adds a value; returns its placeholder (`$n`).
    pub fn push(&mut self, p: Param) -> String {
        self.values.push(p);
        format!("${}", self.values.len())
    }

    pub fn text(&mut self, s: impl Into<String>) -> String {
        self.push(Param::Text(Some(s.into())))
    }

    pub fn int(&mut self, i: i64) -> String {
        self.push(Param::Int8(Some(i)))
    }

    /// For `query_typed`.
    pub fn typed(&self) -> Vec<(&(dyn ToSql + Sync), Type)> {
        self.values
            .iter()
            .map(|p| (p as &(dyn ToSql + Sync), p.ty()))
            .collect()
    }

    /// For `query_typed_raw` (owned, so the row stream borrows nothing).
    pub fn into_typed(self) -> Vec<(Param, Type)> {
        self.values
            .into_iter()
            .map(|p| {
                let t = p.ty();
                (p, t)
            })
            .collect()
    }
}

/// Normalises a primary's URL: Manatee writes `tcp://user@host:port/db`, Postgres clients
/// want `postgresql://`.
///
/// # Errors
/// `InvalidArgument` when it is not a Postgres URL.
pub(crate) fn normalise_pg_url(url: &str) -> Result<String, Error> {
    let url = url.trim();
    let rest = url
        .strip_prefix("tcp://")
        .or_else(|| url.strip_prefix("postgresql://"))
        .or_else(|| url.strip_prefix("postgres://"))
        .ok_or_else(|| Error::invalid_argument(format!("not a Postgres URL: {url:?}")))?;
    let out = format!("postgresql://{rest}");
    tokio_postgres::Config::from_str(&out)
        .map_err(|e| Error::invalid_argument(format!("bad Postgres URL {url:?}: {e}")))?;
    Ok(out)
}

/// One primary: its pool, its bucket cache, and a token cancelled when it stops being the
/// primary (so requests still running against it fail at once instead of hanging).
pub(crate) struct Db {
    pub url: String,
    pool: bb8::Pool<Manager>,
    gone: CancellationToken,
    pub settings: DbSettings,
    buckets: Mutex<HashMap<String, (Arc<BucketSchema>, Instant)>>,
    catalog: tokio::sync::OnceCell<()>,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db").field("url", &self.url).finish()
    }
}

impl Db {
    pub fn new(url: &str, settings: DbSettings) -> Result<Db, Error> {
        let url = normalise_pg_url(url)?;
        let mut cfg = tokio_postgres::Config::from_str(&url)
            .map_err(|e| Error::invalid_argument(format!("bad Postgres URL: {e}")))?;
        let stmt_ms = settings.query_timeout.as_millis().max(1);
        if let Some(l) = &settings.login {
            cfg.user(&l.user).password(&l.password);
        }
        cfg.connect_timeout(settings.connect_timeout)
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(5))
            .tcp_user_timeout(settings.query_timeout)
            .application_name("moray")
            .options(format!("-c statement_timeout={stmt_ms}"));
        let manager = PostgresConnectionManager::new(cfg, NoTls);
        let pool = bb8::Pool::builder()
            .max_size(settings.pool_size.max(1))
            .connection_timeout(settings.connect_timeout)
            // A checkout test costs a round trip per request; a broken connection is noticed
            // by the failing request instead (retryable), and bb8 drops closed ones.
            .test_on_check_out(false)
            .idle_timeout(Some(Duration::from_secs(270)))
            .max_lifetime(Some(Duration::from_secs(1800)))
            .build_unchecked(manager);
        Ok(Db {
            url,
            pool,
            gone: CancellationToken::new(),
            settings,
            buckets: Mutex::new(HashMap::new()),
            catalog: tokio::sync::OnceCell::new(),
        })
    }

    /// Marks this primary as replaced: operations in flight on it fail with
    /// `NoDatabasePeersError`.
    pub fn retire(&self) {
        self.gone.cancel();
    }

    pub fn pool_state(&self) -> (u32, u32) {
        let s = self.pool.state();
        (s.connections, s.idle_connections)
    }

    /// A pooled connection.
    pub async fn conn(&self) -> Op<Conn> {
        self.pool.get_owned().await.map_err(|e| match e {
            bb8::RunError::User(e) => OpError::Pg(e),
            bb8::RunError::TimedOut => OpError::Moray(Error::no_peers(
                "timed out waiting for a database connection",
            )),
        })
    }

    /// A connection outside the pool, for DDL that must not run in a transaction or may take
    /// longer than the statement timeout (it is closed after use).
    pub async fn dedicated(&self) -> Op<tokio_postgres::Client> {
        Ok(self.pool.dedicated_connection().await?)
    }

    /// Runs `fut` bounded by the query timeout and by this primary's lifetime.
    pub async fn bounded<T>(&self, fut: impl std::future::Future<Output = Op<T>>) -> Op<T> {
        self.bounded_for(self.settings.query_timeout, fut).await
    }

    /// Like [`Db::bounded`] with an explicit time limit.
    pub async fn bounded_for<T>(
        &self,
        limit: Duration,
        fut: impl std::future::Future<Output = Op<T>>,
    ) -> Op<T> {
        tokio::select! {
            r = fut => r,
            () = tokio::time::sleep(limit) => Err(OpError::Moray(Error::no_peers(format!(
                "database did not answer within {}",
                humantime::format_duration(limit)
            )))),
            () = self.gone.cancelled() => Err(OpError::Moray(Error::no_peers(
                "the primary changed while the request was running; retry",
            ))),
        }
    }

    pub fn cached_bucket(&self, name: &str) -> Option<Arc<BucketSchema>> {
        let map = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match map.get(name) {
            Some((b, at)) if at.elapsed() < self.settings.bucket_cache_ttl => Some(b.clone()),
            _ => None,
        }
    }

    pub fn cache_bucket(&self, b: Arc<BucketSchema>) {
        self.buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(b.name.clone(), (b, Instant::now()));
    }

    pub fn forget_bucket(&self, name: &str) {
        self.buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(name);
    }

    pub fn forget_all_buckets(&self) {
        self.buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clear();
    }

    /// Creates the bucket catalog once per primary.
    pub async fn ensure_catalog(&self) -> Op<()> {
        self.catalog
            .get_or_try_init(|| async {
                // Its own connection: callers may hold pooled ones, and a full pool must not
                // wait on itself.
                let conn = self.dedicated().await?;
                let r = conn
                    .batch_execute(super::buckets::CATALOG_DDL)
                    .await;
                match r {
                    Ok(()) => Ok(()),
                    // Two servers creating it at once: the loser sees a duplicate.
                    Err(e)
                        if matches!(e.code(), Some(c) if *c == SqlState::UNIQUE_VIOLATION || *c == SqlState::DUPLICATE_TABLE) =>
                    {
                        Ok(())
                    }
                    Err(e) => Err(OpError::Pg(e)),
                }
            })
            .await
            .map(|_| ())
    }
}

/// Which primary requests go to right now (none while failing over or before Manatee has
/// named one).
#[derive(Debug)]
pub(crate) struct Primary {
    current: RwLock<Option<Arc<Db>>>,
    settings: DbSettings,
    metrics: Arc<manta_util::metrics::Metrics>,
}

impl Primary {
    pub fn new(settings: DbSettings, metrics: Arc<manta_util::metrics::Metrics>) -> Primary {
        Primary {
            current: RwLock::new(None),
            settings,
            metrics,
        }
    }

    /// The current primary, or `NoDatabasePeersError`.
    pub fn get(&self) -> Result<Arc<Db>, Error> {
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
            .ok_or_else(|| Error::no_peers("no database primary is known (waiting for Manatee)"))
    }

    /// The current primary's URL, if any.
    pub fn url(&self) -> Option<String> {
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()
            .map(|d| d.url.clone())
    }

    /// Points requests at `url` (or at nothing). A change retires the old pool: requests in
    /// flight on it fail with a retryable error.
    ///
    /// # Errors
    /// `InvalidArgument` for a malformed URL (the current primary is then dropped too: better
    /// to refuse than to write to a deposed one).
    pub fn set(&self, url: Option<&str>) -> Result<(), Error> {
        let new = match url {
            None => None,
            Some(u) => {
                let norm = normalise_pg_url(u);
                if let (Ok(n), Some(cur)) = (&norm, self.url())
                    && *n == cur
                {
                    return Ok(());
                }
                match norm.and_then(|_| Db::new(u, self.settings.clone())) {
                    Ok(db) => Some(Arc::new(db)),
                    Err(e) => {
                        self.replace(None);
                        return Err(e);
                    }
                }
            }
        };
        self.replace(new);
        Ok(())
    }

    fn replace(&self, new: Option<Arc<Db>>) {
        let new_url = new.as_ref().map(|d| redact(&d.url));
        let old = std::mem::replace(
            &mut *self
                .current
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
            new,
        );
        let old_url = old.as_ref().map(|d| redact(&d.url));
        if old_url == new_url {
            return;
        }
        if let Some(old) = old {
            old.retire();
        }
        tracing::info!(from = ?old_url, to = ?new_url, "database primary changed");
        self.metrics.inc(
            "moray_primary_changes_total",
            "Times the Postgres primary this server talks to changed.",
            &[],
        );
    }
}

/// A URL without its password, for logs.
pub(crate) fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pg_urls_are_normalised() {
        assert_eq!(
            normalise_pg_url("tcp://postgres@127.0.0.1:5432/postgres").unwrap(),
            "postgresql://postgres@127.0.0.1:5432/postgres"
        );
        assert_eq!(
            normalise_pg_url("postgres://u@h:1/d").unwrap(),
            "postgresql://u@h:1/d"
        );
        assert!(normalise_pg_url("http://h/").is_err());
        assert!(normalise_pg_url("").is_err());
        assert_eq!(
            redact("postgresql://u:secret@h/d"),
            "postgresql://u:***@h/d"
        );
    }
}
