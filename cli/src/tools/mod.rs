//! The `manta` command line tools in one multi-call binary.
//!
//! Invoked through a link named after a tool (`mput`, `mget`, `mls`, ...) it runs that tool;
//! invoked as `manta <tool> ...` it does the same. `manta install-links DIR` makes the links.
//! The flags, output formats, environment variables (`MANTA_URL`, `MANTA_USER`,
//! `MANTA_KEY_ID`, `MANTA_SUBUSER`, `MANTA_ROLE`, `MANTA_TLS_INSECURE`) and exit codes follow
//! the original node-manta tools; recursive `mput -r`/`mget -r` and `msync` add parallel tree
//! transfers.
//!
//! # Layout
//! - [`common`]: connection options, path resolution (`~~`, relative paths under `~~/stor`),
//!   header parsing, error reporting, sizes, progress bars.
//! - one module per tool: [`ls`] (`mls`), [`put`] (`mput`), [`get`] (`mget`), [`find`]
//!   (`mfind`), [`sign`] (`msign`), [`info`] (`minfo`, `mmd5`), [`simple`] (`mmkdir`,
//!   `mrmdir`, `mrm`, `mln`, `mchattr`), [`sync`] (`msync`), [`untar`] (`muntar`), [`login`]
//!   (`mlogin`); [`mime`] guesses content types for `mput` and `muntar`.
//!
//! # Guarantees
//! - Exit code 0 when everything asked for was done, 1 otherwise (usage errors included);
//!   each failure is printed to stderr as `<tool>: <Code>: <message>`, the message naming the
//!   path (`mget: ResourceNotFound: /jill/stor/nope was not found`).
//! - Progress bars go to stderr only when it is a terminal (or with `--progress`), never into
//!   a pipe; stdout carries only the tool's output.
//! - Downloads land in a temporary file beside the target and are renamed into place once
//!   complete and checked, so a failed transfer never leaves a partial file under the
//!   target's name.
//!
//! # Example
//! ```text
//! $ manta install-links ~/bin
//! $ mmkdir -p ~~/stor/photos && mput -f cat.jpg ~~/stor/photos
//! $ mls -l ~~/stor/photos
//! -rwxr-xr-x 1 jill         48213 Mar 02 10:14 cat.jpg
//! ```

use std::process::ExitCode;

pub mod common;
pub mod find;
pub mod get;
pub mod info;
pub mod login;
pub mod ls;
pub mod mime;
pub mod put;
pub mod sign;
pub mod simple;
pub mod sync;
pub mod untar;

/// The tools, by the name they are invoked as.
pub const TOOLS: &[(&str, &str)] = &[
    (
        "mchattr",
        "change an object's or directory's stored headers",
    ),
    ("mchmod", "change the role tags of objects or directories"),
    (
        "mfind",
        "walk a directory tree, printing entries that match",
    ),
    ("mget", "download objects (or a tree with -r)"),
    ("minfo", "show an object's or directory's HTTP headers"),
    ("mjob", "create and manage compute jobs"),
    ("mln", "make a SnapLink of an object"),
    ("mlogin", "open a shell in a compute container on an object"),
    ("mls", "list directories"),
    ("mmd5", "print the MD5 the server holds for objects"),
    ("mmkdir", "make directories"),
    ("mput", "upload an object (or a tree with -r)"),
    ("mrm", "remove objects (or trees with -r)"),
    ("mrmdir", "remove empty directories"),
    ("msign", "make a presigned URL"),
    ("muntar", "extract a local tar archive into a directory"),
    (
        "msync",
        "synchronise a local directory and a Manta directory",
    ),
];

fn usage() -> String {
    let mut s = String::from(
        "usage: manta <tool> [OPTIONS] ARGS...\n       <tool> [OPTIONS] ARGS...   (through a link named after the tool)\n       manta install-links DIR    (make those links in DIR)\n\ntools:\n",
    );
    for (name, what) in TOOLS {
        s.push_str(&format!("    {name:<8} {what}\n"));
    }
    s.push_str("\nRun `manta <tool> --help` for a tool's options.\n");
    s
}

