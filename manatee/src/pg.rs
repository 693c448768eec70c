//! The peer's PostgreSQL: its files, its configuration for each role, the postmaster as a child
//! that dies with the sitter, health probes, and the rebuild tools (`pg_basebackup`,
//! `pg_rewind`, `initdb`).
//!
//! # Files under the peer's data dir
//! - `pgdata/`: the Postgres data directory. `postgresql.conf` includes `manatee.conf`, which the
//!   sitter rewrites before every start and on every role change (then reloads).
//! - `sock/`: the Unix socket the sitter itself connects through (0700, the Postgres user's).
//! - `pgpass`: the replication role's password, for this peer's libpq tools and its
//!   walreceiver (0600, the Postgres user's).
//! - `postgres.log`: the server's output (0600).
//!
//! # Who may connect
//! - Over the Unix socket, only the `postgres` superuser, without a password: the socket's
//!   directory admits only the Postgres user (and root), that is the sitter itself.
//! - Over TCP, from loopback, the peer's own address and the networks it is told to allow,
//!   only with a SCRAM password: [`REPLICATION_ROLE`] (streaming, base backups, `pg_rewind`,
//!   reading a timeline's history) and the client role (Moray's, [`CLIENT_ROLE`]), which owns
//!   the tables and is no superuser. No `trust` line over TCP. The primary creates both roles
//!   and sets their passwords ([`PgConn::ensure_roles`]); standbys get them by replication.
//!
//! # Rules kept here
//! - A standby is never started without `standby.signal` (a server started as a primary writes
//!   WAL of its own at once, and the peer would no longer match its upstream).
//! - `postgresql.auto.conf` is emptied before every start: nothing set by `ALTER SYSTEM` or
//!   copied by a base backup (such as the old primary's `synchronous_standby_names`) may override
//!   the role's settings.
//! - The base backup never names itself after the peer, so it can never pose as the sync.

use std::fmt::Write as _;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use manta_util::proc::{self, Lifetime, PG_USER};
use manta_util::secret::PgLogin;
pub use manta_util::secret::{
    PG_CLIENT_ROLE as CLIENT_ROLE, PG_REPLICATION_ROLE as REPLICATION_ROLE,
};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::Error;
use crate::lsn::Lsn;
use crate::state::Peer;

/// Where one peer keeps its Postgres and how that Postgres is set up.
#[derive(Debug, Clone)]
pub struct PgSetup {
    /// Directory holding `initdb`, `postgres`, `pg_basebackup`, `pg_rewind`, ...
    pub bindir: PathBuf,
    /// The peer's data dir.
    pub base: PathBuf,
    /// The peer itself (its id names it to its upstream).
    pub me: Peer,
    /// `fsync` (only tests turn it off).
    pub fsync: bool,
    /// Networks (CIDR) allowed to connect and replicate with a password, besides loopback and
    /// the peer's own address.
    pub allow: Vec<String>,
    /// The replication role's password: the other peers' walreceivers, base backups and
    /// rewinds log in with it, and so does this one.
    pub replication_password: String,
    /// Extra `name = value` settings appended to every configuration.
    pub extra: Vec<(String, String)>,
}

/// What a configuration is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfRole {
    /// A primary: synchronous to `sync`, read-only until told otherwise.
    Primary {
        /// The sync's id (`synchronous_standby_names`), none for no synchronous standby.
        sync: Option<String>,
        /// While the sync changes: the other standby that must also acknowledge every commit
        /// (see [`sync_names`]).
        also: Option<String>,
        /// `default_transaction_read_only`.
        read_only: bool,
    },
    /// A standby streaming from `upstream`.
    Standby {
        /// Its upstream.
        upstream: Peer,
    },
    /// A standby with no upstream: replays the local WAL and waits. Used to finish a crashed
    /// primary's recovery without writing any WAL before `pg_rewind` looks at it.
    Recover,
}

/// The value of `synchronous_standby_names` for `sync` (and, while the sync changes, `also`:
/// then both must acknowledge every commit, `FIRST 2 (...)`).
pub fn sync_names(sync: Option<&str>, also: Option<&str>) -> String {
    match (sync, also) {
        (Some(s), Some(a)) if s != a => format!("FIRST 2 (\"{s}\", \"{a}\")"),
        (Some(s), _) | (None, Some(s)) => format!("\"{s}\""),
        (None, None) => String::new(),
    }
}

fn quote(v: &str) -> String {
    format!("'{}'", v.replace('\'', "''"))
}

impl PgSetup {
    /// `pgdata/`.
    pub fn data(&self) -> PathBuf {
        self.base.join("pgdata")
    }

