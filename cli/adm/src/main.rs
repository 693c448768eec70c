//! `manta-adm`: operate a region. `up`, `status`, `down` and `destroy` run a whole region on
//! this machine ([`region`]); `setup`, `account` and `s3-key` act on any region's metadata
//! through Moray (accounts through the `manta-accounts` crate); `image` keeps the jobs' image
//! registry ([`image`], as an account, through the front door). It links the metadata layer, not
//! the front door or the storage nodes, whose binaries it only starts.

mod config;
mod host;
mod image;
mod layout;
mod region;
mod status;
mod storage;
mod supervise;

use std::path::PathBuf;

use anyhow::{Context as _, Result, bail};
use clap::{Args as ClapArgs, Parser, Subcommand};
use manta_accounts::AccountAdmin;
use region::Region;

/// Operate a region of the object store.
#[derive(Debug, Parser)]
#[command(name = "manta-adm", version)]
struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, ClapArgs)]
struct DirArg {
    /// Directory holding the region's data, logs and pid files.
    #[arg(long, env = "MANTA_REGION_DIR", default_value = ".region")]
    dir: PathBuf,
}

/// Where the metadata tier is: an explicit Moray URL, etcd (the shard ring), or the region
/// started by `manta-adm up` in `--dir`.
#[derive(Debug, ClapArgs)]
struct MorayTarget {
    /// Moray URL of the system shard.
    #[arg(long, env = "MANTA_MORAY", conflicts_with = "etcd")]
    moray: Option<String>,
    /// etcd endpoints holding the shard ring.
    #[arg(long, env = "MANTA_ETCD", value_delimiter = ',')]
    etcd: Vec<String>,
    /// A region config (`region.toml`): its etcd members and its operator identity.
    #[arg(long, env = "MANTA_REGION_CONFIG", conflicts_with_all = ["moray", "etcd"])]
    config: Option<PathBuf>,
    /// The operator's region identity (`cert.pem`, `key.pem`, `ca.pem`) for a Moray that
    /// serves mutual TLS; by default the one of the region in `--dir`, when there is one.
    #[arg(long, env = "MANTA_TLS_DIR")]
    tls_dir: Option<PathBuf>,
    #[command(flatten)]
    region: DirArg,
}

impl MorayTarget {
    /// The identity to reach the metadata tier with: `--tls-dir`'s, or else the region's
    /// operator identity when there is a region in `--dir`, or else none (plain HTTP).
    fn identity(&self) -> Result<Option<manta_util::tls::Identity>> {
        if let Some(dir) = &self.tls_dir {
            return Ok(Some(manta_util::tls::Identity::in_dir(dir)));
        }
        if let Some(config) = &self.config {
            return Ok(Some(host::Loaded::open(config)?.adm()));
        }
        if self.region.dir.join("region.json").exists() {
            return Ok(Some(
                Region::open_existing(&self.region.dir)?.adm_identity(),
            ));
        }
        Ok(None)
    }

    /// The sharded metadata tier this target names.
    async fn sharded(&self) -> Result<moray::ShardedClient> {
        let id = self.identity()?;
        let tls =
            manta_util::tls::internal_client_of(id.as_ref()).context("load the region identity")?;
        Ok(if let Some(url) = &self.moray {
            moray::ShardedClient::single_over(url, tls)?
        } else if let Some(config) = &self.config {
            let etcd = host::Loaded::open(config)?.cfg.etcd_endpoints();
            moray::ShardedClient::from_etcd_over(etcd, id.as_ref()).await?
        } else if !self.etcd.is_empty() {
            moray::ShardedClient::from_etcd_over(self.etcd.clone(), id.as_ref()).await?
        } else {
            let region = Region::open_existing(&self.region.dir)?;
            let url = region.moray_url().with_context(|| {
                format!(
                    "no --moray or --etcd given, and the region in {} has no Moray",
                    self.region.dir.display()
                )
            })?;
            moray::ShardedClient::single_over(&url, tls)?
        })
    }

    /// Creates every bucket the object store uses (idempotent).
    async fn setup(&self) -> Result<()> {
        region::setup_buckets(&self.sharded().await?).await
    }

