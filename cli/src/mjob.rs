//! `mjob`: create and manage compute jobs (the original node-manta tool's commands and flags).
//!
//! ```text
//! mjob create [-f job.json | -m MAP | -r REDUCE | 'map ^ map ^^ reduce'] [--count N]
//!             [--memory MB] [--disk GB] [--init CMD] [--image PATH|NAME] [-s ASSET] [-n NAME]
//!             [-w] [-o] [--open | --close] [-b N] [--dry-run]
//! mjob addinputs [-o|--open] [-b N] JOB      (paths on stdin)
//! mjob close JOB | cancel JOB... | get JOB | watch JOB
//! mjob inputs | outputs | errors | failures JOB
//! mjob list [-l] [-s STATE] [-n NAME]       (every job, page after page)
//! ```
//!
//! In an expression, `^` starts a map phase and `^^` a reduce phase; each caret past two
//! counts one reducer (`wc ^^^^ cat`: two reducers), as in the original.
//!
//! Per-phase options (`--count`, `--memory`, `--disk`, `--init`, `--image`, `-s`) apply to the
//! phase given next (`-m`/`-r`), as in the original. When stdin is not a terminal, `create`
//! reads input paths from it and then ends the job's input (`--open` keeps it open); from a
//! terminal it leaves the input open for `mjob addinputs` (`--close` ends it at once). Inputs
//! are sent `-b` at a time (1,000 by default). `--dry-run` prints the job it would create and
//! creates nothing. `-w` waits for the job and exits 1 if it had errors; `-o` also prints
//! every output.

use std::io::{BufRead as _, IsTerminal as _, Write as _};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail};
use clap::Parser;
use manta_client::MantaClient;
use serde_json::{Value, json};

use crate::tools::common::{Conn, parse, parse_and_run, resolve, run};

const USAGE: &str = "usage: mjob COMMAND [OPTIONS] [ARGS]

commands:
  create     create a job (-m MAP, -r REDUCE, -f FILE or a 'cmd ^ cmd ^^ cmd' expression)
  addinputs  add input paths (from stdin) to a job, then close its input unless --open
  close      end a job's input
  cancel     cancel jobs
  get        show a job's status
  watch      wait for a job to finish (alias: wait)
  inputs     list a job's inputs
  outputs    list a job's outputs
  errors     list a job's errors
  failures   list inputs whose processing failed
  list       list jobs";

/// The `mjob` entry point; `args[0]` is the program name.
pub fn main(args: Vec<String>) -> ExitCode {
    let Some(cmd) = args.get(1).cloned() else {
        eprintln!("{USAGE}");
        return ExitCode::from(1);
    };
    let rest: Vec<String> = std::iter::once(format!("mjob {cmd}"))
        .chain(args.iter().skip(2).cloned())
        .collect();
    match cmd.as_str() {
        "create" => create(rest),
        "addinputs" => addinputs(rest),
        "close" | "cancel" | "get" | "watch" | "wait" | "inputs" | "outputs" | "errors"
        | "failures" => one_job(&cmd, rest),
        "list" => list(rest),
        "-h" | "--help" | "help" => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        other => {
            eprintln!("mjob: unknown command {other:?}\n\n{USAGE}");
            ExitCode::from(1)
        }
    }
}

/// One phase being assembled from the command line.
#[derive(Debug, Default, Clone)]
struct Next {
    count: Option<u64>,
    memory: Option<u64>,
    disk: Option<u64>,
    init: Option<String>,
    image: Option<String>,
    assets: Vec<String>,
}

impl Next {
    fn phase(&mut self, kind: &str, exec: &str) -> Value {
        let n = std::mem::take(self);
        let mut p = json!({"type": kind, "exec": exec});
        if let Some(c) = n.count.filter(|_| kind == "reduce") {
            p["count"] = c.into();
        }
        if let Some(m) = n.memory {
            p["memory"] = m.into();
        }
        if let Some(d) = n.disk {
            p["disk"] = d.into();
        }
        if let Some(i) = n.init {
            p["init"] = i.into();
        }
        if let Some(i) = n.image {
            p["image"] = i.into();
        }
        if !n.assets.is_empty() {
            p["assets"] = n.assets.into();
        }
        p
    }
}

#[derive(Debug, Default)]
struct CreateOpts {
    job: Option<Value>,
    phases: Vec<Value>,
    expr: Vec<String>,
    name: String,
    watch: bool,
    cat: bool,
    /// `--open` (`Some(true)`) or `--close` (`Some(false)`); by default, open from a terminal.
    open: Option<bool>,
    batch: Option<usize>,
    dry_run: bool,
    conn_args: Vec<String>,
}

