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
    assert_eq!(out.statuses.len(), 1, "the demo Ingress is ours");
    assert_eq!(out.config.routes.len(), 5, "four rule paths and the default backend");
    assert_eq!(out.config.upstreams.len(), 3);
}