    /// `sock/`.
    pub fn sock(&self) -> PathBuf {
        self.base.join("sock")
    }

    /// `postgres.log`.
    pub fn log(&self) -> PathBuf {
        self.base.join("postgres.log")
    }

    /// `pgpass`: the replication role's password for libpq (walreceiver and tools).
    pub fn pgpass(&self) -> PathBuf {
        self.base.join("pgpass")
    }

    /// The replication role's login.
    pub fn replication_login(&self) -> PgLogin {
        PgLogin {
            user: REPLICATION_ROLE.to_owned(),
            password: self.replication_password.clone(),
        }
    }

    /// A libpq connection string to `peer` as the replication role (its password from
    /// `pgpass`), for the walreceiver, `pg_basebackup` and `pg_rewind`.
    pub fn peer_conninfo(&self, peer: &Peer, connect_timeout_s: u32) -> String {
        format!(
            "host={} port={} user={REPLICATION_ROLE} dbname=postgres passfile={} connect_timeout={connect_timeout_s}",
            peer.ip,
            peer.pg_port(),
            self.pgpass().display()
        )
    }

    /// True when `pgdata/` holds a database.
    pub fn has_data(&self) -> bool {
        self.data().join("PG_VERSION").exists()
    }

    fn bin(&self, name: &str) -> PathBuf {
        self.bindir.join(name)
    }

    /// The text of `manatee.conf` for `role`.
    pub fn conf_text(&self, role: &ConfRole) -> String {
        let mut s =
            String::from("# Written by manatee-sitter before every start; edits are lost.\n");
        let mut set = |k: &str, v: String| {
            let _ = writeln!(s, "{k} = {v}");
        };
        set("listen_addresses", quote(&self.me.ip));
        set("port", self.me.pg_port().to_string());
        set(
            "unix_socket_directories",
            quote(&self.sock().to_string_lossy()),
        );
        set("wal_level", "replica".into());
        set("max_wal_senders", "16".into());
        set("max_replication_slots", "16".into());
        set("wal_keep_size", quote("512MB"));
        set("hot_standby", "on".into());
        set("hot_standby_feedback", "on".into());
        set("wal_log_hints", "on".into());
        set("fsync", if self.fsync { "on" } else { "off" }.into());
        set("synchronous_commit", "on".into());
        set("cluster_name", quote(&self.me.id));
        set("recovery_target_timeline", quote("latest"));
        // Fast reconnects and fast detection of a dead peer on the replication links.
        set("wal_retrieve_retry_interval", quote("200ms"));
        set("wal_sender_timeout", quote("5s"));
        set("wal_receiver_timeout", quote("5s"));
        set("wal_receiver_status_interval", quote("1s"));
        set("password_encryption", quote("scram-sha-256"));
        set("logging_collector", "off".into());
        set("log_line_prefix", quote("%m [%p] "));
        match role {
            ConfRole::Primary {
                sync,
                also,
                read_only,
            } => {
                let names = sync_names(sync.as_deref(), also.as_deref());
                set("synchronous_standby_names", quote(&names));
                set(
                    "default_transaction_read_only",
                    if *read_only { "on" } else { "off" }.into(),
                );
                set("primary_conninfo", quote(""));
            }
            ConfRole::Recover => {
                set("synchronous_standby_names", quote(""));
                set("default_transaction_read_only", "on".into());
                set("primary_conninfo", quote(""));
            }
            ConfRole::Standby { upstream } => {
                set("synchronous_standby_names", quote(""));
                set("default_transaction_read_only", "on".into());
                let conninfo = format!(
                    "{} application_name={}",
                    self.peer_conninfo(upstream, 2),
                    self.me.id
                );
                set("primary_conninfo", quote(&conninfo));
            }
        }
        for (k, v) in &self.extra {
            set(k, quote(v));
        }
        s
    }

    fn hba_text(&self) -> String {
        let mut nets = vec!["127.0.0.1/32".to_owned(), "::1/128".to_owned()];
        nets.push(if self.me.ip.contains(':') {
            format!("{}/128", self.me.ip)
        } else {
            format!("{}/32", self.me.ip)
        });
        nets.extend(self.allow.iter().cloned());
        // The socket's directory admits the Postgres user alone: the sitter.
        let mut s = String::from(
            "# Written by manatee-sitter; edits are lost.\n\
             local all postgres trust\nlocal replication postgres trust\n",
        );
        for n in nets {
            let _ = writeln!(
                s,
                "host replication {REPLICATION_ROLE} {n} scram-sha-256\n\
                 host postgres {REPLICATION_ROLE} {n} scram-sha-256\n\
                 host postgres {CLIENT_ROLE} {n} scram-sha-256"
            );
        }
        s
    }

