//! Everyday S3 tools against a real region: boto3 (from PyPI, installed into a virtualenv
//! under `target/` on first use), s3cmd and rclone (Debian packages `s3cmd`, `rclone`,
//! `python3-venv`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod s3_common;

use std::process::Command;

use s3_common::*;

use testkit::tools::{boto3_python, require};

const BOTO3_SCRIPT: &str = r#"
import os, sys, hashlib, io, urllib.request, urllib.error
import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import ClientError

s3 = boto3.client("s3", endpoint_url=os.environ["S3_ENDPOINT"],
                  aws_access_key_id=os.environ["S3_KEY"],
                  aws_secret_access_key=os.environ["S3_SECRET"],
                  region_name="us-east-1",
                  config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}))

def code(f):
    try:
        f()
    except ClientError as e:
        return e.response["Error"]["Code"], e.response["ResponseMetadata"]["HTTPStatusCode"]
    raise AssertionError("expected an error")

s3.create_bucket(Bucket="boto-bucket")
# Created again by its owner: 200 in us-east-1, as there.
s3.create_bucket(Bucket="boto-bucket")
assert code(lambda: s3.create_bucket(Bucket="bad.-name")) == ("InvalidBucketName", 400)
keys = ["plain", "dir/a", "dir/b", "sp ace", "plus+sign", "amp&er", "pct%25", "uni/\u00e9t\u00e9"]
for k in keys:
    s3.put_object(Bucket="boto-bucket", Key=k, Body=k.encode(), Metadata={"origin": "boto"})
for k in keys:
    o = s3.get_object(Bucket="boto-bucket", Key=k)
    assert o["Body"].read() == k.encode(), k
    assert o["Metadata"] == {"origin": "boto"}, o["Metadata"]

# boto3 asks for EncodingType=url and decodes: keys come back exactly.
listed = [o["Key"] for o in s3.list_objects(Bucket="boto-bucket")["Contents"]]
assert listed == sorted(keys), listed
v2 = s3.list_objects_v2(Bucket="boto-bucket", Delimiter="/")
assert [p["Prefix"] for p in v2["CommonPrefixes"]] == ["dir/", "uni/"], v2
# Asked for explicitly, the encoding is echoed and applied (and not decoded by boto3).
raw = s3.list_objects(Bucket="boto-bucket", Delimiter="/", EncodingType="url")
assert raw["EncodingType"] == "url"
assert "plus%2Bsign" in [o["Key"] for o in raw["Contents"]], raw["Contents"]
assert "sp%20ace" in [o["Key"] for o in raw["Contents"]], raw["Contents"]

# Managed transfer: multipart above 5 MiB.
blob = os.urandom(12 * 1024 * 1024 + 5)
cfg = TransferConfig(multipart_threshold=5 * 1024 * 1024, multipart_chunksize=5 * 1024 * 1024)
s3.upload_fileobj(io.BytesIO(blob), "boto-bucket", "big.bin", Config=cfg)
head = s3.head_object(Bucket="boto-bucket", Key="big.bin")
assert head["ContentLength"] == len(blob)
assert head["ETag"].endswith('-3"'), head["ETag"]
out = io.BytesIO()
s3.download_fileobj("boto-bucket", "big.bin", out, Config=cfg)
assert out.getvalue() == blob
rng = s3.get_object(Bucket="boto-bucket", Key="big.bin", Range="bytes=100-199")["Body"].read()
assert rng == blob[100:200]

s3.copy_object(Bucket="boto-bucket", Key="copy", CopySource={"Bucket": "boto-bucket", "Key": "plain"})
assert s3.get_object(Bucket="boto-bucket", Key="copy")["Body"].read() == b"plain"
assert code(lambda: s3.get_object(Bucket="boto-bucket", Key="nope")) == ("NoSuchKey", 404)

# Reads by part, and attributes.
part2 = s3.get_object(Bucket="boto-bucket", Key="big.bin", PartNumber=2)
assert part2["PartsCount"] == 3 and part2["Body"].read() == blob[5 * 1024 * 1024:10 * 1024 * 1024]
attrs = s3.get_object_attributes(Bucket="boto-bucket", Key="big.bin",
                                 ObjectAttributes=["ETag", "ObjectSize", "ObjectParts"])
assert attrs["ObjectSize"] == len(blob) and attrs["ObjectParts"]["TotalPartsCount"] == 3, attrs
assert '"' + attrs["ETag"] + '"' == head["ETag"], attrs

