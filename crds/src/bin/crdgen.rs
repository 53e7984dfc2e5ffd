//! `sluice-crdgen [--check] [DIR...]`: writes the CRD YAML into each directory (default: `crds` and
//! `charts/sluice/crds` when `charts/sluice` exists, plus `docs/crd-reference.md`), or with `--check` reports the
//! files that differ. Run it from the workspace root.

use std::path::{Path, PathBuf};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let check = args.iter().any(|a| a == "--check");
    let mut dirs: Vec<String> = args.into_iter().filter(|a| a != "--check").collect();
    let mut files: Vec<(PathBuf, String)> = Vec::new();
    if dirs.is_empty() {
        dirs.push("crds".into());
        if Path::new("charts/sluice").is_dir() {
            dirs.push("charts/sluice/crds".into());
        }
        files.push((sluice_crds::generate::REFERENCE_PATH.into(), sluice_crds::reference::markdown()));
    }
    let crds = sluice_crds::generate::crds();
    for dir in &dirs {
        for (file, yaml) in &crds {
            files.push((Path::new(dir).join(file), yaml.clone()));
        }
    }
    let mut stale = 0;
    for (path, text) in files {
        if check {
            if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
                eprintln!("{} is out of date", path.display());
                stale += 1;
            }
            continue;
        }
        if let Some(parent) = path.parent()
            && let Err(e) = std::fs::create_dir_all(parent)
        {
            eprintln!("cannot create {}: {e}", parent.display());
            std::process::exit(1);
        }
        if let Err(e) = std::fs::write(&path, text) {
            eprintln!("cannot write {}: {e}", path.display());
            std::process::exit(1);
        }
        println!("wrote {}", path.display());
    }
    if stale > 0 {
        eprintln!("run `{}` to regenerate", sluice_crds::generate::REGENERATE);
        std::process::exit(1);
    }
}
