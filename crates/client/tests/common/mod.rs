//! Helpers for the client's tests: a client for a region's account, and a TCP proxy that
//! misbehaves on purpose (drops connections, cuts answers short) between the client and a
//! real front door.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use manta_client::{ClientConfig, MantaClient};
use testkit::TestRegion;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

/// The configuration of a client acting as the region's account at `url`.
pub fn config(region: &TestRegion, url: &str) -> ClientConfig {
    region.client_config_at(&region.account, url)
}

/// A client acting as the region's account, straight at its front door.
pub async fn client(region: &TestRegion) -> MantaClient {
    MantaClient::new(config(region, &region.url)).await.unwrap()
}

/// Deterministic pseudo-random bytes.
pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    testkit::xorshift_bytes(
        seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1),
        len,
    )
}

/// What the proxy does with one accepted connection.
#[derive(Debug, Clone, Copy)]
pub enum Fault {
    /// Close it at once, before reading a byte.
    Drop,
    /// Forward, but close both sides after this many bytes of the answer.
    CutAfter(usize),
    /// Forward faithfully.
    Pass,
}

/// A TCP proxy applying `plan` to its connections in order (then `Pass`).
pub struct FlakyProxy {
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    accepted: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl FlakyProxy {
    pub async fn start(upstream: &str, plan: Vec<Fault>) -> FlakyProxy {
        let upstream: SocketAddr = upstream.trim_start_matches("http://").parse().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let accepted = Arc::new(AtomicUsize::new(0));
        let plan = Arc::new(Mutex::new(plan.into_iter()));
        let count = accepted.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((conn, _)) = listener.accept().await else {
                    return;
                };
                count.fetch_add(1, Ordering::SeqCst);
                let fault = plan.lock().unwrap().next().unwrap_or(Fault::Pass);
                tokio::spawn(serve(conn, upstream, fault));
            }
        });
        FlakyProxy {
            url,
            accepted,
            task,
        }
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for FlakyProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(mut client: TcpStream, upstream: SocketAddr, fault: Fault) {
    let limit = match fault {
        Fault::Drop => return,
        Fault::CutAfter(n) => Some(n),
        Fault::Pass => None,
    };
    let Ok(server) = TcpStream::connect(upstream).await else {
        return;
    };
    let (mut cr, mut cw) = client.split();
    let (mut sr, mut sw) = {
        let (r, w) = server.into_split();
        (r, w)
    };
    let up = async {
        let _ = tokio::io::copy(&mut cr, &mut sw).await;
        let _ = sw.shutdown().await;
    };
    let down = async {
        let mut sent = 0usize;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match sr.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let n = match limit {
                Some(l) if sent + n >= l => {
                    let _ = cw.write_all(&buf[..l - sent]).await;
                    break;
                }
                _ => n,
            };
            if cw.write_all(&buf[..n]).await.is_err() {
                break;
            }
            sent += n;
        }
        let _ = cw.shutdown().await;
    };
    match limit {
        // Cutting the answer short ends the whole exchange.
        Some(_) => {
            tokio::select! {
                () = down => {}
                () = async { up.await; std::future::pending::<()>().await } => {}
            }
        }
        None => {
            tokio::join!(up, down);
        }
    }
}
