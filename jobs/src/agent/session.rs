//! `mlogin` sessions: an interactive shell in a task's container on one object, on a node that
//! holds a copy of it.
//!
//! The front door authenticates the user, checks that they may read the object, and opens an
//! upgraded connection to this agent (`POST /sessions`, over the region's mutual TLS, for the
//! front door's role only), carrying a [`SessionSpec`] and a token for the user. The agent
//! starts a container exactly as for a map task of a phase with the session's `memory`,
//! `disk`, `image`, assets and `init` (the same limits, isolation and control socket, so the
//! tools and `MANTA_URL` work as the user), binds the object read-only at
//! `/manta/<path>` (`MANTA_INPUT_FILE`), and runs a shell on a pseudo-terminal it relays to
//! the connection. The session ends when the shell exits, when the client goes away (its
//! container is then ended at once), or at the agent's task time limit.

use std::os::fd::OwnedFd;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow};
use axum::extract::{Request, State};
use axum::response::Response;
use manta_types::{ErrorCode, MantaError};
use manta_util::http::error_response;
use tokio::io::AsyncWriteExt as _;

use super::{Agent, TaskJob, container, records, task_env};
pub use manta_jobs_api::session::{PROTOCOL, SPEC_HEADER, SessionSpec};

use crate::spec::{Phase, PhaseType};
use crate::tools::TaskOrder;

/// The agent, once it is ready (the server answers before it is).
pub(crate) type Slot = Arc<OnceLock<Arc<Agent>>>;

/// The agent's internal routes: `POST /sessions`, for front doors only when the agent serves
/// mutual TLS.
pub(crate) fn routes(slot: Slot, checked: bool) -> axum::Router {
    use manta_util::tls::Role;
    axum::Router::new().route(
        "/sessions",
        manta_util::http::only_for(axum::routing::post(start), &[Role::Frontdoor], checked)
            .with_state(slot),
    )
}

fn refuse(code: ErrorCode, msg: impl Into<String>) -> Response {
    error_response(&MantaError::new(code, msg))
}

async fn start(State(slot): State<Slot>, mut req: Request) -> Response {
    let Some(agent) = slot.get().cloned() else {
        return refuse(ErrorCode::ServiceUnavailable, "the agent is starting");
    };
    let wants_upgrade = req
        .headers()
        .get(http::header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case(PROTOCOL));
    if !wants_upgrade {
        return refuse(
            ErrorCode::InvalidArgument,
            format!("a session is an upgrade to {PROTOCOL}"),
        );
    }
    let spec = match req
        .headers()
        .get(SPEC_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(SessionSpec::decode)
    {
        Some(Ok(s)) => s,
        Some(Err(e)) => return error_response(&e),
        None => {
            return refuse(
                ErrorCode::InvalidArgument,
                format!("{SPEC_HEADER} is missing"),
            );
        }
    };
    let upgrade = hyper::upgrade::on(&mut req);
    let prepared = match agent.clone().open_session(&spec).await {
        Ok(Ok(p)) => p,
        Ok(Err((code, msg))) => return refuse(code, msg),
        Err(e) => {
            tracing::warn!(session = %spec.id, error = %format!("{e:#}"), "session failed to start");
            return refuse(ErrorCode::InternalError, format!("{e:#}"));
        }
    };
    tracing::info!(session = %spec.id, login = %spec.login, object = %spec.object, "session started");
    tokio::spawn(async move {
        match upgrade.await {
            Ok(up) => agent.relay(prepared, up).await,
            Err(e) => {
                tracing::warn!(error = %e, "the session's connection was not upgraded");
                agent.close_session(&prepared.id, prepared.warm).await;
            }
        }
    });
    manta_jobs_api::session::switching_protocols()
}

/// A session's container with its shell started, and the terminal's master side.
pub(crate) struct Prepared {
    id: String,
    warm: super::warm::Warm,
    master: OwnedFd,
}

/// A new pseudo-terminal of `rows` by `cols`: its master and slave sides.
fn open_pty(rows: u16, cols: u16) -> std::io::Result<(OwnedFd, OwnedFd)> {
    use rustix::pty::OpenptFlags;
    let master =
        rustix::pty::openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC)?;
    rustix::pty::grantpt(&master)?;
    rustix::pty::unlockpt(&master)?;
    let name = rustix::pty::ptsname(&master, Vec::new())?;
    let slave = rustix::fs::open(
        name.as_c_str(),
        rustix::fs::OFlags::RDWR | rustix::fs::OFlags::NOCTTY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )?;
    rustix::termios::tcsetwinsize(
        &slave,
        rustix::termios::Winsize {
            ws_row: rows.max(1),
            ws_col: cols.max(1),
            ws_xpixel: 0,
            ws_ypixel: 0,
        },
    )?;
    Ok((master, slave))
}

/// The shell a session runs: bash if the root has it, else `sh`, as the terminal's session
/// leader when `setsid -c` is there (job control works then).
const SHELL: &str = "s=/bin/sh; [ -x /bin/bash ] && s=/bin/bash; \
    command -v setsid >/dev/null 2>&1 && exec setsid -c $s -i; exec $s -i";

