//! Golden tests for the translator: `golden/<case>.in.yaml` (Kubernetes manifests) → `golden/<case>.out.json`
//! (the etcd objects and statuses). Optional `golden/<case>.options.json` sets translator options.
//!
//! Regenerate every expected file with:
//!     SLUICE_UPDATE_GOLDEN=1 cargo test -p sluice-controller --test golden

use std::path::Path;

use serde_json::{Value, json};
use sluice_controller::manifests::{add, parse_documents};
use sluice_controller::resources::Resources;
use sluice_controller::translate::{Options, Publish, translate};
use sluice_model::Keys;

fn options(case: &Path) -> Options {
    let mut options = Options::default();
    let Ok(text) = std::fs::read_to_string(case.with_extension("options.json")) else { return options };
    let v: Value = serde_json::from_str(&text).expect("options file is JSON");
    if let Some(svc) = v.get("publishService").and_then(Value::as_str) {
        options.publish = Publish::service(svc).expect("NAMESPACE/NAME");
    }
    if let Some(list) = v.get("publishStatusAddress").and_then(Value::as_array) {
        options.publish = Publish::Addresses(list.iter().filter_map(Value::as_str).map(String::from).collect());
    }
    if let Some(name) = v.get("controllerName").and_then(Value::as_str) {
        options.controller_name = name.to_string();
    }
    options
}

fn render(input: &Path) -> Value {
    let text = std::fs::read_to_string(input).unwrap();
    let mut resources = Resources::default();
    for doc in parse_documents(&text).unwrap() {
        add(&mut resources, doc).unwrap();
    }
    let out = translate(&resources, &options(&input.with_extension("").with_extension("")));
    let keys = Keys::default();
    let etcd: serde_json::Map<String, Value> =
        out.config.to_kv(&keys).into_iter().map(|(k, v)| (k, serde_json::from_slice(&v).unwrap())).collect();
    let statuses: Vec<Value> = out
        .statuses
        .iter()
        .map(|s| {
            json!({
                "object": s.object.to_string(),
                "loadBalancer": s.load_balancer,
                "problems": s.problems.iter().map(|p| json!({"reason": p.reason.as_str(), "message": p.message})).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({ "etcd": etcd, "statuses": statuses })
}

#[test]
fn golden_cases() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let update = std::env::var_os("SLUICE_UPDATE_GOLDEN").is_some();
    let mut cases: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().ends_with(".in.yaml"))
        .collect();
    cases.sort();
    assert!(!cases.is_empty(), "no golden cases in {}", dir.display());
    let mut failed = Vec::new();
    for input in cases {
        let expected_path = input.to_string_lossy().replace(".in.yaml", ".out.json");
        let actual = render(&input);
        let pretty = serde_json::to_string_pretty(&actual).unwrap() + "\n";
        if update {
            std::fs::write(&expected_path, &pretty).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&expected_path).unwrap_or_default();
        if expected != pretty {
            eprintln!("--- {expected_path} (expected)\n{expected}\n+++ actual\n{pretty}");
            failed.push(expected_path);
        }
    }
    assert!(failed.is_empty(), "golden files differ (run with SLUICE_UPDATE_GOLDEN=1 to accept): {failed:?}");
}