    /// Writes the configuration for `role` into the data dir (atomically per file), adds or
    /// removes `standby.signal`, and empties `postgresql.auto.conf`. Blocking: call through
    /// [`manta_util::blocking`].
    ///
    /// # Errors
    /// When a file cannot be written.
    pub fn write_conf(&self, role: &ConfRole) -> io::Result<()> {
        self.write_settings(role)?;
        let signal = self.data().join("standby.signal");
        match role {
            ConfRole::Standby { .. } | ConfRole::Recover => write_file(&signal, "")?,
            ConfRole::Primary { .. } => match fs::remove_file(&signal) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            },
        }
        self.own_files(&[signal])
    }

    /// Like [`PgSetup::write_conf`] but leaves `standby.signal` alone: used just before a
    /// promotion, which removes the file itself (and fails if it is already gone).
    ///
    /// # Errors
    /// When a file cannot be written.
    pub fn write_settings(&self, role: &ConfRole) -> io::Result<()> {
        let data = self.data();
        write_file(&data.join("manatee.conf"), &self.conf_text(role))?;
        write_file(&data.join("pg_hba.conf"), &self.hba_text())?;
        write_file(&data.join("postgresql.auto.conf"), "")?;
        let main = data.join("postgresql.conf");
        let text = fs::read_to_string(&main).unwrap_or_default();
        if !text.lines().any(|l| l.trim() == "include 'manatee.conf'") {
            write_file(&main, &format!("{text}\ninclude 'manatee.conf'\n"))?;
        }
        self.own_files(&[
            data.join("manatee.conf"),
            data.join("pg_hba.conf"),
            data.join("postgresql.auto.conf"),
            main,
        ])
    }

    /// Gives the files the sitter writes to the Postgres user when we run as root.
    fn own_files(&self, paths: &[PathBuf]) -> io::Result<()> {
        if proc::is_root() {
            let (uid, gid) = proc::user_ids(PG_USER)?;
            for p in paths.iter().filter(|p| p.exists()) {
                std::os::unix::fs::chown(p, Some(uid), Some(gid))?;
            }
        }
        Ok(())
    }

    /// Gives a whole tree to the Postgres user when we run as root.
    fn own(&self, path: &Path) -> io::Result<()> {
        if proc::is_root() {
            proc::chown_tree(path, PG_USER)?;
        }
        Ok(())
    }

    /// Creates the peer's dirs (data dir, socket dir) with the right owner and modes.
    ///
    /// # Errors
    /// When they cannot be created.
    pub fn prepare_dirs(&self) -> io::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        fs::create_dir_all(&self.base)?;
        for d in [self.sock(), self.data()] {
            fs::create_dir_all(&d)?;
            fs::set_permissions(&d, fs::Permissions::from_mode(0o700))?;
            if proc::is_root() {
                proc::chown_tree(&d, PG_USER)?;
            }
        }
        // Any host, port and database: the replication role's password (pgpass format).
        manta_util::write_private(
            &self.pgpass(),
            format!("*:*:*:{REPLICATION_ROLE}:{}\n", self.replication_password).as_bytes(),
        )?;
        self.own_files(&[self.pgpass()])
    }

    /// Empties the data dir (before a base backup).
    fn wipe(&self) -> io::Result<()> {
        match fs::remove_dir_all(self.data()) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        self.prepare_dirs()
    }

    /// Runs one of the Postgres tools as the Postgres user, bound to this thread's life, and
    /// returns its output. Blocking.
    fn tool(&self, name: &str, args: &[String]) -> Result<String, Error> {
        let mut cmd = proc::command(self.bin(name), Some(PG_USER), Lifetime::DiesWithParent);
        cmd.args(args).stdin(Stdio::null()).current_dir(&self.base);
        run(cmd, name)
    }

    /// Creates a new database: copies `template` (an initdb'd data dir) when given, else runs
    /// `initdb --data-checksums` (checksums let `pg_rewind` repair a deposed primary).
    ///
    /// # Errors
    /// When initdb or the copy fails.
    pub async fn initdb(&self, template: Option<PathBuf>) -> Result<(), Error> {
        let me = self.clone();
        manta_util::blocking(move || {
            me.wipe()?;
            let data = me.data();
            match template {
                Some(t) => {
                    fs::remove_dir_all(&data)?;
                    let out = Command::new("cp").arg("-a").arg(&t).arg(&data).output()?;
                    if !out.status.success() {
                        return Err(io::Error::other(format!(
                            "cp -a {} failed: {}",
                            t.display(),
                            String::from_utf8_lossy(&out.stderr)
                        )));
                    }
                    me.own(&data)
                }
                None => me
                    .tool(
                        "initdb",
                        &[
                            "-D".into(),
                            data.to_string_lossy().into_owned(),
                            "-U".into(),
                            "postgres".into(),
                            "--auth=trust".into(),
                            "-E".into(),
                            "UTF8".into(),
                            "--locale=C".into(),
                            "--data-checksums".into(),
                            "--no-instructions".into(),
                        ],
                    )
                    .map(drop)
                    .map_err(io::Error::other),
            }
        })
        .await
        .map_err(|e| Error::io("initdb", e))
    }

    /// Replaces the data dir with a base backup of `source` (streaming the WAL it needs).
    ///
    /// # Errors
    /// When the backup fails (the data dir is then empty).
    pub async fn basebackup(&self, source: &Peer) -> Result<(), Error> {
        let me = self.clone();
        let source = source.clone();
        manta_util::blocking(move || {
            me.wipe()?;
            let mut args = vec![
                "-d".into(),
                me.peer_conninfo(&source, 5),
                "-D".into(),
                me.data().to_string_lossy().into_owned(),
                "-X".into(),
                "stream".into(),
                "-c".into(),
                "fast".into(),
            ];
            if !me.fsync {
                args.push("--no-sync".into());
            }
            me.tool("pg_basebackup", &args).map_err(io::Error::other)?;
            Ok(())
        })
        .await
        .map_err(|e| Error::io("pg_basebackup", e))
    }

    /// Rewinds the data dir (a former primary's) onto `source`'s timeline: only the blocks that
    /// diverged are copied. The server must be stopped cleanly (see
    /// [`PgSetup::single_user_recovery`]).
    ///
    /// # Errors
    /// When pg_rewind fails (the caller falls back to a base backup).
    pub async fn rewind(&self, source: &Peer) -> Result<String, Error> {
        let me = self.clone();
        let source = source.clone();
        manta_util::blocking(move || {
            let mut args = vec![
                "-D".into(),
                me.data().to_string_lossy().into_owned(),
                format!("--source-server={}", me.peer_conninfo(&source, 5)),
            ];
            if !me.fsync {
                args.push("--no-sync".into());
            }
            me.tool("pg_rewind", &args).map_err(io::Error::other)
        })
        .await
        .map_err(|e| Error::io("pg_rewind", e))
    }

    /// `Database cluster state` from `pg_controldata` (`in production`, `shut down`, ...).
    pub async fn cluster_state(&self) -> Option<String> {
        self.controldata("Database cluster state:").await
    }

    async fn controldata(&self, field: &'static str) -> Option<String> {
        if !self.has_data() {
            return None;
        }
        let me = self.clone();
        let out = manta_util::blocking(move || {
            me.tool(
                "pg_controldata",
                &["-D".into(), me.data().to_string_lossy().into_owned()],
            )
            .map_err(io::Error::other)
        })
        .await
        .ok()?;
        out.lines()
            .find_map(|l| l.strip_prefix(field))
            .map(|v| v.trim().to_owned())
    }

    /// Replays the local WAL to its end without writing any WAL, and stops: the data dir is
    /// started as a standby with no upstream (standbys never write WAL), and stopped once its
    /// startup process waits for more ("shut down in recovery"). Returns where the local WAL
    /// ends. pg_rewind's own way (crash recovery in single-user mode) appends a checkpoint
    /// record, which is itself a divergence when the old primary's WAL ended exactly where the
    /// new timeline forked.
    ///
    /// # Errors
    /// When the server cannot be started or stopped.
    pub async fn replay_local_wal(&self) -> Result<Lsn, Error> {
        let me = self.clone();
        manta_util::blocking(move || me.write_conf(&ConfRole::Recover))
            .await
            .map_err(|e| Error::io("write the configuration", e))?;
        let pm = self.spawn().await?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        let result = loop {
            if let Some(how) = pm.exited() {
                break Err(Error::Command(format!(
                    "postgres exited during recovery ({how})"
                )));
            }
            if let Ok(c) = self.connect_local().await
                && let Ok(row) = c
                    .client
                    .query_one(
                        "SELECT coalesce((SELECT wait_event FROM pg_stat_activity WHERE backend_type = 'startup'), ''),
                                pg_last_wal_replay_lsn()::text",
                        &[],
                    )
                    .await
            {
                // The startup process waits for more WAL once it has replayed what it has.
                let ev: String = row.get(0);
                if ev == "RecoveryRetrieveRetryInterval" || ev == "RecoveryWalStream" {
                    let end: Option<String> = row.get(1);
                    break end
                        .and_then(|e| e.parse::<Lsn>().ok())
                        .ok_or_else(|| Error::Command("no replay position after recovery".into()));
                }
            }
            if tokio::time::Instant::now() > deadline {
                break Err(Error::Timeout("replaying the local WAL".into()));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        pm.stop(rustix::process::Signal::INT, Duration::from_secs(30))
            .await;
        result
    }

    /// The newest timeline the local data dir knows (from the history files in `pg_wal`).
    pub fn local_timeline(&self) -> u32 {
        fs::read_dir(self.data().join("pg_wal"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let tli = name.strip_suffix(".history")?;
                u32::from_str_radix(tli, 16).ok()
            })
            .max()
            .unwrap_or(1)
    }

    /// Crash recovery as a primary in single-user mode (what pg_rewind would do itself): ends
    /// with a checkpoint record at the end of the local WAL, so pg_rewind sees the divergence.
    ///
    /// # Errors
    /// When postgres fails.
    pub async fn single_user_recovery(&self) -> Result<(), Error> {
        let me = self.clone();
        manta_util::blocking(move || {
            me.write_conf(&ConfRole::Primary {
                sync: None,
                also: None,
                read_only: true,
            })?;
            me.tool(
                "postgres",
                &[
                    "--single".into(),
                    "-F".into(),
                    "-D".into(),
                    me.data().to_string_lossy().into_owned(),
                    "template1".into(),
                ],
            )
            .map(drop)
            .map_err(io::Error::other)
        })
        .await
        .map_err(|e| Error::io("single-user recovery", e))
    }

    /// The database system identifier of the local data dir (None without data).
    pub async fn system_id(&self) -> Option<String> {
        self.controldata("Database system identifier:").await
    }

    /// Starts the postmaster. It is spawned from a thread of its own that lives exactly as long
    /// as the child, so the parent-death signal fires only when the sitter dies.
    ///
    /// # Errors
    /// When the process cannot be started.
    pub async fn spawn(&self) -> Result<Postmaster, Error> {
        use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(self.log())
            .map_err(|e| Error::io("open postgres.log", e))?;
        // Statements and their data appear in it: the sitter's user's alone (an older one too).
        fs::set_permissions(self.log(), fs::Permissions::from_mode(0o600))
            .map_err(|e| Error::io("make postgres.log private", e))?;
        let log2 = log
            .try_clone()
            .map_err(|e| Error::io("open postgres.log", e))?;
        let mut cmd = proc::command(
            self.bin("postgres"),
            Some(PG_USER),
            Lifetime::DiesWithParent,
        );
        cmd.arg("-D")
            .arg(self.data())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2);
        let (pid_tx, pid_rx) = tokio::sync::oneshot::channel();
        let (exit_tx, exit_rx) = watch::channel(None);
        std::thread::Builder::new()
            .name("postmaster".into())
            .spawn(move || match cmd.spawn() {
                Ok(mut child) => {
                    let _ = pid_tx.send(Ok(child.id()));
                    let st = child.wait();
                    let _ = exit_tx.send(Some(match st {
                        Ok(st) => st.to_string(),
                        Err(e) => e.to_string(),
                    }));
                }
                Err(e) => {
                    let _ = pid_tx.send(Err(e));
                }
            })
            .map_err(|e| Error::io("spawn the postmaster thread", e))?;
        let pid = pid_rx
            .await
            .map_err(|_| Error::Command("postmaster thread ended".into()))?
            .map_err(|e| Error::io("start postgres", e))?;
        Ok(Postmaster { pid, exit: exit_rx })
    }

    /// Connects to the local server through its Unix socket.
    ///
    /// # Errors
    /// When the server does not answer within 2 s.
    pub async fn connect_local(&self) -> Result<PgConn, Error> {
        let mut cfg = tokio_postgres::Config::new();
        cfg.host_path(self.sock())
            .port(self.me.pg_port())
            .user("postgres")
            .dbname("postgres")
            .application_name("manatee-sitter")
            .connect_timeout(Duration::from_secs(2));
        PgConn::connect(cfg).await
    }
}

