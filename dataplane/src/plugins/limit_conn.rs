//! `limit-conn`: at most `conn` requests in flight per key. A request beyond `conn` but within `burst` more waits
//! `default_conn_delay` for each `conn` requests ahead of it (as lua-resty-limit-traffic delays), one beyond that
//! is refused. A request counts from its access phase until its context is dropped, when the response has been
//! sent or the client went away, whichever way the request ends.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::request;
use prometheus::IntCounter;
use sluice_model::PluginConf;
use sluice_model::plugins::{Schema, limit_conn as model};

use super::limit::{Idle, KeySource, Share, Table, refusal};
use super::registry::{BuildCtx, Factory, mismatch};
use super::{Ctx, Flow, Phases, Plugin, Reply, Resume, clone_reply};

/// limit-conn's place in the registry (APISIX priority 1003).
pub(super) const FACTORY: Factory =
    Factory { name: model::LimitConn::NAME, priority: 1003, auth: false, prefer_route: false, build };

fn build(conf: &PluginConf, ctx: &BuildCtx<'_>) -> Result<Arc<dyn Plugin>, String> {
    let PluginConf::LimitConn(c) = conf else { return Err(mismatch(FACTORY.name, conf)) };
    Ok(Arc::new(LimitConn {
        key: KeySource::compile(c.key_type, &c.key)?,
        conn: c.conn,
        burst: c.burst,
        delay: Duration::try_from_secs_f64(c.default_conn_delay).map_err(|e| e.to_string())?,
        share: Share::new(c.scope, ctx.cluster),
        refusal: refusal(c.rejected_code, c.rejected_msg.as_deref())?,
        table: Table::new(1000, 0),
        refused: ctx.metrics.limited(FACTORY.name),
    }))
}

/// One key's requests in flight.
#[derive(Debug, Default)]
struct Conns(Arc<AtomicU64>);

impl Idle for Conns {
    fn idle(&self, _: u32, _: u32) -> bool {
        // Nothing in flight and no request holding it.
        self.0.load(Ordering::Acquire) == 0 && Arc::strong_count(&self.0) == 1
    }
}

/// One request counted against a key; the count drops with it.
#[derive(Debug)]
pub struct Held(Arc<AtomicU64>);

impl Drop for Held {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[derive(Debug)]
struct LimitConn {
    key: KeySource,
    conn: u64,
    burst: u64,
    delay: Duration,
    share: Share,
    refusal: Reply,
    table: Table<Conns>,
    refused: IntCounter,
}

impl Plugin for LimitConn {
    fn phases(&self) -> Phases {
        Phases::ACCESS
    }

    fn access(&self, ctx: &mut Ctx, req: &mut request::Parts) -> Flow {
        // `conn` is at least 1 (the model's minimum), so the delay's division below cannot fail.
        let (conn, burst) = (self.share.of(self.conn).max(1), self.share.of(self.burst));
        let counter = self.key.with_key(ctx, req, |key| self.table.with(key, 0, |c| c.0.clone()));
        let n = counter.fetch_add(1, Ordering::AcqRel) + 1;
        let held = Held(counter);
        if n > conn + burst {
            drop(held);
            self.refused.inc();
            return Flow::Respond(clone_reply(&self.refusal));
        }
        ctx.held.push(held);
        if n <= conn {
            return Flow::Continue;
        }
        let wait = self.delay.saturating_mul(u32::try_from((n - 1) / conn).unwrap_or(u32::MAX));
        Flow::Wait(Box::pin(async move {
            tokio::time::sleep(wait).await;
            Box::new(|_: &mut Ctx, _: &mut request::Parts| Flow::Continue) as Resume
        }))
    }
}
