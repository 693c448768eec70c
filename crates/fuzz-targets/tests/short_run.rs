//! The short fuzz run of the test suite: every target over every seed of its corpus
//! (`tests/fuzz/corpus/<target>/`), then over inputs mutated from those seeds by a seeded
//! generator (bit flips, byte changes, inserts, deletes, repeats, splices, interesting values
//! and tokens), so every run exercises every target the same way. The long run is
//! `scripts/fuzz` (cargo fuzz, libFuzzer).
//!
//! A failing input is written to `target/fuzz-short-run/<target>/` and named in the failure;
//! `cargo +nightly fuzz run --fuzz-dir tests/fuzz -s none --target-dir target/fuzz/build <target>
//! <file>` replays it.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use fuzz_targets::{TARGETS, Target, raw_request};

/// Mutated inputs per target and run (a few seconds for all of them in a debug build).
const MUTATIONS: usize = 20_000;
/// Longest mutated input.
const MAX_LEN: usize = 4096;

/// xorshift64*: small, seeded, the same on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Values and tokens that tend to reach edges: bounds of integers, escapes, separators, the
/// grammar's own punctuation, encodings.
const TOKENS: &[&[u8]] = &[
    b"0",
    b"-1",
    b"-",
    b"18446744073709551615",
    b"18446744073709551616",
    b"9223372036854775807",
    b"99999999999999999999999",
    b"1e999",
    b"%",
    b"%2F",
    b"%ff",
    b"%00",
    b"%C3%A9",
    b"\\",
    b"\"",
    b"'",
    b"(",
    b")",
    b"*",
    b"&",
    b"|",
    b"!",
    b"=",
    b",",
    b";",
    b":",
    b"?",
    b"/",
    b"//",
    b"..",
    b".",
    b"[",
    b"]",
    b"{",
    b"}",
    b"<",
    b">",
    b"</",
    b"/>",
    b"&amp;",
    b"&#x0;",
    b"<![CDATA[",
    b"\0",
    b"\n",
    b"\r\n",
    b" ",
    b"\t",
    b"\xff",
    b"\xc3\xa9",
    b"\xf0\x9f\x92\xa9",
    b"null",
    b"true",
    b"[]",
    b"{}",
    b"bytes=",
    b"Signature ",
    b"AWS4-HMAC-SHA256 ",
    b"AWS ",
    b"keyId=",
    b"signature=",
];

fn mutate(rng: &mut Rng, seeds: &[Vec<u8>], mut v: Vec<u8>) -> Vec<u8> {
    for _ in 0..=rng.below(4) {
        let len = v.len();
        match rng.below(10) {
            0 if len > 0 => {
                let i = rng.below(len);
                v[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                v[i] = rng.next() as u8;
            }
            2 => {
                let i = rng.below(len + 1);
                let n = 1 + rng.below(8);
                let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                v.splice(i..i, bytes);
            }
            3 if len > 0 => {
                let i = rng.below(len);
                let n = 1 + rng.below((len - i).min(16));
                v.drain(i..i + n);
            }
            4 if len > 0 => {
                // repeat a piece
                let i = rng.below(len);
                let n = 1 + rng.below((len - i).min(32));
                let piece = v[i..i + n].to_vec();
                let most = if rng.below(8) == 0 { 200 } else { 4 };
                let times = 1 + rng.below(most);
                let at = rng.below(len + 1);
                v.splice(at..at, piece.repeat(times));
            }
            5 => {
                // splice with another seed
                let other = &seeds[rng.below(seeds.len())];
                let a = rng.below(v.len() + 1);
                let b = rng.below(other.len() + 1);
                v.truncate(a);
                v.extend_from_slice(&other[b..]);
            }
            6 | 7 => {
                let t = TOKENS[rng.below(TOKENS.len())];
                let i = rng.below(len + 1);
                if rng.below(2) == 0 || len == 0 {
                    v.splice(i..i, t.iter().copied());
                } else {
                    let end = (i + t.len()).min(len);
                    v.splice(i..end, t.iter().copied());
                }
            }
            8 if len > 0 => v.truncate(rng.below(len)),
            _ if len > 1 => {
                // swap two bytes
                let (i, j) = (rng.below(len), rng.below(len));
                v.swap(i, j);
            }
            _ => v.push(rng.next() as u8),
        }
    }
    v.truncate(MAX_LEN);
    v
}

fn corpus_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fuzz/corpus")
        .join(name)
}