# Conditional deletes.
etag = s3.head_object(Bucket="boto-bucket", Key="copy")["ETag"]
assert code(lambda: s3.delete_object(Bucket="boto-bucket", Key="copy", IfMatch='"0123"')) == ("PreconditionFailed", 412)
s3.delete_object(Bucket="boto-bucket", Key="copy", IfMatch=etag)
assert code(lambda: s3.head_object(Bucket="boto-bucket", Key="copy"))[1] == 404

# Canned ACLs: anyone may read a public-read object, nobody a private one.
s3.put_object(Bucket="boto-bucket", Key="copy", Body=b"open", ACL="public-read")
def anonymous_get(key):
    try:
        with urllib.request.urlopen(os.environ["S3_ENDPOINT"] + "/boto-bucket/" + key) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
assert anonymous_get("copy") == 200
assert anonymous_get("plain") == 403
assert [g["Permission"] for g in s3.get_object_acl(Bucket="boto-bucket", Key="copy")["Grants"]] == ["FULL_CONTROL", "READ"]
s3.put_object_acl(Bucket="boto-bucket", Key="copy", ACL="private")
assert anonymous_get("copy") == 403

# Tags (boto3 writes x-amz-tagging form-encoded).
s3.put_object(Bucket="boto-bucket", Key="copy", Body=b"tagged", Tagging="team=data ops&tier=1")
t = s3.get_object_tagging(Bucket="boto-bucket", Key="copy")["TagSet"]
assert t == [{"Key": "team", "Value": "data ops"}, {"Key": "tier", "Value": "1"}], t
assert s3.get_object(Bucket="boto-bucket", Key="copy")["TagCount"] == 2
s3.delete_object_tagging(Bucket="boto-bucket", Key="copy")
assert s3.get_object_tagging(Bucket="boto-bucket", Key="copy")["TagSet"] == []
assert code(lambda: s3.delete_bucket(Bucket="boto-bucket")) == ("BucketNotEmpty", 409)

# Clean up the way test suites do: every version, then the bucket.
versions = s3.list_object_versions(Bucket="boto-bucket")
objs = [{"Key": v["Key"], "VersionId": v["VersionId"]} for v in versions.get("Versions", [])]
assert all(o["VersionId"] == "null" for o in objs)
assert len(objs) == len(keys) + 2, objs
r = s3.delete_objects(Bucket="boto-bucket", Delete={"Objects": objs}, BypassGovernanceRetention=True)
assert len(r["Deleted"]) == len(objs) and not r.get("Errors"), r
s3.delete_bucket(Bucket="boto-bucket")
assert code(lambda: s3.head_bucket(Bucket="boto-bucket"))[1] == 404

# Versioning: versions by id, delete markers, suites' clean-up of every version and marker.
s3.create_bucket(Bucket="boto-versions")
assert "Status" not in s3.get_bucket_versioning(Bucket="boto-versions")
s3.put_bucket_versioning(Bucket="boto-versions", VersioningConfiguration={"Status": "Enabled"})
assert s3.get_bucket_versioning(Bucket="boto-versions")["Status"] == "Enabled"
v1 = s3.put_object(Bucket="boto-versions", Key="doc", Body=b"one")["VersionId"]
v2 = s3.put_object(Bucket="boto-versions", Key="doc", Body=b"two")["VersionId"]
assert v1 != v2
assert s3.get_object(Bucket="boto-versions", Key="doc", VersionId=v1)["Body"].read() == b"one"
assert s3.head_object(Bucket="boto-versions", Key="doc")["VersionId"] == v2
d = s3.delete_object(Bucket="boto-versions", Key="doc")
assert d["DeleteMarker"] is True, d
assert code(lambda: s3.get_object(Bucket="boto-versions", Key="doc")) == ("NoSuchKey", 404)
lv = s3.list_object_versions(Bucket="boto-versions")
assert [v["VersionId"] for v in lv["Versions"]] == [v2, v1], lv
assert [(m["VersionId"], m["IsLatest"]) for m in lv["DeleteMarkers"]] == [(d["VersionId"], True)], lv
everything = [{"Key": v["Key"], "VersionId": v["VersionId"]} for v in lv["Versions"] + lv["DeleteMarkers"]]
r = s3.delete_objects(Bucket="boto-versions", Delete={"Objects": everything})
assert len(r["Deleted"]) == 3 and not r.get("Errors"), r
assert [x["VersionId"] for x in r["Deleted"] if x.get("DeleteMarker")] == [d["VersionId"]], r
s3.delete_bucket(Bucket="boto-versions")

