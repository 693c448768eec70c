//! `mlogin`: an interactive shell in a compute container on an object, next to its data.
//!
//! The shell runs where a map task on the object would (a node holding a copy), in the same
//! environment: the object at `$MANTA_INPUT_FILE`, the tools and `MANTA_URL` acting as the
//! user, the phase's `--memory`, `--disk`, `--image`, assets (`-s`) and `--init`. The session
//! is one upgraded HTTP connection through the front door; the local terminal is put in raw
//! mode meanwhile (and restored), its size is the remote terminal's. The session ends when the
//! remote shell exits; closing the client ends the remote container.

use std::process::ExitCode;

use anyhow::{Result, anyhow};
use bytes::Bytes;
use clap::Parser;
use http::Method;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::common::{Conn, parse_and_run};

/// Log in to a compute container on an object.
#[derive(Debug, Parser)]
#[command(name = "mlogin", version)]
struct Args {
    #[command(flatten)]
    conn: Conn,
    /// Memory of the container, in MB (as a phase's `memory`).
    #[arg(long)]
    memory: Option<u64>,
    /// Scratch disk of the container, in GB (as a phase's `disk`).
    #[arg(long)]
    disk: Option<u64>,
    /// The OCI image to run in: an object path or a name in the region's registry.
    #[arg(long)]
    image: Option<String>,
    /// An asset to make available under /assets (repeatable).
    #[arg(short = 's', long = "asset")]
    assets: Vec<String>,
    /// A command run once before the shell starts.
    #[arg(long)]
    init: Option<String>,
    /// The object to log in on.
    #[arg(value_name = "OBJECT")]
    object: String,
}

/// `mlogin`.
pub fn main(args: Vec<String>) -> ExitCode {
    parse_and_run("mlogin", args, |a: Args| async move { mlogin(a).await })
}

/// The local terminal in raw mode while this lives; as it was afterwards.
struct Raw(Option<rustix::termios::Termios>);

impl Raw {
    fn enter() -> Raw {
        let stdin = rustix::stdio::stdin();
        let Ok(before) = rustix::termios::tcgetattr(stdin) else {
            return Raw(None); // not a terminal: bytes pass as they are
        };
        let mut raw = before.clone();
        raw.make_raw();
        let _ = rustix::termios::tcsetattr(stdin, rustix::termios::OptionalActions::Now, &raw);
        Raw(Some(before))
    }
}

impl Drop for Raw {
    fn drop(&mut self) {
        if let Some(t) = &self.0 {
            let _ = rustix::termios::tcsetattr(
                rustix::stdio::stdin(),
                rustix::termios::OptionalActions::Now,
                t,
            );
        }
    }
}

async fn mlogin(a: Args) -> Result<ExitCode> {
    let path = super::common::resolve(&a.object, a.conn.account()?)?;
    let client = a.conn.client().await?;
    let (rows, cols) = rustix::termios::tcgetwinsize(rustix::stdio::stdout())
        .map(|w| (w.ws_row, w.ws_col))
        .unwrap_or((24, 80));
    let mut query: Vec<(&str, String)> =
        vec![("rows", rows.to_string()), ("cols", cols.to_string())];
    if let Some(m) = a.memory {
        query.push(("memory", m.to_string()));
    }
    if let Some(d) = a.disk {
        query.push(("disk", d.to_string()));
    }
    if let Some(i) = &a.image {
        query.push(("image", i.clone()));
    }
    if let Some(i) = &a.init {
        query.push(("init", i.clone()));
    }
    for s in &a.assets {
        query.push(("asset", super::common::resolve(s, a.conn.account()?)?));
    }
    let headers = [
        ("upgrade".to_owned(), "manta-mlogin".to_owned()),
        ("connection".to_owned(), "upgrade".to_owned()),
    ];
    let resp = client
        .request(Method::POST, &path, &query, &headers, Bytes::new())
        .await?;
    if resp.status() != http::StatusCode::SWITCHING_PROTOCOLS {
        return Err(anyhow!(
            "the server did not start a session ({})",
            resp.status()
        ));
    }
    let conn = resp.upgrade().await?;
    let (mut from_remote, mut to_remote) = tokio::io::split(conn);
    let raw = Raw::enter();
    // Keys to the remote terminal. The end of local input sends nothing more but keeps the
    // session: it ends when the remote shell does.
    let keys = tokio::spawn(async move {
        let mut stdin = tokio::io::stdin();
        let mut buf = [0u8; 4096];
        loop {
            match stdin.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if to_remote.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                    let _ = to_remote.flush().await;
                }
            }
        }
        std::future::pending::<()>().await;
    });
    let mut stdout = tokio::io::stdout();
    let mut buf = [0u8; 16 * 1024];
    loop {
        match from_remote.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                stdout.write_all(&buf[..n]).await?;
                stdout.flush().await?;
            }
        }
    }
    keys.abort();
    drop(raw);
    // Local input may still be waited on by a blocking read: leave without it.
    std::process::exit(0);
}
