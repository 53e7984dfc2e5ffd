//! The generated CRDs pass the checks a real API server applies when they are created: structural schemas, the
//! fields allowed at the root, printer columns, names, and CEL rules that compile, refer to fields that exist and
//! stay inside the cost budget.

use std::collections::BTreeSet;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::core::cel::{ScopeContext, check_rule_scope, compile_schema};
use serde_json::{Map, Value};
use sluice_crds::generate;

/// The API server's per-rule cost limit (`PerCallLimit`).
const PER_RULE_COST_LIMIT: u64 = 1_000_000;
/// The API server's limit for all rules of one schema (`StaticEstimatedCRDCostLimit`).
const PER_CRD_COST_LIMIT: u64 = 100_000_000;
/// How many times a value under a list without `maxItems` may repeat in a 3 MiB request: the API server's estimate
/// for unbounded cardinality (`MaxRequestSizeBytes / (minimum size + 1)`, with a minimum size of 2 for `{}`).
const UNBOUNDED_CARDINALITY: u64 = 3 * 1024 * 1024 / 3;

/// The formats the API server's OpenAPI validation knows; others are rejected by CRD validation.
const FORMATS: &[&str] = &[
    "bsonobjectid",
    "uri",
    "email",
    "hostname",
    "ipv4",
    "ipv6",
    "cidr",
    "mac",
    "uuid",
    "uuid3",
    "uuid4",
    "uuid5",
    "isbn",
    "isbn10",
    "isbn13",
    "creditcard",
    "ssn",
    "hexcolor",
    "rgbcolor",
    "byte",
    "password",
    "date",
    "duration",
    "datetime",
    "date-time",
    "int32",
    "int64",
    "float",
    "double",
];

fn schema_of(crd: &CustomResourceDefinition) -> Value {
    let version = &crd.spec.versions[0];
    serde_json::to_value(version.schema.as_ref().unwrap().open_api_v3_schema.as_ref().unwrap()).unwrap()
}

fn name(crd: &CustomResourceDefinition) -> String {
    crd.metadata.name.clone().unwrap()
}

/// Every schema node with its path, parents first, together with how many times it can occur in one object
/// (`None`: under a list or map without a bound).
fn nodes(schema: &Value) -> Vec<(String, &Map<String, Value>, Option<u64>)> {
    fn walk<'a>(
        path: String,
        schema: &'a Value,
        cardinality: Option<u64>,
        out: &mut Vec<(String, &'a Map<String, Value>, Option<u64>)>,
    ) {
        // Non-object schemas (`true`, `false`) are reported by `structural_problems` at their parent.
        let Some(object) = schema.as_object() else {
            return;
        };
        out.push((path.clone(), object, cardinality));
        if let Some(Value::Object(properties)) = object.get("properties") {
            for (key, child) in properties {
                walk(format!("{path}.{key}"), child, cardinality, out);
            }
        }
        if let Some(items) = object.get("items") {
            let bound = object.get("maxItems").and_then(Value::as_u64);
            walk(format!("{path}[]"), items, cardinality.zip(bound).map(|(c, b)| c * b), out);
        }
        if let Some(values @ Value::Object(_)) = object.get("additionalProperties") {
            let bound = object.get("maxProperties").and_then(Value::as_u64);
            walk(format!("{path}.*"), values, cardinality.zip(bound).map(|(c, b)| c * b), out);
        }
        for key in ["allOf", "anyOf", "oneOf"] {
            for (i, child) in object.get(key).and_then(Value::as_array).into_iter().flatten().enumerate() {
                walk(format!("{path}.{key}[{i}]"), child, cardinality, out);
            }
        }
        if let Some(child) = object.get("not") {
            walk(format!("{path}.not"), child, cardinality, out);
        }
    }
    let mut out = Vec::new();
    walk(String::new(), schema, Some(1), &mut out);
    out
}

fn type_of(node: &Map<String, Value>) -> Option<&str> {
    node.get("type").and_then(Value::as_str)
}

fn matches_type(value: &Value, ty: Option<&str>) -> bool {
    match ty {
        Some("string") => value.is_string(),
        Some("integer") => value.is_i64() || value.is_u64(),
        Some("number") => value.is_number(),
        Some("boolean") => value.is_boolean(),
        Some("object") => value.is_object(),
        Some("array") => value.is_array(),
        _ => true,
    }
}

