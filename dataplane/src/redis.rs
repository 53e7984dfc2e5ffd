//! Connections to Redis deployments, one per distinct [`RedisTarget`], shared by every limit that names it.
//!
//! A link is a task that owns the connection (a multiplexed connection to one server or to the master the
//! Sentinels name, or a cluster connection that follows the slots) and runs the batches its limits send it, each
//! bounded by the target's timeout. A failed or timed-out batch drops the connection and marks the target down:
//! limits then count locally (see `plugins/redis_count.rs`), and the task probes the target with `PING` until it
//! answers, which marks it up again. Transitions are logged once and exported as `sluice_redis_up{target}`.
//! Nothing here runs on the request path: a request only reads [`RedisLink::is_up`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use prometheus::{IntCounter, IntGauge};
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster_async::ClusterConnection;
use redis::{
    AsyncConnectionConfig, Client, ConnectionAddr, ConnectionInfo, IntoConnectionInfo, Pipeline, RedisConnectionInfo,
    TlsMode, Value,
};
use sluice_model::plugins::redis::{RedisKind, RedisTarget};
use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};

use crate::metrics::Metrics;

/// How often a target that is down is probed.
const PROBE_EVERY: Duration = Duration::from_millis(500);
/// Batches waiting for one link; a limit whose batch finds the queue full counts locally for that batch.
const QUEUE: usize = 64;

/// Why a batch got no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    /// The target is down (or went down running this batch); the reason was logged by the link.
    #[error("Redis is unreachable")]
    Down,
    /// The link's queue is full.
    #[error("the Redis link is busy")]
    Busy,
}

/// What a link shares with the limits using it.
#[derive(Debug)]
struct LinkState {
    label: String,
    up: AtomicBool,
    gauge: IntGauge,
    ok: IntCounter,
    failed: IntCounter,
}

impl LinkState {
    fn set_up(&self, up: bool, reason: &str) {
        if self.up.swap(up, Ordering::AcqRel) != up {
            if up {
                info!(target = %self.label, "Redis is reachable again; limits count in Redis");
            } else {
                warn!(target = %self.label, %reason, "Redis is unreachable; limits count locally until it answers");
            }
        }
        self.gauge.set(i64::from(up));
    }
}

/// A batch and where its answer goes.
struct Job {
    pipe: Pipeline,
    reply: oneshot::Sender<Result<Vec<Value>, LinkError>>,
}

/// One Redis deployment as the limits see it.
#[derive(Debug)]
pub struct RedisLink {
    shared: Arc<LinkState>,
    jobs: mpsc::Sender<Job>,
    timeout: Duration,
}

impl RedisLink {
    /// Whether the target answered its last batch or probe (true until it first fails).
    pub fn is_up(&self) -> bool {
        self.shared.up.load(Ordering::Acquire)
    }

    /// The target's name for logs.
    pub fn label(&self) -> &str {
        &self.shared.label
    }

    /// Runs `pipe` and returns one value per command, within the target's timeout (plus the time the batch
    /// waits behind others).
    pub async fn run(&self, pipe: Pipeline) -> Result<Vec<Value>, LinkError> {
        if !self.is_up() {
            return Err(LinkError::Down);
        }
        let (reply, answer) = oneshot::channel();
        self.jobs.try_send(Job { pipe, reply }).map_err(|_| LinkError::Busy)?;
        match tokio::time::timeout(self.timeout * 2, answer).await {
            Ok(Ok(result)) => result,
            _ => Err(LinkError::Down),
        }
    }
}

/// The links of this data plane, by target; a link lives while a limit uses it.
#[derive(Debug, Default)]
pub struct RedisLinks {
    links: Mutex<HashMap<RedisTarget, Weak<RedisLink>>>,
}

impl RedisLinks {
    /// The link to `target`, started if no limit uses it yet. Needs a Tokio runtime (the configuration thread
    /// has one); without one the link stays down and limits count locally.
    pub fn link(&self, target: &RedisTarget, metrics: &Metrics) -> Arc<RedisLink> {
        // Only the configuration thread takes this lock, when it builds a plugin.
        let mut links = self.links.lock().unwrap_or_else(|e| e.into_inner());
        links.retain(|_, l| l.strong_count() > 0);
        if let Some(link) = links.get(target).and_then(Weak::upgrade) {
            return link;
        }
        let label = target.label();
        let shared = Arc::new(LinkState {
            up: AtomicBool::new(true),
            gauge: metrics.redis_up(&label),
            ok: metrics.redis_batches(&label, "ok"),
            failed: metrics.redis_batches(&label, "failed"),
            label,
        });
        shared.gauge.set(1);
        let timeout = Duration::from_millis(target.timeout_ms.max(1));
        let (jobs, rx) = mpsc::channel(QUEUE);
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => drop(handle.spawn(serve(target.clone(), shared.clone(), timeout, rx))),
            Err(_) => shared.set_up(false, "no runtime to connect from"),
        }
        let link = Arc::new(RedisLink { shared, jobs, timeout });
        links.insert(target.clone(), Arc::downgrade(&link));
        link
    }
}