    async fn admin(&self) -> Result<AccountAdmin> {
        let client = self.sharded().await?.system();
        manta_accounts::ensure_bucket(&client)
            .await
            .context("prepare the accounts bucket")?;
        Ok(AccountAdmin::new(client))
    }
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Start every service of a region on this machine (again, with its data, if it ran before)
    /// and wait until each is healthy.
    Up(DirArg),
    /// Show every service of the region: pid, health, endpoint; the shard's roles and lag; the
    /// storage nodes' capacity. With --config, every host of a region config, and which hosts
    /// do not answer.
    Status {
        #[command(flatten)]
        dir: DirArg,
        /// A region config (`region.toml`) instead of the one-machine region in --dir.
        #[arg(long, env = "MANTA_REGION_CONFIG")]
        config: Option<PathBuf>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Stop every service of the region (its data stays).
    Down(DirArg),
    /// Stop the region and delete it: its directory and the Postgres files kept outside it.
    Destroy {
        #[command(flatten)]
        dir: DirArg,
        /// Really delete everything.
        #[arg(long)]
        yes: bool,
    },
    /// Create the metadata buckets the object store uses on every shard (safe to run again).
    Setup(MorayTarget),
    /// Manage accounts and their SSH keys.
    #[command(subcommand)]
    Account(AccountCmd),
    /// Manage S3 access keys.
    #[command(subcommand, name = "s3-key")]
    S3Key(S3KeyCmd),
    /// Manage an account's sub-users (they sign with `keyId=/ACCOUNT/USER/keys/...`).
    #[command(subcommand)]
    User(UserCmd),
    /// Manage an account's roles (what `role-tag` and the `Role` header name).
    #[command(subcommand)]
    Role(RoleCmd),
    /// Manage an account's policies (rules such as `CAN getobject WHEN sourceip = 10.0.0.0/8`).
    #[command(subcommand)]
    Policy(PolicyCmd),
    /// Describe a region across hosts in a config file, and change it.
    #[command(subcommand)]
    Region(RegionCmd),
    /// Run or install one host's services of a region config.
    #[command(subcommand)]
    Host(HostCmd),
    /// The region's image registry (jobs' and mlogin's `--image NAME`).
    #[command(subcommand)]
    Image(ImageCmd),
    /// Empty a storage node of its copies, retire it, or return it to service.
    #[command(subcommand)]
    Storage(StorageCmd),
    /// Keep one service running (what `up` starts for each service; not for direct use):
    /// start it, start it again after a backoff whenever it exits, stop it on SIGTERM.
    #[command(hide = true)]
    Supervise {
        /// The service's directory (its log, pid file and exits).
        #[arg(long)]
        dir: PathBuf,
        /// The service's name.
        #[arg(long)]
        name: String,
        /// Start it as this user.
        #[arg(long)]
        exec_as: Option<String>,
        /// The program and its arguments.
        #[arg(last = true, required = true)]
        argv: Vec<std::ffi::OsString>,
    },
}

#[derive(Debug, Subcommand)]
enum StorageCmd {
    /// Stop placing new copies on NODE and have the repairer move its copies elsewhere.
    Evacuate {
        /// The storage id (e.g. `1.stor.local`).
        node: String,
        #[command(flatten)]
        target: MorayTarget,
    },
    /// Mark an evacuated NODE retired, once a whole repair pass left no copy on it.
    Retire {
        /// The storage id.
        node: String,
        #[command(flatten)]
        target: MorayTarget,
    },
    /// Return an evacuating or retired NODE to service.
    Restore {
        /// The storage id.
        node: String,
        #[command(flatten)]
        target: MorayTarget,
    },
}

#[derive(Debug, Subcommand)]
enum ImageCmd {
    /// Check an OCI image layout archive (`skopeo copy docker-archive:X oci-archive:FILE`) as
    /// an agent would, then upload it to the registry as NAME.
    Import {
        /// The image's name in the registry.
        name: String,
        /// The archive.
        file: PathBuf,
        /// The registry directory (default `/$MANTA_USER/public/images`).
        #[arg(long)]
        registry: Option<String>,
    },
    /// List the registry's images.
    List {
        /// The registry directory (default `/$MANTA_USER/public/images`).
        #[arg(long)]
        registry: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum S3KeyCmd {
    /// Create an access key pair for an account or one of its sub-users (the secret is
    /// shown once).
    Create {
        /// The login.
        login: String,
        /// Make the key a sub-user's: its S3 requests act with that user's roles.
        #[arg(long)]
        user: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: MorayTarget,
    },
    /// List an account's access key ids, and its sub-users'.
    List {
        /// The login.
        login: String,
        #[command(flatten)]
        target: MorayTarget,
    },
}

async fn s3_key(cmd: S3KeyCmd) -> Result<()> {
    match cmd {
        S3KeyCmd::Create {
            login,
            user,
            json,
            target,
        } => {
            let k = target
                .admin()
                .await?
                .create_s3_key(&login, user.as_deref())
                .await?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({"accessKeyId": k.access_key_id, "secretAccessKey": k.secret_access_key})
                );
            } else {
                println!("access key id:     {}", k.access_key_id);
                println!("secret access key: {}", k.secret_access_key);
            }
        }
        S3KeyCmd::List { login, target } => {
            let (a, _) = target.admin().await?.get(&login).await?;
            println!("{:<24} {:<24} USER", "ACCESS KEY ID", "CREATED");
            let own = a.s3_keys.iter().map(|k| (k, "-"));
            let users = a
                .users
                .iter()
                .flat_map(|u| u.s3_keys.iter().map(|k| (k, u.login.as_str())));
            for (k, user) in own.chain(users) {
                println!(
                    "{:<24} {:<24} {user}",
                    k.access_key_id,
                    manta_types::time::iso8601_ms(k.created)
                );
            }
        }
    }
    Ok(())
}

#[derive(Debug, Subcommand)]
enum AccountCmd {
    /// Create an account with one or more SSH public keys.
    Create {
        /// The login.
        login: String,
        /// An SSH public key file (repeat for several).
        #[arg(long = "key", required = true)]
        keys: Vec<PathBuf>,
        #[command(flatten)]
        target: MorayTarget,
    },
    /// List the accounts.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: MorayTarget,
    },
    /// Show one account (JSON).
    Get {
        /// The login.
        login: String,
        #[command(flatten)]
        target: MorayTarget,
    },
    /// Add an SSH public key to an account.
    AddKey {
        /// The login.
        login: String,
        /// The public key file.
        key: PathBuf,
        /// A name for the key (default: its comment).
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        target: MorayTarget,
    },
    /// Set an account's own limits on what it may use (each overrides the region's default;
    /// `default` goes back to it). Front doors apply a change within a minute.
    SetLimits {
        /// The login.
        login: String,
        /// Requests in progress at once on one front door (a number, or `default`).
        #[arg(long, value_parser = parse_limit)]
        concurrent_requests: Option<LimitArg>,
        /// S3 buckets it may own (a number, or `default`).
        #[arg(long, value_parser = parse_limit)]
        buckets: Option<LimitArg>,
        /// Jobs running at once (a number, or `default`).
        #[arg(long, value_parser = parse_limit)]
        jobs: Option<LimitArg>,
        /// Tasks dispatched or running at once over all its jobs (a number, or `default`).
        #[arg(long, value_parser = parse_limit)]
        tasks: Option<LimitArg>,
        /// Bytes one task may emit as outputs, for jobs created from now on (e.g. `512MiB`,
        /// or `default`).
        #[arg(long, value_parser = parse_byte_limit)]
        task_output: Option<LimitArg<u64>>,
        #[command(flatten)]
        target: MorayTarget,
    },
    /// Remove an SSH key from an account, by fingerprint (MD5 or SHA256 form).
    RemoveKey {
        /// The login.
        login: String,
        /// The key's fingerprint.
        fingerprint: String,
        #[command(flatten)]
        target: MorayTarget,
    },
}