# A header-signed PUT of an unsigned payload, sent chunked with no Content-Length (as a
# stream of unknown length goes out): stored whole. A signed payload needs its length: 411.
import http.client, urllib.parse
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
s3.create_bucket(Bucket="boto-chunked")
class Signer(S3SigV4Auth):
    # botocore hashes the (here absent) body itself: sign the stated payload hash instead.
    def __init__(self, sha, secret=os.environ["S3_SECRET"]):
        super().__init__(Credentials(os.environ["S3_KEY"], secret), "s3", "us-east-1")
        self.sha = sha
    def payload(self, request):
        return self.sha
def chunked_put(key, sha, pieces):
    url = os.environ["S3_ENDPOINT"] + "/boto-chunked/" + key
    req = AWSRequest(method="PUT", url=url)
    Signer(sha).add_auth(req)
    assert req.headers["X-Amz-Content-SHA256"] == sha
    u = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port)
    conn.putrequest("PUT", u.path, skip_accept_encoding=True)
    for k, v in req.headers.items():
        conn.putheader(k, v)
    conn.putheader("Transfer-Encoding", "chunked")
    body = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"
    # A request refused on its headers is answered before its body is read, and the server
    # may close then: a send that meets the closed socket is not the answer.
    try:
        conn.endheaders(body)
    except (BrokenPipeError, ConnectionResetError):
        pass
    r = conn.getresponse()
    return r.status, r.read()
status, body = chunked_put("streamed", "UNSIGNED-PAYLOAD", [b"first " * 1000, b"second " * 3000])
assert status == 200, (status, body)
got = s3.get_object(Bucket="boto-chunked", Key="streamed")
assert got["ContentLength"] == 6000 + 21000 and got["Body"].read() == b"first " * 1000 + b"second " * 3000
# Small, so the whole request arrives with its headers: refused on them, it is answered.
status, body = chunked_put("signed", hashlib.sha256(b"tiny").hexdigest(), [b"tiny"])
assert status == 411 and b"MissingContentLength" in body, (status, body)

# Expect: 100-continue: the go-ahead comes before any byte of the body is sent; a request
# that is refused is answered at once, and its body is never sent.
import socket
def expect_put(key, body, secret=os.environ["S3_SECRET"]):
    url = os.environ["S3_ENDPOINT"] + "/boto-chunked/" + key
    req = AWSRequest(method="PUT", url=url, headers={"Content-Length": str(len(body)), "Expect": "100-continue"})
    Signer("UNSIGNED-PAYLOAD", secret).add_auth(req)
    u = urllib.parse.urlsplit(url)
    sock = socket.create_connection((u.hostname, u.port), timeout=10)
    head = "PUT %s HTTP/1.1\r\nHost: %s\r\n" % (u.path, u.netloc)
    head += "".join("%s: %s\r\n" % kv for kv in req.headers.items()) + "\r\n"
    sock.sendall(head.encode())
    first = sock.recv(65536)
    if not first.startswith(b"HTTP/1.1 100"):
        return first, None
    sock.sendall(body)
    rest = b""
    while b"\r\n\r\n" not in rest:
        rest += sock.recv(65536)
    return first, rest
first, final = expect_put("continued", b"after the go-ahead")
assert final is not None and final.startswith(b"HTTP/1.1 200"), (first, final)
assert s3.get_object(Bucket="boto-chunked", Key="continued")["Body"].read() == b"after the go-ahead"
first, final = expect_put("refused", b"never sent", secret="wrong" * 8)
assert final is None and first.startswith(b"HTTP/1.1 403"), first
for k in ["streamed", "continued"]:
    s3.delete_object(Bucket="boto-chunked", Key=k)
s3.delete_bucket(Bucket="boto-chunked")
print("boto3 ok")
"#;

#[tokio::test]
async fn boto3() {
    let s3 = start().await;
    let python = tokio::task::spawn_blocking(boto3_python).await.unwrap();
    let out = tokio::task::spawn_blocking(move || {
        testkit::process::run_ok(
            Command::new(python)
                .arg("-c")
                .arg(BOTO3_SCRIPT)
                .env("S3_ENDPOINT", &s3.endpoint)
                .env("S3_KEY", &s3.access_key)
                .env("S3_SECRET", &s3.secret_key)
                .env_remove("AWS_PROFILE"),
        )
    })
    .await
    .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("boto3 ok"));
}

