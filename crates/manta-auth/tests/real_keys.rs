//! Signing and verification with keys made by the real `ssh-keygen`, held in files and in a
//! real `ssh-agent`, against the checks the front door runs.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use manta_auth::httpsig::{SignatureParams, format_authorization};
use manta_auth::presign::PresignRequest;
use manta_auth::{
    Account, AccountKey, AuthError, Authenticator, Caller, KeySigner, MemoryAccounts, RequestInfo,
    TokenClaims, TokenKey,
};
use manta_types::{ErrorCode, HasErrorCode};

fn keygen(dir: &Path, name: &str, args: &[&str]) -> PathBuf {
    let path = dir.join(name);
    let st = Command::new("ssh-keygen")
        .args(args)
        .args(["-q", "-N", "", "-C", name, "-f"])
        .arg(&path)
        .status()
        .expect("run ssh-keygen");
    assert!(st.success());
    path
}

fn ssh_keygen_fingerprint(pubkey: &Path, hash: &str) -> String {
    let out = Command::new("ssh-keygen")
        .args(["-E", hash, "-l", "-f"])
        .arg(pubkey)
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    text.split_whitespace().nth(1).unwrap().to_owned()
}

struct Keys {
    _dir: tempfile::TempDir,
    files: Vec<(String, PathBuf)>,
}

fn keys() -> Keys {
    let dir = tempfile::tempdir().unwrap();
    let files = vec![
        (
            "rsa".to_owned(),
            keygen(dir.path(), "id_rsa", &["-t", "rsa", "-b", "2048"]),
        ),
        (
            "rsa-pem".to_owned(),
            keygen(
                dir.path(),
                "id_rsa_pem",
                &["-t", "rsa", "-b", "2048", "-m", "PEM"],
            ),
        ),
        (
            "ecdsa-256".to_owned(),
            keygen(dir.path(), "id_ecdsa", &["-t", "ecdsa", "-b", "256"]),
        ),
        (
            "ecdsa-384".to_owned(),
            keygen(dir.path(), "id_ecdsa384", &["-t", "ecdsa", "-b", "384"]),
        ),
        (
            "ed25519".to_owned(),
            keygen(dir.path(), "id_ed25519", &["-t", "ed25519"]),
        ),
    ];
    Keys { _dir: dir, files }
}

fn account_with(keys: &[&Path]) -> (Arc<MemoryAccounts>, Account) {
    let mut a = Account::new("jill");
    for k in keys {
        let line = std::fs::read_to_string(k.with_extension("pub")).unwrap();
        a.keys.push(AccountKey::from_openssh(&line, None).unwrap());
    }
    let store = Arc::new(MemoryAccounts::default());
    store.put(a.clone());
    (store, a)
}

async fn signed_request(signer: &KeySigner, login: &str, date: &str) -> String {
    let sig = signer
        .sign(format!("date: {date}").as_bytes())
        .await
        .unwrap();
    format_authorization(&SignatureParams {
        key_id: format!("/{login}/keys/{}", signer.public_key().md5_fingerprint()),
        algorithm: signer.algorithm().to_string(),
        headers: vec!["date".into()],
        signature: sig,
    })
}

fn headers(authz: &str, date: &str) -> http::HeaderMap {
    let mut h = http::HeaderMap::new();
    h.insert("authorization", authz.parse().unwrap());
    h.insert("date", date.parse().unwrap());
    h.insert("host", "localhost".parse().unwrap());
    h
}

/// Authenticates a GET of /jill/stor carrying `authz` and `date`.
async fn auth_get(
    auth: &Authenticator,
    authz: &str,
    date: &str,
    now: SystemTime,
) -> Result<Caller, AuthError> {
    let h = headers(authz, date);
    auth.authenticate(
        &RequestInfo {
            method: "GET",
            path: "/jill/stor",
            query: None,
            headers: &h,
        },
        now,
    )
    .await
}

