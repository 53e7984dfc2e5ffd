//! Every sluice object in `config/examples/` is accepted the way an API server would accept it (the generated
//! OpenAPI schema with kubectl's strict field validation, then the CEL rules) and deserializes into its Rust type;
//! every object in `crds/testdata/invalid/` is rejected, each for the reason its `# expect:` line names.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use kube::core::cel::{CompiledSchema, Validator, compile_schema};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};
use sluice_crds::{ApiRoute, Consumer, PluginConfig, Upstream, generate};

/// The checks for one kind.
struct Kind {
    json_schema: jsonschema::Validator,
    cel: CompiledSchema,
    deserialize: fn(Value) -> Result<(), String>,
}

fn deserialize<T: DeserializeOwned>(value: Value) -> Result<(), String> {
    serde_json::from_value::<T>(value).map(|_| ()).map_err(|e| e.to_string())
}

/// The API server's view of a schema node, in JSON Schema terms: `nullable` admits `null`,
/// `x-kubernetes-int-or-string` is an integer or a string, and an object with `properties` takes no other fields
/// (the API server would prune them; `kubectl apply`, which validates fields strictly by default, rejects them).
/// Other `x-kubernetes-*` extensions and `format` are left out.
fn to_json_schema(node: &Value) -> Value {
    let Some(object) = node.as_object() else {
        return node.clone();
    };
    let mut out = Map::new();
    for (key, value) in object {
        match key.as_str() {
            "properties" => {
                let properties = value.as_object().into_iter().flatten();
                let converted: Map<String, Value> =
                    properties.map(|(name, child)| (name.clone(), to_json_schema(child))).collect();
                out.insert(key.clone(), Value::Object(converted));
            }
            "items" | "additionalProperties" => {
                out.insert(key.clone(), to_json_schema(value));
            }
            "nullable" | "format" => {}
            k if k.starts_with("x-kubernetes-") => {}
            _ => {
                out.insert(key.clone(), value.clone());
            }
        }
    }
    let preserve = object.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
    if object.contains_key("properties") && !object.contains_key("additionalProperties") && !preserve {
        out.insert("additionalProperties".into(), Value::Bool(false));
    }
    if object.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true)) {
        out.insert("type".into(), json!(["integer", "string"]));
    }
    if object.get("nullable") == Some(&Value::Bool(true)) {
        match out.get_mut("type") {
            Some(Value::String(ty)) => {
                let ty = ty.clone();
                out.insert("type".into(), json!([ty, "null"]));
            }
            Some(Value::Array(types)) => types.push("null".into()),
            _ => {}
        }
        if let Some(Value::Array(members)) = out.get_mut("enum")
            && !members.contains(&Value::Null)
        {
            members.push(Value::Null);
        }
    }
    Value::Object(out)
}

/// The whole-object schema: the CRD's schema plus what every object carries (`apiVersion`, `kind`, `metadata`).
fn object_schema(kind: &str, schema: &Value) -> Value {
    let mut converted = to_json_schema(schema);
    let root = converted.as_object_mut().unwrap();
    let properties = root.entry("properties").or_insert_with(|| json!({})).as_object_mut().unwrap();
    properties
        .insert("apiVersion".into(), json!({"const": format!("{}/{}", sluice_crds::GROUP, sluice_crds::VERSION)}));
    properties.insert("kind".into(), json!({"const": kind}));
    let dns_subdomain = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";
    properties.insert(
        "metadata".into(),
        json!({
            "type": "object",
            "required": ["name"],
            "properties": {
                "name": {"type": "string", "maxLength": 253, "pattern": dns_subdomain},
                "namespace": {"type": "string", "maxLength": 63},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
            },
        }),
    );
    let required = root.entry("required").or_insert_with(|| json!([])).as_array_mut().unwrap();
    for field in ["apiVersion", "kind", "metadata"] {
        required.push(field.into());
    }
    root.insert("additionalProperties".into(), Value::Bool(false));
    converted
}

fn kinds() -> BTreeMap<String, Kind> {
    let mut kinds = BTreeMap::new();
    for crd in generate::definitions() {
        let kind = crd.spec.names.kind.clone();
        let version = &crd.spec.versions[0];
        let schema =
            serde_json::to_value(version.schema.as_ref().unwrap().open_api_v3_schema.as_ref().unwrap()).unwrap();
        let json_schema = jsonschema::draft7::new(&object_schema(&kind, &schema))
            .unwrap_or_else(|e| panic!("{kind}: the converted schema does not compile: {e}"));
        let deserialize: fn(Value) -> Result<(), String> = match kind.as_str() {
            "ApiRoute" => deserialize::<ApiRoute>,
            "Upstream" => deserialize::<Upstream>,
            "PluginConfig" => deserialize::<PluginConfig>,
            "Consumer" => deserialize::<Consumer>,
            other => panic!("no Rust type for {other}"),
        };
        kinds.insert(kind, Kind { json_schema, cel: compile_schema(&schema), deserialize });
    }
    kinds
}