#[tokio::test]
async fn s3cmd() {
    require("s3cmd", "s3cmd");
    let s3 = start().await;
    let dir = tempfile::tempdir().unwrap();
    let host = s3.endpoint.trim_start_matches("http://").to_owned();
    let cfg = dir.path().join("s3cfg");
    std::fs::write(
        &cfg,
        format!(
            "[default]\naccess_key = {}\nsecret_key = {}\nhost_base = {host}\nhost_bucket = {host}\nuse_https = False\nbucket_location = us-east-1\nsignature_v2 = False\n",
            s3.access_key, s3.secret_key
        ),
    )
    .unwrap();
    let small = dir.path().join("small.txt");
    std::fs::write(&small, b"hello from s3cmd").unwrap();
    let big = dir.path().join("big.bin");
    let big_data = data(12 * 1024 * 1024 + 3, 11);
    std::fs::write(&big, &big_data).unwrap();
    let back = dir.path().join("back.bin");
    let cfg2 = cfg.clone();
    let s3cmd = move |args: &[&str]| {
        let mut c = Command::new("s3cmd");
        c.arg("-c").arg(&cfg2).args(args);
        testkit::process::run_ok(&mut c)
    };
    let (small_s, big_s, back_s) = (
        small.display().to_string(),
        big.display().to_string(),
        back.display().to_string(),
    );
    tokio::task::spawn_blocking(move || {
        s3cmd(&["mb", "s3://s3cmd-bucket"]);
        s3cmd(&["put", &small_s, "s3://s3cmd-bucket/docs/small.txt"]);
        s3cmd(&[
            "put",
            "--multipart-chunk-size-mb=5",
            &big_s,
            "s3://s3cmd-bucket/big.bin",
        ]);
        let ls = String::from_utf8(s3cmd(&["ls", "-r", "s3://s3cmd-bucket"]).stdout).unwrap();
        assert!(ls.contains("s3://s3cmd-bucket/docs/small.txt"), "{ls}");
        assert!(ls.contains("s3://s3cmd-bucket/big.bin"), "{ls}");
        let top = String::from_utf8(s3cmd(&["ls", "s3://s3cmd-bucket"]).stdout).unwrap();
        assert!(top.contains("DIR"), "{top}");
        s3cmd(&["get", "s3://s3cmd-bucket/big.bin", &back_s]);
        assert!(std::fs::read(&back_s).unwrap() == big_data);
        s3cmd(&[
            "cp",
            "s3://s3cmd-bucket/docs/small.txt",
            "s3://s3cmd-bucket/copy.txt",
        ]);
        s3cmd(&["del", "s3://s3cmd-bucket/docs/small.txt"]);
        s3cmd(&[
            "del",
            "s3://s3cmd-bucket/copy.txt",
            "s3://s3cmd-bucket/big.bin",
        ]);
        s3cmd(&["rb", "s3://s3cmd-bucket"]);
        let buckets = String::from_utf8(s3cmd(&["ls"]).stdout).unwrap();
        assert!(!buckets.contains("s3cmd-bucket"), "{buckets}");
    })
    .await
    .unwrap();
}

/// Runs rclone with `args`, the region at `endpoint` (with access key `ak`, secret `sk`) as
/// its remote `m:`, and `conf` as its (empty) configuration file.
fn run_rclone(
    conf: &std::path::Path,
    (endpoint, ak, sk): (&str, &str, &str),
    args: &[&str],
) -> std::process::Output {
    let mut c = Command::new("rclone");
    c.args(args)
        .arg("--config")
        .arg(conf)
        .env("RCLONE_CONFIG_M_TYPE", "s3")
        .env("RCLONE_CONFIG_M_PROVIDER", "Other")
        .env("RCLONE_CONFIG_M_ACCESS_KEY_ID", ak)
        .env("RCLONE_CONFIG_M_SECRET_ACCESS_KEY", sk)
        .env("RCLONE_CONFIG_M_ENDPOINT", endpoint)
        .env("RCLONE_CONFIG_M_REGION", "us-east-1")
        .env("RCLONE_CONFIG_M_FORCE_PATH_STYLE", "true")
        // rclone 1.60 fails when AWS_CA_BUNDLE is set (as on this machine).
        .env_remove("AWS_CA_BUNDLE");
    testkit::process::run_ok(&mut c)
}

