//! `jobs-api`: the jobs API as its own server in front of a front door (see `jobs::gateway`):
//! jobs routes are served here, everything else is passed to the front door.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context as _, Result, bail};
use clap::Parser;
use manta_util::logging::LogArgs;

/// The jobs API gateway.
#[derive(Debug, Parser)]
#[command(name = "jobs-api", version)]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "MANTA_LISTEN", default_value = "127.0.0.1:8089")]
    listen: SocketAddr,
    /// Moray URL of the system shard.
    #[arg(long, env = "MANTA_MORAY_URL")]
    moray_url: String,
    /// The front door everything but the jobs routes goes to.
    #[arg(long, env = "MANTA_FRONTDOOR_URL")]
    frontdoor_url: String,
    /// The gateway's region identity (`cert.pem`, `key.pem`, `ca.pem`, made by `manta-adm`),
    /// presented to Moray over mutual TLS.
    #[arg(long, env = "MANTA_TLS_DIR")]
    tls_dir: Option<PathBuf>,
    /// The front doors' token secret file (tokens issued to jobs must verify there).
    #[arg(long, env = "MANTA_TOKEN_SECRET_FILE")]
    token_secret_file: PathBuf,
    #[command(flatten)]
    log: LogArgs,
}

#[tokio::main]
async fn main() -> Result<()> {
    let a = Args::parse();
    a.log.init();
    let secret = std::fs::read(&a.token_secret_file)
        .with_context(|| format!("read {}", a.token_secret_file.display()))?;
    if secret.len() < 16 {
        bail!("the token secret must be at least 16 bytes");
    }
    let id = a.tls_dir.as_deref().map(manta_util::tls::Identity::in_dir);
    let tls = manta_util::tls::internal_client_of(id.as_ref())
        .context("load the gateway's region identity")?;
    let moray = moray::ShardedClient::single_over(&a.moray_url, tls)?;
    let tokens = manta_auth::TokenKey::new(&secret);
    let api = jobs::api::JobsApi::new(moray.clone(), tokens.clone());
    api.setup().await.context("create the job buckets")?;
    let store = std::sync::Arc::new(jobs::gateway::MorayAccountStore::new(moray.system()));
    let auth = manta_auth::Authenticator::new(store).with_tokens(tokens);
    let gw = jobs::gateway::Gateway::new(api, auth, &a.frontdoor_url);
    let listener = tokio::net::TcpListener::bind(a.listen)
        .await
        .with_context(|| format!("bind {}", a.listen))?;
    tracing::info!(addr = %a.listen, "jobs API listening");
    manta_util::http::serve(
        listener,
        gw.router(),
        manta_util::shutdown_on_signals(),
        manta_util::http::ServeOptions::default(),
    )
    .await?;
    Ok(())
}
