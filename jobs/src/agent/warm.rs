//! Containers kept warm: one container runs many tasks of one job and phase, one after another.
//!
//! A container's first process is lackey (`jobs-tool lackey`). It connects to the agent once,
//! before any user code runs, on a socket the agent then removes; on that channel the agent
//! sends it one [`TaskOrder`] per task with the task's stdin, stdout and stderr as descriptors
//! (`SCM_RIGHTS`), and lackey answers with how the task ended. Between tasks lackey ends every
//! process the task left and removes its input link and shared memory; `/tmp` stays, as it did
//! between tasks of one job and phase in the original. The phase's `init` runs once, with the
//! container's first task.
//!
//! A container is kept only after a task that succeeded: a failure of any kind (a non-zero
//! exit, a signal, the memory limit, the time limit, a cancellation) ends it, and the next task
//! gets a fresh one. Idle containers are ended after a while ([`IDLE`] by default), and
//! whenever a container of another job or phase needs their room (busy and idle together stay
//! within the agent's slots).

use std::io::IoSlice;
use std::os::fd::{AsFd as _, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow};
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio_util::sync::CancellationToken;

use super::{AgentConfig, container, ctl, runc};
use crate::tools::{LACKEY_SOCKET, LackeyStatus, TaskOrder};

/// How long a container waits for its job and phase's next task before it is ended, unless the
/// agent is told otherwise (`--container-idle`).
pub const IDLE: Duration = Duration::from_secs(5);

/// How long a new container may take to start lackey.
const START: Duration = Duration::from_secs(60);

/// The most of a container runtime's own messages that is kept.
const LOG_CAP: u64 = 64 * 1024;

/// A running container and lackey's channel in it.
pub(super) struct Warm {
    /// The runtime's container id.
    pub id: String,
    /// The job and phase whose tasks it runs.
    pub job_id: String,
    pub phase: u32,
    /// Its directory: bundle, assets, control socket, the runtime's log.
    pub dir: PathBuf,
    /// The task its control socket acts for.
    pub ctl: Arc<ctl::Switch>,
    /// Tasks it has run.
    pub ran: u32,
    /// When it last finished a task.
    pub idle_since: Instant,
    /// The image it runs in, held so that the cache keeps it meanwhile.
    pub image: Option<super::image::ImageRoot>,
    stop_ctl: CancellationToken,
    server: tokio::task::JoinHandle<()>,
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    child: tokio::process::Child,
    log: tokio::task::JoinHandle<std::io::Result<()>>,
}

/// How a task in a warm container ended.
pub(super) enum Ran {
    /// Lackey reported it.
    Reported(LackeyStatus),
    /// The container ended without a report (lackey itself was killed): how the runtime ended.
    Died(std::process::ExitStatus),
}