#[tokio::test]
async fn rclone() {
    require("rclone", "rclone");
    let s3 = start().await;
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(src.join("sub/deeper")).unwrap();
    std::fs::write(src.join("a.txt"), b"alpha").unwrap();
    std::fs::write(src.join("sub/b c.txt"), b"bravo charlie").unwrap();
    std::fs::write(src.join("sub/deeper/big.bin"), data(11 * 1024 * 1024, 12)).unwrap();
    let dst = dir.path().join("dst");
    let endpoint = s3.endpoint.clone();
    let (ak, sk) = (s3.access_key.clone(), s3.secret_key.clone());
    let conf = dir.path().join("rclone.conf");
    std::fs::write(&conf, "").unwrap();
    tokio::task::spawn_blocking(move || {
        let rclone = |args: &[&str]| {
            let chunks = ["--s3-upload-cutoff", "5M", "--s3-chunk-size", "5M"];
            run_rclone(&conf, (&endpoint, &ak, &sk), &[args, &chunks].concat())
        };
        rclone(&["mkdir", "m:rclone-bucket"]);
        rclone(&["copy", &src.display().to_string(), "m:rclone-bucket/tree"]);
        let ls = String::from_utf8(rclone(&["ls", "m:rclone-bucket"]).stdout).unwrap();
        assert!(ls.contains("tree/sub/b c.txt"), "{ls}");
        assert!(ls.contains("tree/sub/deeper/big.bin"), "{ls}");
        let lsd = String::from_utf8(rclone(&["lsd", "m:rclone-bucket/tree"]).stdout).unwrap();
        assert!(lsd.contains("sub"), "{lsd}");
        // check compares sizes and MD5s (multipart objects by size): all must match.
        rclone(&["check", &src.display().to_string(), "m:rclone-bucket/tree"]);
        rclone(&["copy", "m:rclone-bucket/tree", &dst.display().to_string()]);
        assert_eq!(
            std::fs::read(dst.join("sub/deeper/big.bin")).unwrap(),
            std::fs::read(src.join("sub/deeper/big.bin")).unwrap()
        );
        rclone(&["purge", "m:rclone-bucket"]);
        let out = String::from_utf8(rclone(&["lsd", "m:"]).stdout).unwrap();
        assert!(!out.contains("rclone-bucket"), "{out}");
    })
    .await
    .unwrap();
}

