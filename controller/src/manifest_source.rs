//! The manifest-directory source: a [`Loader`] plus a file watcher that fires the trigger.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::Notify;

use crate::manifests::{Loader, ManifestError};
use crate::metrics::Metrics;
use crate::pipeline::Source;
use crate::resources::Resources;

/// Reads the directory on every snapshot; logs and counts each file problem once.
pub struct ManifestSource {
    loader: Loader,
    metrics: Metrics,
    reported: BTreeSet<String>,
}

impl ManifestSource {
    /// A source over `loader`'s directory.
    pub fn new(loader: Loader, metrics: Metrics) -> ManifestSource {
        ManifestSource { loader, metrics, reported: BTreeSet::new() }
    }
}

impl Source for ManifestSource {
    fn snapshot(&mut self) -> Resources {
        let (resources, errors) = self.loader.load();
        let now: BTreeSet<String> = errors.iter().map(ToString::to_string).collect();
        for e in &errors {
            let text = e.to_string();
            if !self.reported.contains(&text) {
                let stage = if matches!(e, ManifestError::Object { .. }) { "object" } else { "file" };
                tracing::error!(error = %text, "manifest rejected; keeping the rest (and this file's last good contents)");
                self.metrics.manifest_errors.with_label_values(&[stage]).inc();
            }
        }
        self.reported = now;
        resources
    }
}

/// Watches `dir` recursively and fires `trigger` on any change. A slow periodic trigger backs it up, for file
/// systems where change events are unreliable (network mounts, ConfigMap symlink swaps).
pub fn watch(dir: &std::path::Path, trigger: Arc<Notify>) -> notify::Result<notify::RecommendedWatcher> {
    let on_event = trigger.clone();
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if res.is_ok() {
            on_event.notify_one();
        }
    })?;
    watcher.watch(dir, RecursiveMode::Recursive)?;
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(10)).await;
            trigger.notify_one();
        }
    });
    Ok(watcher)
}
