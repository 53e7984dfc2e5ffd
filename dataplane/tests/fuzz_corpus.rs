//! Replays the fuzz corpora (`fuzz/corpus/<target>`) through the fuzz targets' functions: nothing may panic.

use std::path::Path;

#[test]
fn replays_the_fuzz_corpus() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/compile");
    let mut replayed = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        sluice_dataplane::config::exercise(&data);
        replayed += 1;
    }
    assert!(replayed >= 10, "the corpus in {} has {replayed} inputs", dir.display());
}

#[test]
fn replays_the_plugins_corpus() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/plugins");
    let mut replayed = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let data = std::fs::read(entry.unwrap().path()).unwrap();
        sluice_dataplane::plugins::exercise(&data);
        // Each input is also a route's `plugins`, through route compilation.
        let route = format!(r#"{{"uri":"/a/*","upstream_id":"u","plugins":{}}}"#, String::from_utf8_lossy(&data));
        sluice_dataplane::config::exercise(route.as_bytes());
        replayed += 1;
    }
    assert!(replayed >= 10, "the corpus in {} has {replayed} inputs", dir.display());
}

/// The inputs of one corpus directory.
fn corpus(name: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus").join(name);
    let inputs: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| std::fs::read(e.unwrap().path()).unwrap()).collect();
    assert!(inputs.len() >= 10, "the corpus in {} has {} inputs", dir.display(), inputs.len());
    inputs
}

#[test]
fn replays_the_exchange_corpus() {
    for data in corpus("exchange") {
        sluice_dataplane::upstream::http1::exercise(&data);
    }
}

#[test]
fn replays_the_paths_corpus() {
    for data in corpus("paths") {
        if let Ok(path) = std::str::from_utf8(&data) {
            sluice_dataplane::router::normalize::exercise(path);
        }
    }
}