#[test]
fn fingerprints_match_ssh_keygen() {
    let k = keys();
    for (name, path) in &k.files {
        let line = std::fs::read_to_string(path.with_extension("pub")).unwrap();
        let key = AccountKey::from_openssh(&line, None).unwrap();
        let md5 = ssh_keygen_fingerprint(&path.with_extension("pub"), "md5");
        assert_eq!(format!("MD5:{}", key.fingerprint), md5, "{name}");
        assert_eq!(
            key.sha256,
            ssh_keygen_fingerprint(&path.with_extension("pub"), "sha256"),
            "{name}"
        );
        // The signer loaded from the private half names the same key.
        let signer = KeySigner::from_file(path).unwrap();
        assert_eq!(
            signer.public_key().md5_fingerprint(),
            key.fingerprint,
            "{name}"
        );
    }
}

#[tokio::test]
async fn every_key_type_signs_requests_that_verify() {
    let k = keys();
    let paths: Vec<&Path> = k.files.iter().map(|(_, p)| p.as_path()).collect();
    let (store, account) = account_with(&paths);
    let auth = Authenticator::new(store);
    for (name, path) in &k.files {
        let signer = KeySigner::from_file(path).unwrap();
        let date = manta_auth::http_date_now();
        let authz = signed_request(&signer, "jill", &date).await;
        let caller = auth_get(&auth, &authz, &date, SystemTime::now()).await;
        match caller {
            Ok(Caller::Account { account: a, .. }) => assert_eq!(a.uuid, account.uuid, "{name}"),
            other => panic!("{name}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn refusals_carry_the_right_codes() {
    let k = keys();
    let rsa = &k.files[0].1;
    let ed = &k.files[4].1;
    let (store, _) = account_with(&[rsa]);
    let auth = Authenticator::new(store);
    let signer = KeySigner::from_file(rsa).unwrap();
    let date = manta_auth::http_date_now();
    let check = |r: Result<Caller, AuthError>, code: ErrorCode| match r {
        Err(e) => assert_eq!(e.code(), code, "{e}"),
        Ok(c) => panic!("expected {code}, got {c:?}"),
    };

    // A signature over another date.
    let authz = signed_request(&signer, "jill", "Thu, 01 Jan 2015 00:00:00 GMT").await;
    check(
        auth_get(&auth, &authz, &date, SystemTime::now()).await,
        ErrorCode::InvalidSignature,
    );
    // A correctly signed but stale date.
    let old = httpdate::fmt_http_date(SystemTime::now() - Duration::from_secs(3600));
    let authz = signed_request(&signer, "jill", &old).await;
    check(
        auth_get(&auth, &authz, &old, SystemTime::now()).await,
        ErrorCode::RequestExpired,
    );
    // A signature over the host alone: it would verify with any date, for ever.
    let sig = signer.sign(b"host: localhost").await.unwrap();
    let host_only = format_authorization(&SignatureParams {
        key_id: format!("/jill/keys/{}", signer.public_key().md5_fingerprint()),
        algorithm: signer.algorithm().to_string(),
        headers: vec!["host".into()],
        signature: sig,
    });
    let refused = auth_get(&auth, &host_only, &date, SystemTime::now()).await;
    assert!(
        refused
            .as_ref()
            .is_err_and(|e| e.to_string().contains("must cover the date")),
        "{refused:?}"
    );
    check(refused, ErrorCode::InvalidSignature);
    // A key the account does not have.
    let other = KeySigner::from_file(ed).unwrap();
    let authz = signed_request(&other, "jill", &date).await;
    check(
        auth_get(&auth, &authz, &date, SystemTime::now()).await,
        ErrorCode::KeyDoesNotExist,
    );
    // An account that does not exist.
    let authz = signed_request(&signer, "nobody", &date).await;
    check(
        auth_get(&auth, &authz, &date, SystemTime::now()).await,
        ErrorCode::AccountDoesNotExist,
    );
    // Another scheme; garbage; a bad key id; an algorithm for another key type.
    check(
        auth_get(&auth, "Basic amlsbDpwdw==", &date, SystemTime::now()).await,
        ErrorCode::AuthorizationSchemeNotAllowed,
    );
    check(
        auth_get(&auth, "Signature keyId=", &date, SystemTime::now()).await,
        ErrorCode::InvalidHttpAuthenticationToken,
    );
    let bad_kid = r#"Signature keyId="jill",algorithm="rsa-sha256",signature="eA==""#;
    check(
        auth_get(&auth, bad_kid, &date, SystemTime::now()).await,
        ErrorCode::InvalidKeyId,
    );
    let good = signed_request(&signer, "jill", &date).await;
    let wrong_alg = good.replace("rsa-sha256", "ecdsa-sha256");
    check(
        auth_get(&auth, &wrong_alg, &date, SystemTime::now()).await,
        ErrorCode::InvalidAlgorithm,
    );
    let unknown_alg = good.replace("rsa-sha256", "hmac-sha256");
    check(
        auth_get(&auth, &unknown_alg, &date, SystemTime::now()).await,
        ErrorCode::InvalidAlgorithm,
    );
    // A blocked account.
    let (store, mut acct) = account_with(&[rsa]);
    acct.blocked = true;
    store.put(acct);
    let blocked = Authenticator::new(store);
    check(
        auth_get(&blocked, &good, &date, SystemTime::now()).await,
        ErrorCode::AccountBlocked,
    );
}

#[tokio::test]
async fn presigned_urls() {
    let k = keys();
    let path = &k.files[2].1; // ECDSA: DER signatures through the query string
    let (store, _) = account_with(&[path]);
    let auth = Authenticator::new(store);
    let signer = KeySigner::from_file(path).unwrap();
    let now = SystemTime::now();
    let expires = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    let key_id = format!("/jill/keys/{}", signer.public_key().md5_fingerprint());
    let alg = signer.algorithm().to_string();
    let pr = PresignRequest {
        methods: vec!["GET".into()],
        host: "127.0.0.1:8080",
        path: "/jill/stor/a%20b.txt",
        key_id: &key_id,
        algorithm: &alg,
        expires,
        role: None,
    };
    let (params, line) = pr.to_sign();
    let url = pr.url_path(&params, &signer.sign(line.as_bytes()).await.unwrap());
    let (p, q) = url.split_once('?').unwrap();
    let try_it = |method: &'static str, path: String, host: &'static str, when: SystemTime| {
        let auth = auth.clone();
        let q = q.to_owned();
        async move {
            let mut h = http::HeaderMap::new();
            h.insert("host", host.parse().unwrap());
            let info = RequestInfo {
                method,
                path: &path,
                query: Some(&q),
                headers: &h,
            };
            auth.authenticate(&info, when).await.err().map(|e| e.code())
        }
    };
    assert_eq!(
        try_it("GET", p.to_owned(), "127.0.0.1:8080", now).await,
        None
    );
    // Another method, another path, another host, too late.
    let refused = Some(ErrorCode::InvalidQueryStringAuthentication);
    assert_eq!(
        try_it("PUT", p.to_owned(), "127.0.0.1:8080", now).await,
        refused
    );
    assert_eq!(
        try_it("GET", "/jill/stor/other".to_owned(), "127.0.0.1:8080", now).await,
        refused
    );
    assert_eq!(try_it("GET", p.to_owned(), "evil:1", now).await, refused);
    let later = now + Duration::from_secs(7200);
    assert_eq!(
        try_it("GET", p.to_owned(), "127.0.0.1:8080", later).await,
        refused
    );
}

#[tokio::test]
async fn tokens_act_for_their_account_until_they_expire() {
    let store = Arc::new(MemoryAccounts::default());
    let acct = Account::new("jill");
    store.put(acct.clone());
    let key = TokenKey::new(b"0123456789abcdef0123456789abcdef");
    let auth = Authenticator::new(store).with_tokens(key.clone());
    let now = SystemTime::now();
    let secs = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = TokenClaims {
        uuid: acct.uuid.clone(),
        login: "jill".into(),
        expires: secs + 60,
        purpose: "job x".into(),
    };
    let t = format!("Token {}", key.issue(&claims));
    let date = manta_auth::http_date_now();
    assert!(matches!(
        auth_get(&auth, &t, &date, now).await,
        Ok(Caller::Account { .. })
    ));
    let forged = format!(
        "Token {}",
        TokenKey::new(b"another secret, another mac....").issue(&claims)
    );
    assert_eq!(
        auth_get(&auth, &forged, &date, now)
            .await
            .unwrap_err()
            .code(),
        ErrorCode::InvalidAuthenticationToken
    );
    let later = now + Duration::from_secs(120);
    assert_eq!(
        auth_get(&auth, &t, &date, later).await.unwrap_err().code(),
        ErrorCode::InvalidAuthenticationToken
    );
}

/// An ssh-agent for one test, stopped on drop.
struct Agent {
    child: std::process::Child,
    sock: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_agent(keys: &[&Path]) -> Agent {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("agent.sock");
    let child = Command::new("ssh-agent")
        .arg("-D")
        .arg("-a")
        .arg(&sock)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    for _ in 0..100 {
        if sock.exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    for k in keys {
        let st = Command::new("ssh-add")
            .arg("-q")
            .arg(k)
            .env("SSH_AUTH_SOCK", &sock)
            .status()
            .unwrap();
        assert!(st.success());
    }
    Agent {
        child,
        sock,
        _dir: dir,
    }
}

#[tokio::test]
async fn ssh_agent_keys_sign_requests_that_verify() {
    let k = keys();
    let wanted: Vec<&Path> = k
        .files
        .iter()
        .filter(|(n, _)| n != "rsa-pem")
        .map(|(_, p)| p.as_path())
        .collect();
    let agent = start_agent(&wanted);
    let (store, _) = account_with(&wanted);
    let auth = Authenticator::new(store);
    let ids = manta_auth::signer::agent::identities(&agent.sock)
        .await
        .unwrap();
    assert_eq!(ids.len(), wanted.len());
    for pk in ids {
        let signer = KeySigner::agent(agent.sock.clone(), pk.clone());
        let date = manta_auth::http_date_now();
        let authz = signed_request(&signer, "jill", &date).await;
        let r = auth_get(&auth, &authz, &date, SystemTime::now()).await;
        assert!(
            matches!(r, Ok(Caller::Account { .. })),
            "{:?}: {r:?}",
            pk.kind()
        );
    }
}

#[tokio::test]
async fn find_picks_the_key_named_by_its_fingerprint() {
    let k = keys();
    let dir = k.files[0].1.parent().unwrap();
    let ed = KeySigner::from_file(&k.files[4].1).unwrap();
    let fp = ed.public_key().md5_fingerprint().to_owned();
    let found = KeySigner::find(Some(&fp), dir).await.unwrap();
    assert_eq!(found.public_key().md5_fingerprint(), fp);
    let sha = ed.public_key().sha256_fingerprint().to_owned();
    assert_eq!(
        KeySigner::find(Some(&sha), dir)
            .await
            .unwrap()
            .public_key()
            .md5_fingerprint(),
        fp
    );
    // No key id: the conventional id_ed25519 comes first.
    assert_eq!(
        KeySigner::find(None, dir)
            .await
            .unwrap()
            .public_key()
            .md5_fingerprint(),
        fp
    );
    let err = KeySigner::find(Some("00:11:22"), dir).await.unwrap_err();
    assert!(err.to_string().contains("00:11:22"), "{err}");
}

/// Private scalars come in every length: OpenSSH stores them as minimal big-endian integers, so
/// one ECDSA key in many is shorter than the curve's size (leading zero bytes dropped) or
/// longer (a zero byte added before a high bit). Every one of many fresh keys must load and
/// sign for the public key it claims.
#[test]
fn every_fresh_ecdsa_key_loads() {
    let dir = tempfile::tempdir().unwrap();
    for i in 0..200 {
        for (kind, bits) in [("ecdsa", "256"), ("ecdsa", "384")] {
            let name = format!("k{i}-{kind}{bits}");
            let path = keygen(dir.path(), &name, &["-t", kind, "-b", bits]);
            let line = std::fs::read_to_string(path.with_extension("pub")).unwrap();
            let key = AccountKey::from_openssh(&line, None).unwrap();
            let signer = KeySigner::from_file(&path).unwrap_or_else(|e| {
                panic!("{name}: {e}\n{}", std::fs::read_to_string(&path).unwrap())
            });
            assert_eq!(
                signer.public_key().md5_fingerprint(),
                key.fingerprint,
                "{name}"
            );
        }
    }
}
