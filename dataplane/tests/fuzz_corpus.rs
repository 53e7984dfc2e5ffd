//! Replays the fuzz corpus (`fuzz/corpus/compile`) through the fuzz target's function: nothing may panic.

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
