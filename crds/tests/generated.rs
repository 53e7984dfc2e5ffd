//! The committed generated files (`crds/*.yaml`, `charts/sluice/crds/*.yaml` when the chart exists, and
//! `docs/crd-reference.md`) are exactly what the types generate.

use std::path::{Path, PathBuf};

use sluice_crds::generate::{self, REGENERATE};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// Compares one committed file with its generated text, naming the first differing line.
fn compare(path: &Path, expected: &str) -> Option<String> {
    let shown = path.strip_prefix(workspace()).unwrap_or(path).display().to_string();
    let actual = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) => return Some(format!("{shown}: cannot read ({e})")),
    };
    if actual == expected {
        return None;
    }
    let line = actual.lines().zip(expected.lines()).position(|(a, e)| a != e);
    let line = line.unwrap_or_else(|| actual.lines().count().min(expected.lines().count())) + 1;
    Some(format!("{shown}: differs from the generated text from line {line}"))
}

fn assert_fresh(dir: &Path) {
    let generated = generate::crds();
    let mut problems: Vec<String> =
        generated.iter().filter_map(|(file, yaml)| compare(&dir.join(file), yaml)).collect();
    // A CRD file no longer generated (a removed or renamed kind) must go too.
    let names: Vec<&str> = generated.iter().map(|(file, _)| file.as_str()).collect();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if name.ends_with(".sluice.dev.yaml") && !names.contains(&name.as_str()) {
            problems.push(format!("{}: not generated any more; delete it", entry.path().display()));
        }
    }
    assert!(problems.is_empty(), "{}\nrun `{REGENERATE}` from the workspace root", problems.join("\n"));
}

#[test]
fn committed_crds_match_the_types() {
    assert_fresh(&workspace().join("crds"));
}

#[test]
fn chart_crds_match_the_types() {
    let chart = workspace().join("charts/sluice");
    if !chart.is_dir() {
        eprintln!("charts/sluice does not exist; nothing to compare");
        return;
    }
    assert_fresh(&chart.join("crds"));
}

#[test]
fn committed_reference_matches_the_types() {
    let path = workspace().join(generate::REFERENCE_PATH);
    if let Some(problem) = compare(&path, &sluice_crds::reference::markdown()) {
        panic!("{problem}\nrun `{REGENERATE}` from the workspace root");
    }
}

#[test]
fn every_crd_file_parses_back_to_its_definition() {
    for ((file, yaml), crd) in generate::crds().into_iter().zip(generate::definitions()) {
        let parsed: k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition =
            serde_saphyr::from_str(&yaml).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(parsed, crd, "{file} does not round-trip");
    }
}
