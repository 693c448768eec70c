//! The region's internal endpoints admit only holders of a region certificate, and where it
//! matters only the right role: tried from outside as a stranger would, against a running
//! region. (Today: the storage nodes. Moray, the sitters, etcd and Postgres follow.)

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

use std::time::Duration;

use manta_util::tls::Identity;
use testkit::TestRegion;
use testkit::region::{Role, internal_http};

/// An object path on a node: a fresh id under a fixed owner.
fn object_url(node: &str) -> String {
    format!(
        "{node}/{}/{}",
        uuid::Uuid::nil(),
        uuid::Uuid::new_v4().hyphenated()
    )
}

/// The error code of a JSON error answer.
async fn code_of(r: reqwest::Response) -> String {
    let v: serde_json::Value = r.json().await.unwrap();
    v["code"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storage_node_refuses_a_caller_without_a_region_certificate() {
    let region = TestRegion::start().await.unwrap();
    let node = &region.storage[0].url;
    assert!(node.starts_with("https://"), "nodes serve TLS: {node}");
    // Plain HTTP to the TLS port gets no answer at all.
    let plain = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let http_url = node.replacen("https://", "http://", 1);
    assert!(plain.get(format!("{http_url}/ping")).send().await.is_err());
    // TLS without a client certificate (the server's not even checked): the handshake fails.
    let anonymous = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .tls_danger_accept_invalid_certs(true)
        .build()
        .unwrap();
    for url in [format!("{node}/ping"), object_url(node)] {
        let r = anonymous.get(&url).send().await;
        assert!(
            r.is_err(),
            "{url} answered a caller without a certificate: {r:?}"
        );
    }
    let put = anonymous.put(object_url(node)).body("x").send().await;
    assert!(
        put.is_err(),
        "a PUT without a certificate was answered: {put:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storage_node_refuses_another_regions_certificate() {
    let region = TestRegion::start().await.unwrap();
    let other = tempfile::tempdir().unwrap();
    let ca = manta_pki::Ca::open_or_create(&other.path().join("pki"), "elsewhere").unwrap();
    let stranger: Identity = ca
        .issue(&other.path().join("fd"), "fd", Role::Frontdoor, &[])
        .unwrap();
    // A front door's role, but from a CA the region does not know.
    let http = internal_http(&stranger).unwrap();
    let r = http
        .get(format!("{}/ping", region.storage[0].url))
        .send()
        .await;
    assert!(
        r.is_err(),
        "another region's certificate was admitted: {r:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_front_door_and_agents_change_objects_on_a_node() {
    let region = TestRegion::start().await.unwrap();
    let node = &region.storage[0].url;
    for role in [Role::Moray, Role::Storage, Role::Sitter, Role::Adm] {
        let id = region.identity(&format!("as-{role}"), role).unwrap();
        let http = internal_http(&id).unwrap();
        // Any region certificate may read and ping.
        let ping = http.get(format!("{node}/ping")).send().await.unwrap();
        assert!(ping.status().is_success(), "{role}: ping {}", ping.status());
        let get = http.get(object_url(node)).send().await.unwrap();
        assert_eq!(get.status(), 404, "{role}: a read of a missing object");
        // Writing, deleting and joining are refused.
        let url = object_url(node);
        let put = http.put(&url).body("x").send().await.unwrap();
        assert_eq!(put.status(), 403, "{role}: PUT");
        assert_eq!(code_of(put).await, "AuthorizationFailed");
        let del = http.delete(&url).send().await.unwrap();
        assert_eq!(del.status(), 403, "{role}: DELETE");
        let join = http
            .post(format!("{node}/mpu/commit"))
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(join.status(), 403, "{role}: a multipart join");
    }
    for role in [Role::Frontdoor, Role::Agent] {
        let id = region.identity(&format!("as-{role}"), role).unwrap();
        let http = internal_http(&id).unwrap();
        let url = object_url(node);
        let put = http.put(&url).body("stored").send().await.unwrap();
        assert!(put.status().is_success(), "{role}: PUT {}", put.status());
        let got = http.get(&url).send().await.unwrap();
        assert_eq!(got.text().await.unwrap(), "stored");
        let del = http.delete(&url).send().await.unwrap();
        assert!(del.status().is_success(), "{role}: DELETE {}", del.status());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_an_operator_takes_a_snapshot() {
    let region = TestRegion::start().await.unwrap();
    let node = &region.storage[0].url;
    let fd = region.identity("fd", Role::Frontdoor).unwrap();
    let r = internal_http(&fd)
        .unwrap()
        .post(format!("{node}/snapshots/s1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "the front door took a snapshot");
    let r = region
        .internal_http()
        .post(format!("{node}/snapshots/s1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "an operator's snapshot");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moray_refuses_a_caller_without_a_region_certificate() {
    let region = TestRegion::start().await.unwrap();
    let moray = &region.moray_url;
    assert!(moray.starts_with("https://"), "Moray serves TLS: {moray}");
    let anonymous = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .tls_danger_accept_invalid_certs(true)
        .build()
        .unwrap();
    let r = anonymous
        .post(format!("{moray}/getObject"))
        .json(&serde_json::json!({"bucket": "manta", "key": "/x"}))
        .send()
        .await;
    assert!(
        r.is_err(),
        "Moray answered a caller without a certificate: {r:?}"
    );
    let r = anonymous
        .post(format!("{moray}/sql"))
        .json(&serde_json::json!({"statement": "select current_user", "values": []}))
        .send()
        .await;
    assert!(
        r.is_err(),
        "Moray's /sql answered a caller without a certificate: {r:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_regions_moray_serves_no_sql_to_anyone() {
    let region = TestRegion::start().await.unwrap();
    // Region services may call Moray's RPCs ...
    let storage = region.identity("as-storage", Role::Storage).unwrap();
    let r = internal_http(&storage)
        .unwrap()
        .post(format!("{}/ping", region.moray_url))
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "ping: {}", r.status());
    // ... but /sql is off, for an operator too.
    let r = region
        .internal_http()
        .post(format!("{}/sql", region.moray_url))
        .json(&serde_json::json!({"statement": "select 1", "values": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["name"], "NotPermittedError", "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_an_operator_fences_or_purges_a_vnode() {
    let region = TestRegion::start().await.unwrap();
    let body = serde_json::json!({"vnode": 3, "target": "2"});
    for role in [Role::Frontdoor, Role::Storage, Role::Agent] {
        let id = region.identity(&format!("v-{role}"), role).unwrap();
        for rpc in ["vnodeFence", "vnodePurge", "vnodeUnfence", "vnodeFences"] {
            let r = internal_http(&id)
                .unwrap()
                .post(format!("{}/{rpc}", region.moray_url))
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 403, "{role} called {rpc}");
        }
    }
    // An operator may (a purge of an unfenced vnode is refused for what it is).
    let r = region
        .internal_http()
        .post(format!("{}/vnodePurge", region.moray_url))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let v: serde_json::Value = r.json().await.unwrap();
    assert!(v["message"].as_str().unwrap().contains("not fenced"), "{v}");
}