/// The structural-schema rules of apiextensions-apiserver (`pkg/apiserver/schema/validation.go`) and the CRD
/// schema validation around them, as they apply to what schemars can emit.
fn structural_problems(schema: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    for (path, node, _) in nodes(schema) {
        let at = if path.is_empty() { "<root>".to_string() } else { path.clone() };
        let mut problem = |text: String| problems.push(format!("{at}: {text}"));
        let children = node.get("properties").and_then(Value::as_object).into_iter().flat_map(|p| p.values());
        if children.chain(node.get("items")).any(|child| !child.is_object()) {
            problem("nested schemas must be objects, not booleans".into());
        }
        let int_or_string = node.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true));
        let preserve = node.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
        let in_junctor = path.contains("Of[") || path.ends_with(".not");
        for key in [
            "$ref",
            "$schema",
            "$defs",
            "definitions",
            "id",
            "additionalItems",
            "patternProperties",
            "dependencies",
            "const",
        ] {
            if node.contains_key(key) {
                problem(format!("`{key}` is not allowed in a CRD schema"));
            }
        }
        for key in ["allOf", "anyOf", "oneOf", "not"] {
            if node.contains_key(key) {
                problem(format!("`{key}` needs care to stay structural; none is expected here"));
            }
        }
        match type_of(node) {
            None if int_or_string || preserve || in_junctor => {}
            None => {
                problem("every node needs a `type` (or x-kubernetes-int-or-string / preserve-unknown-fields)".into())
            }
            Some(ty) if int_or_string => problem(format!("x-kubernetes-int-or-string must not have type {ty}")),
            Some("string" | "integer" | "number" | "boolean" | "object" | "array") => {}
            Some(ty) => problem(format!("type {ty} is not one the API server takes")),
        }
        if node.contains_key("type") && !node.get("type").is_some_and(Value::is_string) {
            problem("`type` must be a single type, not a list".into());
        }
        if type_of(node) == Some("array") && !node.contains_key("items") {
            problem("arrays need `items`".into());
        }
        if node.contains_key("properties") && node.contains_key("additionalProperties") {
            problem("`properties` and `additionalProperties` are mutually exclusive".into());
        }
        if node.get("additionalProperties") == Some(&Value::Bool(false)) {
            problem("`additionalProperties: false` is not allowed".into());
        }
        if node.get("uniqueItems") == Some(&Value::Bool(true)) {
            problem("`uniqueItems: true` is not allowed; use x-kubernetes-list-type: set".into());
        }
        if let Some(Value::Array(members)) = node.get("enum") {
            for member in members {
                if member.is_null() {
                    problem("`null` in `enum` never admits anything; `nullable: true` admits null".into());
                } else if !matches_type(member, type_of(node)) {
                    problem(format!("enum member {member} is not of the node's type"));
                }
            }
        }
        if let Some(default) = node.get("default")
            && !matches_type(default, type_of(node))
        {
            problem(format!("default {default} is not of the node's type"));
        }
        if let Some(format) = node.get("format").and_then(Value::as_str)
            && !FORMATS.contains(&format)
        {
            problem(format!("format {format} is unknown to the API server"));
        }
        if let Some(Value::Array(required)) = node.get("required") {
            let properties = node.get("properties").and_then(Value::as_object);
            for field in required.iter().filter_map(Value::as_str) {
                if !properties.is_some_and(|p| p.contains_key(field)) {
                    problem(format!("required field {field} is not among the properties"));
                }
            }
        }
        let numeric = matches!(type_of(node), Some("integer" | "number"));
        for key in ["minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf"] {
            if node.contains_key(key) && !numeric {
                problem(format!("`{key}` on a non-numeric node"));
            }
        }
        for key in ["minLength", "maxLength", "pattern"] {
            if node.contains_key(key) && type_of(node) != Some("string") && !int_or_string {
                problem(format!("`{key}` on a non-string node"));
            }
        }
        for key in ["minItems", "maxItems"] {
            if node.contains_key(key) && type_of(node) != Some("array") {
                problem(format!("`{key}` on a non-array node"));
            }
        }
        match node.get("x-kubernetes-list-type").and_then(Value::as_str) {
            None => {}
            Some("atomic" | "set") => {}
            Some("map") => {
                let items = node.get("items").and_then(Value::as_object);
                let keys: Vec<&str> = node
                    .get("x-kubernetes-list-map-keys")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .collect();
                if keys.is_empty() {
                    problem("x-kubernetes-list-type map needs x-kubernetes-list-map-keys".into());
                }
                let item_required: Vec<&str> = items
                    .and_then(|i| i.get("required"))
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .collect();
                for key in keys {
                    let has_default = items
                        .and_then(|i| i.get("properties"))
                        .and_then(|p| p.get(key))
                        .is_some_and(|p| p.get("default").is_some());
                    if !item_required.contains(&key) && !has_default {
                        problem(format!("list map key {key} must be required or defaulted"));
                    }
                }
            }
            Some(other) => problem(format!("x-kubernetes-list-type {other} is unknown")),
        }
    }
    // With the status subresource, only these may appear at the root (ValidateCustomResourceDefinitionValidation).
    let allowed = ["description", "type", "title", "properties", "required", "x-kubernetes-validations"];
    for key in schema.as_object().unwrap().keys() {
        if !allowed.contains(&key.as_str()) {
            problems.push(format!("<root>: `{key}` is not allowed at the root with a status subresource"));
        }
    }
    if type_of(schema.as_object().unwrap()) != Some("object") {
        problems.push("<root>: the root must be of type object".into());
    }
    if let Some(metadata) = schema.pointer("/properties/metadata") {
        problems.push(format!("<root>: metadata may only restrict name and generateName, found {metadata}"));
    }
    problems
}

