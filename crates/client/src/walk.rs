//! Walking a directory tree (for `mfind`, recursive `mget`, `msync`, the `object_store` listing)
//! and removing one (`mrm -r`), with several listings or deletions in flight at once.

use std::sync::Arc;

use futures_util::stream::{self, BoxStream};
use futures_util::{StreamExt as _, TryStreamExt as _};
use tokio::sync::Semaphore;

use crate::client::{DirEntry, MantaClient};
use crate::error::Error;

/// How to walk.
#[derive(Debug, Clone)]
pub struct WalkOptions {
    /// Listings in flight at once (at least 1).
    pub parallel: usize,
    /// Descend into a directory found at depth `d` only when `d + 1 < max_depth` (the
    /// directory's own entries are depth 0); `None` for no limit.
    pub max_depth: Option<u32>,
}

impl Default for WalkOptions {
    fn default() -> Self {
        WalkOptions {
            parallel: 16,
            max_depth: None,
        }
    }
}

/// An entry found by a walk.
#[derive(Debug, Clone)]
pub struct WalkEntry {
    /// The directory holding it, as a full path (`/jill/stor/a`).
    pub parent: String,
    /// Depth below the walked directory (its own entries are 0).
    pub depth: u32,
    /// The listing line.
    pub entry: DirEntry,
}

impl WalkEntry {
    /// The entry's full path.
    pub fn path(&self) -> String {
        format!("{}/{}", self.parent, self.entry.name)
    }
}

struct Walker {
    client: MantaClient,
    opts: WalkOptions,
    /// Bounds the listings in flight across every level of the tree.
    permits: Arc<Semaphore>,
}

impl Walker {
    async fn list(&self, dir: &str) -> Result<Vec<DirEntry>, Error> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| Error::Config("the walk was shut down".into()))?;
        self.client.ls_all(dir).await
    }

    fn descends(&self, depth: u32) -> bool {
        self.opts.max_depth.is_none_or(|m| depth + 1 < m)
    }
}

/// The entries of `dir` (already listed), each followed by its subtree. Sibling directories
/// are listed ahead, up to `parallel` of them, while earlier siblings are being yielded.
fn walk_listing(
    w: Arc<Walker>,
    parent: String,
    entries: Vec<DirEntry>,
    depth: u32,
) -> BoxStream<'static, Result<WalkEntry, Error>> {
    let parallel = w.opts.parallel.max(1);
    let w2 = w.clone();
    stream::iter(entries)
        .map(move |entry| {
            let w = w.clone();
            let parent = parent.clone();
            async move {
                let child = format!("{parent}/{}", entry.name);
                let listing = if entry.is_dir() && w.descends(depth) {
                    Some(w.list(&child).await)
                } else {
                    None
                };
                (
                    WalkEntry {
                        parent,
                        depth,
                        entry,
                    },
                    child,
                    listing,
                )
            }
        })
        .buffered(parallel)
        .flat_map(move |(found, child, listing)| {
            let head = stream::once(async move { Ok(found) });
            match listing {
                None => head.boxed(),
                Some(Ok(entries)) => head
                    .chain(walk_listing(w2.clone(), child, entries, depth + 1))
                    .boxed(),
                // A subtree that vanished or cannot be read is reported, and the walk goes on.
                Some(Err(e)) => head.chain(stream::once(async move { Err(e) })).boxed(),
            }
        })
        .boxed()
}

impl MantaClient {
    /// Every entry below the directory `dir`, depth first, each directory's entries in name
    /// order and each directory right before its contents. A listing that fails is yielded as
    /// an error and the walk continues with the rest. One directory's listing is held in
    /// memory at a time per level (plus up to `parallel` prefetched siblings).
    pub fn walk(
        &self,
        dir: &str,
        opts: WalkOptions,
    ) -> BoxStream<'static, Result<WalkEntry, Error>> {
        let root = match self.path(dir) {
            Ok(p) => p.to_string(),
            Err(e) => return stream::once(async move { Err(e) }).boxed(),
        };
        let w = Arc::new(Walker {
            client: self.clone(),
            permits: Arc::new(Semaphore::new(opts.parallel.max(1))),
            opts,
        });
        stream::once(async move {
            match w.list(&root).await {
                Ok(entries) => walk_listing(w, root, entries, 0),
                Err(e) => stream::once(async move { Err(e) }).boxed(),
            }
        })
        .flatten()
        .boxed()
    }

    /// Removes a directory and everything below it, up to `parallel` requests at once. An
    /// object stops the removal at the first failure (what was removed stays removed).
    ///
    /// # Errors
    /// The first refusal or transport failure.
    pub async fn rm_recursive(&self, dir: &str, parallel: usize) -> Result<(), Error> {
        let root = self.path(dir)?.to_string();
        let permits = Arc::new(Semaphore::new(parallel.max(1)));
        rm_tree(self.clone(), root, permits, parallel.max(1)).await
    }
}

fn rm_tree(
    c: MantaClient,
    dir: String,
    permits: Arc<Semaphore>,
    parallel: usize,
) -> futures_util::future::BoxFuture<'static, Result<(), Error>> {
    Box::pin(async move {
        let entries = {
            let _p = permits
                .acquire()
                .await
                .map_err(|_| Error::Config("the removal was shut down".into()))?;
            c.ls_all(&dir).await?
        };
        stream::iter(entries)
            .map(|e| {
                let c = c.clone();
                let permits = permits.clone();
                let child = format!("{dir}/{}", e.name);
                async move {
                    if e.is_dir() {
                        rm_tree(c, child, permits, parallel).await
                    } else {
                        let _p = permits
                            .acquire()
                            .await
                            .map_err(|_| Error::Config("the removal was shut down".into()))?;
                        c.rm(&child).await
                    }
                }
            })
            .buffer_unordered(parallel)
            .try_collect::<()>()
            .await?;
        c.rm(&dir).await
    })
}
