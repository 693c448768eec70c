//! `POST /mpu/commit` over real HTTP: parts joined into a new object with the digests of the
//! whole, idempotent retries, corrupt and missing parts, bad requests. Each test runs its own
//! node on a temp directory.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use storage_api::CommitRequest;
use storage_api::ObjectKey;

async fn put(http: &reqwest::Client, node: &Node, k: &ObjectKey, body: Vec<u8>) {
    let r = http
        .put(node.object_url(k))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
}

/// Asks the node to join parts as `req` says.
async fn commit(http: &reqwest::Client, node: &Node, req: &CommitRequest) -> reqwest::Response {
    http.post(format!("{}/mpu/commit", node.url))
        .json(req)
        .send()
        .await
        .unwrap()
}

/// The status of a `HEAD` of object `k`.
async fn head_status(http: &reqwest::Client, node: &Node, k: &ObjectKey) -> reqwest::StatusCode {
    http.head(node.object_url(k)).send().await.unwrap().status()
}

fn commit_body(owner: &uuid::Uuid, target: &ObjectKey, parts: &[&ObjectKey]) -> CommitRequest {
    CommitRequest {
        owner: owner.to_string(),
        object_id: target.id.to_string(),
        parts: parts.iter().map(|k| k.id.to_string()).collect(),
    }
}

/// A node on a temp dir holding one part, `a`, with `body`; a client to talk to it.
async fn node_with_part(body: Vec<u8>) -> (Node, reqwest::Client, ObjectKey) {
    let node = Node::start(|_| {}).await;
    let http = reqwest::Client::new();
    let a = key();
    put(&http, &node, &a, body).await;
    (node, http, a)
}

fn sibling(k: &ObjectKey) -> ObjectKey {
    ObjectKey {
        owner: k.owner,
        id: manta_types::ObjectId::random(),
    }
}

#[tokio::test]
async fn parts_become_one_object_with_the_digests_of_the_whole() {
    let (da, db) = (data(5 * 1024 * 1024 + 3, 1), data(1024 * 1024 + 11, 2));
    let (node, http, a) = node_with_part(da.clone()).await;
    let b = sibling(&a);
    put(&http, &node, &b, db.clone()).await;
    let target = sibling(&a);
    // A part may appear twice, and order matters.
    let req = commit_body(&a.owner, &target, &[&b, &a, &b]);
    let resp = commit(&http, &node, &req).await;
    assert_eq!(resp.status(), 201);
    let whole: Vec<u8> = [db.as_slice(), da.as_slice(), db.as_slice()].concat();
    assert_eq!(
        resp.headers()["x-joyent-computed-content-md5"],
        md5_b64(&whole).as_str()
    );
    let resp_crc = resp.headers()["x-manta-computed-crc32c"]
        .to_str()
        .unwrap()
        .to_owned();
    let j: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(j["md5"], md5_b64(&whole).as_str());
    let crc = format!("{:08x}", storage_api::blocks::crc32c(&whole));
    assert_eq!(j["crc32c"], crc.as_str());
    assert_eq!(resp_crc, crc);
    assert_eq!(j["size"], whole.len() as u64);

    let got = http.get(node.object_url(&target)).send().await.unwrap();
    assert_eq!(got.status(), 200);
    assert_eq!(got.headers()["content-md5"], md5_b64(&whole).as_str());
    assert!(got.bytes().await.unwrap() == whole);
    // The parts stay (their records decide when GC takes them), and nothing is left in tmp.
    for k in [&a, &b] {
        assert_eq!(head_status(&http, &node, k).await, 200);
    }
    assert!(node.tmp_files().is_empty());

    // A retried commit answers the same digests without writing again.
    let again = commit(&http, &node, &req).await;
    assert_eq!(again.status(), 200);
    let j2: serde_json::Value = again.json().await.unwrap();
    assert_eq!(j2, j);
}

#[tokio::test]
async fn a_missing_part_is_404_and_leaves_nothing() {
    let (node, http, a) = node_with_part(data(1000, 3)).await;
    let missing = sibling(&a);
    let target = sibling(&a);
    let resp = commit(
        &http,
        &node,
        &commit_body(&a.owner, &target, &[&a, &missing]),
    )
    .await;
    assert_eq!(resp.status(), 404);
    assert_eq!(code_of(resp).await, "ResourceNotFound");
    assert_eq!(head_status(&http, &node, &target).await, 404);
    assert!(
        eventually(std::time::Duration::from_secs(2), || node
            .tmp_files()
            .is_empty())
        .await
    );
}

#[tokio::test]
async fn a_corrupt_part_is_quarantined_and_never_joined() {
    let (node, http, a) = node_with_part(data(300_000, 4)).await;
    let b = sibling(&a);
    put(&http, &node, &b, data(300_000, 5)).await;
    // Flip bytes of b in place (same size): only the checksum can tell.
    let path = node.store.object_path(&b);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[1234] ^= 0xff;
    std::io::Write::write_all(&mut node.open_object(&b), &bytes).unwrap();
    let target = sibling(&a);
    let resp = commit(&http, &node, &commit_body(&a.owner, &target, &[&a, &b])).await;
    assert_eq!(resp.status(), 404);
    assert_eq!(resp.headers()["x-manta-quarantined"], "true");
    assert_eq!(
        head_status(&http, &node, &target).await,
        404,
        "no object made from a corrupt part"
    );
    assert!(node.store.is_quarantined(&b).await);
    assert!(node.tmp_files().is_empty());
}

#[tokio::test]
async fn bad_requests_are_400_invalid_parameter() {
    let (node, http, a) = node_with_part(data(10, 6)).await;
    let url = format!("{}/mpu/commit", node.url);
    let cases: Vec<(String, &str)> = vec![
        ("not json".into(), "malformed"),
        (
            serde_json::json!({"owner": a.owner.to_string(), "objectId": sibling(&a).id.to_string(), "parts": []}).to_string(),
            "parts",
        ),
        (
            serde_json::json!({"owner": "jill", "objectId": sibling(&a).id.to_string(), "parts": [a.id.to_string()]}).to_string(),
            "owner",
        ),
        (
            serde_json::json!({"owner": a.owner.to_string(), "objectId": "..", "parts": [a.id.to_string()]}).to_string(),
            "object id",
        ),
        (
            serde_json::json!({"owner": a.owner.to_string(), "objectId": a.id.to_string(), "parts": [a.id.to_string()]}).to_string(),
            "own parts",
        ),
    ];
    for (body, needle) in cases {
        let resp = http.post(&url).body(body.clone()).send().await.unwrap();
        assert_eq!(resp.status(), 400, "{body}");
        let j: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(j["code"], "InvalidParameter", "{body}");
        assert!(
            j["message"].as_str().unwrap().contains(needle),
            "{body}: {j}"
        );
    }
    // GET on the commit path is not an object path either.
    let r = http.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 405);
}
