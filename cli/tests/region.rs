//! `manta-adm up`, `status`, `down` and `up` again, for real, in a temp dir.

use std::process::Command;

fn adm(dir: &std::path::Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_manta-adm"))
        .args(args)
        .arg("--dir")
        .arg(dir)
        .output()
        .expect("run manta-adm");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn status(dir: &std::path::Path) -> serde_json::Value {
    let (ok, text) = adm(dir, &["status", "--json"]);
    assert!(ok, "{text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("status --json: {e}: {text}"))
}

/// Stops the region even when an assertion fails, so no daemon outlives the test.
struct Down<'a>(&'a std::path::Path);
impl Drop for Down<'_> {
    fn drop(&mut self) {
        let _ = adm(self.0, &["down"]);
    }
}

#[tokio::test]
async fn up_status_down_up_keeps_data() {
    let tmp = tempfile::Builder::new()
        .prefix("manta-test-region-")
        .tempdir()
        .unwrap();
    let dir = tmp.path().join("region");
    let _down = Down(&dir);

    let (ok, text) = adm(&dir, &["up"]);
    assert!(ok, "up failed:\n{text}");
    let st = status(&dir);
    for svc in st.as_array().unwrap() {
        assert_eq!(svc["state"], "healthy", "{st}");
    }
    let pg = st
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["service"] == "postgres")
        .unwrap();
    let url = pg["endpoint"].as_str().unwrap().to_owned();

    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    let task = tokio::spawn(conn);
    client
        .batch_execute("CREATE TABLE kept (x INT); INSERT INTO kept VALUES (42)")
        .await
        .unwrap();
    drop(client);
    task.abort();

    let (ok, text) = adm(&dir, &["down"]);
    assert!(ok, "{text}");
    for svc in status(&dir).as_array().unwrap() {
        assert_eq!(svc["state"], "stopped");
    }

    let (ok, text) = adm(&dir, &["up"]);
    assert!(ok, "second up failed:\n{text}");
    let st = status(&dir);
    let pg2 = st
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["service"] == "postgres")
        .unwrap();
    assert_eq!(
        pg2["endpoint"], pg["endpoint"],
        "the region moved to new ports"
    );
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let row = client.query_one("SELECT x FROM kept", &[]).await.unwrap();
    assert_eq!(row.get::<_, i32>(0), 42);
}
