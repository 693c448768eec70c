//! The HTTP face of the server: one `POST /<method>` route per RPC, JSON in, JSON (or a JSON
//! stream) out, errors as `{"name", "message", "context"}` with their status.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::response::Response;
use axum::routing::{get, post};
use futures_util::StreamExt;
use http::{HeaderValue, StatusCode, header};
use manta_util::tls::Role;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio_postgres::Transaction;

use super::buckets;
use super::db::{Conn, Db, Op, OpError, Params, Primary, redact};
use super::objects::{self, load_bucket, now_ms, parse_filter, record_json, validate_record};
use super::query::{compile, order_by};
use super::triggers::{self, TxnCtx};
use crate::error::Error;
use crate::types::{
    API_VERSION, CountResult, DEFAULT_FIND_LIMIT, EtagCondition, PutResult, VersionInfo, req,
};

/// What every handler shares.
pub(crate) struct AppState {
    pub primary: Arc<Primary>,
}

/// What the routes depend on in the server's configuration.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Routes {
    /// The server serves mutual TLS: check callers' roles where it matters.
    pub roles: bool,
    /// `/sql` is on.
    pub sql: bool,
}

/// Who may run `/sql` and move vnodes: operators.
const SQL_ROLES: &[Role] = &[Role::Adm];

/// The RPC routes (without `/ping` and `/metrics`, which `with_observability` adds): those on
/// buckets, those on the objects in them, and the server's own. `/sql` answers only when
/// enabled, and then (over mutual TLS) only to operators.
pub(crate) fn router(state: Arc<AppState>, routes: Routes) -> Router {
    let buckets = Router::new()
        .route("/createBucket", post(rpc(create_bucket)))
        .route("/getBucket", post(rpc(get_bucket)))
        .route("/listBuckets", post(list_buckets))
        .route("/updateBucket", post(rpc(update_bucket)))
        .route("/delBucket", post(rpc(del_bucket)));
    let objects = Router::new()
        .route("/putObject", post(rpc(put_object)))
        .route("/getObject", post(rpc(get_object)))
        .route("/delObject", post(rpc(del_object)))
        .route("/findObjects", post(find_objects))
        .route("/updateObjects", post(rpc(update_objects)))
        .route("/deleteMany", post(rpc(delete_many)))
        .route("/batch", post(rpc(batch)))
        .route("/reindexObjects", post(rpc(reindex_objects)));
    let sql_route = if !routes.sql {
        post(sql_off)
    } else if routes.roles {
        post(rpc(sql)).layer(axum::middleware::from_fn_with_state(SQL_ROLES, only_roles))
    } else {
        post(rpc(sql))
    };
    let vnodes = Router::new()
        .route("/vnodeFence", post(rpc(vnode_fence)))
        .route("/vnodeUnfence", post(rpc(vnode_unfence)))
        .route("/vnodePurge", post(rpc(vnode_purge)))
        .route("/vnodeFences", post(rpc(vnode_fences)));
    let vnodes = if routes.roles {
        vnodes.layer(axum::middleware::from_fn_with_state(SQL_ROLES, only_roles))
    } else {
        vnodes
    };
    let server = Router::new()
        .merge(vnodes)
        .route("/sql", sql_route)
        .route("/ping", post(rpc(ping)))
        .route("/version", post(version))
        .route("/status", get(status))
        .route("/health", get(health));
    buckets.merge(objects).merge(server).with_state(state)
}

/// Largest request body accepted (a batch of many records).
pub(crate) const MAX_BODY: usize = 64 << 20;

/// Reads and parses a request body, refusing oversized or malformed ones with
/// `InvalidArgumentError`.
async fn parse<T: DeserializeOwned>(body: Body) -> Result<T, Error> {
    let body = axum::body::to_bytes(body, MAX_BODY).await.map_err(|e| {
        Error::invalid_argument(format!(
            "request body unreadable or larger than {MAX_BODY} bytes: {e}"
        ))
    })?;
    let body: &[u8] = if body.is_empty() { b"{}" } else { &body };
    serde_json::from_slice(body)
        .map_err(|e| Error::invalid_argument(format!("bad request body: {e}")))
}

/// What an RPC's handler gives back to [`rpc`]: its response, or the error to answer with.
type Answer = Result<Response, Error>;

