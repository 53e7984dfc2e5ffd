//! Manifest-directory mode: the objects the translator reads come from YAML/JSON files instead of the API server.
//!
//! Every `.yaml`, `.yml` and `.json` file below the directory is read (several documents per file allowed,
//! `kind: List` unwrapped); other files and hidden entries (such as a ConfigMap mount's `..data`) are ignored.
//! A file that does not parse keeps its last good contents, so a half-saved edit never deletes routes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::resources::Resources;

/// Why a file or one of its documents was not used.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The IO error.
        source: std::io::Error,
    },
    /// The file is not valid YAML or JSON.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// One document has a known kind but does not fit its schema.
    #[error("{path}: {kind} {name}: {message}")]
    Object {
        /// The file.
        path: PathBuf,
        /// The document's kind.
        kind: String,
        /// The document's `metadata.name`.
        name: String,
        /// The schema error.
        message: String,
    },
}

/// Reads a directory of manifests, remembering each file's last good contents.
#[derive(Debug)]
pub struct Loader {
    dir: PathBuf,
    last_good: BTreeMap<PathBuf, Vec<Value>>,
    /// Modification time and size of each file when it was last parsed: unchanged files are not parsed again,
    /// so a large repository costs little on every sync.
    seen: BTreeMap<PathBuf, (std::time::SystemTime, u64)>,
}

impl Loader {
    /// A loader for `dir`; nothing is read until [`Loader::load`].
    pub fn new(dir: impl Into<PathBuf>) -> Loader {
        Loader { dir: dir.into(), last_good: BTreeMap::new(), seen: BTreeMap::new() }
    }

    /// The watched directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Reads every manifest file now and returns the objects, with the problems met on the way.
    pub fn load(&mut self) -> (Resources, Vec<ManifestError>) {
        let mut errors = Vec::new();
        let mut files = Vec::new();
        collect_files(&self.dir, &mut files, &mut errors);
        let mut current = BTreeMap::new();
        let mut seen = BTreeMap::new();
        for path in files {
            let stamp = std::fs::metadata(&path).ok().and_then(|m| Some((m.modified().ok()?, m.len())));
            if let Some(stamp) = stamp {
                seen.insert(path.clone(), stamp);
                if self.seen.get(&path) == Some(&stamp)
                    && let Some(docs) = self.last_good.get(&path)
                {
                    current.insert(path, docs.clone());
                    continue;
                }
            }
            match parse_file(&path) {
                Ok(docs) => {
                    current.insert(path, docs);
                }
                Err(e) => {
                    if let Some(previous) = self.last_good.get(&path) {
                        current.insert(path, previous.clone());
                    }
                    errors.push(e);
                }
            }
        }
        self.last_good = current;
        self.seen = seen;
        let mut resources = Resources::default();
        for (path, docs) in &self.last_good {
            for doc in docs {
                if let Err(e) = add(&mut resources, doc.clone()) {
                    errors.push(ManifestError::Object { path: path.clone(), kind: e.0, name: e.1, message: e.2 });
                }
            }
        }
        (resources, errors)
    }
}

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>, errors: &mut Vec<ManifestError>) {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(source) => {
            errors.push(ManifestError::Read { path: dir.to_path_buf(), source });
            return;
        }
    };
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for path in paths {
        let hidden = path.file_name().and_then(|n| n.to_str()).is_none_or(|n| n.starts_with('.'));
        if hidden {
            continue;
        }
        if path.is_dir() {
            collect_files(&path, out, errors);
        } else if matches!(path.extension().and_then(|e| e.to_str()), Some("yaml" | "yml" | "json")) {
            out.push(path);
        }
    }
}

/// Parses one file into its documents.
pub fn parse_file(path: &Path) -> Result<Vec<Value>, ManifestError> {
    let text =
        std::fs::read_to_string(path).map_err(|source| ManifestError::Read { path: path.to_path_buf(), source })?;
    parse_documents(&text).map_err(|message| ManifestError::Parse { path: path.to_path_buf(), message })
}