#[derive(Debug, Subcommand)]
enum UserCmd {
    /// Create a sub-user, with SSH public keys for the Manta API (none: it acts only
    /// through S3 access keys, `s3-key create ACCOUNT --user USER`).
    Create {
        /// The account.
        account: String,
        /// The user's login.
        user: String,
        /// An SSH public key file (repeat for several).
        #[arg(long = "key")]
        keys: Vec<PathBuf>,
        #[command(flatten)]
        target: MorayTarget,
    },
    /// List an account's sub-users.
    List {
        /// The account.
        account: String,
        #[command(flatten)]
        target: MorayTarget,
    },
    /// Show one sub-user (JSON), with its roles.
    Get {
        /// The account.
        account: String,
        /// The user.
        user: String,
        #[command(flatten)]
        target: MorayTarget,
    },
    /// Add an SSH public key to a sub-user.
    AddKey {
        /// The account.
        account: String,
        /// The user.
        user: String,
        /// The public key file.
        key: PathBuf,
        #[command(flatten)]
        target: MorayTarget,
    },
    /// Delete a sub-user (it leaves every role).
    Delete {
        /// The account.
        account: String,
        /// The user.
        user: String,
        #[command(flatten)]
        target: MorayTarget,
    },
}

/// What a role is made of, as given on the command line.
#[derive(Debug, clap::Args)]
struct RoleSpec {
    /// The account.
    account: String,
    /// The role's name.
    role: String,
    /// A sub-user who may take the role (repeat for several).
    #[arg(long = "member")]
    members: Vec<String>,
    /// A member whose requests take the role unless they name their roles (repeat).
    #[arg(long = "default-member")]
    default_members: Vec<String>,
    /// A policy of the role (repeat).
    #[arg(long = "policy")]
    policies: Vec<String>,
    #[command(flatten)]
    target: MorayTarget,
}