/// The axum handler of one RPC: parses the request body into the RPC's request, runs `f` on
/// it, and answers with what `f` answers or with its error.
fn rpc<R, F, Fut>(
    f: F,
) -> impl Fn(State<Arc<AppState>>, Body) -> Pin<Box<dyn Future<Output = Response> + Send>>
+ Clone
+ Send
+ Sync
+ 'static
where
    R: DeserializeOwned + Send + 'static,
    F: Fn(Arc<AppState>, R) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Answer> + Send + 'static,
{
    move |State(st), body| {
        let f = f.clone();
        Box::pin(async move { respond(async { f(st, parse(body).await?).await }.await) })
    }
}

pub(crate) fn error_response(e: &Error) -> Response {
    let status = StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if status.is_server_error() {
        tracing::warn!(name = e.name(), error = %e, "request failed");
    } else {
        tracing::info!(name = e.name(), error = %e, "request refused");
    }
    let body = serde_json::to_vec(&e.to_wire()).unwrap_or_default();
    let mut resp = Response::new(Body::from(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

fn raw_json(body: String) -> Response {
    let mut resp = Response::new(Body::from(body));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

fn json_response<T: Serialize>(v: &T) -> Answer {
    serde_json::to_string(v)
        .map(raw_json)
        .map_err(|e| Error::internal(format!("encode response: {e}")))
}

fn respond(r: Answer) -> Response {
    r.unwrap_or_else(|e| error_response(&e))
}

/// Runs a database operation against the current primary: bounded by the query timeout,
/// run again on a deadlock or serialization failure, and with a fresh bucket schema when the
/// cached one turned out stale.
async fn run_op<T, F, Fut>(st: &AppState, mut f: F) -> Result<T, Error>
where
    F: FnMut(Arc<Db>) -> Fut,
    Fut: std::future::Future<Output = Op<T>>,
{
    let mut attempt = 0;
    loop {
        let db = st.primary.get()?;
        match db.bounded(f(db.clone())).await {
            Ok(v) => return Ok(v),
            Err(e) if attempt < 3 && e.is_transient() => {
                tracing::info!(attempt, "transaction conflict; running it again");
            }
            Err(e) if attempt < 2 && e.is_stale_schema() => {
                tracing::info!("bucket schema changed under us; reloading it");
                db.forget_all_buckets();
            }
            Err(e) => return Err(e.into_error()),
        }
        attempt += 1;
        tokio::time::sleep(Duration::from_millis(5 * (attempt as u64 + 1))).await;
    }
}

/// [`run_op`] for a write: `$body` runs in a transaction of its own, as [`in_txn`] runs it,
/// with `$db`, `$txn` and `$ctx` bound. A macro because a function would have to take the
/// body as a generic async closure, and the compiler cannot then see that the handler's future
/// is `Send`.
macro_rules! run_in_txn {
    ($st:expr, |$db:ident, $txn:ident, $ctx:pat_param| $body:expr) => {
        run_op($st, |$db| async move {
            in_txn(&$db, $db.conn().await?, async |$txn, $ctx| $body).await
        })
    };
}

/// Runs `f` in a transaction on `conn`, with a context for the triggers of the writes it
/// makes; then applies what those triggers collected and commits.
async fn in_txn<T>(
    db: &Db,
    mut conn: Conn,
    f: impl AsyncFnOnce(&Transaction<'_>, &mut TxnCtx) -> Op<T>,
) -> Op<T> {
    let txn = conn.transaction().await?;
    let mut ctx = TxnCtx::new(now_ms());
    let v = f(&txn, &mut ctx).await?;
    triggers::finish(db, &txn, &mut ctx).await?;
    txn.commit().await?;
    Ok(v)
}

async fn create_bucket(st: Arc<AppState>, r: req::PutBucket) -> Answer {
    let r = &r;
    let b = run_op(&st, |db| async move {
        buckets::create(&db, &r.name, &r.config).await
    })
    .await?;
    json_response(&b)
}

async fn get_bucket(st: Arc<AppState>, r: req::Name) -> Answer {
    let r = &r;
    let b = run_op(&st, |db| async move {
        db.ensure_catalog().await?;
        let conn = db.conn().await?;
        buckets::load(&*conn, &r.name).await?.ok_or_else(|| {
            OpError::Moray(Error::BucketNotFound {
                bucket: r.name.clone(),
            })
        })
    })
    .await?;
    json_response(&b.to_bucket())
}

async fn list_buckets(State(st): State<Arc<AppState>>) -> Response {
    let v = run_op(&st, |db| async move { buckets::list(&db).await }).await;
    respond(v.and_then(|v| json_response(&v)))
}

async fn update_bucket(st: Arc<AppState>, r: req::PutBucket) -> Answer {
    // Index builds on big tables take as long as they take; the DDL itself never waits on a
    // lock for long (see buckets::update).
    let db = st.primary.get()?;
    let b = db
        .bounded_for(
            Duration::from_secs(3600),
            buckets::update(&db, &r.name, &r.config, r.no_reindex),
        )
        .await
        .map_err(OpError::into_error)?;
    json_response(&b)
}

async fn del_bucket(st: Arc<AppState>, r: req::Name) -> Answer {
    let r = &r;
    run_op(&st, |db| async move { buckets::delete(&db, &r.name).await }).await?;
    json_response(&json!({}))
}

async fn put_object(st: Arc<AppState>, r: req::PutObject) -> Answer {
    validate_record(&r.key, &r.value)?;
    let vnode = r.vnode.and_then(|v| i64::try_from(v).ok());
    let r = &r;
    let etag = run_op(&st, |db| async move {
        let conn = db.conn().await?;
        let s = load_bucket(&db, &*conn, &r.bucket).await?;
        if s.config.post.is_empty() && r.options.etag == EtagCondition::Any {
            // Nothing to check and nothing to trigger: one upsert, no transaction.
            let w = objects::write_row(
                &*conn,
                &s,
                &r.key,
                &r.value,
                &EtagCondition::Any,
                vnode,
                now_ms(),
                false,
            )
            .await?;
            return Ok(w.etag);
        }
        in_txn(&db, conn, async |txn, ctx| {
            let (key, value) = (&r.key, &r.value);
            objects::put(&db, txn, &r.bucket, key, value, &r.options.etag, vnode, ctx).await
        })
        .await
    })
    .await?;
    json_response(&PutResult { etag })
}

async fn get_object(st: Arc<AppState>, r: req::GetObject) -> Answer {
    let r = &r;
    let json = run_op(&st, async |db| objects::get(&db, &r.bucket, &r.key).await).await?;
    Ok(raw_json(json))
}

async fn del_object(st: Arc<AppState>, r: req::DelObject) -> Answer {
    let r = &r;
    run_op(&st, |db| async move {
        let conn = db.conn().await?;
        let s = load_bucket(&db, &*conn, &r.bucket).await?;
        if s.config.post.is_empty() {
            objects::delete_row(&*conn, &s, &r.key, &r.options.etag).await?;
            return Ok(());
        }
        in_txn(&db, conn, async |txn, ctx| {
            objects::del(&db, txn, &r.bucket, &r.key, &r.options.etag, ctx).await
        })
        .await
    })
    .await?;
    json_response(&json!({}))
}

async fn update_objects(st: Arc<AppState>, r: req::UpdateObjects) -> Answer {
    let r = &r;
    let c = run_in_txn!(&st, |db, txn, ctx| {
        objects::update_many(&db, txn, &r.bucket, &r.fields, &r.filter, ctx.now_ms).await
    })
    .await?;
    json_response(&c)
}

async fn delete_many(st: Arc<AppState>, r: req::DeleteMany) -> Answer {
    let r = &r;
    let c: CountResult = run_in_txn!(&st, |db, txn, ctx| {
        objects::delete_many(&db, txn, &r.bucket, &r.filter, r.limit, ctx).await
    })
    .await?;
    json_response(&c)
}

async fn batch(st: Arc<AppState>, r: req::Batch) -> Answer {
    for op in &r.requests {
        if let crate::types::BatchOp::Put { key, value, .. } = op {
            validate_record(key, value)?;
        }
    }
    let r = &r;
    let res = run_in_txn!(&st, |db, txn, ctx| {
        objects::batch(&db, txn, &r.requests, &r.vnodes, ctx).await
    })
    .await?;
    json_response(&res)
}

async fn reindex_objects(st: Arc<AppState>, r: req::Reindex) -> Answer {
    let r = &r;
    let res = run_in_txn!(&st, |db, txn, _| {
        objects::reindex(&db, txn, &r.bucket, r.count).await
    })
    .await?;
    json_response(&res)
}

/// Lets through only callers whose client certificate names one of the roles in its state
/// ([`manta_util::tls::check_role`]), answering others `NotPermittedError` in Moray's own
/// error format.
async fn only_roles(
    State(allowed): State<&'static [Role]>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    match manta_util::tls::check_role(req.extensions(), allowed) {
        Ok(_) => next.run(req).await,
        Err(why) => error_response(&Error::not_permitted(format!(
            "{}: {why}",
            req.uri().path()
        ))),
    }
}

async fn vnode_fence(st: Arc<AppState>, r: req::Vnode) -> Answer {
    let target = r
        .target
        .clone()
        .ok_or_else(|| Error::invalid_argument("vnodeFence needs the target shard"))?;
    let r = &r;
    let target = &target;
    run_op(&st, |db| async move {
        super::vnodes::fence(&db, i64::from(r.vnode), target, now_ms()).await
    })
    .await?;
    json_response(&json!({"fenced": r.vnode}))
}

async fn vnode_unfence(st: Arc<AppState>, r: req::Vnode) -> Answer {
    let r = &r;
    let lifted = run_op(&st, |db| async move {
        super::vnodes::unfence(&db, i64::from(r.vnode)).await
    })
    .await?;
    json_response(&json!({"lifted": lifted}))
}

async fn vnode_purge(st: Arc<AppState>, r: req::Vnode) -> Answer {
    let r = &r;
    let purged = run_op(&st, |db| async move {
        super::vnodes::purge(&db, i64::from(r.vnode)).await
    })
    .await?;
    json_response(&json!({"purged": purged}))
}

async fn vnode_fences(st: Arc<AppState>, _r: req::Ping) -> Answer {
    let v = run_op(&st, |db| async move { super::vnodes::list(&db).await }).await?;
    json_response(&v)
}

/// `/sql` on a server started without `--enable-sql`.
async fn sql_off() -> Response {
    error_response(&Error::not_permitted(
        "/sql is off on this server (start it with --enable-sql)",
    ))
}

async fn sql(st: Arc<AppState>, r: req::Sql) -> Answer {
    let r = &r;
    let rows = run_op(&st, |db| async move {
        super::sql::run(&db, &r.statement, &r.values).await
    })
    .await
    .map_err(|e| match e {
        Error::Internal { message } => Error::invalid_query(message),
        other => other,
    })?;
    json_response(&rows)
}

/// `GET /health`: 200 when a writable primary answers, else the error (503 while failing
/// over). What a supervisor polls; `GET /ping` only says the process is up.
async fn health(State(st): State<Arc<AppState>>) -> Response {
    respond(
        deep_ping(&st)
            .await
            .and_then(|()| json_response(&json!({"ok": true}))),
    )
}

async fn deep_ping(st: &AppState) -> Result<(), Error> {
    let read_only = run_op(st, |db| async move {
        let conn = db.conn().await?;
        let row = conn
            .query_typed(
                "SELECT pg_is_in_recovery() OR current_setting('transaction_read_only') = 'on'",
                &[],
            )
            .await?;
        Ok(row
            .first()
            .map(|r| r.try_get::<_, bool>(0))
            .transpose()?
            .unwrap_or(true))
    })
    .await?;
    if read_only {
        return Err(Error::no_peers(
            "the primary is read-only (not yet writable)",
        ));
    }
    Ok(())
}

async fn ping(st: Arc<AppState>, r: req::Ping) -> Answer {
    if r.deep {
        deep_ping(&st).await?;
    }
    json_response(&json!({"ok": true}))
}

async fn version() -> Response {
    respond(json_response(&VersionInfo {
        version: API_VERSION,
        server: env!("CARGO_PKG_VERSION").to_owned(),
    }))
}

async fn status(State(st): State<Arc<AppState>>) -> Response {
    let (primary, pool) = match st.primary.get() {
        Ok(db) => {
            let (conns, idle) = db.pool_state();
            (
                Value::String(redact(&db.url)),
                json!({"connections": conns, "idle": idle}),
            )
        }
        Err(_) => (Value::Null, Value::Null),
    };
    respond(json_response(&json!({"primary": primary, "pool": pool})))
}

fn error_line(e: &Error) -> Bytes {
    let mut s = serde_json::to_string(&json!({"error": e.to_wire()})).unwrap_or_default();
    s.push('\n');
    Bytes::from(s)
}

fn row_line(
    bucket: &str,
    row: &tokio_postgres::Row,
    with_count: bool,
) -> Result<Bytes, tokio_postgres::Error> {
    let id: i64 = row.try_get(0)?;
    let key: &str = row.try_get(1)?;
    let value: &str = row.try_get(2)?;
    let etag: &str = row.try_get(3)?;
    let mtime: i64 = row.try_get(4)?;
    let count = if with_count {
        Some(row.try_get::<_, i64>(5)?)
    } else {
        None
    };
    let mut s = record_json(bucket, key, value, id, etag, mtime, count);
    s.push('\n');
    Ok(Bytes::from(s))
}

/// `findObjects`: the query starts, and its first row (or error) arrives, before the response
/// does, so a bad filter or a dead database gets a proper error status. Later rows stream as
/// JSON lines; a failure after the first row ends the stream with an `{"error": ...}` line.
async fn find_objects(State(st): State<Arc<AppState>>, body: Body) -> Response {
    let r: req::FindObjects = match parse(body).await {
        Ok(r) => r,
        Err(e) => return error_response(&e),
    };
    let filter = match parse_filter(&r.filter) {
        Ok(f) => f,
        Err(e) => return error_response(&e),
    };
    let with_count = !r.options.no_count;
    let (r, filter) = (&r, &filter);
    let started = run_op(&st, |db| async move {
        let conn = db.conn().await?;
        let s = load_bucket(&db, &*conn, &r.bucket).await?;
        let mut p = Params::new();
        let w = compile(&s, filter, &mut p)?;
        let order = order_by(&s, &r.options.sort)?;
        let limit = p.int(i64::try_from(r.options.limit.unwrap_or(DEFAULT_FIND_LIMIT)).unwrap_or(i64::MAX));
        let offset = p.int(i64::try_from(r.options.offset.unwrap_or(0)).unwrap_or(i64::MAX));
        let count = if with_count { ", count(*) OVER ()" } else { "" };
        let sql = format!(
            "SELECT _id, _key, _value, _etag, _mtime{count} FROM {} WHERE {w}{order} LIMIT {limit} OFFSET {offset}",
            s.table()
        );
        let stream = conn.query_typed_raw(&sql, p.into_typed()).await?;
        let mut stream = Box::pin(stream);
        let first = stream.next().await.transpose()?;
        Ok((conn, stream, first, db))
    })
    .await;
    let (conn, rows, first, db) = match started {
        Ok(x) => x,
        Err(e) => return error_response(&e),
    };
    let bucket = r.bucket.clone();
    let first_line = match first.as_ref().map(|row| row_line(&bucket, row, with_count)) {
        Some(Err(e)) => return error_response(&super::db::pg_error(&e)),
        Some(Ok(b)) => Some(b),
        None => None,
    };
    let timeout = db.settings.query_timeout;
    // The connection stays checked out until the stream ends, so nothing else queues behind
    // this query on it.
    // No first row means the query is already complete: never poll the finished stream again.
    let empty = first_line.is_none();
    let state = (Some(conn), rows, first_line, db, empty);
    let body = futures_util::stream::unfold(state, move |(conn, mut rows, first, db, done)| {
        let bucket = bucket.clone();
        async move {
            if done {
                return None;
            }
            if let Some(b) = first {
                return Some((
                    Ok::<_, std::convert::Infallible>(b),
                    (conn, rows, None, db, false),
                ));
            }
            let next = db
                .bounded_for(timeout, async { Ok(rows.next().await.transpose()?) })
                .await;
            match next {
                Ok(Some(row)) => match row_line(&bucket, &row, with_count) {
                    Ok(b) => Some((Ok(b), (conn, rows, None, db, false))),
                    Err(e) => Some((
                        Ok(error_line(&super::db::pg_error(&e))),
                        (None, rows, None, db, true),
                    )),
                },
                Ok(None) => None,
                Err(e) => {
                    let e = e.into_error();
                    tracing::warn!(error = %e, "findObjects stream failed after it started");
                    Some((Ok(error_line(&e)), (None, rows, None, db, true)))
                }
            }
        }
    })
    .ready_chunks(128)
    .map(|chunk| {
        let mut buf = Vec::new();
        for b in chunk.into_iter().flatten() {
            buf.extend_from_slice(&b);
        }
        Ok::<_, std::convert::Infallible>(Bytes::from(buf))
    });
    let mut resp = Response::new(Body::from_stream(body));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-json-stream"),
    );
    resp
}