fn write_file(path: &Path, text: &str) -> io::Result<()> {
    let tmp = path.with_extension("manatee-tmp");
    fs::write(&tmp, text)?;
    fs::rename(&tmp, path)
}

fn run(mut cmd: Command, what: &str) -> Result<String, Error> {
    let out = cmd
        .output()
        .map_err(|e| Error::io(&format!("run {what}"), e))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        Ok(text)
    } else {
        let tail: Vec<&str> = text.lines().rev().take(8).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        Err(Error::Command(format!(
            "{what} failed ({}): {}",
            out.status,
            tail.join(" | ")
        )))
    }
}

/// A running postmaster.
#[derive(Debug)]
pub struct Postmaster {
    /// Its pid.
    pub pid: u32,
    exit: watch::Receiver<Option<String>>,
}

impl Postmaster {
    /// How it exited, once it has.
    pub fn exited(&self) -> Option<String> {
        self.exit.borrow().clone()
    }

    /// Resolves when it exits. Cancel safety: safe to drop and call again.
    pub async fn wait(&mut self) -> String {
        loop {
            if let Some(s) = self.exit.borrow().clone() {
                return s;
            }
            if self.exit.changed().await.is_err() {
                return "lost".into();
            }
        }
    }

    /// Sends `sig` (SIGKILL to fence, SIGQUIT for an immediate shutdown).
    pub fn signal(&self, sig: rustix::process::Signal) {
        if self.exited().is_none() {
            let _ = proc::signal(self.pid, sig);
        }
    }