/// Parses `create`'s arguments in order (per-phase options attach to the next phase).
fn parse_create(args: &[String], account: &dyn Fn() -> Result<String>) -> Result<CreateOpts> {
    let mut o = CreateOpts::default();
    let mut next = Next::default();
    let mut it = args.iter().skip(1);
    let num = |v: Option<&String>, f: &str| -> Result<u64> {
        v.ok_or_else(|| anyhow!("{f} needs a value"))?
            .parse()
            .map_err(|_| anyhow!("{f} needs a number"))
    };
    while let Some(a) = it.next() {
        match a.as_str() {
            "-m" | "--map" => {
                let e = it.next().ok_or_else(|| anyhow!("-m needs a command"))?;
                o.phases.push(next.phase("map", e));
            }
            "-r" | "--reduce" => {
                let e = it.next().ok_or_else(|| anyhow!("-r needs a command"))?;
                o.phases.push(next.phase("reduce", e));
            }
            "-f" | "--file" => {
                let f = it.next().ok_or_else(|| anyhow!("-f needs a file"))?;
                let text = std::fs::read_to_string(f).with_context(|| format!("read {f}"))?;
                o.job = Some(serde_json::from_str(&text).with_context(|| format!("parse {f}"))?);
            }
            "--count" | "-c" => next.count = Some(num(it.next(), "--count")?),
            "--memory" => next.memory = Some(num(it.next(), "--memory")?),
            "--disk" => next.disk = Some(num(it.next(), "--disk")?),
            "--init" => {
                next.init = Some(
                    it.next()
                        .ok_or_else(|| anyhow!("--init needs a command"))?
                        .clone(),
                );
            }
            "--image" => {
                next.image = Some(
                    it.next()
                        .ok_or_else(|| anyhow!("--image needs an image path or name"))?
                        .clone(),
                );
            }
            "-b" | "--batch" => o.batch = Some(batch_size(it.next())?),
            "--dry-run" => o.dry_run = true,
            "-s" | "--asset" => {
                let p = it.next().ok_or_else(|| anyhow!("-s needs a path"))?;
                next.assets.push(resolve(p, &account()?)?);
            }
            "-n" | "--name" => {
                o.name = it.next().ok_or_else(|| anyhow!("-n needs a name"))?.clone()
            }
            "-w" | "--watch" => o.watch = true,
            "-o" | "--cat-outputs" => {
                o.cat = true;
                o.watch = true;
            }
            "--open" => o.open = Some(true),
            "--close" => o.open = Some(false),
            "-q" | "--quiet" => {}
            "-a" | "--account" | "-u" | "--url" | "-k" | "--keyId" | "--user" | "--role" => {
                o.conn_args.push(a.clone());
                o.conn_args.push(
                    it.next()
                        .ok_or_else(|| anyhow!("{a} needs a value"))?
                        .clone(),
                );
            }
            "-i" | "--insecure" | "-v" | "--verbose" => o.conn_args.push(a.clone()),
            s if s.starts_with('-') && s.len() > 1 => bail!("unknown option {s}"),
            s => o.expr.push(s.to_owned()),
        }
    }
    if o.job.is_none() && o.phases.is_empty() && !o.expr.is_empty() {
        // "map ^ map ^^ reduce": `^` separates map phases, `^^` starts a reduce phase, and
        // each caret past two asks for one reducer (`^^^^`: two reducers).
        let expr = o.expr.join(" ");
        let mut kind = "map";
        let mut count = None;
        let mut cur = String::new();
        let mut phases = Vec::new();
        for w in expr.split(' ') {
            if !w.is_empty() && w.bytes().all(|b| b == b'^') {
                phases.push((kind, cur.trim().to_owned(), count));
                cur.clear();
                (kind, count) = match w.len() {
                    1 => ("map", None),
                    2 => ("reduce", None),
                    n => ("reduce", Some(n as u64 - 2)),
                };
            } else {
                cur.push_str(w);
                cur.push(' ');
            }
        }
        phases.push((kind, cur.trim().to_owned(), count));
        for (k, e, count) in phases {
            if e.is_empty() {
                bail!("empty phase in {expr:?}");
            }
            let mut n = next.clone();
            n.count = count.or(n.count);
            o.phases.push(n.phase(k, &e));
        }
    }
    Ok(o)
}

/// Inputs sent in one request by default.
const DEFAULT_BATCH: u32 = 1000;

fn batch_size(v: Option<&String>) -> Result<usize> {
    let v = v.ok_or_else(|| anyhow!("-b needs a number"))?;
    match v.parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => bail!("-b needs a positive number, not {v:?}"),
    }
}