#[derive(Debug, Subcommand)]
enum RoleCmd {
    /// Create a role.
    Create(RoleSpec),
    /// Replace a role's members, default members and policies.
    Update(RoleSpec),
    /// List an account's roles.
    List {
        /// The account.
        account: String,
        #[command(flatten)]
        target: MorayTarget,
    },
    /// Show one role (JSON).
    Get {
        /// The account.
        account: String,
        /// The role.
        role: String,
        #[command(flatten)]
        target: MorayTarget,
    },
    /// Delete a role.
    Delete {
        /// The account.
        account: String,
        /// The role.
        role: String,
        #[command(flatten)]
        target: MorayTarget,
    },
}

/// A policy as given on the command line.
#[derive(Debug, clap::Args)]
struct PolicySpec {
    /// The account.
    account: String,
    /// The policy's name.
    policy: String,
    /// A rule, e.g. `CAN getobject, getdirectory` (repeat for several).
    #[arg(long = "rule", required = true)]
    rules: Vec<String>,
    #[command(flatten)]
    target: MorayTarget,
}

#[derive(Debug, Subcommand)]
enum PolicyCmd {
    /// Create a policy.
    Create(PolicySpec),
    /// Replace a policy's rules.
    Update(PolicySpec),
    /// List an account's policies.
    List {
        /// The account.
        account: String,
        #[command(flatten)]
        target: MorayTarget,
    },
    /// Show one policy (JSON).
    Get {
        /// The account.
        account: String,
        /// The policy.
        policy: String,
        #[command(flatten)]
        target: MorayTarget,
    },
    /// Delete a policy no role has.
    Delete {
        /// The account.
        account: String,
        /// The policy.
        policy: String,
        #[command(flatten)]
        target: MorayTarget,
    },
}

/// The sub-user, role and policy commands.
#[derive(Debug)]
enum Access {
    User(UserCmd),
    Role(RoleCmd),
    Policy(PolicyCmd),
}

