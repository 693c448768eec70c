//! Moving object bytes between local files (or any reader/writer) and the store without
//! holding an object in memory and without blocking the async runtime: reads and writes run
//! on blocking threads and hand chunks through small bounded channels, so at most a few MiB
//! are in flight per transfer whatever the object's size.

use std::io::{Read, Write};
use std::path::PathBuf;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt as _;
use http::HeaderMap;
use md5::{Digest as _, Md5};
use tokio::sync::mpsc;

use crate::client::{GetOptions, MantaClient, Progress, backoff};
use crate::error::Error;

/// Size of the chunks read from a local file or reader.
const CHUNK: usize = 1024 * 1024;
/// Chunks queued between a blocking thread and the HTTP body.
const DEPTH: usize = 4;

fn channel_body(rx: mpsc::Receiver<std::io::Result<Bytes>>) -> reqwest::Body {
    let s = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    reqwest::Body::wrap_stream(s)
}

/// Reads up to `limit` bytes (all of it when `None`) from `r` into chunks on `tx`.
fn pump(
    mut r: impl Read,
    limit: Option<u64>,
    progress: Option<Progress>,
    tx: &mpsc::Sender<std::io::Result<Bytes>>,
) -> std::io::Result<()> {
    let mut sent = 0u64;
    loop {
        let want = match limit {
            Some(l) if sent >= l => return Ok(()),
            Some(l) => CHUNK.min(usize::try_from(l - sent).unwrap_or(CHUNK)),
            None => CHUNK,
        };
        let mut buf = BytesMut::zeroed(want);
        let mut filled = 0;
        while filled < want {
            match r.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if filled == 0 {
            return match limit {
                Some(l) => Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!("the input ended after {sent} of {l} bytes"),
                )),
                None => Ok(()),
            };
        }
        buf.truncate(filled);
        sent += filled as u64;
        if tx.blocking_send(Ok(buf.freeze())).is_err() {
            // The request was abandoned; nobody wants the rest.
            return Ok(());
        }
        if let Some(p) = &progress {
            p.report(sent);
        }
    }
}

/// A body streaming exactly `len` bytes of a local file from a blocking thread.
pub(crate) fn file_body(
    path: PathBuf,
    (offset, len): (u64, u64),
    progress: Option<Progress>,
) -> reqwest::Body {
    let (tx, rx) = mpsc::channel(DEPTH);
    tokio::task::spawn_blocking(move || {
        let result = std::fs::File::open(&path).and_then(|mut f| {
            std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(offset))?;
            pump(f, Some(len), progress, &tx)
        });
        if let Err(e) = result {
            let _ = tx.blocking_send(Err(std::io::Error::new(
                e.kind(),
                format!("{}: {e}", path.display()),
            )));
        }
    });
    channel_body(rx)
}

/// A body streaming whatever `reader` yields (up to `limit` bytes) from a blocking thread.
pub(crate) fn reader_body(
    reader: impl Read + Send + 'static,
    limit: Option<u64>,
    progress: Option<Progress>,
) -> reqwest::Body {
    let (tx, rx) = mpsc::channel(DEPTH);
    tokio::task::spawn_blocking(move || {
        if let Err(e) = pump(reader, limit, progress, &tx) {
            let _ = tx.blocking_send(Err(e));
        }
    });
    channel_body(rx)
}

/// Options of [`MantaClient::get_to_writer`].
#[derive(Debug, Clone, Default)]
pub struct DownloadOptions {
    /// Extra request headers (conditions, `role`). A `range` here turns off resuming and the
    /// MD5 check, which only make sense for the whole object.
    pub headers: Vec<(String, String)>,
    /// Told how many bytes have been written so far.
    pub progress: Option<Progress>,
    /// Do not compare the MD5 of the bytes received with the object's `Content-MD5`.
    pub skip_md5_check: bool,
    /// Fail with `OperationNotAllowedOnDirectory` when the path is a directory, instead of
    /// writing its listing.
    pub objects_only: bool,
}

/// What a download moved.
#[derive(Debug, Clone)]
pub struct Download {
    /// Bytes written.
    pub size: u64,
    /// Base64 MD5 of the bytes written.
    pub md5: String,
    /// The object's etag.
    pub etag: Option<String>,
    /// The headers of the (first) answer.
    pub headers: HeaderMap,
}

fn header(h: &HeaderMap, name: &str) -> Option<String> {
    h.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
}