/// Every file under `dir`, by path relative to it.
fn tree(dir: &std::path::Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                todo.push(p);
            } else {
                let rel = p.strip_prefix(dir).unwrap().display().to_string();
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

/// `aws s3 sync` and `rclone sync` round trips of a tree (many small files, a few multipart
/// ones) into a bucket with versioning, with a file changed and one removed between syncs;
/// then the overwritten file is read and restored by its version id (the AWS CLI), and copied
/// back under its version name (rclone's `--s3-versions`).
#[tokio::test]
async fn sync_round_trips_with_versioning() {
    require("rclone", "rclone");
    let s3 = start().await;
    let c = s3.client();
    Bucket::create(&c, "synced")
        .await
        .set_versioning("Enabled")
        .await;
    let aws = tokio::task::spawn_blocking(testkit::tools::aws_cli)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    for i in 0..120 {
        let d = src.join(format!("small/d{}", i % 6));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(
            d.join(format!("{i}.txt")),
            format!("file {i}\n").repeat(i + 1),
        )
        .unwrap();
    }
    std::fs::create_dir_all(src.join("big")).unwrap();
    for i in 0..2 {
        let big = data(9 * 1024 * 1024 + i, 40 + i as u64);
        std::fs::write(src.join(format!("big/{i}.bin")), big).unwrap();
    }
    let aws_config = dir.path().join("aws-config");
    std::fs::write(&aws_config, "[default]\ns3 =\n  addressing_style = path\n").unwrap();
    let rclone_config = dir.path().join("rclone.conf");
    std::fs::write(&rclone_config, "").unwrap();
    let (endpoint, ak, sk) = (
        s3.endpoint.clone(),
        s3.access_key.clone(),
        s3.secret_key.clone(),
    );
    let d = dir.path().to_path_buf();
    let changed = "small/d1/7.txt";
    let original = std::fs::read(src.join(changed)).unwrap();
    let removed = "small/d2/8.txt";
    tokio::task::spawn_blocking(move || {
        let aws = |args: &[&str]| {
            let mut c = Command::new(&aws);
            c.arg("--endpoint-url")
                .arg(&endpoint)
                .args(args)
                .env("AWS_ACCESS_KEY_ID", &ak)
                .env("AWS_SECRET_ACCESS_KEY", &sk)
                .env("AWS_DEFAULT_REGION", "us-east-1")
                .env("AWS_CONFIG_FILE", &aws_config)
                .env_remove("AWS_PROFILE")
                .env_remove("AWS_CA_BUNDLE");
            String::from_utf8(testkit::process::run_ok(&mut c).stdout).unwrap()
        };
        let rclone = |args: &[&str]| {
            let out = run_rclone(&rclone_config, (&endpoint, &ak, &sk), args);
            String::from_utf8(out.stdout).unwrap()
        };
        let s = src.display().to_string();
        // First syncs, then a change and a removal, synced again (with deletes).
        aws(&["s3", "sync", "--only-show-errors", &s, "s3://synced/aws"]);
        rclone(&["sync", &s, "m:synced/rc"]);
        std::fs::write(src.join(changed), b"changed\n").unwrap();
        std::fs::remove_file(src.join(removed)).unwrap();
        aws(&[
            "s3",
            "sync",
            "--only-show-errors",
            "--delete",
            &s,
            "s3://synced/aws",
        ]);
        rclone(&["sync", &s, "m:synced/rc"]);
        // Both trees come back as they are now.
        let want = tree(&src);
        let back_aws = d.join("back-aws");
        aws(&[
            "s3",
            "sync",
            "--only-show-errors",
            "s3://synced/aws",
            &back_aws.display().to_string(),
        ]);
        assert!(tree(&back_aws) == want, "aws s3 sync round trip differs");
        let back_rc = d.join("back-rc");
        rclone(&["sync", "m:synced/rc", &back_rc.display().to_string()]);
        assert!(tree(&back_rc) == want, "rclone sync round trip differs");

        // The AWS CLI: the overwritten file's older version, read and restored by its id.
        let versions_of = |key: &str| -> serde_json::Value {
            let args = [
                "s3api",
                "list-object-versions",
                "--bucket",
                "synced",
                "--prefix",
                key,
            ];
            serde_json::from_str(&aws(&args)).unwrap()
        };
        let key = format!("aws/{changed}");
        let listed = versions_of(&key);
        let versions = listed["Versions"].as_array().unwrap();
        assert_eq!(versions.len(), 2, "{listed}");
        let old = versions.iter().find(|v| v["IsLatest"] == false).unwrap();
        let old_id = old["VersionId"].as_str().unwrap();
        let out = d.join("old-version");
        let o = out.display().to_string();
        aws(&[
            "s3api",
            "get-object",
            "--bucket",
            "synced",
            "--key",
            &key,
            "--version-id",
            old_id,
            &o,
        ]);
        assert_eq!(std::fs::read(&out).unwrap(), original);
        let source = format!("synced/{key}?versionId={old_id}");
        aws(&[
            "s3api",
            "copy-object",
            "--bucket",
            "synced",
            "--key",
            &key,
            "--copy-source",
            &source,
        ]);
        let restored = d.join("restored");
        aws(&[
            "s3",
            "cp",
            "--only-show-errors",
            &format!("s3://synced/{key}"),
            &restored.display().to_string(),
        ]);
        assert_eq!(std::fs::read(&restored).unwrap(), original);
        // The removed file is behind a delete marker, its bytes kept.
        let listed = versions_of(&format!("aws/{removed}"));
        assert_eq!(listed["DeleteMarkers"][0]["IsLatest"], true, "{listed}");
        assert_eq!(
            listed["Versions"].as_array().map(Vec::len),
            Some(1),
            "{listed}"
        );

        // rclone: older versions appear under their version names, and can be read back.
        let ls = rclone(&["ls", "--s3-versions", "m:synced/rc/small/d1"]);
        let old_name = ls
            .lines()
            .filter_map(|l| l.split_whitespace().nth(1))
            .find(|n| n.starts_with("7-v") && n.ends_with(".txt"))
            .unwrap_or_else(|| panic!("no older version of 7.txt listed: {ls}"))
            .to_owned();
        let restore = d.join("rc-restore");
        let r = restore.display().to_string();
        rclone(&[
            "copy",
            "--s3-versions",
            "--include",
            "7-v*",
            "m:synced/rc/small/d1",
            &r,
        ]);
        let old = std::fs::read(restore.join(&old_name)).unwrap();
        assert_eq!(old, original);
    })
    .await
    .unwrap();
}