/// Parses YAML (or JSON, a subset of it) with any number of `---`-separated documents.
pub fn parse_documents(text: &str) -> Result<Vec<Value>, String> {
    // The parser's default budget (1,024 documents, 250,000 nodes) protects against hostile input but is too small
    // for a GitOps repository with thousands of routes in one file; the alias and depth limits stay as they are.
    let options = serde_saphyr::options! {
        budget: serde_saphyr::budget! {
            max_documents: 1_000_000,
            max_events: 200_000_000,
            max_nodes: 50_000_000,
        },
    };
    let docs: Vec<Value> = serde_saphyr::from_multiple_with_options(text, options).map_err(|e| e.to_string())?;
    Ok(docs.into_iter().filter(|d| !d.is_null()).collect())
}

/// Adds one document to the bundle if it is a kind the translator reads; other kinds are ignored.
/// Errors come back as (kind, name, message).
pub fn add(resources: &mut Resources, doc: Value) -> Result<(), (String, String, String)> {
    let api_version = doc.get("apiVersion").and_then(Value::as_str).unwrap_or("").to_string();
    let kind = doc.get("kind").and_then(Value::as_str).unwrap_or("").to_string();
    let name = doc.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("").to_string();
    let fail = |e: serde_json::Error| (kind.clone(), name.clone(), e.to_string());
    match (api_version.as_str(), kind.as_str()) {
        ("networking.k8s.io/v1", "Ingress") => resources.ingresses.push(serde_json::from_value(doc).map_err(fail)?),
        ("networking.k8s.io/v1", "IngressClass") => {
            resources.ingress_classes.push(serde_json::from_value(doc).map_err(fail)?)
        }
        ("v1", "Service") => resources.services.push(serde_json::from_value(doc).map_err(fail)?),
        ("discovery.k8s.io/v1", "EndpointSlice") => {
            resources.endpoint_slices.push(serde_json::from_value(doc).map_err(fail)?)
        }
        ("v1", "Secret") => resources.secrets.push(serde_json::from_value(doc).map_err(fail)?),
        ("v1", "Pod") => resources.pods.push(serde_json::from_value(doc).map_err(fail)?),
        ("sluice.dev/v1alpha1", "ApiRoute") => resources.api_routes.push(serde_json::from_value(doc).map_err(fail)?),
        ("sluice.dev/v1alpha1", "Upstream") => resources.upstreams.push(serde_json::from_value(doc).map_err(fail)?),
        ("sluice.dev/v1alpha1", "PluginConfig") => {
            resources.plugin_configs.push(serde_json::from_value(doc).map_err(fail)?)
        }
        ("sluice.dev/v1alpha1", "Consumer") => resources.consumers.push(serde_json::from_value(doc).map_err(fail)?),
        (_, "List") => {
            if let Some(Value::Array(items)) = doc.get("items") {
                for item in items.clone() {
                    add(resources, item)?;
                }
            }
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_thousands_of_documents_in_one_file() {
        let doc = "apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec: {ports: [{port: 80}]}\n";
        let text = vec![doc; 5000].join("---\n");
        assert_eq!(parse_documents(&text).unwrap().len(), 5000);
    }

    #[test]
    fn reads_documents_and_keeps_last_good_file() {
        let dir = tempfile::tempdir().unwrap();
        let svc = "apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec: {ports: [{port: 80}]}\n";
        std::fs::write(dir.path().join("a.yaml"), format!("{svc}---\n---\napiVersion: v1\nkind: ConfigMap\n")).unwrap();
        std::fs::write(dir.path().join("notes.txt"), "not: [yaml").unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        let list = r#"{"apiVersion": "v1", "kind": "List", "items": [
            {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "b"}}]}"#;
        std::fs::write(dir.path().join("sub/b.json"), list).unwrap();
        let mut loader = Loader::new(dir.path());
        let (res, errors) = loader.load();
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(res.services.len(), 2);

        std::fs::write(dir.path().join("a.yaml"), "kind: [broken").unwrap();
        let (res, errors) = loader.load();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(res.services.len(), 2, "the broken file keeps its last good contents");

        std::fs::write(dir.path().join("a.yaml"), "apiVersion: v1\nkind: Service\nmetadata: {name: 5}\nspec: 7\n")
            .unwrap();
        let (res, errors) = loader.load();
        assert!(matches!(errors.as_slice(), [ManifestError::Object { .. }]), "{errors:?}");
        assert_eq!(res.services.len(), 1);
    }
}
