//! Client tools the tests drive besides our own: boto3 and the AWS CLI (from PyPI into a
//! virtualenv under `target/`), the original npm `manta` client (installed under `target/node-manta` by
//! `./run-tests`), and Debian-packaged tools that must be present.

use std::path::{Path, PathBuf};
use std::process::Command;

/// `target/` (beside the test binary's `debug/deps/`).
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    exe.ancestors()
        .find(|p| p.file_name().is_some_and(|n| n == "target"))
        .map(Path::to_path_buf)
        .unwrap_or_else(|| exe.parent().map(Path::to_path_buf).unwrap_or_default())
}

/// Panics, naming the Debian package to install, unless `tool` is on `PATH`.
pub fn require(tool: &str, package: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "{tool} is not installed: install the Debian package {package} (./run-tests does)"
    );
}

/// The virtualenv of the Python S3 tools (boto3, and the AWS CLI `aws`), made once under
/// `target/` (serialised with a lock file so parallel tests share it).
fn s3_tools_venv() -> PathBuf {
    let venv = target_dir().join("s3-tools-venv");
    let ready = venv.join(".s3-tools-ready");
    let lock = target_dir().join("s3-tools-venv.lock");
    crate::process::run_ok(Command::new("flock").arg(&lock).arg("sh").arg("-c").arg(format!(
        "test -e {ready} || {{ python3 -m venv {venv} && {venv}/bin/pip install --quiet --disable-pip-version-check 'boto3>=1.34' 'awscli>=1.32' && touch {ready}; }}",
        ready = ready.display(),
        venv = venv.display(),
    )));
    venv
}

/// A Python with boto3.
pub fn boto3_python() -> PathBuf {
    s3_tools_venv().join("bin/python")
}

/// The AWS CLI (`aws s3 sync`, `aws s3api ...`).
pub fn aws_cli() -> PathBuf {
    s3_tools_venv().join("bin/aws")
}

/// The original npm client's `tool` (`mls`, `mput`, ...); panics when it is not installed.
pub fn node_manta(tool: &str) -> PathBuf {
    let p = target_dir()
        .join("node-manta/node_modules/manta/bin")
        .join(tool);
    assert!(
        p.exists(),
        "the manta npm client is not installed at {} (./run-tests installs it)",
        p.display()
    );
    p
}