#[derive(Debug, Parser)]
#[command(name = "mjob", disable_help_subcommand = true)]
struct JobArgs {
    #[command(flatten)]
    conn: Conn,
    /// Job ids.
    #[arg(required = true)]
    jobs: Vec<String>,
    /// Keep the job's input open after adding (addinputs).
    #[arg(short = 'o', long)]
    open: bool,
    /// Inputs sent in one request (addinputs).
    #[arg(short = 'b', long = "batch", default_value_t = DEFAULT_BATCH, value_parser = clap::value_parser!(u32).range(1..))]
    batch: u32,
}

#[derive(Debug, Parser)]
#[command(name = "mjob list")]
struct ListArgs {
    #[command(flatten)]
    conn: Conn,
    /// Only jobs in this state (running, done).
    #[arg(short = 's', long = "state")]
    state: Option<String>,
    /// Only jobs of this name.
    #[arg(short = 'n', long = "name")]
    name: Option<String>,
    /// A long listing (as `mls -l` prints directories).
    #[arg(short = 'l', long = "long")]
    long: bool,
}

fn read_inputs(account: &str) -> Result<Vec<String>> {
    let mut v = Vec::new();
    for line in std::io::stdin().lock().lines() {
        let line = line?;
        let l = line.trim();
        if !l.is_empty() {
            v.push(resolve(l, account)?);
        }
    }
    Ok(v)
}

async fn add_all(c: &MantaClient, id: &str, inputs: &[String], batch: usize) -> Result<()> {
    for chunk in inputs.chunks(batch.max(1)) {
        c.add_job_inputs(id, chunk, false).await?;
    }
    Ok(())
}

async fn watch(c: &MantaClient, id: &str) -> Result<Value> {
    let mut delay = Duration::from_millis(100);
    loop {
        let st = c.job_status(id).await?;
        if st["state"] == "done" {
            return Ok(st);
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(2));
    }
}

async fn cat_outputs(c: &MantaClient, id: &str) -> Result<()> {
    for o in c.job_outputs(id).await? {
        let bytes = c.get_bytes(&o).await?;
        let mut out = std::io::stdout().lock();
        out.write_all(&bytes)?;
        out.flush()?;
    }
    Ok(())
}

