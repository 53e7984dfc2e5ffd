//! The example manifests in `config/examples/` (the local stack's input) parse, and translate with no problem.

use sluice_controller::manifests::Loader;
use sluice_controller::translate::{Options, translate};

#[test]
fn examples_translate_cleanly() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/examples");
    let (resources, errors) = Loader::new(dir).load();
    assert!(errors.is_empty(), "{errors:?}");
    let out = translate(&resources, &Options::default());
    let problems: Vec<_> = out.statuses.iter().flat_map(|s| &s.problems).collect();
    assert!(problems.is_empty(), "{problems:?}");
    assert!(out.statuses.iter().any(|s| s.object.kind == "Ingress"), "the demo Ingress is ours");
    let ingress_routes = out.config.routes.keys().filter(|id| id.starts_with("ing.")).count();
    assert_eq!(ingress_routes, 6, "the demo's four rule paths and default backend, and the TLS example's path");
    assert_eq!(out.config.ssls.len(), 1, "the TLS example's certificate");
    for kind in ["ApiRoute", "Upstream", "PluginConfig", "Consumer"] {
        assert!(out.statuses.iter().any(|s| s.object.kind == kind), "an example {kind} is translated");
    }
    assert!(!out.config.plugin_configs.is_empty() && !out.config.consumers.is_empty());
}