/// A connection of any kind.
enum Conn {
    Plain(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl Conn {
    async fn query(&mut self, pipe: &Pipeline) -> redis::RedisResult<Vec<Value>> {
        match self {
            Conn::Plain(c) => c.req_packed_commands(pipe, 0, pipe.len()).await,
            Conn::Cluster(c) => c.req_packed_commands(pipe, 0, pipe.len()).await,
        }
    }
}

/// The link's task: runs batches in order, reconnecting as needed, and probes a target that is down. Ends when
/// the last limit using the link is gone.
async fn serve(target: RedisTarget, shared: Arc<LinkState>, timeout: Duration, mut jobs: mpsc::Receiver<Job>) {
    let mut conn: Option<Conn> = None;
    loop {
        let job = if shared.up.load(Ordering::Acquire) {
            match jobs.recv().await {
                Some(job) => Some(job),
                None => return,
            }
        } else {
            match tokio::time::timeout(PROBE_EVERY, jobs.recv()).await {
                Ok(Some(job)) => Some(job),
                Ok(None) => return,
                Err(_) => None,
            }
        };
        let mut pipe = redis::pipe();
        let probe = job.is_none();
        let pipe = match &job {
            Some(job) => &job.pipe,
            None => pipe.cmd("PING"),
        };
        let result = tokio::time::timeout(timeout, async {
            if conn.is_none() {
                conn = Some(connect(&target, timeout).await?);
            }
            match conn.as_mut() {
                Some(c) => c.query(pipe).await,
                None => Err(redis::RedisError::from((redis::ErrorKind::Io, "not connected"))),
            }
        })
        .await;
        let result = match result {
            Ok(Ok(values)) => {
                shared.set_up(true, "");
                if !probe {
                    shared.ok.inc();
                }
                Ok(values)
            }
            Ok(Err(e)) => {
                conn = None;
                if !probe {
                    shared.failed.inc();
                }
                shared.set_up(false, &e.to_string());
                Err(LinkError::Down)
            }
            Err(_) => {
                conn = None;
                if !probe {
                    shared.failed.inc();
                }
                shared.set_up(false, &format!("no answer within {timeout:?}"));
                Err(LinkError::Down)
            }
        };
        if let Some(job) = job {
            let _ = job.reply.send(result);
        }
    }
}

/// The handshake settings of `target`'s servers.
fn handshake(target: &RedisTarget) -> RedisConnectionInfo {
    let mut info = RedisConnectionInfo::default().set_db(i64::from(target.database));
    if let Some(user) = &target.username {
        info = info.set_username(user);
    }
    if let Some(password) = &target.password {
        info = info.set_password(password);
    }
    info
}

fn tls_mode(target: &RedisTarget) -> Option<TlsMode> {
    target.tls.map(|verify| if verify { TlsMode::Secure } else { TlsMode::Insecure })
}

/// `host:port` as an address, with TLS as `target` says.
fn address(node: &str, target: &RedisTarget) -> redis::RedisResult<ConnectionAddr> {
    let (host, port) = node.rsplit_once(':').ok_or((redis::ErrorKind::InvalidClientConfig, "not host:port"))?;
    let port =
        port.parse().map_err(|_| redis::RedisError::from((redis::ErrorKind::InvalidClientConfig, "bad port")))?;
    let host = host.trim_start_matches('[').trim_end_matches(']').to_string();
    Ok(match target.tls {
        None => ConnectionAddr::Tcp(host, port),
        Some(verify) => ConnectionAddr::TcpTls { host, port, insecure: !verify, tls_params: None },
    })
}

async fn connect(target: &RedisTarget, timeout: Duration) -> redis::RedisResult<Conn> {
    let config = AsyncConnectionConfig::new().set_connection_timeout(Some(timeout)).set_response_timeout(Some(timeout));
    match &target.kind {
        RedisKind::Single { host, port } => {
            let addr = address(&format!("{host}:{port}"), target)?;
            let info: ConnectionInfo = addr.into_connection_info()?.set_redis_settings(handshake(target));
            let client = Client::open(info)?;
            Ok(Conn::Plain(client.get_multiplexed_async_connection_with_config(&config).await?))
        }
        RedisKind::Cluster { nodes } => {
            let seeds = nodes.iter().map(|n| address(n, target)).collect::<Result<Vec<_>, _>>()?;
            let mut builder = redis::cluster::ClusterClientBuilder::new(seeds)
                .connection_timeout(timeout)
                .response_timeout(timeout)
                .retries(0);
            if let Some(user) = &target.username {
                builder = builder.username(user);
            }
            if let Some(password) = &target.password {
                builder = builder.password(password);
            }
            if let Some(mode) = tls_mode(target) {
                builder = builder.tls(mode);
            }
            Ok(Conn::Cluster(builder.build()?.get_async_connection().await?))
        }
        RedisKind::Sentinel { sentinels, master, sentinel_username, sentinel_password } => {
            let mut seeds = Vec::with_capacity(sentinels.len());
            for node in sentinels {
                let mut info = RedisConnectionInfo::default();
                if let Some(user) = sentinel_username.as_ref().or(target.username.as_ref()) {
                    info = info.set_username(user);
                }
                if let Some(password) = sentinel_password.as_ref().or(target.password.as_ref()) {
                    info = info.set_password(password);
                }
                seeds.push(address(node, target)?.into_connection_info()?.set_redis_settings(info));
            }
            let mut node =
                redis::sentinel::SentinelNodeConnectionInfo::default().set_redis_connection_info(handshake(target));
            if let Some(mode) = tls_mode(target) {
                node = node.set_tls_mode(mode);
            }
            let mut client = redis::sentinel::SentinelClient::build(
                seeds,
                master.clone(),
                Some(node),
                redis::sentinel::SentinelServerType::Master,
            )?;
            Ok(Conn::Plain(client.get_async_connection_with_config(&config).await?))
        }
    }
}