fn errors_exit(id: &str, st: &Value) -> ExitCode {
    let n = st["stats"]["errors"].as_u64().unwrap_or(0);
    if n > 0 {
        eprintln!(
            "mjob: job {id} had {n} error{}",
            if n > 1 { "s" } else { "" }
        );
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

fn create(args: Vec<String>) -> ExitCode {
    run("mjob", async move {
        // Connection options may appear anywhere; collect them for clap.
        let conn_probe = |extra: &[String]| -> Result<Conn> {
            #[derive(Parser)]
            struct P {
                #[command(flatten)]
                conn: Conn,
            }
            let argv: Vec<String> = std::iter::once("mjob".to_owned())
                .chain(extra.iter().cloned())
                .collect();
            Ok(P::try_parse_from(argv).map_err(|e| anyhow!("{e}"))?.conn)
        };
        let env_conn = conn_probe(&[])?;
        let opts = parse_create(&args, &|| env_conn.account().map(str::to_owned))?;
        let conn = conn_probe(&opts.conn_args)?;
        let account = conn.account()?.to_owned();
        let c = conn.client().await?;
        let job = match opts.job.clone() {
            Some(j) => j,
            None => {
                if opts.phases.is_empty() {
                    bail!("a job needs at least one phase (-m, -r, -f or an expression)");
                }
                json!({"name": opts.name, "phases": opts.phases})
            }
        };
        if opts.dry_run {
            println!("{}", serde_json::to_string_pretty(&job)?);
            return Ok(ExitCode::SUCCESS);
        }
        let terminal = std::io::stdin().is_terminal();
        let id = c.create_job(&job).await?;
        if !terminal {
            let inputs = read_inputs(&account)?;
            add_all(
                &c,
                &id,
                &inputs,
                opts.batch.unwrap_or(DEFAULT_BATCH as usize),
            )
            .await?;
        }
        // From a terminal the inputs come later, by `mjob addinputs`.
        if !opts.open.unwrap_or(terminal) {
            c.end_job_input(&id).await?;
        }
        if !opts.watch {
            println!("{id}");
            return Ok(ExitCode::SUCCESS);
        }
        let st = watch(&c, &id).await?;
        if opts.cat {
            cat_outputs(&c, &id).await?;
        } else {
            println!("{id}");
        }
        Ok(errors_exit(&id, &st))
    })
}

fn addinputs(args: Vec<String>) -> ExitCode {
    parse_and_run("mjob", args, |a: JobArgs| async move {
        let account = a.conn.account()?.to_owned();
        let c = a.conn.client().await?;
        let inputs = read_inputs(&account)?;
        for id in &a.jobs {
            add_all(&c, id, &inputs, a.batch as usize).await?;
            if !a.open {
                c.end_job_input(id).await?;
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

fn one_job(cmd: &str, args: Vec<String>) -> ExitCode {
    let a: JobArgs = match parse(args) {
        Ok(a) => a,
        Err(code) => return code,
    };
    let cmd = cmd.to_owned();
    run("mjob", async move {
        let c = a.conn.client().await?;
        let mut code = ExitCode::SUCCESS;
        let mut out = std::io::stdout().lock();
        for id in &a.jobs {
            match cmd.as_str() {
                "close" => c.end_job_input(id).await?,
                "cancel" => c.cancel_job(id).await?,
                "get" => writeln!(
                    out,
                    "{}",
                    serde_json::to_string_pretty(&c.job_status(id).await?)?
                )?,
                "watch" | "wait" => {
                    let st = watch(&c, id).await?;
                    writeln!(out, "{}", serde_json::to_string_pretty(&st)?)?;
                    code = errors_exit(id, &st);
                }
                "inputs" | "outputs" | "failures" => {
                    let lines = match cmd.as_str() {
                        "inputs" => c.job_inputs(id).await?,
                        "outputs" => c.job_outputs(id).await?,
                        _ => c.job_failures(id).await?,
                    };
                    lines.iter().try_for_each(|l| writeln!(out, "{l}"))?;
                }
                "errors" => c
                    .job_errors(id)
                    .await?
                    .iter()
                    .try_for_each(|e| writeln!(out, "{e}"))?,
                _ => unreachable!("dispatched above"),
            }
        }
        Ok(code)
    })
}

fn list(args: Vec<String>) -> ExitCode {
    parse_and_run("mjob", args, |a: ListArgs| async move {
        let c = a.conn.client().await?;
        let mut out = std::io::stdout().lock();
        let now = chrono::Local::now();
        for (id, mtime) in c.list_jobs(a.state.as_deref(), a.name.as_deref()).await? {
            if a.long {
                let date = crate::tools::ls::parse_mtime(&mtime)
                    .map(|t| crate::tools::ls::ls_date(t.with_timezone(&chrono::Local), now))
                    .unwrap_or_default();
                writeln!(out, "drwxr-xr-x 1 {} 1 {date} {id}", c.user())
            } else {
                writeln!(out, "{id}/")
            }
            .or_else(crate::tools::ls::ignore_broken_pipe)?;
        }
        Ok(ExitCode::SUCCESS)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| (*x).to_owned()).collect()
    }

    fn acct() -> Result<String> {
        Ok("jill".into())
    }

    #[test]
    fn per_phase_options_attach_to_the_next_phase() {
        let o = parse_create(
            &s(&[
                "mjob create",
                "--memory",
                "2048",
                "-s",
                "~~/stor/a.tgz",
                "-m",
                "wc",
                "--count",
                "2",
                "-r",
                "cat",
                "-w",
            ]),
            &acct,
        )
        .unwrap();
        assert_eq!(o.phases[0]["memory"], 2048);
        assert_eq!(o.phases[0]["assets"][0], "/jill/stor/a.tgz");
        assert_eq!(o.phases[1]["type"], "reduce");
        assert_eq!(o.phases[1]["count"], 2);
        assert!(o.phases[1].get("memory").is_none());
        assert!(o.watch);
    }

    #[test]
    fn expressions_split_into_phases() {
        let o = parse_create(
            &s(&["mjob create", "grep x ^ wc -l ^^ awk '{s+=$1}'"]),
            &acct,
        )
        .unwrap();
        let kinds: Vec<&str> = o
            .phases
            .iter()
            .map(|p| p["type"].as_str().unwrap())
            .collect();
        assert_eq!(kinds, ["map", "map", "reduce"]);
        assert_eq!(o.phases[1]["exec"], "wc -l");
        assert!(o.phases[2].get("count").is_none(), "{:?}", o.phases[2]);
        // Carets past two count reducers.
        let o = parse_create(&s(&["mjob create", "wc ^^^^ cat ^^^ sort"]), &acct).unwrap();
        assert_eq!(o.phases[1]["type"], "reduce");
        assert_eq!(o.phases[1]["count"], 2);
        assert_eq!(o.phases[2]["count"], 1);
        assert_eq!(o.phases[2]["exec"], "sort");
        assert!(parse_create(&s(&["mjob create", "^", "wc"]), &acct).is_err());
        assert!(parse_create(&s(&["mjob create", "--bogus"]), &acct).is_err());
    }
}
