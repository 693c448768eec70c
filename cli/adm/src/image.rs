//! `manta-adm image`: the region's image registry, the store directory whose objects phases
//! (and `mlogin --image`) name as `NAME`. An import checks the image the way an agent will
//! (every digest, every layer entry) before it uploads it, so a bad image is refused here and
//! not when a job first runs in it.
//!
//! It acts as the account in `MANTA_URL`, `MANTA_USER` and `MANTA_KEY_ID` (`. env.sh` of a
//! region made by `manta-adm up`), whose `public/images` the region's agents read.

use std::path::Path;

use anyhow::{Context as _, Result, bail};
use manta_client::{ClientConfig, MantaClient, PutOptions};

/// The registry directory: `registry`, else `/$MANTA_USER/public/images` (what `manta-adm up`
/// points the agents at).
fn registry(registry: Option<&str>, client: &MantaClient) -> String {
    registry.map_or_else(
        || format!("/{}/public/images", client.user()),
        |r| r.trim_end_matches('/').to_owned(),
    )
}

async fn client() -> Result<MantaClient> {
    let cfg = ClientConfig::from_env().context(
        "the registry is written as an account: set MANTA_URL, MANTA_USER and MANTA_KEY_ID \
         (`. env.sh` of the region)",
    )?;
    Ok(MantaClient::new(cfg).await?)
}

/// Checks the OCI image layout archive `file` and uploads it as `name`.
///
/// # Errors
/// A bad image (with the reason), a bad name, or the upload's failure.
pub async fn import(name: &str, file: &Path, registry_dir: Option<&str>) -> Result<()> {
    if name.is_empty() || name.contains('/') || name.starts_with('.') {
        bail!("image names are one path segment (not {name:?})");
    }
    let scratch = tempfile::Builder::new().prefix("manta-image").tempdir()?;
    let (archive, out) = (file.to_owned(), scratch.path().join("out"));
    let checked = manta_util::blocking(move || {
        Ok(jobs::agent::image::unpack(&archive, &out, u64::MAX, None))
    })
    .await?;
    let unpacked = match checked {
        Ok(u) => u,
        Err(e) => bail!("{} is not an image an agent would run: {e}", file.display()),
    };
    drop(scratch);
    let client = client().await?;
    let dir = registry(registry_dir, &client);
    client.mkdirp(&dir).await?;
    let path = format!("{dir}/{name}");
    client
        .put_file(
            &path,
            file,
            PutOptions {
                content_type: Some("application/x-tar".into()),
                ..PutOptions::default()
            },
        )
        .await?;
    println!("imported {name} ({}) as {path}", unpacked.digest);
    Ok(())
}

/// Prints the registry's images: name and size.
///
/// # Errors
/// The listing's failure.
pub async fn list(registry_dir: Option<&str>) -> Result<()> {
    let client = client().await?;
    let dir = registry(registry_dir, &client);
    println!("{:<32} {:>12}", "NAME", "BYTES");
    for e in client.ls_all(&dir).await? {
        if !e.is_dir() {
            println!("{:<32} {:>12}", e.name, e.size.unwrap_or(0));
        }
    }
    Ok(())
}