/// What the API server would say about `doc`: schema errors, then CEL rule failures (`path: message`).
/// `None` for objects of other API groups.
fn server_errors(kinds: &BTreeMap<String, Kind>, doc: &Value) -> Option<Vec<String>> {
    let api_version = doc.get("apiVersion").and_then(Value::as_str)?;
    if api_version.split('/').next() != Some(sluice_crds::GROUP) {
        return None;
    }
    let kind_name = doc.get("kind").and_then(Value::as_str).unwrap_or_default();
    let Some(kind) = kinds.get(kind_name) else {
        return Some(vec![format!("unknown kind {kind_name:?} in {api_version}")]);
    };
    let mut errors: Vec<String> =
        kind.json_schema.iter_errors(doc).map(|e| format!("schema: {}: {e}", e.instance_path())).collect();
    if let Err(failures) = Validator::new().validate_compiled(&kind.cel, doc, None) {
        errors.extend(failures.iter().map(|f| format!("CEL: {f}")));
    }
    Some(errors)
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())).flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(yaml_files(&path));
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(path);
        }
    }
    out.sort();
    out
}

fn documents(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    serde_saphyr::from_multiple::<Value>(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn examples_are_accepted() {
    let kinds = kinds();
    let mut problems = Vec::new();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for path in yaml_files(&workspace().join("config/examples")) {
        let shown = path.strip_prefix(workspace()).unwrap().display().to_string();
        for (i, doc) in documents(&path).into_iter().enumerate() {
            let Some(errors) = server_errors(&kinds, &doc) else {
                continue;
            };
            let kind = doc["kind"].as_str().unwrap_or_default().to_string();
            *seen.entry(kind.clone()).or_default() += 1;
            problems.extend(errors.into_iter().map(|e| format!("{shown} #{i}: {e}")));
            if let Some(kind) = kinds.get(&kind)
                && let Err(e) = (kind.deserialize)(doc)
            {
                problems.push(format!("{shown} #{i}: does not deserialize: {e}"));
            }
        }
    }
    assert!(problems.is_empty(), "examples rejected:\n{}", problems.join("\n"));
    for kind in kinds.keys() {
        assert!(seen.contains_key(kind), "config/examples/ has no {kind}");
    }
}

/// The `# expect: ...` line of an invalid example.
fn expectation(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let expected = text.lines().find_map(|line| line.strip_prefix("# expect:")).map(str::trim);
    expected.unwrap_or_else(|| panic!("{}: no `# expect: <error text>` line", path.display())).to_string()
}

#[test]
fn invalid_objects_are_rejected_for_the_expected_reason() {
    let kinds = kinds();
    let files = yaml_files(&Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/invalid"));
    assert!(files.len() >= 13, "expected the invalid cases, found {}", files.len());
    let mut problems = Vec::new();
    for path in files {
        let shown = path.file_name().unwrap().to_string_lossy().to_string();
        let expected = expectation(&path);
        let docs = documents(&path);
        let [doc] = docs.as_slice() else {
            problems.push(format!("{shown}: holds {} objects; keep one per file", docs.len()));
            continue;
        };
        let Some(errors) = server_errors(&kinds, doc) else {
            problems.push(format!("{shown}: not a {} object", sluice_crds::GROUP));
            continue;
        };
        // Every error must be the expected one, so that each file shows one reason and is valid otherwise.
        if errors.is_empty() {
            problems.push(format!("{shown}: accepted, expected {expected:?}"));
        } else if let Some(other) = errors.iter().find(|e| !e.contains(&expected)) {
            problems.push(format!("{shown}: expected only {expected:?}, got {other:?} (all: {errors:?})"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_conversion_admits_null_only_where_nullable() {
    let converted = to_json_schema(&json!({
        "type": "object",
        "properties": {
            "a": {"type": "string", "enum": ["x"], "nullable": true},
            "b": {"x-kubernetes-int-or-string": true},
            "c": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
        },
    }));
    let validator = jsonschema::draft7::new(&converted).unwrap();
    assert!(validator.is_valid(&json!({"a": null, "b": 80, "c": {"any": [1]}})));
    assert!(validator.is_valid(&json!({"a": "x", "b": "http"})));
    assert!(!validator.is_valid(&json!({"b": null})));
    assert!(!validator.is_valid(&json!({"a": "y"})));
    assert!(!validator.is_valid(&json!({"d": 1})));
}