#[test]
fn schemas_are_structural() {
    let mut problems = Vec::new();
    for crd in generate::definitions() {
        for problem in structural_problems(&schema_of(&crd)) {
            problems.push(format!("{}: {problem}", name(&crd)));
        }
    }
    assert!(problems.is_empty(), "non-structural schemas:\n{}", problems.join("\n"));
}

#[test]
fn the_structural_check_catches_what_it_should() {
    let schema = serde_json::json!({
        "type": "object",
        "properties": {
            "a": {"description": "no type"},
            "b": {"type": "string", "enum": ["x", null], "nullable": true},
            "c": {"type": "object", "properties": {"d": {"type": "string"}}, "additionalProperties": false},
            "e": {"type": "integer", "format": "int64", "pattern": "^1$"},
            "f": {"$ref": "#/definitions/g", "type": "object"},
        },
    });
    let problems = structural_problems(&schema).join("\n");
    for expected in [
        ".a: every node needs a `type`",
        ".b: `null` in `enum`",
        ".c: `properties` and",
        ".c: `additionalProperties: false`",
        ".e: `pattern` on a non-string",
        ".f: `$ref`",
    ] {
        assert!(problems.contains(expected), "{expected:?} not in\n{problems}");
    }
}

#[test]
fn crds_have_status_printer_columns_short_names_and_categories() {
    let expected: &[(&str, &str, &[&str])] = &[
        ("ApiRoute", "ar", &["Hosts", "Paths", "Accepted", "Programmed", "Age"]),
        ("Upstream", "su", &["Balancer", "Accepted", "Programmed", "Age"]),
        ("PluginConfig", "pc", &["Plugins", "Accepted", "Programmed", "Age"]),
        ("Consumer", "sc", &["Accepted", "Programmed", "Age"]),
    ];
    let crds = generate::definitions();
    assert_eq!(crds.len(), expected.len());
    let mut short_names = BTreeSet::new();
    for (crd, (kind, short, columns)) in crds.iter().zip(expected) {
        let names = &crd.spec.names;
        assert_eq!(names.kind, *kind);
        assert_eq!(crd.spec.group, sluice_crds::GROUP);
        assert_eq!(crd.spec.scope, "Namespaced");
        assert_eq!(name(crd), format!("{}.{}", names.plural, crd.spec.group));
        assert_eq!(names.singular.as_deref(), Some(kind.to_lowercase().as_str()));
        assert_eq!(names.short_names.as_deref(), Some(&[short.to_string()][..]), "{kind} short names");
        assert!(short_names.insert(short.to_string()), "short name {short} used twice");
        assert_eq!(names.categories.as_deref(), Some(&["sluice".to_string()][..]), "{kind} categories");
        assert_eq!(crd.spec.versions.len(), 1);
        let version = &crd.spec.versions[0];
        assert_eq!(version.name, sluice_crds::VERSION);
        assert!(version.served && version.storage);
        let subresources = version.subresources.as_ref().expect("subresources");
        assert!(subresources.status.is_some(), "{kind} has no status subresource");
        assert!(subresources.scale.is_none());
        let found: Vec<&str> = version.additional_printer_columns.iter().flatten().map(|c| c.name.as_str()).collect();
        assert_eq!(found, *columns, "{kind} printer columns");
        for column in version.additional_printer_columns.iter().flatten() {
            assert!(
                ["integer", "number", "string", "boolean", "date"].contains(&column.type_.as_str()),
                "{kind} column {} has type {}",
                column.name,
                column.type_
            );
            assert!(column.json_path.starts_with('.'), "{kind} column {} JSONPath", column.name);
            let expected_type = if column.name == "Age" { "date" } else { "string" };
            assert_eq!(column.type_, expected_type, "{kind} column {}", column.name);
        }
        let schema = schema_of(crd);
        assert!(schema.pointer("/properties/status/properties/conditions").is_some(), "{kind} status");
        assert_eq!(
            schema.pointer("/properties/status/properties/conditions/x-kubernetes-list-type"),
            Some(&Value::from("map"))
        );
    }
}

