//! Vnode fences: how a shard stops taking writes for a vnode that is moving to (or has moved
//! to) another shard, so that a record can never be written on the shard that is giving it
//! up. See [`crate::reshard`] for the move itself.
//!
//! A fence is a row of `moray_vnode_fences(vnode, target, since)`. Once a shard has had one,
//! every bucket table carries a row trigger that refuses any insert, update or delete of a row
//! of a fenced vnode with SQLSTATE `MV001`, which callers get as the retryable
//! `NoDatabasePeersError` ("the vnode is not here; look again at the ring and retry"). The
//! check runs inside the writing transaction, so no write slips past a fence; creating the
//! triggers waits for the writes in flight to commit, so once [`fence`] returns, what the
//! shard holds of the vnode can no longer change. A shard that never had a fence has no
//! trigger and pays nothing.
//!
//! [`purge`] deletes a moved vnode's rows (and the entry counts of its directories) with the
//! fence bypassed for that transaction only; the fence stays, so a client with a stale ring
//! still cannot write there. [`unfence`] lifts it when the vnode comes back.

use serde_json::{Value, json};

use super::buckets::ident;
use super::db::{Db, Op};
use crate::schema::{DIRECTORY_COUNTS, MANTA};

/// The SQLSTATE the fence raises.
pub(crate) const FENCED_SQLSTATE: &str = "MV001";

const FENCE_DDL: &str = r"
CREATE TABLE IF NOT EXISTS moray_vnode_fences (
    vnode BIGINT PRIMARY KEY,
    target TEXT NOT NULL,
    since BIGINT NOT NULL
);
CREATE OR REPLACE FUNCTION moray_vnode_fence() RETURNS trigger LANGUAGE plpgsql AS $f$
DECLARE
    v BIGINT;
BEGIN
    IF TG_OP = 'DELETE' THEN
        v := OLD._vnode;
    ELSE
        v := NEW._vnode;
    END IF;
    IF v IS NOT NULL
        AND current_setting('moray.vnode_purge', true) IS DISTINCT FROM 'on'
        AND EXISTS (SELECT 1 FROM moray_vnode_fences WHERE vnode = v) THEN
        RAISE EXCEPTION 'vnode % is not on this shard (it is moving or has moved); read the ring again and retry', v
            USING ERRCODE = 'MV001';
    END IF;
    IF TG_OP = 'DELETE' THEN
        RETURN OLD;
    END IF;
    RETURN NEW;
END
$f$;
";

/// Whether this shard has ever had a fence (the table exists).
async fn has_fences(c: &impl tokio_postgres::GenericClient) -> Op<bool> {
    let rows = c
        .query_typed("SELECT to_regclass('moray_vnode_fences') IS NOT NULL", &[])
        .await?;
    Ok(rows.first().is_some_and(|r| r.get::<_, bool>(0)))
}

/// The tables of every bucket.
async fn tables(txn: &tokio_postgres::Transaction<'_>) -> Op<Vec<String>> {
    let rows = txn
        .query_typed("SELECT name FROM buckets_config ORDER BY name", &[])
        .await?;
    rows.iter()
        .map(|r| r.try_get::<_, String>(0).map_err(Into::into))
        .collect()
}

/// Fences `vnode` on this shard (idempotent); returns once no write of it is in flight.
pub(crate) async fn fence(db: &Db, vnode: i64, target: &str, now: i64) -> Op<()> {
    db.ensure_catalog().await?;
    let mut conn = db.conn().await?;
    let txn = conn.transaction().await?;
    txn.batch_execute(FENCE_DDL).await?;
    txn.execute(
        "INSERT INTO moray_vnode_fences (vnode, target, since) VALUES ($1, $2, $3) \
         ON CONFLICT (vnode) DO UPDATE SET target = EXCLUDED.target",
        &[&vnode, &target, &now],
    )
    .await?;
    for t in tables(&txn).await? {
        // Takes a lock that waits for the table's writers in flight.
        txn.batch_execute(&format!(
            "CREATE OR REPLACE TRIGGER moray_vnode_fence BEFORE INSERT OR UPDATE OR DELETE ON {} \
             FOR EACH ROW EXECUTE FUNCTION moray_vnode_fence()",
            ident(&t)
        ))
        .await?;
    }
    txn.commit().await?;
    Ok(())
}

/// Lifts the fence of `vnode` (the vnode is coming to this shard). Returns whether there was
/// one.
pub(crate) async fn unfence(db: &Db, vnode: i64) -> Op<bool> {
    let conn = db.conn().await?;
    if !has_fences(&*conn).await? {
        return Ok(false);
    }
    let n = conn
        .execute("DELETE FROM moray_vnode_fences WHERE vnode = $1", &[&vnode])
        .await?;
    Ok(n > 0)
}

/// Deletes every row of the fenced `vnode` on this shard, and the entry counts of its
/// directories, without running Moray's triggers (the records live on elsewhere). Returns how
/// many records went.
///
/// # Errors
/// `InvalidArgument` when the vnode is not fenced here.
pub(crate) async fn purge(db: &Db, vnode: i64) -> Op<u64> {
    db.ensure_catalog().await?;
    let mut conn = db.conn().await?;
    let txn = conn.transaction().await?;
    let fenced = has_fences(&txn).await?
        && !txn
            .query(
                "SELECT 1 FROM moray_vnode_fences WHERE vnode = $1",
                &[&vnode],
            )
            .await?
            .is_empty();
    if !fenced {
        return Err(crate::error::Error::invalid_argument(format!(
            "vnode {vnode} is not fenced on this shard; only a moved vnode is purged"
        ))
        .into());
    }
    txn.batch_execute("SELECT set_config('moray.vnode_purge', 'on', true)")
        .await?;
    let tables = tables(&txn).await?;
    if tables.iter().any(|t| t == MANTA) && tables.iter().any(|t| t == DIRECTORY_COUNTS) {
        txn.execute(
            &format!(
                "DELETE FROM {} WHERE _key IN (SELECT DISTINCT dirname FROM {} WHERE _vnode = $1)",
                ident(DIRECTORY_COUNTS),
                ident(MANTA)
            ),
            &[&vnode],
        )
        .await?;
    }
    let mut gone = 0;
    for t in &tables {
        gone += txn
            .execute(
                &format!("DELETE FROM {} WHERE _vnode = $1", ident(t)),
                &[&vnode],
            )
            .await?;
    }
    txn.commit().await?;
    Ok(gone)
}

/// The fences of this shard: `[{"vnode", "target", "since"}]`.
pub(crate) async fn list(db: &Db) -> Op<Value> {
    let conn = db.conn().await?;
    if !has_fences(&*conn).await? {
        return Ok(json!([]));
    }
    let rows = conn
        .query(
            "SELECT vnode, target, since FROM moray_vnode_fences ORDER BY vnode",
            &[],
        )
        .await?;
    Ok(Value::Array(
        rows.iter()
            .map(|r| {
                json!({
                    "vnode": r.get::<_, i64>(0),
                    "target": r.get::<_, String>(1),
                    "since": r.get::<_, i64>(2),
                })
            })
            .collect(),
    ))
}