impl MantaClient {
    /// Streams an object into `writer`, which is driven on a blocking thread (a file, stdout, a
    /// pipe). The MD5 of the bytes is computed on the way and checked against the object's
    /// `Content-MD5`. When the connection breaks mid-body, the rest is asked for again with
    /// `Range` and `If-Match` (so a replaced object is never spliced), within the client's
    /// retry budget. Returns the writer, flushed.
    ///
    /// # Errors
    /// The server's refusal, a transport failure that retries did not cure, a write error,
    /// [`Error::Truncated`] or [`Error::Checksum`].
    pub async fn get_to_writer<W: Write + Send + 'static>(
        &self,
        path: &str,
        opts: DownloadOptions,
        writer: W,
    ) -> Result<(W, Download), Error> {
        let full_object = !opts
            .headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("range"));
        let (tx, mut rx) = mpsc::channel::<Bytes>(DEPTH * 2);
        let progress = opts.progress.clone();
        let writer_task = tokio::task::spawn_blocking(move || {
            let mut w = writer;
            let mut md5 = Md5::new();
            let mut n = 0u64;
            while let Some(chunk) = rx.blocking_recv() {
                w.write_all(&chunk)?;
                md5.update(&chunk);
                n += chunk.len() as u64;
                if let Some(p) = &progress {
                    p.report(n);
                }
            }
            w.flush()?;
            Ok::<_, std::io::Error>((w, md5.finalize(), n))
        });

        let fetched = self.fetch_into(path, &opts, full_object, &tx).await;
        drop(tx);
        let written = writer_task
            .await
            .map_err(|e| Error::Io(std::io::Error::other(e)))?;
        // A write error explains a failed transfer better than the transfer's own error.
        let ((w, digest, n), meta) = match (written, fetched) {
            (Err(e), _) => return Err(Error::Io(e)),
            (Ok(_), Err(e)) => return Err(e),
            (Ok(w), Ok(meta)) => (w, meta),
        };
        let md5 = B64.encode(digest);
        if full_object {
            if let Some(expected) = meta.length
                && expected != n
            {
                return Err(Error::Truncated {
                    path: path.to_owned(),
                    expected,
                    received: n,
                });
            }
            if let Some(expected) = meta.md5
                && !opts.skip_md5_check
                && expected != md5
            {
                return Err(Error::Checksum {
                    path: path.to_owned(),
                    expected,
                    actual: md5,
                });
            }
        }
        Ok((
            w,
            Download {
                size: n,
                md5,
                etag: meta.etag,
                headers: meta.headers,
            },
        ))
    }

    /// Sends the object's bytes to `tx`, resuming after broken connections when it may.
    /// Returns what the first answer said about the object. Stops quietly when the writer
    /// hangs up (its own error is reported instead).
    async fn fetch_into(
        &self,
        path: &str,
        opts: &DownloadOptions,
        full_object: bool,
        tx: &mpsc::Sender<Bytes>,
    ) -> Result<Fetched, Error> {
        let mut pos = 0u64;
        let mut first: Option<Fetched> = None;
        let mut resumes = 0u32;
        loop {
            let mut headers = opts.headers.clone();
            if let Some(f) = &first {
                headers.push(("range".into(), format!("bytes={pos}-")));
                if let Some(etag) = &f.etag {
                    headers.push(("if-match".into(), etag.clone()));
                }
            }
            let resp = self
                .get(
                    path,
                    GetOptions {
                        range: None,
                        headers,
                    },
                )
                .await?;
            if resp.status() == http::StatusCode::NOT_MODIFIED {
                return Err(Error::Api {
                    status: 304,
                    code: "NotModified".into(),
                    message: format!("{path} was not modified"),
                    path: path.to_owned(),
                });
            }
            let meta = match &first {
                None => {
                    let h = resp.headers();
                    if opts.objects_only
                        && header(h, "content-type").is_some_and(|c| c.contains("type=directory"))
                    {
                        return Err(Error::Api {
                            status: 400,
                            code: "OperationNotAllowedOnDirectory".into(),
                            message: format!("{path} is a directory"),
                            path: path.to_owned(),
                        });
                    }
                    let f = Fetched {
                        length: header(h, "content-length").and_then(|v| v.parse().ok()),
                        md5: header(h, "content-md5"),
                        etag: header(h, "etag"),
                        headers: h.clone(),
                    };
                    first = Some(f.clone());
                    f
                }
                Some(f) => {
                    if resp.status() != http::StatusCode::PARTIAL_CONTENT {
                        // The rest cannot be spliced onto what was written.
                        return Err(Error::Truncated {
                            path: path.to_owned(),
                            expected: f.length.unwrap_or(0),
                            received: pos,
                        });
                    }
                    f.clone()
                }
            };
            let mut body = resp.bytes_stream();
            let mut broken = None;
            // The socket yields small frames; handing each to the writer thread would cost a
            // wake-up per few KiB. Gather them into blocks of about CHUNK bytes instead.
            let mut block = BytesMut::new();
            loop {
                let item = body.next().await;
                let full = match &item {
                    Some(Ok(frame)) => {
                        if block.is_empty() && frame.len() >= CHUNK {
                            // Already big enough: pass it on without copying.
                        } else {
                            block.extend_from_slice(frame);
                        }
                        block.len() >= CHUNK || frame.len() >= CHUNK
                    }
                    _ => true,
                };
                if full {
                    let out = match &item {
                        Some(Ok(frame)) if block.is_empty() => frame.clone(),
                        _ => block.split().freeze(),
                    };
                    if !out.is_empty() {
                        pos += out.len() as u64;
                        if tx.send(out).await.is_err() {
                            return Ok(meta);
                        }
                    }
                }
                match item {
                    Some(Ok(_)) => {}
                    Some(Err(e)) => {
                        broken = Some(e);
                        break;
                    }
                    None => break,
                }
            }
            let Some(e) = broken else {
                return Ok(meta);
            };
            let resumable = full_object && meta.etag.is_some() && resumes < self.retries();
            if !resumable {
                return Err(Error::Http {
                    path: path.to_owned(),
                    source: e,
                });
            }
            resumes += 1;
            tracing::debug!(error = %e, pos, path, "download broke off; resuming");
            tokio::time::sleep(backoff(resumes)).await;
        }
    }
}

/// What the first answer of a download said.
#[derive(Debug, Clone)]
struct Fetched {
    length: Option<u64>,
    md5: Option<String>,
    etag: Option<String>,
    headers: HeaderMap,
}