impl Warm {
    /// Starts a container for `job_id`'s `phase` in `dir` (which holds `assets/` already, when
    /// the phase has any) and waits for lackey to connect.
    ///
    /// # Errors
    /// When the container does not start (the runtime's messages are in the error).
    pub async fn start(
        cfg: &AgentConfig,
        job_id: &str,
        phase: u32,
        dir: PathBuf,
        mut spec: container::Spec,
    ) -> Result<Warm> {
        let id = dir
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| anyhow!("a container directory needs a name"))?
            .to_owned();
        let d = dir.clone();
        manta_util::blocking(move || {
            std::fs::create_dir_all(d.join("bundle"))?;
            std::fs::create_dir_all(d.join("ctl"))?;
            std::fs::set_permissions(
                d.join("ctl"),
                std::os::unix::fs::PermissionsExt::from_mode(0o755),
            )
        })
        .await?;
        let switch = Arc::new(ctl::Switch::default());
        let stop_ctl = CancellationToken::new();
        let server = ctl::serve(
            switch.clone(),
            &dir.join("ctl").join("sock"),
            cfg.uid_base,
            stop_ctl.clone(),
        )?;
        let lackey_path = dir.join("ctl").join(
            Path::new(LACKEY_SOCKET)
                .file_name()
                .unwrap_or_else(|| "lackey".as_ref()),
        );
        let listener = tokio::net::UnixListener::bind(&lackey_path)?;
        std::os::unix::fs::chown(&lackey_path, Some(cfg.uid_base), Some(cfg.uid_base))?;
        std::fs::set_permissions(
            &lackey_path,
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )?;
        spec.binds.push(container::Bind {
            source: dir.join("ctl"),
            dest: "/manta-agent".into(),
            rw: false,
        });
        let config = serde_json::to_vec_pretty(&spec.config())?;
        tokio::fs::write(dir.join("bundle").join("config.json"), config).await?;
        let mut child = tokio::process::Command::new(&cfg.runc)
            .arg("--root")
            .arg(cfg.work_dir.join("runc"))
            .args(["run", "--bundle"])
            .arg(dir.join("bundle"))
            .arg(&id)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("start the OCI runtime")?;
        // Lackey writes nothing to its own stderr; what comes there is the runtime's (or
        // lackey's own failure), kept for the operator.
        let log = tokio::spawn(save_log(child.stderr.take(), dir.join("runtime.log")));
        let stream = tokio::select! {
            a = listener.accept() => a.map(|(s, _)| s).context("accept lackey's connection"),
            st = child.wait() => Err(anyhow!("the container ended before lackey connected ({st:?})")),
            () = tokio::time::sleep(START) => Err(anyhow!("lackey did not connect within {START:?}")),
        };
        // Nobody else connects: the socket goes as soon as lackey is in.
        drop(listener);
        let _ = tokio::fs::remove_file(&lackey_path).await;
        let stream = match stream {
            Ok(s) => s,
            Err(e) => {
                stop_runtime(cfg, &id, &mut child, Duration::ZERO).await;
                let _ = log.await;
                let said = tokio::fs::read_to_string(dir.join("runtime.log"))
                    .await
                    .unwrap_or_default();
                stop_ctl.cancel();
                return Err(e.context(format!("the container did not start: {}", said.trim())));
            }
        };
        let (r, w) = stream.into_split();
        Ok(Warm {
            id,
            job_id: job_id.to_owned(),
            phase,
            dir,
            ctl: switch,
            ran: 0,
            idle_since: Instant::now(),
            image: None,
            stop_ctl,
            server,
            reader: BufReader::new(r),
            writer: w,
            child,
            log,
        })
    }

    /// Hands lackey a task: its order and its stdin, stdout and stderr.
    ///
    /// # Errors
    /// When the channel is broken (the container is then of no more use).
    pub async fn send(&mut self, order: &TaskOrder, fds: [OwnedFd; 3]) -> Result<()> {
        use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags, sendmsg};
        use tokio::io::AsyncWriteExt as _;
        let body = serde_json::to_vec(order)?;
        let len = u32::try_from(body.len())
            .ok()
            .filter(|&n| n as usize <= crate::tools::MAX_ORDER)
            .ok_or_else(|| anyhow!("a task order of {} bytes is too long", body.len()))?
            .to_be_bytes();
        // The length goes with the descriptors (one small message), the body after it.
        let borrowed = [fds[0].as_fd(), fds[1].as_fd(), fds[2].as_fd()];
        let mut sent = 0;
        while sent == 0 {
            self.writer.as_ref().writable().await?;
            let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(3))];
            let mut ancillary = SendAncillaryBuffer::new(&mut space);
            if !ancillary.push(SendAncillaryMessage::ScmRights(&borrowed)) {
                return Err(anyhow!("no room for the task's descriptors"));
            }
            match self
                .writer
                .as_ref()
                .try_io(tokio::io::Interest::WRITABLE, || {
                    sendmsg(
                        self.writer.as_ref(),
                        &[IoSlice::new(&len)],
                        &mut ancillary,
                        SendFlags::NOSIGNAL,
                    )
                    .map_err(std::io::Error::from)
                }) {
                Ok(n) => sent = n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e.into()),
            }
        }
        self.writer.write_all(&len[sent..]).await?;
        self.writer.write_all(&body).await?;
        Ok(())
    }

    /// Waits for lackey's report on the task it was handed.
    pub async fn report(&mut self) -> Result<Ran> {
        let mut line = String::new();
        let n = self.reader.read_line(&mut line).await?;
        if n == 0 {
            // The channel closed: the container is ending (or has ended).
            let st = self.child.wait().await?;
            return Ok(Ran::Died(st));
        }
        Ok(Ran::Reported(
            serde_json::from_str(&line).context("lackey's report")?,
        ))
    }

    /// Ends the container and removes its directory.
    pub async fn end(mut self, cfg: &AgentConfig) {
        // Closing the channel ends an idle lackey by itself; the runtime's kill ends the rest.
        drop(self.writer);
        stop_runtime(cfg, &self.id, &mut self.child, Duration::from_millis(200)).await;
        self.stop_ctl.cancel();
        let _ = self.server.await;
        let _ = self.log.await;
        let d = self.dir.clone();
        let _ = manta_util::blocking(move || std::fs::remove_dir_all(&d)).await;
    }
}

/// Ends container `id` whose runtime process is `child`: lets it end by itself within `grace`,
/// else kills it, then deletes what the runtime left of it.
async fn stop_runtime(
    cfg: &AgentConfig,
    id: &str,
    child: &mut tokio::process::Child,
    grace: Duration,
) {
    let done = tokio::time::timeout(grace, child.wait()).await;
    if !matches!(done, Ok(Ok(_))) {
        let _ = runc(cfg, &["kill", id, "KILL"]).await;
        let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
    }
    // `runc run` removes a container whose process ended; one it could not (it was killed
    // itself) still has its state directory.
    if tokio::fs::metadata(cfg.work_dir.join("runc").join(id))
        .await
        .is_ok()
    {
        let _ = runc(cfg, &["delete", "-f", id]).await;
    }
}

/// Keeps what the runtime (and lackey, on its own failure) says on stderr, at most
/// [`LOG_CAP`] bytes; the rest is read and dropped, so the runtime never blocks on it.
async fn save_log(from: Option<tokio::process::ChildStderr>, to: PathBuf) -> std::io::Result<()> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut file = tokio::fs::File::create(&to).await?;
    let Some(from) = from else {
        return Ok(());
    };
    let mut head = from.take(LOG_CAP);
    tokio::io::copy(&mut head, &mut file).await?;
    file.flush().await?;
    tokio::io::copy(&mut head.into_inner(), &mut tokio::io::sink()).await?;
    Ok(())
}
