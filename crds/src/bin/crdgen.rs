//! `sluice-crdgen [DIR...]`: writes the CRD YAML into each directory (default: `crds` and `charts/sluice/crds`
//! when it exists), or checks it with `--check`.

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let check = args.iter().any(|a| a == "--check");
    let mut dirs: Vec<String> = args.into_iter().filter(|a| a != "--check").collect();
    if dirs.is_empty() {
        dirs.push("crds".into());
        if std::path::Path::new("charts/sluice").is_dir() {
            dirs.push("charts/sluice/crds".into());
        }
    }
    let mut stale = 0;
    for dir in &dirs {
        if !check && let Err(e) = std::fs::create_dir_all(dir) {
            eprintln!("cannot create {dir}: {e}");
            std::process::exit(1);
        }
        for (file, yaml) in sluice_crds::generate::crds() {
            let path = std::path::Path::new(dir).join(&file);
            if check {
                if std::fs::read_to_string(&path).ok().as_deref() != Some(yaml.as_str()) {
                    eprintln!("{} is out of date", path.display());
                    stale += 1;
                }
            } else if let Err(e) = std::fs::write(&path, yaml) {
                eprintln!("cannot write {}: {e}", path.display());
                std::process::exit(1);
            } else {
                println!("wrote {}", path.display());
            }
        }
    }
    if stale > 0 {
        eprintln!("run `cargo run -p sluice-crds --bin sluice-crdgen` to regenerate");
        std::process::exit(1);
    }
}
