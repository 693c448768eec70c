//! `jobs-tool`: the in-container tools (`mcat`, `mpipe`, `msplit`, `mtee`, `mget`, `mput`,
//! `mls`) and `lackey`, picked by the name the binary is called as, or by its first argument
//! (`jobs-tool mpipe -r 1`). See `jobs::tools`.

use std::process::ExitCode;

fn main() -> ExitCode {
    manta_util::cli::exit_quietly_on_closed_pipe();
    let mut args: Vec<String> = std::env::args().collect();
    let argv0 = args.first().cloned().unwrap_or_default();
    let name = std::path::Path::new(&argv0)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if name == "jobs-tool" {
        if args.len() < 2 {
            eprintln!(
                "usage: jobs-tool TOOL [ARGS...] (tools: mcat mpipe msplit mtee mget mput mls lackey)"
            );
            return ExitCode::from(2);
        }
        let tool = args.remove(1);
        return jobs::tools::main(&tool, &args[1..]);
    }
    jobs::tools::main(&name, &args[1..])
}