async fn access(cmd: Access) -> Result<()> {
    let json = |v: &serde_json::Value| -> Result<()> {
        println!("{}", serde_json::to_string_pretty(v)?);
        Ok(())
    };
    match cmd {
        Access::User(UserCmd::Create {
            account,
            user,
            keys,
            target,
        }) => {
            let lines = keys.iter().map(read_key).collect::<Result<Vec<_>>>()?;
            let u = target
                .admin()
                .await?
                .create_user(&account, &user, &lines)
                .await?;
            println!("created user {account}/{} ({})", u.login, u.uuid);
        }
        Access::User(UserCmd::List { account, target }) => {
            let (a, _) = target.admin().await?.get(&account).await?;
            println!("{:<24} {:<38} KEYS", "LOGIN", "UUID");
            for u in &a.users {
                println!("{:<24} {:<38} {}", u.login, u.uuid, u.keys.len());
            }
        }
        Access::User(UserCmd::Get {
            account,
            user,
            target,
        }) => {
            let (a, _) = target.admin().await?.get(&account).await?;
            let u = a
                .user(&user)
                .with_context(|| format!("{account} has no user {user}"))?;
            let roles: Vec<&str> = a
                .roles
                .iter()
                .filter(|r| r.members.contains(&user))
                .map(|r| r.name.as_str())
                .collect();
            let v = serde_json::json!({
                "login": u.login, "uuid": u.uuid, "roles": roles,
                "keys": u.keys.iter().map(|k| &k.fingerprint).collect::<Vec<_>>(),
            });
            json(&v)?;
        }
        Access::User(UserCmd::AddKey {
            account,
            user,
            key,
            target,
        }) => {
            let k = target
                .admin()
                .await?
                .add_user_key(&account, &user, &read_key(&key)?)
                .await?;
            println!("added key {} to {account}/{user}", k.fingerprint);
        }
        Access::User(UserCmd::Delete {
            account,
            user,
            target,
        }) => {
            target.admin().await?.delete_user(&account, &user).await?;
            println!("deleted user {account}/{user}");
        }
        Access::Role(RoleCmd::Create(s)) => put_role(s, true).await?,
        Access::Role(RoleCmd::Update(s)) => put_role(s, false).await?,
        Access::Role(RoleCmd::List { account, target }) => {
            let (a, _) = target.admin().await?.get(&account).await?;
            println!("{:<24} {:<24} POLICIES", "ROLE", "MEMBERS");
            for r in &a.roles {
                println!(
                    "{:<24} {:<24} {}",
                    r.name,
                    r.members.join(","),
                    r.policies.join(",")
                );
            }
        }
        Access::Role(RoleCmd::Get {
            account,
            role,
            target,
        }) => {
            let (a, _) = target.admin().await?.get(&account).await?;
            let r = a
                .roles
                .iter()
                .find(|r| r.name == role)
                .with_context(|| format!("{account} has no role {role}"))?;
            json(&serde_json::to_value(r)?)?;
        }
        Access::Role(RoleCmd::Delete {
            account,
            role,
            target,
        }) => {
            target.admin().await?.delete_role(&account, &role).await?;
            println!("deleted role {role} of {account}");
        }
        Access::Policy(PolicyCmd::Create(s)) => put_policy(s, true).await?,
        Access::Policy(PolicyCmd::Update(s)) => put_policy(s, false).await?,
        Access::Policy(PolicyCmd::List { account, target }) => {
            let (a, _) = target.admin().await?.get(&account).await?;
            for p in &a.policies {
                println!("{}: {}", p.name, p.rules.join(" | "));
            }
        }
        Access::Policy(PolicyCmd::Get {
            account,
            policy,
            target,
        }) => {
            let (a, _) = target.admin().await?.get(&account).await?;
            let p = a
                .policies
                .iter()
                .find(|p| p.name == policy)
                .with_context(|| format!("{account} has no policy {policy}"))?;
            json(&serde_json::to_value(p)?)?;
        }
        Access::Policy(PolicyCmd::Delete {
            account,
            policy,
            target,
        }) => {
            target
                .admin()
                .await?
                .delete_policy(&account, &policy)
                .await?;
            println!("deleted policy {policy} of {account}");
        }
    }
    Ok(())
}

async fn put_role(s: RoleSpec, create: bool) -> Result<()> {
    let role = manta_auth::rbac::Role {
        name: s.role.clone(),
        members: s.members,
        default_members: s.default_members,
        policies: s.policies,
    };
    s.target
        .admin()
        .await?
        .put_role(&s.account, role, create)
        .await?;
    let did = if create { "created" } else { "updated" };
    println!("{did} role {} of {}", s.role, s.account);
    Ok(())
}

async fn put_policy(s: PolicySpec, create: bool) -> Result<()> {
    let policy = manta_auth::rbac::Policy {
        name: s.policy.clone(),
        rules: s.rules,
    };
    s.target
        .admin()
        .await?
        .put_policy(&s.account, policy, create)
        .await?;
    let did = if create { "created" } else { "updated" };
    println!("{did} policy {} of {}", s.policy, s.account);
    Ok(())
}

/// A limit as given on the command line: a number, or `None` for the region's default.
#[derive(Debug, Clone, Copy)]
struct LimitArg<T = u32>(Option<T>);

fn parse_limit(s: &str) -> std::result::Result<LimitArg, String> {
    if s == "default" {
        return Ok(LimitArg(None));
    }
    s.parse()
        .map(|n| LimitArg(Some(n)))
        .map_err(|_| format!("{s:?} is not a number or `default`"))
}

fn parse_byte_limit(s: &str) -> std::result::Result<LimitArg<u64>, String> {
    if s == "default" {
        return Ok(LimitArg(None));
    }
    manta_util::cli::parse_bytes(s).map(|n| LimitArg(Some(n)))
}