/// The CEL rules of a node: `(rule, message)`.
fn rules_of(node: &Map<String, Value>) -> Vec<(String, String)> {
    node.get("x-kubernetes-validations")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|r| {
            let text = |k: &str| r.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
            (text("rule"), text("message"))
        })
        .collect()
}

#[test]
fn cel_rules_compile_and_have_messages() {
    let mut problems = Vec::new();
    let mut count = 0;
    for crd in generate::definitions() {
        let schema = schema_of(&crd);
        fn compile_errors(compiled: &kube::core::cel::CompiledSchema, out: &mut Vec<String>) {
            out.extend(compiled.compilation_errors().iter().map(|e| e.to_string()));
            compiled.properties.values().for_each(|c| compile_errors(c, out));
            compiled.items.iter().for_each(|c| compile_errors(c, out));
            compiled.additional_properties.iter().for_each(|c| compile_errors(c, out));
        }
        let mut errors = Vec::new();
        compile_errors(&compile_schema(&schema), &mut errors);
        problems.extend(errors.into_iter().map(|e| format!("{}: {e}", name(&crd))));
        for (path, node, _) in nodes(&schema) {
            for (rule, message) in rules_of(node) {
                count += 1;
                if message.is_empty() {
                    problems.push(format!("{}{path}: rule {rule:?} has no message", name(&crd)));
                }
                // kube-cel reports the variables that macros bind (`a` in `self.all(a, ...)`) too; those are fine.
                let binders = macro_binders(&rule);
                let warnings = check_rule_scope(&rule, ScopeContext::CrdValidation);
                for warning in
                    warnings.iter().filter(|w| !binders.iter().any(|b| w.message.contains(&format!("'{b}'"))))
                {
                    problems.push(format!("{}{path}: {}", name(&crd), warning.message));
                }
            }
        }
    }
    assert!(count >= 12, "expected the CEL rules of all four kinds, found {count}");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The variables that macros bind in a rule: `a` in `self.all(a, ...)`.
fn macro_binders(rule: &str) -> Vec<String> {
    let mut out = Vec::new();
    for name in ["all", "exists", "exists_one", "filter", "map"] {
        for (at, _) in rule.match_indices(&format!(".{name}(")) {
            let rest = &rule[at + name.len() + 2..];
            if let Some(comma) = rest.find(',') {
                let binder = rest[..comma].trim();
                if !binder.is_empty() && binder.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    out.push(binder.to_string());
                }
            }
        }
    }
    out
}