/// Runs the tool named by `argv[0]`'s file name, or by `argv[1]` when invoked as `manta`.
pub fn main(argv: Vec<String>) -> ExitCode {
    let argv0 = argv.first().map(String::as_str).unwrap_or("manta");
    let name = std::path::Path::new(argv0)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("manta")
        .to_owned();
    if name == "manta" || name.starts_with("manta.") || name.starts_with("manta-") {
        return manta(argv);
    }
    dispatch(&name, argv)
}

/// `manta <tool> ...`, `manta install-links DIR`, `manta --help`.
fn manta(argv: Vec<String>) -> ExitCode {
    let mut rest = argv.into_iter().skip(1);
    match rest.next().as_deref() {
        None => {
            eprint!("{}", usage());
            ExitCode::from(1)
        }
        Some("-h" | "--help" | "help") => {
            print!("{}", usage());
            ExitCode::SUCCESS
        }
        Some("--version" | "-V") => {
            println!("manta {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Some("install-links") => install_links(rest.collect()),
        Some(tool) => {
            let tool = tool.to_owned();
            let mut args = vec![tool.clone()];
            args.extend(rest);
            dispatch(&tool, args)
        }
    }
}

fn dispatch(tool: &str, args: Vec<String>) -> ExitCode {
    match tool {
        "mls" => ls::main(args),
        "mput" => put::main(args),
        "mget" => get::main(args),
        "mfind" => find::main(args),
        "msign" => sign::main(args),
        "minfo" => info::main(args),
        "mmd5" => info::mmd5(args),
        "muntar" => untar::main(args),
        "mmkdir" => simple::mmkdir(args),
        "mrmdir" => simple::mrmdir(args),
        "mrm" => simple::mrm(args),
        "mln" => simple::mln(args),
        "mchattr" => simple::mchattr(args),
        "mchmod" => simple::mchmod(args),
        "msync" => sync::main(args),
        "mjob" => crate::mjob::main(args),
        "mlogin" => login::main(args),
        other => {
            eprintln!("manta: unknown tool {other:?}\n\n{}", usage());
            ExitCode::from(1)
        }
    }
}

/// `manta install-links DIR`: a symlink per tool in DIR pointing at this binary. Existing
/// links are replaced; anything else with a tool's name is left alone and reported.
fn install_links(args: Vec<String>) -> ExitCode {
    let [dir] = args.as_slice() else {
        eprintln!("usage: manta install-links DIR");
        return ExitCode::from(1);
    };
    let dir = std::path::Path::new(dir);
    let exe = match std::env::current_exe().and_then(|e| e.canonicalize()) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("manta: cannot find this program's path: {e}");
            return ExitCode::from(1);
        }
    };
    if let Err(e) = std::fs::create_dir_all(dir) {
        eprintln!("manta: {}: {e}", dir.display());
        return ExitCode::from(1);
    }
    let mut failed = false;
    for (name, _) in TOOLS {
        let link = dir.join(name);
        match std::fs::symlink_metadata(&link) {
            Ok(m) if m.file_type().is_symlink() => {
                if let Err(e) = std::fs::remove_file(&link) {
                    eprintln!("manta: {}: {e}", link.display());
                    failed = true;
                    continue;
                }
            }
            Ok(_) => {
                eprintln!(
                    "manta: {} exists and is not a link; left alone",
                    link.display()
                );
                failed = true;
                continue;
            }
            Err(_) => {}
        }
        if let Err(e) = std::os::unix::fs::symlink(&exe, &link) {
            eprintln!("manta: {}: {e}", link.display());
            failed = true;
        }
    }
    if failed {
        ExitCode::from(1)
    } else {
        println!(
            "linked {} tools in {} to {}",
            TOOLS.len(),
            dir.display(),
            exe.display()
        );
        ExitCode::SUCCESS
    }
}
