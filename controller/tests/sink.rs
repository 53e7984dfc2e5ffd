//! The etcd sink against a real etcd: creates, updates and deletes only what it owns, never touches objects
//! written by others, and writes large configurations in several transactions.

use std::collections::BTreeMap;

use serde_json::json;
use sluice_controller::sink::{EtcdSink, SinkError};
use sluice_model::Keys;
use sluice_testkit::Etcd;

fn owned(uri: &str) -> Vec<u8> {
    json!({"uri": uri, "upstream_id": "u", "labels": {"managed-by": "sluice-controller"}}).to_string().into_bytes()
}

async fn dump(client: &mut etcd_client::Client) -> BTreeMap<String, String> {
    let resp = client.get("/sluice/", Some(etcd_client::GetOptions::new().with_prefix())).await.unwrap();
    resp.kvs().iter().map(|kv| (kv.key_str().unwrap().to_string(), kv.value_str().unwrap().to_string())).collect()
}

#[tokio::test]
async fn writes_the_difference_and_leaves_foreign_objects_alone() {
    let etcd = Etcd::start().await.unwrap();
    let mut client = etcd.client().await.unwrap();
    let foreign = json!({"uri": "/theirs", "upstream_id": "x"}).to_string();
    client.put("/sluice/routes/theirs", foreign.clone(), None).await.unwrap();
    client.put("/sluice/routes/taken", foreign.clone(), None).await.unwrap();
    client.put("/sluice/data_plane/server_info/n1", "{}", None).await.unwrap();
    client.put("/sluice/routes/stale", owned("/stale"), None).await.unwrap();

    let mut sink = EtcdSink::new(etcd.client().await.unwrap(), Keys::default());
    let mut desired = BTreeMap::new();
    desired.insert("/sluice/routes/a".to_string(), owned("/a"));
    desired.insert("/sluice/routes/taken".to_string(), owned("/mine"));
    let applied = sink.apply(&desired).await.unwrap();
    assert_eq!(applied.puts, 1);
    assert_eq!(applied.deletes, 1, "the stale owned route is deleted");
    assert_eq!(applied.foreign, vec!["/sluice/routes/taken".to_string()]);

    let stored = dump(&mut client).await;
    assert_eq!(stored.get("/sluice/routes/theirs"), Some(&foreign), "foreign object untouched");
    assert_eq!(stored.get("/sluice/routes/taken"), Some(&foreign), "foreign object not overwritten");
    assert!(stored.contains_key("/sluice/data_plane/server_info/n1"));
    assert!(!stored.contains_key("/sluice/routes/stale"));
    assert_eq!(stored.get("/sluice/routes/a").map(String::as_bytes), Some(owned("/a").as_slice()));

    // Unchanged input writes nothing.
    let again = sink.apply(&desired).await.unwrap();
    assert_eq!((again.puts, again.deletes), (0, 0));

    // A large configuration spans several transactions and pages.
    let many: BTreeMap<String, Vec<u8>> =
        (0..2500).map(|i| (format!("/sluice/routes/r{i}"), owned(&format!("/r{i}")))).collect();
    let applied = sink.apply(&many).await.unwrap();
    assert_eq!(applied.puts, 2500);
    assert_eq!(applied.deletes, 1, "route a is no longer desired");
    assert_eq!(dump(&mut client).await.len(), 2500 + 3);
    // A change made behind the sink's back to a key it owns: the cached revision no longer matches, so the
    // guarded write fails once instead of overwriting blindly; the next sync lists again and converges.
    client.put("/sluice/routes/r0", owned("/changed-by-hand"), None).await.unwrap();
    let mut changed = many.clone();
    changed.insert("/sluice/routes/r0".to_string(), owned("/r0-new"));
    assert!(matches!(sink.apply(&changed).await, Err(SinkError::Conflict)));
    let applied = sink.apply(&changed).await.unwrap();
    assert_eq!(applied.puts, 1);
    let stored = dump(&mut client).await;
    assert_eq!(stored.get("/sluice/routes/r0").map(String::as_bytes), Some(owned("/r0-new").as_slice()));

    let applied = sink.apply(&BTreeMap::new()).await.unwrap();
    assert_eq!(applied.deletes, 2500);
    assert_eq!(dump(&mut client).await.len(), 3, "only the objects of others remain");
}
