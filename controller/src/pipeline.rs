//! The sync loop shared by both modes: trigger → snapshot → translate → write to etcd → report status.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use sluice_model::Keys;
use tokio::sync::Notify;

use crate::metrics::Metrics;
use crate::resources::Resources;
use crate::sink::EtcdSink;
use crate::translate::{self, ObjectRef, Problem, StatusUpdate};

/// Where the Kubernetes objects come from.
pub trait Source {
    /// The current objects, read without waiting.
    fn snapshot(&mut self) -> Resources;
}

/// Where per-object status goes after each sync.
pub trait Reporter {
    /// Reports the statuses of one translation, with whether its configuration reached etcd.
    fn report(&mut self, statuses: &[StatusUpdate], synced: Result<(), &str>) -> impl Future<Output = ()> + Send;
}

/// One controller instance's sync loop.
pub struct Pipeline<S, R> {
    /// The object source.
    pub source: S,
    /// The status reporter.
    pub reporter: R,
    /// The etcd writer.
    pub sink: EtcdSink,
    /// Translator options.
    pub options: translate::Options,
    /// The etcd key layout.
    pub keys: Keys,
    /// Metrics to update.
    pub metrics: Metrics,
    /// Notified whenever any watched object changes.
    pub trigger: Arc<Notify>,
    /// Set once the first sync has completed.
    pub ready: Arc<AtomicBool>,
    /// How long to wait after a change for more changes before syncing.
    pub debounce: Duration,
    /// Seals consumers' credentials before they are written.
    pub sealer: crate::sealing::Sealer,
}

impl<S: Source, R: Reporter> Pipeline<S, R> {
    /// Runs forever: one sync per burst of changes, retried with backoff while etcd fails.
    pub async fn run(mut self) {
        let mut known: BTreeSet<(ObjectRef, Problem)> = BTreeSet::new();
        let mut backoff = Duration::from_millis(100);
        // The first sync needs no trigger.
        self.trigger.notify_one();
        loop {
            self.trigger.notified().await;
            tokio::time::sleep(self.debounce).await;
            let started = Instant::now();
            let resources = self.source.snapshot();
            let mut out = translate::translate(&resources, &self.options);
            self.sealer.seal(&mut out.config);
            self.metrics.routes.set(out.config.routes.len() as i64);
            self.metrics.upstreams.set(out.config.upstreams.len() as i64);
            let desired = out.config.to_kv(&self.keys);
            match self.sink.apply(&desired).await {
                Ok(applied) => {
                    backoff = Duration::from_millis(100);
                    self.metrics.syncs.with_label_values(&["ok"]).inc();
                    self.metrics.sync_seconds.with_label_values(&["ok"]).observe(started.elapsed().as_secs_f64());
                    self.metrics.etcd_writes.with_label_values(&["put"]).inc_by(applied.puts as u64);
                    self.metrics.etcd_writes.with_label_values(&["delete"]).inc_by(applied.deletes as u64);
                    if applied.puts + applied.deletes > 0 {
                        tracing::info!(puts = applied.puts, deletes = applied.deletes, "synced configuration to etcd");
                    }
                    let mut statuses = out.statuses;
                    add_conflicts(&mut statuses, &applied.foreign, &desired);
                    self.note_problems(&statuses, &mut known);
                    self.reporter.report(&statuses, Ok(())).await;
                    self.ready.store(true, Ordering::Release);
                }
                Err(e) => {
                    self.metrics.syncs.with_label_values(&["error"]).inc();
                    tracing::warn!(error = %e, retry_in = ?backoff, "sync to etcd failed");
                    self.reporter.report(&out.statuses, Err(&e.to_string())).await;
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    self.trigger.notify_one();
                }
            }
        }
    }

    /// Logs and counts each problem once, when it appears, and logs when it goes away.
    fn note_problems(&self, statuses: &[StatusUpdate], known: &mut BTreeSet<(ObjectRef, Problem)>) {
        let now: BTreeSet<_> =
            statuses.iter().flat_map(|s| s.problems.iter().map(|p| (s.object.clone(), p.clone()))).collect();
        for (object, problem) in now.difference(known) {
            tracing::warn!(object = %object, reason = problem.reason.as_str(), "{}", problem.message);
            self.metrics.problems.with_label_values(&[object.kind.as_str(), problem.reason.as_str()]).inc();
        }
        for (object, problem) in known.difference(&now) {
            tracing::info!(object = %object, reason = problem.reason.as_str(), "resolved: {}", problem.message);
        }
        *known = now;
    }
}

/// Adds a `Conflict` problem to the owner of each key we wanted that holds an object someone else wrote.
fn add_conflicts(statuses: &mut [StatusUpdate], foreign: &[String], desired: &BTreeMap<String, Vec<u8>>) {
    for key in foreign {
        let labels = desired
            .get(key)
            .and_then(|v| serde_json::from_slice::<serde_json::Value>(v).ok())
            .and_then(|v| v.get("labels").cloned())
            .unwrap_or_default();
        let label = |k: &str| labels.get(k).and_then(|v| v.as_str()).unwrap_or("").to_string();
        let owner = ObjectRef {
            kind: label(sluice_model::labels::OWNER_KIND),
            namespace: label(sluice_model::labels::OWNER_NAMESPACE),
            name: label(sluice_model::labels::OWNER_NAME),
        };
        let problem = Problem {
            reason: translate::Reason::Conflict,
            message: format!("etcd key {key} holds an object not written by sluice; it was left as it is"),
        };
        match statuses.iter_mut().find(|s| s.object == owner) {
            Some(s) => s.problems.push(problem),
            None => tracing::warn!(%key, "not overwriting an object that was not written by sluice"),
        }
    }
}

/// A reporter that writes status changes to the log, for manifest-directory mode.
#[derive(Default)]
pub struct LogReporter {
    last: BTreeMap<ObjectRef, String>,
}

impl Reporter for LogReporter {
    async fn report(&mut self, statuses: &[StatusUpdate], synced: Result<(), &str>) {
        let mut now = BTreeMap::new();
        for s in statuses {
            let status = if s.object.kind == "Ingress" {
                let problems: Vec<_> = s
                    .problems
                    .iter()
                    .map(|p| serde_json::json!({"reason": p.reason.as_str(), "message": p.message}))
                    .collect();
                serde_json::json!({"loadBalancer": {"ingress": s.load_balancer}, "problems": problems})
            } else {
                // Without transition times, so that an unchanged status is not logged again.
                let conditions: Vec<_> = crate::conditions::conditions(s, synced, &[])
                    .into_iter()
                    .map(|c| {
                        serde_json::json!({"type": c.type_, "status": c.status, "reason": c.reason, "message": c.message})
                    })
                    .collect();
                serde_json::json!({"conditions": conditions, "observedGeneration": s.generation})
            }
            .to_string();
            if self.last.get(&s.object) != Some(&status) {
                tracing::info!(object = %s.object, status = %status, "status");
            }
            now.insert(s.object.clone(), status);
        }
        self.last = now;
    }
}
