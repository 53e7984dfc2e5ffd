//! `proxy-mirror`: a copy of each sampled request (`sample_ratio`) goes to another host, whose answer is ignored,
//! as nginx's `mirror` and APISIX's plugin do. The copy is put on a bounded queue (`queue_size`) and sent by a
//! background task with at most a few copies in flight; a full queue drops the copy (counted in
//! `sluice_mirror_requests_total{result="dropped"}`), so a slow or dead mirror never delays or fails the request
//! itself. The copy has the request's method, headers (its `Host` included) and body, and its target with `path`
//! replacing or prefixing the path.
//!
//! Like nginx's `mirror_request_body`, the plugin reads the request body whole before the request is proxied
//! (up to the plugin body limit), so that the same body can go to both.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http::uri::Authority;
use http::{HeaderMap, Method, Request, request};
use http_body_util::{BodyExt, Full, Limited};
use prometheus::IntCounter;
use sluice_model::PluginConf;
use sluice_model::plugins::proxy_mirror::PathConcatMode;
use sluice_model::plugins::{Schema, proxy_mirror as model};
use tokio::sync::{Semaphore, mpsc};

use super::outbound::{self, Outbound};
use super::registry::{BuildCtx, Factory, mismatch};
use super::{Ctx, Flow, Phases, Plugin};

/// proxy-mirror's place in the registry (APISIX priority 1010).
pub(super) const FACTORY: Factory =
    Factory { name: model::ProxyMirror::NAME, priority: 1010, auth: false, prefer_route: false, build };

/// Copies in flight to the mirror at once; the queue holds the rest.
const IN_FLIGHT: usize = 16;

fn build(conf: &PluginConf, ctx: &BuildCtx<'_>) -> Result<Arc<dyn Plugin>, String> {
    let PluginConf::ProxyMirror(c) = conf else { return Err(mismatch(FACTORY.name, conf)) };
    let (scheme, rest) = c.host.split_once("://").ok_or("host: no scheme")?;
    let authority: Authority = rest.parse().map_err(|e| format!("host: {e}"))?;
    let timeout = Duration::from_millis(c.timeout);
    Ok(Arc::new(ProxyMirror {
        authority,
        path: c.path.clone(),
        mode: c.path_concat_mode,
        ratio: c.sample_ratio,
        queue: OnceLock::new(),
        queue_size: usize::try_from(c.queue_size).unwrap_or(usize::MAX),
        worker: Worker {
            client: outbound::client(timeout, IN_FLIGHT, Duration::from_secs(60), ctx, true)?,
            scheme: if scheme == "https" { "https" } else { "http" },
            timeout,
            sent: ctx.metrics.mirrored("sent"),
            failed: ctx.metrics.mirrored("failed"),
        },
        dropped: ctx.metrics.mirrored("dropped"),
    }))
}

/// One copy waiting to be sent.
struct Copy {
    method: Method,
    target: String,
    headers: HeaderMap,
    body: Bytes,
}

/// What sends the copies.
#[derive(Clone)]
struct Worker {
    client: Outbound,
    /// `http` or `https`.
    scheme: &'static str,
    timeout: Duration,
    sent: IntCounter,
    failed: IntCounter,
}

impl Worker {
    /// Sends copies until the plugin (the queue's sender) is gone.
    async fn run(self, authority: Authority, mut queue: mpsc::Receiver<Copy>) {
        let slots = Arc::new(Semaphore::new(IN_FLIGHT));
        while let Some(copy) = queue.recv().await {
            // While every slot is taken the queue fills, and then new copies are dropped.
            let Ok(slot) = slots.clone().acquire_owned().await else { return };
            let (worker, authority) = (self.clone(), authority.clone());
            tokio::spawn(async move {
                let _slot = slot;
                let done = tokio::time::timeout(worker.timeout, worker.send(&authority, copy)).await;
                match done {
                    Ok(Ok(())) => worker.sent.inc(),
                    Ok(Err(reason)) => {
                        tracing::debug!(mirror = %authority, %reason, "mirror copy failed");
                        worker.failed.inc();
                    }
                    Err(_) => worker.failed.inc(),
                }
            });
        }
    }

    async fn send(&self, authority: &Authority, copy: Copy) -> Result<(), String> {
        let mut req = Request::builder()
            .method(copy.method)
            .uri(format!("{}://{authority}{}", self.scheme, copy.target))
            .body(Full::new(copy.body))
            .map_err(|e| e.to_string())?;
        *req.headers_mut() = copy.headers;
        let resp = self.client.request(req).await.map_err(|e| e.to_string())?;
        // Read the answer (a little of it) so the connection can be used again; what it says does not matter.
        let _ = Limited::new(resp.into_body(), 64 * 1024).collect().await;
        Ok(())
    }
}

struct ProxyMirror {
    authority: Authority,
    path: Option<String>,
    mode: PathConcatMode,
    ratio: f64,
    /// Started on first use, on the runtime serving requests (plugins are built on the configuration thread).
    queue: OnceLock<mpsc::Sender<Copy>>,
    queue_size: usize,
    worker: Worker,
    dropped: IntCounter,
}

impl std::fmt::Debug for ProxyMirror {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyMirror").field("host", &self.authority).field("ratio", &self.ratio).finish()
    }
}

impl ProxyMirror {
    fn queue(&self) -> &mpsc::Sender<Copy> {
        self.queue.get_or_init(|| {
            let (tx, rx) = mpsc::channel(self.queue_size);
            tokio::spawn(self.worker.clone().run(self.authority.clone(), rx));
            tx
        })
    }

    /// The copy's target: the request's, with `path` in place of its path or before it.
    fn target(&self, req: &request::Parts) -> String {
        let query = req.uri.query().map(|q| format!("?{q}")).unwrap_or_default();
        match (&self.path, self.mode) {
            (None, _) => format!("{}{query}", req.uri.path()),
            (Some(path), PathConcatMode::Replace) => format!("{path}{query}"),
            (Some(path), PathConcatMode::Prefix) => format!("{}{}{query}", path.trim_end_matches('/'), req.uri.path()),
        }
    }
}

impl Plugin for ProxyMirror {
    fn phases(&self) -> Phases {
        Phases::REQUEST_BODY
    }

    fn request_body(&self, _: &mut Ctx, req: &mut request::Parts, body: &Bytes) -> Flow {
        if self.ratio < 1.0 && fastrand::f64() >= self.ratio {
            return Flow::Continue;
        }
        let copy = Copy {
            method: req.method.clone(),
            target: self.target(req),
            headers: req.headers.clone(),
            body: body.clone(),
        };
        if self.queue().try_send(copy).is_err() {
            self.dropped.inc();
        }
        Flow::Continue
    }
}
