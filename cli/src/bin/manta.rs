//! `manta`: the Manta command line tools in one binary. Run as `mput`, `mget`, `mls`, ...
//! through links (`manta install-links DIR` makes them), or as `manta <tool> ...`.

fn main() -> std::process::ExitCode {
    manta_util::cli::exit_quietly_on_closed_pipe();
    manta_cli::tools::main(
        std::env::args_os()
            .map(|a| a.to_string_lossy().into_owned())
            .collect(),
    )
}