    /// Stops it with `sig` and waits up to `timeout`, then kills it.
    pub async fn stop(mut self, sig: rustix::process::Signal, timeout: Duration) {
        self.signal(sig);
        if tokio::time::timeout(timeout, self.wait()).await.is_err() {
            self.signal(rustix::process::Signal::KILL);
            let _ = tokio::time::timeout(Duration::from_secs(5), self.wait()).await;
        }
    }
}

/// A connection whose driver task ends with it.
#[derive(Debug)]
pub struct PgConn {
    /// The client.
    pub client: tokio_postgres::Client,
    task: JoinHandle<()>,
}

impl Drop for PgConn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl PgConn {
    /// Connects with `cfg`.
    ///
    /// # Errors
    /// When the connection fails.
    pub async fn connect(cfg: tokio_postgres::Config) -> Result<PgConn, Error> {
        let (client, conn) = cfg.connect(tokio_postgres::NoTls).await?;
        let task = tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(PgConn { client, task })
    }

    /// Connects to a peer over TCP as `login`.
    ///
    /// # Errors
    /// When the connection fails.
    pub async fn to_peer(peer: &Peer, login: &PgLogin) -> Result<PgConn, Error> {
        let mut cfg: tokio_postgres::Config = peer
            .conninfo(2)
            .parse()
            .map_err(|e: tokio_postgres::Error| Error::Invalid(e.to_string()))?;
        cfg.user(&login.user).password(&login.password);
        PgConn::connect(cfg).await
    }