/// `self.a.b` chains in a rule, as field names from the rule's node.
fn field_chains(rule: &str) -> Vec<Vec<String>> {
    let mut chains = Vec::new();
    let bytes = rule.as_bytes();
    let mut i = 0;
    while let Some(found) = rule[i..].find("self") {
        let start = i + found;
        i = start + 4;
        let boundary_before = start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        if !boundary_before {
            continue;
        }
        let mut chain = Vec::new();
        let mut j = i;
        while j < bytes.len() && bytes[j] == b'.' {
            let name_start = j + 1;
            let mut k = name_start;
            while k < bytes.len() && (bytes[k].is_ascii_alphanumeric() || bytes[k] == b'_') {
                k += 1;
            }
            // A call such as `.all(` or `.size(` ends the field chain.
            if k == name_start || bytes.get(k) == Some(&b'(') {
                break;
            }
            chain.push(rule[name_start..k].to_string());
            j = k;
        }
        chains.push(chain);
    }
    chains
}

#[test]
fn cel_rules_name_fields_that_exist() {
    let mut problems = Vec::new();
    for crd in generate::definitions() {
        let schema = schema_of(&crd);
        for (path, node, _) in nodes(&schema) {
            for (rule, _) in rules_of(node) {
                for chain in field_chains(&rule) {
                    let mut at = node;
                    for field in &chain {
                        match at.get("properties").and_then(|p| p.get(field)).and_then(Value::as_object) {
                            Some(next) => at = next,
                            None => {
                                problems
                                    .push(format!("{}{path}: rule {rule:?} names unknown field {field}", name(&crd)));
                                break;
                            }
                        }
                    }
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The bound of the list or map that a rule iterates with a macro (`self.all(`, `self.x.exists(`, ...), if any.
fn iterations(rule: &str, node: &Map<String, Value>) -> Vec<Result<u64, String>> {
    let mut out = Vec::new();
    for chain in field_chains(rule).into_iter().collect::<BTreeSet<_>>() {
        let mut at = node;
        let mut ok = true;
        for field in &chain {
            match at.get("properties").and_then(|p| p.get(field)).and_then(Value::as_object) {
                Some(next) => at = next,
                None => ok = false,
            }
        }
        let prefix = if chain.is_empty() { "self".to_string() } else { format!("self.{}", chain.join(".")) };
        let iterated = ["all", "exists", "exists_one", "filter", "map"]
            .iter()
            .map(|m| rule.matches(&format!("{prefix}.{m}(")).count())
            .sum::<usize>();
        if !ok || iterated == 0 {
            continue;
        }
        let bound = at.get("maxItems").or_else(|| at.get("maxProperties")).and_then(Value::as_u64);
        for _ in 0..iterated {
            out.push(bound.ok_or_else(|| format!("{prefix} has no maxItems")));
        }
    }
    out
}

/// A coarse version of the API server's CEL cost estimate: 10 per evaluation, times the bound of every list a rule
/// iterates, times how often the rule's node can occur. Rules that iterate unbounded lists are what the server
/// rejects most often ("estimated rule cost exceeds budget"), so those fail outright.
#[test]
fn cel_rules_stay_inside_the_cost_budget() {
    let mut problems = Vec::new();
    for crd in generate::definitions() {
        let schema = schema_of(&crd);
        let mut total: u64 = 0;
        for (path, node, cardinality) in nodes(&schema) {
            for (rule, _) in rules_of(node) {
                let mut cost: u64 = 10;
                for bound in iterations(&rule, node) {
                    match bound {
                        Ok(bound) => cost = cost.saturating_mul(bound.max(1)),
                        Err(why) => problems
                            .push(format!("{}{path}: rule {rule:?} iterates without a bound: {why}", name(&crd))),
                    }
                }
                if cost > PER_RULE_COST_LIMIT {
                    problems.push(format!("{}{path}: rule {rule:?} costs about {cost} per evaluation", name(&crd)));
                }
                total = total.saturating_add(cost.saturating_mul(cardinality.unwrap_or(UNBOUNDED_CARDINALITY)));
            }
        }
        if total > PER_CRD_COST_LIMIT {
            problems.push(format!("{}: all rules together cost about {total}", name(&crd)));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn field_chains_are_read_from_rules() {
    assert_eq!(
        field_chains("self.all(a, self.filter(b, b.name == a.name).size() == 1)"),
        vec![Vec::<String>::new(); 2]
    );
    assert_eq!(
        field_chains("!has(self.passHost) || self.passHost != 'rewrite'"),
        vec![vec!["passHost"], vec!["passHost"]]
    );
    assert_eq!(field_chains("myself.x"), Vec::<Vec<String>>::new());
}