#[derive(Debug, Subcommand)]
enum RegionCmd {
    /// Write a region config for some hosts (each its own failure domain), with the region's
    /// CA, every service's key and certificate, the operator's, and the shared secrets, into
    /// one directory to copy to every host.
    Init {
        /// Where to write `region.toml`, `pki/` and `secrets/`.
        #[arg(long, default_value = "manta-region")]
        out: PathBuf,
        /// A host, as NAME=ADDRESS (repeat, in order: the first hosts run the quorum).
        #[arg(long = "host", value_parser = parse_host, required = true)]
        hosts: Vec<(String, std::net::IpAddr)>,
        /// Where each host keeps its services' data (`<dir>/<host>` when there are several).
        #[arg(long, default_value = "/var/lib/manta")]
        state_dir: PathBuf,
    },
    /// Add a service to a host in the config (free ports, its key and certificate issued);
    /// then SIGHUP that host's `host run`, or `host install` again and start its unit.
    Add {
        /// The region config.
        #[arg(long, env = "MANTA_REGION_CONFIG")]
        config: PathBuf,
        /// What to add: storage, moray, frontdoor, jobs-agent, jobs-supervisor.
        #[arg(long)]
        kind: String,
        /// The host to run it.
        #[arg(long)]
        host: String,
        /// For a jobs agent: the storage node it serves.
        #[arg(long)]
        storage: Option<String>,
    },
    /// Retire a storage node (it keeps serving reads; placement stops choosing it) or a Moray
    /// (taken out of the shard ring at once); then SIGHUP its host's `host run`.
    Retire {
        /// The region config.
        #[arg(long, env = "MANTA_REGION_CONFIG")]
        config: PathBuf,
        /// The service.
        service: String,
    },
    /// Make the metadata ready: the shard ring with the config's Morays, and the buckets
    /// (`host run` does this on the host of the first Moray; safe to run again).
    Bootstrap {
        /// The region config.
        #[arg(long, env = "MANTA_REGION_CONFIG")]
        config: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum HostCmd {
    /// Run this host's services in the foreground, each started again when it exits, until
    /// SIGTERM or Ctrl-C; SIGHUP reads the config again.
    Run {
        /// The region config.
        #[arg(long, env = "MANTA_REGION_CONFIG")]
        config: PathBuf,
        /// This host's name in the config.
        #[arg(long)]
        host: String,
    },
    /// Write systemd units for this host's services (and prepare the host as `run` would):
    /// `systemctl daemon-reload && systemctl enable --now manta.target` starts them.
    Install {
        /// The region config.
        #[arg(long, env = "MANTA_REGION_CONFIG")]
        config: PathBuf,
        /// This host's name in the config.
        #[arg(long)]
        host: String,
        /// Where to write the units.
        #[arg(long, default_value = "/etc/systemd/system")]
        unit_dir: PathBuf,
        /// Only write the units (do not make the service user, directories and copies).
        #[arg(long)]
        units_only: bool,
    },
}

fn parse_host(s: &str) -> Result<(String, std::net::IpAddr), String> {
    let (name, addr) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: give a host as NAME=ADDRESS"))?;
    let addr = addr
        .parse()
        .map_err(|e| format!("{addr:?} is not an IP address: {e}"))?;
    if name.is_empty() {
        return Err(format!("{s:?}: the host has no name"));
    }
    Ok((name.to_owned(), addr))
}

fn parse_kind(s: &str) -> Result<config::Kind> {
    config::Kind::START_ORDER
        .into_iter()
        .find(|k| k.as_str() == s)
        .with_context(|| {
            format!(
                "unknown kind {s:?} (one of {})",
                config::Kind::START_ORDER
                    .map(config::Kind::as_str)
                    .join(", ")
            )
        })
}

async fn region_cmd(cmd: RegionCmd) -> Result<()> {
    match cmd {
        RegionCmd::Init {
            out,
            hosts,
            state_dir,
        } => {
            let loaded = host::init(&out, &hosts, &state_dir)?;
            println!(
                "wrote {} for region {}:",
                loaded.path.display(),
                loaded.cfg.region.id
            );
            for h in &loaded.cfg.hosts {
                let names: Vec<&str> = loaded
                    .cfg
                    .services
                    .iter()
                    .filter(|s| s.host == h.name)
                    .map(|s| s.name.as_str())
                    .collect();
                println!(
                    "  {} ({}, {}): {}",
                    h.name,
                    h.address,
                    h.domain,
                    names.join(" ")
                );
            }
            println!(
                "keys in {}, secrets in {}: copy {} to every host (it is private), then on each \
                 run\n  manta-adm host run --config {} --host NAME\nor install its systemd units \
                 with `manta-adm host install`.",
                loaded.pki().display(),
                loaded.base.join("secrets").display(),
                loaded.base.display(),
                loaded.path.display()
            );
        }
        RegionCmd::Add {
            config,
            kind,
            host,
            storage,
        } => {
            let mut loaded = host::Loaded::open(&config)?;
            let name = host::add(&mut loaded, parse_kind(&kind)?, &host, storage)?;
            println!("added {name} on {host}; SIGHUP that host's `manta-adm host run` to start it");
        }
        RegionCmd::Retire { config, service } => {
            let mut loaded = host::Loaded::open(&config)?;
            host::retire(&mut loaded, &service).await?;
            println!("retired {service}; SIGHUP its host's `manta-adm host run` to apply it");
        }
        RegionCmd::Bootstrap { config } => {
            host::bootstrap(&host::Loaded::open(&config)?).await?;
        }
    }
    Ok(())
}

async fn host_cmd(cmd: HostCmd) -> Result<()> {
    match cmd {
        HostCmd::Run { config, host } => host::run(&config, &host).await,
        HostCmd::Install {
            config,
            host,
            unit_dir,
            units_only,
        } => {
            for u in host::install(&config, &host, &unit_dir, !units_only)? {
                println!("wrote {}", u.display());
            }
            println!(
                "start them with: systemctl daemon-reload && systemctl enable --now manta.target"
            );
            Ok(())
        }
    }
}

fn read_key(path: &PathBuf) -> Result<String> {
    let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    let line = text
        .lines()
        .find(|l| !l.trim().is_empty() && !l.starts_with('#'));
    line.map(str::to_owned)
        .with_context(|| format!("{} holds no key", path.display()))
}

async fn account(cmd: AccountCmd) -> Result<()> {
    match cmd {
        AccountCmd::Create {
            login,
            keys,
            target,
        } => {
            let lines = keys.iter().map(read_key).collect::<Result<Vec<_>>>()?;
            let a = target.admin().await?.create(&login, &lines).await?;
            println!("created account {} ({})", a.login, a.uuid);
            for k in &a.keys {
                println!("  key {} ({})", k.fingerprint, k.name);
            }
        }
        AccountCmd::List { json, target } => {
            let accounts = target.admin().await?.list().await?;
            if json {
                let v: Vec<_> = accounts
                    .iter()
                    .map(|a| serde_json::json!({"login": a.login, "uuid": a.uuid, "keys": a.keys.len(), "blocked": a.blocked}))
                    .collect();
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                println!("{:<24} {:<38} KEYS", "LOGIN", "UUID");
                for a in accounts {
                    println!("{:<24} {:<38} {}", a.login, a.uuid, a.keys.len());
                }
            }
        }
        AccountCmd::Get { login, target } => {
            let (mut a, _) = target.admin().await?.get(&login).await?;
            for k in &mut a.s3_keys {
                k.secret_access_key = "(hidden)".into();
            }
            println!("{}", serde_json::to_string_pretty(&a)?);
        }
        AccountCmd::AddKey {
            login,
            key,
            name,
            target,
        } => {
            let k = target
                .admin()
                .await?
                .add_key(&login, &read_key(&key)?, name.as_deref())
                .await?;
            println!("added key {} ({}) to {login}", k.fingerprint, k.name);
        }
        AccountCmd::SetLimits {
            login,
            concurrent_requests,
            buckets,
            jobs,
            tasks,
            task_output,
            target,
        } => {
            if [concurrent_requests, buckets, jobs, tasks]
                .iter()
                .all(Option::is_none)
                && task_output.is_none()
            {
                bail!(
                    "name a limit to set: --concurrent-requests, --buckets, --jobs, --tasks or --task-output"
                );
            }
            let a = target
                .admin()
                .await?
                .set_limits(&login, |l| {
                    let set = |to: &mut Option<u32>, from: Option<LimitArg>| {
                        if let Some(LimitArg(n)) = from {
                            *to = n;
                        }
                    };
                    set(&mut l.concurrent_requests, concurrent_requests);
                    set(&mut l.buckets, buckets);
                    set(&mut l.jobs, jobs);
                    set(&mut l.tasks, tasks);
                    if let Some(LimitArg(n)) = task_output {
                        l.task_output = n;
                    }
                })
                .await?;
            println!(
                "{login}'s own limits: {}",
                serde_json::to_string(&a.limits)?
            );
        }
        AccountCmd::RemoveKey {
            login,
            fingerprint,
            target,
        } => {
            target
                .admin()
                .await?
                .remove_key(&login, &fingerprint)
                .await?;
            println!("removed key {fingerprint} from {login}");
        }
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    manta_util::cli::exit_quietly_on_closed_pipe();
    manta_util::logging::init(manta_util::logging::LogFormat::Plain);
    match Args::parse().cmd {
        Cmd::Up(DirArg { dir }) => {
            let mut region = Region::open(&dir)?;
            println!("bringing up the region in {}", region.dir().display());
            region.up().await?;
            let d = region.dir().display();
            println!(
                "\nthe region is up: the Manta API is at {}, the S3 API at {}",
                region.url(),
                region.s3_url()
            );
            println!(
                "to use it from a shell:\n\n    . {d}/env.sh\n    mmkdir ~~/stor/hello && echo hi | mput ~~/stor/hello/world && mls ~~/stor/hello\n\n\
                 env.sh also sets AWS_ENDPOINT_URL and an access key for S3 tools and SDKs.\n"
            );
            println!(
                "`manta-adm status --dir {d}` shows every service; `manta-adm down --dir {d}` stops them"
            );
        }
        Cmd::Status { dir, config, json } => {
            let report = match config {
                Some(config) => host::status(&config).await?,
                None => Region::open_existing(&dir.dir)?.report().await,
            };
            report.print(json)?;
        }
        Cmd::Region(cmd) => region_cmd(cmd).await?,
        Cmd::Host(cmd) => host_cmd(cmd).await?,
        Cmd::Down(DirArg { dir }) => {
            let region = Region::open_existing(&dir)?;
            region.down();
        }
        Cmd::Destroy { dir, yes } => {
            let region = Region::open_existing(&dir.dir)?;
            if !yes {
                bail!(
                    "this stops the region in {} and deletes it with all its data; run again \
                     with --yes to do it",
                    region.dir().display()
                );
            }
            region.destroy()?;
        }
        Cmd::Supervise {
            dir,
            name,
            exec_as,
            argv,
        } => {
            let program = supervise::Program {
                name,
                argv,
                exec_as,
            };
            supervise::supervise_one(program, &dir).await?;
        }
        Cmd::Setup(target) => {
            target.setup().await?;
            println!("metadata buckets ready");
        }
        Cmd::Image(ImageCmd::Import {
            name,
            file,
            registry,
        }) => image::import(&name, &file, registry.as_deref()).await?,
        Cmd::Image(ImageCmd::List { registry }) => image::list(registry.as_deref()).await?,
        Cmd::Storage(cmd) => {
            let (node, target) = match &cmd {
                StorageCmd::Evacuate { node, target }
                | StorageCmd::Retire { node, target }
                | StorageCmd::Restore { node, target } => (node, target),
            };
            let system = target.sharded().await?.system();
            let said = match &cmd {
                StorageCmd::Evacuate { .. } => storage::evacuate(&system, node).await,
                StorageCmd::Retire { .. } => storage::retire(&system, node).await,
                StorageCmd::Restore { .. } => storage::restore(&system, node).await,
            };
            match said {
                Ok(s) => println!("{s}"),
                Err(e) => bail!("{e:#}"),
            }
        }
        Cmd::S3Key(cmd) => {
            if let Err(e) = s3_key(cmd).await {
                bail!("{e:#}");
            }
        }
        Cmd::Account(cmd) => {
            if let Err(e) = account(cmd).await {
                bail!("{e:#}");
            }
        }
        Cmd::User(cmd) => {
            if let Err(e) = access(Access::User(cmd)).await {
                bail!("{e:#}");
            }
        }
        Cmd::Role(cmd) => {
            if let Err(e) = access(Access::Role(cmd)).await {
                bail!("{e:#}");
            }
        }
        Cmd::Policy(cmd) => {
            if let Err(e) = access(Access::Policy(cmd)).await {
                bail!("{e:#}");
            }
        }
    }
    Ok(())
}