    /// Creates or updates the shard's roles, on the primary through its Unix socket:
    /// [`REPLICATION_ROLE`] with `replication` as its password and the rights that base
    /// backups, `pg_rewind` and reading a timeline's history need; with `client`,
    /// [`CLIENT_ROLE`], no superuser, which may create tables in `public` and is given every
    /// table already there (a shard from before the roles, whose tables the superuser made).
    /// Idempotent.
    ///
    /// Committed locally: a primary waiting for its sync would wait forever, since the sync
    /// needs the role to be built. A primary lost before the sync has it runs this again when
    /// the next one is promoted.
    ///
    /// # Errors
    /// When a statement fails.
    pub async fn ensure_roles(&self, replication: &str, client: Option<&str>) -> Result<(), Error> {
        let r = REPLICATION_ROLE;
        let mut sql = format!(
            "BEGIN READ WRITE;
             SET LOCAL synchronous_commit = local;
             DO $$ BEGIN
               IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{r}') THEN
                 CREATE ROLE {r};
               END IF;
               IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'pg_checkpoint') THEN
                 GRANT pg_checkpoint TO {r};
               END IF;
             END $$;
             ALTER ROLE {r} WITH LOGIN REPLICATION NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD {};
             GRANT EXECUTE ON FUNCTION pg_catalog.pg_ls_dir(text, boolean, boolean),
               pg_catalog.pg_stat_file(text, boolean), pg_catalog.pg_read_binary_file(text),
               pg_catalog.pg_read_binary_file(text, bigint, bigint, boolean),
               pg_catalog.pg_read_file(text) TO {r};
             REVOKE CREATE ON SCHEMA public FROM PUBLIC;",
            quote(replication)
        );
        if let Some(pw) = client {
            let c = CLIENT_ROLE;
            let _ = write!(
                sql,
                "DO $$ BEGIN
                   IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{c}') THEN
                     CREATE ROLE {c};
                   END IF;
                 END $$;
                 ALTER ROLE {c} WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION PASSWORD {};
                 GRANT USAGE, CREATE ON SCHEMA public TO {c};
                 DO $$ DECLARE t record; BEGIN
                   FOR t IN SELECT tablename FROM pg_tables
                             WHERE schemaname = 'public' AND tableowner <> '{c}' LOOP
                     EXECUTE format('ALTER TABLE public.%I OWNER TO {c}', t.tablename);
                   END LOOP;
                 END $$;",
                quote(pw)
            );
        }
        sql.push_str("COMMIT;");
        self.client.batch_execute(&sql).await?;
        Ok(())
    }

    /// Reads the server's role and WAL positions.
    ///
    /// # Errors
    /// When the query fails.
    pub async fn probe(&self) -> Result<Probe, Error> {
        let row = self
            .client
            .query_one(
                "SELECT pg_is_in_recovery(),
                        CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_current_wal_lsn()::text END,
                        pg_last_wal_receive_lsn()::text,
                        pg_last_wal_replay_lsn()::text,
                        current_setting('default_transaction_read_only') = 'on',
                        (SELECT system_identifier::text FROM pg_control_system()),
                        (SELECT status FROM pg_stat_wal_receiver LIMIT 1),
                        current_setting('synchronous_standby_names'),
                        (SELECT timeline_id FROM pg_control_checkpoint())",
                &[],
            )
            .await?;
        let lsn = |i: usize| -> Option<Lsn> {
            row.get::<_, Option<String>>(i).and_then(|s| s.parse().ok())
        };
        // Standbys too: a cascading standby serves the next link of the chain.
        let replication = self.replication().await?;
        Ok(Probe {
            in_recovery: row.get(0),
            current_wal: lsn(1),
            receive_wal: lsn(2),
            replay_wal: lsn(3),
            read_only: row.get(4),
            system_id: row.get(5),
            receiver: row.get(6),
            sync_names: row.get(7),
            timeline: row.get::<_, Option<i32>>(8).map(i64::from),
            replication,
        })
    }

    /// Where this server's history left timeline `tli`: `Ok(None)` when `tli` is its current
    /// timeline, `Ok(Some(lsn))` when it forked off at `lsn`.
    ///
    /// # Errors
    /// When the query fails, or `tli` is not in this server's history (another lineage).
    pub async fn fork_point(&self, tli: u32) -> Result<Option<Lsn>, Error> {
        let row = self
            .client
            .query_one(
                "SELECT ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int",
                &[],
            )
            .await?;
        let current = row.get::<_, i32>(0) as u32;
        if current == tli {
            return Ok(None);
        }
        let file = format!("pg_wal/{current:08X}.history");
        let row = self
            .client
            .query_one("SELECT pg_read_file($1)", &[&file])
            .await?;
        let text: String = row.get(0);
        for line in text.lines() {
            let mut f = line.split_whitespace();
            if let (Some(parent), Some(lsn)) = (f.next(), f.next())
                && parent.parse::<u32>().ok() == Some(tli)
            {
                return lsn
                    .parse()
                    .map(Some)
                    .map_err(|_| Error::Command(format!("bad history line {line:?}")));
            }
        }
        Err(Error::Command(format!(
            "timeline {tli} is not in the history of timeline {current}"
        )))
    }

    /// The server's current WAL position (a primary).
    ///
    /// # Errors
    /// When the query fails.
    pub async fn current_wal(&self) -> Result<Lsn, Error> {
        let row = self
            .client
            .query_one("SELECT pg_current_wal_lsn()::text", &[])
            .await?;
        let s: String = row.get(0);
        s.parse()
            .map_err(|_| Error::Command(format!("bad WAL position {s:?}")))
    }

    /// The rows of `pg_stat_replication`: who streams from this server, and how far they are.
    ///
    /// # Errors
    /// When the query fails.
    pub async fn replication(&self) -> Result<Vec<ReplRow>, Error> {
        let rows = self
            .client
            .query(
                "SELECT application_name, client_addr::text, state, sync_state,
                        sent_lsn::text, write_lsn::text, flush_lsn::text, replay_lsn::text,
                        (extract(epoch FROM replay_lag) * 1000)::float8
                   FROM pg_stat_replication",
                &[],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| {
                let lsn = |i: usize| r.get::<_, Option<String>>(i).and_then(|s| s.parse().ok());
                ReplRow {
                    application_name: r.get::<_, Option<String>>(0).unwrap_or_default(),
                    client_addr: r.get(1),
                    state: r.get::<_, Option<String>>(2).unwrap_or_default(),
                    sync_state: r.get::<_, Option<String>>(3).unwrap_or_default(),
                    sent: lsn(4),
                    write: lsn(5),
                    flush: lsn(6),
                    replay: lsn(7),
                    replay_lag_ms: r.get(8),
                }
            })
            .collect())
    }
}

