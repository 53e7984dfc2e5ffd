//! The contract between the controller and the data plane: every object the controller's translator writes (its
//! golden files, `controller/tests/golden/*.out.json`) is accepted by the data plane's configuration state, with
//! the same model types on both sides. A rejection here is an object the controller would report as written
//! while no data plane serves it.

use std::cell::RefCell;
use std::path::Path;

use sluice_dataplane::config::{RawObject, State, Update};
use sluice_model::{Keys, Kind};

#[test]
fn every_golden_object_is_accepted() {
    // The state logs each rejection with its reason: shown when this test fails.
    let _ = tracing_subscriber::fmt().with_test_writer().try_init();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../controller/tests/golden");
    let mut cases: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".out.json"))
        .collect();
    cases.sort();
    assert!(cases.len() >= 10, "golden files found in {}", dir.display());
    let mut objects_checked = 0;
    let mut failures: Vec<String> = Vec::new();
    for case in cases {
        let golden: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&case).unwrap()).unwrap();
        let objects: Vec<RawObject> = golden["etcd"]
            .as_object()
            .unwrap()
            .iter()
            .enumerate()
            .map(|(i, (key, value))| RawObject {
                key: key.clone(),
                value: serde_json::to_vec(value).unwrap(),
                revision: i64::try_from(i).unwrap() + 1,
            })
            .collect();
        objects_checked += objects.len();
        let rejected: RefCell<Vec<Kind>> = RefCell::default();
        let mut state = State::new(Keys::default());
        state.apply(Update::Reset(objects), &|kind| rejected.borrow_mut().push(kind));
        if !rejected.borrow().is_empty() {
            failures.push(format!("{}: {:?}", case.display(), rejected.borrow()));
        }
    }
    assert!(failures.is_empty(), "objects the data plane rejects (reasons in the log above):\n{}", failures.join("\n"));
    println!("{objects_checked} objects from the translator's golden files, none rejected");
}