fn seeds_of(name: &str) -> Vec<Vec<u8>> {
    let dir = corpus_dir(name);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("a directory entry").path())
        .collect();
    files.sort();
    files
        .iter()
        .map(|f| std::fs::read(f).expect("a seed"))
        .collect()
}

/// Runs `target` over `seeds` and `mutations` inputs mutated from them; on a panic, keeps
/// the input and says where (`Err`).
fn run(name: &str, target: Target, seeds: &[Vec<u8>], mutations: usize) -> Result<(), String> {
    assert!(!seeds.is_empty(), "{name} has no seeds");
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ name.len() as u64);
    let mut last = seeds[0].clone();
    for i in 0..seeds.len() + mutations {
        let input = if i < seeds.len() {
            seeds[i].clone()
        } else if rng.below(4) == 0 {
            mutate(&mut rng, seeds, last.clone())
        } else {
            let seed = seeds[rng.below(seeds.len())].clone();
            mutate(&mut rng, seeds, seed)
        };
        if catch_unwind(AssertUnwindSafe(|| target(&input))).is_err() {
            let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../target/fuzz-short-run")
                .join(name);
            let _ = std::fs::create_dir_all(&dir);
            let file = dir.join(format!("input-{i}"));
            let _ = std::fs::write(&file, &input);
            return Err(format!(
                "{name} failed on input {i} ({:?}), kept as {}",
                String::from_utf8_lossy(&input),
                file.display()
            ));
        }
        last = input;
    }
    Ok(())
}

fn short_run(name: &str) {
    let target = fuzz_targets::target(name).expect("a target");
    let mut seeds = seeds_of(name);
    if name == "authenticate" {
        seeds.extend(signed::seeds());
    }
    if let Err(e) = run(name, target, &seeds, MUTATIONS) {
        panic!("{e}");
    }
}