/// What a probe of the local server found.
#[derive(Debug, Clone, Default, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Probe {
    /// A standby.
    pub in_recovery: bool,
    /// The primary's current WAL position.
    pub current_wal: Option<Lsn>,
    /// The last WAL position a standby received.
    pub receive_wal: Option<Lsn>,
    /// The last WAL position a standby replayed.
    pub replay_wal: Option<Lsn>,
    /// `default_transaction_read_only`.
    pub read_only: bool,
    /// The database system identifier.
    pub system_id: Option<String>,
    /// The WAL receiver's status (`streaming` when a standby is attached to its upstream).
    pub receiver: Option<String>,
    /// `synchronous_standby_names`.
    pub sync_names: String,
    /// The timeline of the last checkpoint.
    pub timeline: Option<i64>,
    /// Who streams from this server.
    pub replication: Vec<ReplRow>,
}

impl Probe {
    /// The furthest WAL position this server holds: what the takeover rule compares.
    pub fn wal(&self) -> Lsn {
        [self.current_wal, self.receive_wal, self.replay_wal]
            .into_iter()
            .flatten()
            .max()
            .unwrap_or_default()
    }
}

/// One row of `pg_stat_replication`.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplRow {
    /// The standby's peer id.
    pub application_name: String,
    /// Its address.
    pub client_addr: Option<String>,
    /// `streaming`, `catchup`, `startup`, ...
    pub state: String,
    /// `sync`, `async`, `potential`.
    pub sync_state: String,
    /// WAL sent.
    pub sent: Option<Lsn>,
    /// WAL written by the standby.
    pub write: Option<Lsn>,
    /// WAL flushed by the standby.
    pub flush: Option<Lsn>,
    /// WAL replayed by the standby.
    pub replay: Option<Lsn>,
    /// Replay lag in milliseconds, as Postgres measures it.
    pub replay_lag_ms: Option<f64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conf_for_each_role() {
        let setup = PgSetup {
            bindir: "/bin".into(),
            base: "/tmp/p".into(),
            me: Peer::new([127, 0, 0, 1].into(), 5433, 9000),
            fsync: false,
            allow: vec!["10.1.0.0/24".into()],
            replication_password: "0123456789abcdef".into(),
            extra: vec![("work_mem".into(), "4MB".into())],
        };
        let up = Peer::new([127, 0, 0, 1].into(), 5432, 9001);
        let p = setup.conf_text(&ConfRole::Primary {
            sync: Some(up.id.clone()),
            also: None,
            read_only: true,
        });
        assert!(p.contains("synchronous_standby_names = '\"127.0.0.1:5432:9001\"'"));
        let both = setup.conf_text(&ConfRole::Primary {
            sync: Some(up.id.clone()),
            also: Some("127.0.0.1:5434:9002".into()),
            read_only: false,
        });
        assert!(both.contains(
            "synchronous_standby_names = 'FIRST 2 (\"127.0.0.1:5432:9001\", \"127.0.0.1:5434:9002\")'"
        ));
        assert!(p.contains("default_transaction_read_only = on"));
        assert!(p.contains("primary_conninfo = ''"));
        assert!(p.contains("work_mem = '4MB'"));
        let s = setup.conf_text(&ConfRole::Standby { upstream: up });
        assert!(s.contains(
            "primary_conninfo = 'host=127.0.0.1 port=5432 user=manatee_repl dbname=postgres passfile=/tmp/p/pgpass connect_timeout=2 application_name=127.0.0.1:5433:9000'"
        ));
        assert!(s.contains("synchronous_standby_names = ''"));
        let hba = setup.hba_text();
        assert!(hba.contains("host replication manatee_repl 10.1.0.0/24 scram-sha-256"));
        assert!(hba.contains("host postgres moray 127.0.0.1/32 scram-sha-256"));
        assert!(
            !hba.lines()
                .any(|l| l.starts_with("host") && l.contains("trust")),
            "trust over TCP: {hba}"
        );
        for l in hba.lines().filter(|l| l.starts_with("host")) {
            let user = l.split_whitespace().nth(2).unwrap_or_default();
            assert!(user == "manatee_repl" || user == "moray", "{l}");
        }
        assert_eq!(quote("a'b"), "'a''b'");
    }
}
