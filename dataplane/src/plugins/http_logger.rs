//! `http-logger`: sends an entry per request to an HTTP endpoint, in batches. The log phase only puts the entry
//! in a bounded queue (full: the entry is dropped and counted), so a slow or dead log sink never slows requests;
//! one task per plugin instance batches (by size, inactivity and age, as APISIX's batch processor) and POSTs.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE, HOST};
use http::{Method, Request, Uri, request, response};
use http_body_util::Full;
use prometheus::IntCounter;
use serde_json::Value;
use sluice_model::PluginConf;
use sluice_model::plugins::Schema;
use sluice_model::plugins::http_logger::{self as model, Concat};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::log::{Format, capture_request, capture_response, full_entry};
use super::registry::{BuildCtx, Factory, mismatch};
use super::{Ctx, Flow, Phases, Plugin};

/// http-logger's place in the registry (APISIX priority 410).
pub(super) const FACTORY: Factory =
    Factory { name: model::HttpLogger::NAME, priority: 410, auth: false, prefer_route: false, build };

fn build(conf: &PluginConf, cx: &BuildCtx<'_>) -> Result<Arc<dyn Plugin>, String> {
    let PluginConf::HttpLogger(c) = conf else { return Err(mismatch(FACTORY.name, conf)) };
    let uri: Uri = c.uri.parse().map_err(|e| format!("uri: {e}"))?;
    let authority = uri.authority().ok_or("uri: no host")?.clone();
    let format = c.log_format.as_ref().map(Format::compile).transpose()?;
    let extra = c.log_format_extra.as_ref().map(Format::compile).transpose()?;
    let (tx, rx) = mpsc::channel(c.max_pending_entries);
    let dropped = cx.metrics.log_dropped(&c.name);
    let failed = cx.metrics.log_failed(&c.name);
    // One pooled connection is enough: a sink sends one batch at a time.
    let timeout = Duration::from_secs(c.timeout);
    let client = super::outbound::client(timeout, 1, Duration::from_secs(60), cx, c.ssl_verify)?;
    let sink = Sink { conf: c.clone(), uri, authority, failed, client };
    // Built on the configuration thread, inside the runtime; without one (unit tests) entries are dropped.
    if let Ok(handle) = tokio::runtime::Handle::try_current() {
        handle.spawn(sink.run(rx));
    }
    Ok(Arc::new(HttpLogger { queue: tx, format, extra, dropped }))
}

#[derive(Debug)]
struct HttpLogger {
    queue: mpsc::Sender<Value>,
    format: Option<Format>,
    extra: Option<Format>,
    dropped: IntCounter,
}

impl Plugin for HttpLogger {
    fn phases(&self) -> Phases {
        Phases::REWRITE | Phases::RESPONSE_HEADER | Phases::LOG
    }

    fn rewrite(&self, ctx: &mut Ctx, req: &mut request::Parts) -> Flow {
        capture_request(ctx, req);
        Flow::Continue
    }

    fn response_header(&self, ctx: &mut Ctx, resp: &mut response::Parts) {
        capture_response(ctx, resp);
    }

    fn log(&self, ctx: &Ctx) {
        let entry = match &self.format {
            Some(format) => {
                let mut entry = format.render(ctx);
                // As APISIX: the route and service of a matched route are always those of the route.
                if let Some(route) = &ctx.route {
                    entry.insert("route_id".into(), Value::from(&*route.id));
                    entry.insert("service_id".into(), Value::from(route.service_id.as_deref().unwrap_or("")));
                }
                entry
            }
            None => {
                let mut entry = full_entry(ctx);
                for (k, v) in self.extra.as_ref().map(|e| e.render(ctx)).unwrap_or_default() {
                    entry.entry(k).or_insert(v);
                }
                entry
            }
        };
        if self.queue.try_send(Value::Object(entry)).is_err() {
            self.dropped.inc();
        }
    }
}

/// The sending side of one logger.
struct Sink {
    conf: model::HttpLogger,
    uri: Uri,
    authority: http::uri::Authority,
    failed: IntCounter,
    client: super::outbound::Outbound,
}

impl Sink {
    /// Batches and sends until the plugin instance (the queue's sender) is gone, then sends what is left.
    async fn run(self, mut queue: mpsc::Receiver<Value>) {
        let inactive = Duration::from_secs(self.conf.inactive_timeout);
        let max_age = Duration::from_secs(self.conf.buffer_duration);
        while let Some(first) = queue.recv().await {
            let oldest = Instant::now();
            let mut batch = vec![first];
            let mut open = true;
            while batch.len() < self.conf.batch_max_size {
                let wait = inactive.min(max_age.saturating_sub(oldest.elapsed()));
                match tokio::time::timeout(wait, queue.recv()).await {
                    Ok(Some(entry)) => batch.push(entry),
                    Ok(None) => {
                        open = false;
                        break;
                    }
                    Err(_) => break,
                }
            }
            self.deliver(batch).await;
            if !open {
                break;
            }
        }
    }

    async fn deliver(&self, batch: Vec<Value>) {
        let body = self.encode(batch);
        for attempt in 0..=self.conf.max_retry_count {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_secs(self.conf.retry_delay)).await;
            }
            let timeout = Duration::from_secs(self.conf.timeout);
            match tokio::time::timeout(timeout * 2, self.post(body.clone(), timeout)).await {
                Ok(Ok(())) => return,
                Ok(Err(e)) => {
                    tracing::warn!(logger = %self.conf.name, error = %e, attempt, "sending log entries failed")
                }
                Err(_) => tracing::warn!(logger = %self.conf.name, attempt, "sending log entries timed out"),
            }
        }
        self.failed.inc();
    }

    fn encode(&self, batch: Vec<Value>) -> Bytes {
        let single = self.conf.batch_max_size == 1;
        let text = match self.conf.concat_method {
            Concat::Json if single => batch.into_iter().next().unwrap_or(Value::Null).to_string(),
            Concat::Json => Value::Array(batch).to_string(),
            Concat::NewLine => batch.iter().map(Value::to_string).collect::<Vec<_>>().join("\n"),
        };
        Bytes::from(text)
    }

    async fn post(&self, body: Bytes, timeout: Duration) -> Result<(), String> {
        let content_type = match self.conf.concat_method {
            Concat::Json => "application/json",
            Concat::NewLine => "text/plain",
        };
        let mut req = Request::builder()
            .method(Method::POST)
            .uri(self.uri.clone())
            .header(HOST, self.authority.as_str())
            .header(CONTENT_TYPE, content_type);
        if let Some(auth) = &self.conf.auth_header {
            req = req.header(AUTHORIZATION, auth);
        }
        let req = req.body(Full::new(body)).map_err(|e| e.to_string())?;
        let resp = tokio::time::timeout(timeout, self.client.request(req))
            .await
            .map_err(|_| "no answer in time".to_string())?
            .map_err(|e| e.to_string())?;
        if resp.status().as_u16() >= 400 {
            return Err(format!("the log server answered {}", resp.status()));
        }
        Ok(())
    }
}
