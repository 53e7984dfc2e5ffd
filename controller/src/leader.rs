//! Leader election with a coordination.k8s.io Lease, so that of several controller replicas only one writes to
//! etcd and to statuses. Every replica keeps its caches warm, so a new leader starts syncing at once.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Client;
use kube::api::{Api, PostParams};

/// A candidate for one Lease.
pub struct Elector {
    api: Api<Lease>,
    name: String,
    identity: String,
    duration: Duration,
}

/// What a look at the Lease found.
enum Attempt {
    /// We hold it (newly or still).
    Held,
    /// Someone else holds a live lease.
    Taken(String),
}

impl Elector {
    /// A candidate `identity` for the Lease `namespace/name`, held for `duration` between renewals.
    pub fn new(client: Client, namespace: &str, name: &str, identity: &str, duration: Duration) -> Elector {
        Elector {
            api: Api::namespaced(client, namespace),
            name: name.to_string(),
            identity: identity.to_string(),
            duration,
        }
    }

    fn retry_period(&self) -> Duration {
        self.duration / 3
    }

    /// Waits until this candidate holds the Lease.
    pub async fn acquire(&self) {
        let mut last_holder = String::new();
        loop {
            match self.try_hold().await {
                Ok(Attempt::Held) => {
                    tracing::info!(lease = %self.name, identity = %self.identity, "became leader");
                    return;
                }
                Ok(Attempt::Taken(holder)) => {
                    if holder != last_holder {
                        tracing::info!(lease = %self.name, %holder, "another replica leads; standing by");
                        last_holder = holder;
                    }
                }
                Err(e) => tracing::warn!(lease = %self.name, error = %e, "leader election failed; retrying"),
            }
            tokio::time::sleep(self.retry_period()).await;
        }
    }

    /// Renews the Lease until it cannot be renewed within its duration; returns when leadership is lost.
    pub async fn keep(&self) {
        let mut last_renewal = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(self.retry_period()).await;
            match self.try_hold().await {
                Ok(Attempt::Held) => last_renewal = tokio::time::Instant::now(),
                Ok(Attempt::Taken(holder)) => {
                    tracing::error!(lease = %self.name, %holder, "leadership taken over");
                    return;
                }
                Err(e) => {
                    tracing::warn!(lease = %self.name, error = %e, "renewing the lease failed");
                    if last_renewal.elapsed() >= self.duration {
                        tracing::error!(lease = %self.name, "lease expired without renewal; leadership lost");
                        return;
                    }
                }
            }
        }
    }

    async fn try_hold(&self) -> kube::Result<Attempt> {
        let now = Timestamp::now();
        let seconds = i32::try_from(self.duration.as_secs()).unwrap_or(i32::MAX);
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta { name: Some(self.name.clone()), ..ObjectMeta::default() },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(seconds),
                    acquire_time: Some(MicroTime(now)),
                    renew_time: Some(MicroTime(now)),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            self.api.create(&PostParams::default(), &lease).await?;
            return Ok(Attempt::Held);
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let expires = spec.renew_time.as_ref().map(|t| t.0).unwrap_or_default()
            + SignedDuration::from_secs(i64::from(spec.lease_duration_seconds.unwrap_or(seconds)));
        if holder != self.identity && !holder.is_empty() && expires > now {
            return Ok(Attempt::Taken(holder));
        }
        if holder != self.identity {
            spec.acquire_time = Some(MicroTime(now));
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        spec.holder_identity = Some(self.identity.clone());
        spec.lease_duration_seconds = Some(seconds);
        spec.renew_time = Some(MicroTime(now));
        // The resourceVersion in `lease` makes this a compare-and-swap: a concurrent taker makes it fail.
        self.api.replace(&self.name, &PostParams::default(), &lease).await?;
        Ok(Attempt::Held)
    }
}