macro_rules! short_runs {
    ($($name:ident),* $(,)?) => {
        $(#[test] fn $name() { short_run(stringify!($name)); })*

        #[test]
        fn every_target_has_a_short_run() {
            let names = [$(stringify!($name)),*];
            for (t, _) in TARGETS {
                assert!(names.contains(t), "{t} has no short run");
            }
        }
    };
}

short_runs!(
    oci_image,
    manta_path,
    http_signature,
    presigned_url,
    authenticate,
    moray_filter,
    job_spec,
    range_header,
    s3_xml,
    s3_request,
    tagging_header,
    bucket_policy,
    policy_rule,
    checksum_attribute,
);

#[test]
fn a_panicking_target_fails_the_run() {
    fn fragile(data: &[u8]) {
        assert!(!data.contains(&b'!'), "found it");
    }
    let err = run("fragile", fragile, &[b"hello".to_vec()], 10_000);
    assert!(err.is_err_and(|e| e.contains("fragile failed")));
}

#[test]
fn every_target_has_seeds_and_a_cargo_fuzz_binary() {
    for (name, _) in TARGETS {
        assert!(!seeds_of(name).is_empty(), "{name}");
        let bin = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/fuzz/fuzz_targets")
            .join(format!("{name}.rs"));
        let text = std::fs::read_to_string(&bin).unwrap_or_else(|e| panic!("{bin:?}: {e}"));
        assert!(text.contains(&format!("::{name}(data)")), "{bin:?}");
    }
}

/// Requests signed with the `fuzz` account's Ed25519 key (a key made for these tests only),
/// so the short run gets past signature checks; `write_signed_seeds` puts them in the corpus.
mod signed {
    use fuzz_targets::auth::{FUZZ_UUID, TOKEN_SECRET};
    use manta_auth::presign::PresignRequest;
    use manta_auth::{AccountKey, KeySigner, TokenClaims, TokenKey};

    use super::raw_request;

    const PRIVATE: &str = "-----BEGIN OPENSSH PRIVATE KEY-----
b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW
QyNTUxOQAAACBhAfQB8srbO6u8lGNmowQpkBOtnXh+wPKLdkjnFNJ6ugAAAJBg5qHzYOah
8wAAAAtzc2gtZWQyNTUxOQAAACBhAfQB8srbO6u8lGNmowQpkBOtnXh+wPKLdkjnFNJ6ug
AAAEBGGsdbNU3zngahNzdKpMu6WjkjyqDehEvyJKohXRrVxmEB9AHyyts7q7yUY2ajBCmQ
E62deH7A8ot2SOcU0nq6AAAADWZ1enotdGVzdC1rZXk=
-----END OPENSSH PRIVATE KEY-----
";

    fn sign(signer: &KeySigner, data: &str) -> String {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime");
        rt.block_on(signer.sign(data.as_bytes()))
            .expect("a signature")
    }

    /// (file name, input)
    pub fn named() -> Vec<(&'static str, Vec<u8>)> {
        let signer = KeySigner::from_pem(PRIVATE).expect("the test key");
        let fp = AccountKey::from_openssh(fuzz_targets::auth::ED25519_KEY, None)
            .expect("the public key")
            .fingerprint;
        let key_id = format!("/fuzz/keys/{fp}");
        let date = httpdate::fmt_http_date(fuzz_targets::now());
        let mut out = Vec::new();

        let sig = sign(&signer, &format!("date: {date}"));
        let authz = format!(
            "Signature keyId=\"{key_id}\",algorithm=\"ed25519-sha512\",headers=\"date\",signature=\"{sig}\""
        );
        out.push((
            "signed-date",
            raw_request(
                "GET",
                "/fuzz/stor/a.txt",
                &[("date", &date), ("authorization", &authz)],
                b"",
            ),
        ));

        let target = "/fuzz/stor/dir?limit=10";
        let sig = sign(
            &signer,
            &format!("(request-target): put {target}\ndate: {date}"),
        );
        let authz = format!(
            "Signature keyId=\"{key_id}\",algorithm=\"ed25519-sha512\",headers=\"(request-target) date\",signature=\"{sig}\""
        );
        out.push((
            "signed-request-target",
            raw_request(
                "PUT",
                target,
                &[("date", &date), ("authorization", &authz)],
                b"",
            ),
        ));

        let host = "manta.fuzz.example";
        let req = PresignRequest {
            methods: vec!["GET".into(), "HEAD".into()],
            host,
            path: "/fuzz/stor/a%20b.txt",
            key_id: &key_id,
            algorithm: "ED25519-SHA512",
            expires: fuzz_targets::NOW_SECS + 3600,
            role: None,
        };
        let (params, line) = req.to_sign();
        let sig = sign(&signer, &line);
        out.push((
            "presigned",
            raw_request("HEAD", &req.url_path(&params, &sig), &[("host", host)], b""),
        ));

        let token = TokenKey::new(TOKEN_SECRET).issue(&TokenClaims {
            uuid: FUZZ_UUID.into(),
            login: "fuzz".into(),
            expires: fuzz_targets::NOW_SECS + 60,
            purpose: "job".into(),
        });
        out.push((
            "token",
            raw_request(
                "GET",
                "/fuzz/stor",
                &[("authorization", &format!("Token {token}"))],
                b"",
            ),
        ));
        out
    }

    pub fn seeds() -> Vec<Vec<u8>> {
        named().into_iter().map(|(_, v)| v).collect()
    }

    #[test]
    fn signed_seeds_authenticate() {
        use manta_auth::Caller;
        for (name, input) in named() {
            // The target asserts what a request that authenticates must be; here, that these
            // do authenticate (else they would not get the fuzzer past the signature checks).
            fuzz_targets::auth::authenticate(&input);
            assert!(
                matches!(
                    fuzz_targets::auth::caller_of(&input),
                    Some(Caller::Account { .. })
                ),
                "{name}"
            );
        }
    }

    /// Writes the signed seeds into the corpus (`cargo test -p fuzz-targets -- --ignored`).
    #[test]
    #[ignore = "writes the corpus"]
    fn write_signed_seeds() {
        let dir = super::corpus_dir("authenticate");
        for (name, input) in named() {
            std::fs::write(dir.join(name), input).expect("written");
        }
    }
}