impl Agent {
    /// Starts a session's container and shell. The inner error is the user's (an asset or
    /// image that cannot be used, the node full), for the answer.
    async fn open_session(
        self: Arc<Self>,
        spec: &SessionSpec,
    ) -> Result<std::result::Result<Prepared, (ErrorCode, String)>> {
        {
            let running = self.running.lock().unwrap_or_else(|p| p.into_inner());
            if running.len() >= self.cfg.slots {
                return Ok(Err((
                    ErrorCode::ServiceUnavailable,
                    format!("{} is running all the tasks it may", self.cfg.storage_id),
                )));
            }
        }
        let job: records::Job = serde_json::from_value(serde_json::json!({
            "v": records::VERSION,
            "jobId": spec.id,
            "name": "mlogin",
            "owner": spec.owner,
            "login": spec.login,
            "phases": [],
            "token": spec.token,
            "state": "running",
            "timeCreated": "",
        }))
        .context("a session's job")?;
        let phase = Phase {
            kind: PhaseType::Map,
            exec: SHELL.into(),
            init: spec.init.clone(),
            assets: spec.assets.clone(),
            memory: spec.memory,
            disk: spec.disk,
            count: None,
            image: spec.image.clone(),
        };
        let task: records::Task = serde_json::from_value(serde_json::json!({
            "v": records::VERSION,
            "taskId": spec.id,
            "jobId": spec.id,
            "phase": 0,
            "input": spec.object,
            "p0input": spec.object,
            "server": self.cfg.storage_id,
            "attempt": 1,
            "state": "running",
            "timeDispatched": 0,
            "inputObject": {"creator": spec.creator, "objectId": spec.object_id, "sharks": [self.cfg.storage_id]},
        }))
        .context("a session's task")?;
        let tj = Arc::new(TaskJob {
            fd: crate::fdclient::FdClient::new(
                self.http.clone(),
                &self.cfg.frontdoor_url,
                &spec.token,
            ),
            base: format!("/{}/stor/mlogin-{}", spec.login, spec.id),
            next_reducers: None,
            job,
        });
        let dir = self.cfg.work_dir.join("tasks").join(&spec.id);
        tokio::fs::create_dir_all(&dir).await?;
        let input = match self.task_input(&tj.job, &phase, &task, &dir).await {
            Ok(Ok(Some(f))) => f,
            Ok(Ok(None)) => return Err(anyhow!("a session without its object")),
            Ok(Err((_, msg))) => return Ok(Err((ErrorCode::ResourceNotFound, msg))),
            Err(e) => return Err(e.0),
        };
        let bind = container::Bind {
            source: input,
            dest: format!("/manta{}", spec.object),
            rw: false,
        };
        let mut warm = match self.container(&tj, &phase, &task, vec![bind]).await {
            Ok(Ok(w)) => w,
            Ok(Err((_, msg))) => return Ok(Err((ErrorCode::InvalidArgument, msg))),
            Err(e) => return Err(e.0),
        };
        self.running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                spec.id.clone(),
                (tokio_util::sync::CancellationToken::new(), false),
            );
        let started = async {
            let (master, slave) = open_pty(spec.rows, spec.cols)?;
            let ctl_state = self.ctl_for(&tj, &phase);
            let mut env = task_env(&tj.job, &phase, &task, &tj.base, None);
            env.push(("TERM".into(), "xterm".into()));
            let order = TaskOrder {
                env,
                init: phase.init.clone(),
                input: None,
                core_to: None,
            };
            warm.ctl.start(ctl_state);
            let fds = [slave.try_clone()?, slave.try_clone()?, slave];
            warm.send(&order, fds).await?;
            Ok::<_, anyhow::Error>(master)
        }
        .await;
        match started {
            Ok(master) => Ok(Ok(Prepared {
                id: spec.id.clone(),
                warm,
                master,
            })),
            Err(e) => {
                self.close_session(&spec.id, warm).await;
                Err(e)
            }
        }
    }

    /// Relays the terminal to `up` until the shell exits, the client goes away or the time
    /// limit passes; then ends the session.
    async fn relay(self: Arc<Self>, p: Prepared, up: hyper::upgrade::Upgraded) {
        let Prepared {
            id,
            mut warm,
            master,
        } = p;
        let conn = hyper_util::rt::TokioIo::new(up);
        let (mut from_client, mut to_client) = tokio::io::split(conn);
        let to_pty = match master.try_clone() {
            Ok(fd) => fd,
            Err(e) => {
                tracing::warn!(session = %id, error = %e, "the session's terminal cannot be shared");
                self.close_session(&id, warm).await;
                return;
            }
        };
        let mut pty_in = tokio::fs::File::from_std(std::fs::File::from(to_pty));
        let mut pty_out = tokio::fs::File::from_std(std::fs::File::from(master));
        // The terminal's output to the client; it ends (EIO) once the shell and everything
        // holding the terminal are gone.
        let output = tokio::spawn(async move {
            let _ = tokio::io::copy(&mut pty_out, &mut to_client).await;
            let _ = to_client.shutdown().await;
        });
        let input = async move {
            let _ = tokio::io::copy(&mut from_client, &mut pty_in).await;
        };
        tokio::pin!(input);
        let why = {
            let limit = tokio::time::sleep(self.cfg.task_timeout);
            tokio::pin!(limit);
            let report = warm.report();
            tokio::pin!(report);
            tokio::select! {
                _ = &mut report => "the shell exited",
                () = &mut input => "the client went away",
                () = &mut limit => "the time limit passed",
            }
        };
        tracing::info!(session = %id, why, "session ending");
        if why == "the shell exited" {
            // What the shell wrote last still reaches the client.
            let _ = tokio::time::timeout(Duration::from_secs(2), output).await;
        } else {
            output.abort();
        }
        self.close_session(&id, warm).await;
    }

    /// Ends a session's container and forgets it.
    async fn close_session(self: &Arc<Self>, id: &str, warm: super::warm::Warm) {
        warm.ctl.stop().await;
        self.running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
        self.end_container(warm);
        let dir = self.cfg.work_dir.join("tasks").join(id);
        let _ = tokio::fs::remove_dir_all(dir).await;
    }
}
