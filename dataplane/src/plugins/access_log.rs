//! The access log: one JSON object per request, with configurable fields, written to standard output or a file.
//!
//! It is a plugin the data plane adds to the global rules when `--access-log` is set, so it sees every request,
//! routed or not, in the log phase. Lines go through a bounded queue to a writer thread: a slow disk drops lines
//! (counted as `sluice_log_entries_dropped_total{logger="access-log"}`) instead of slowing requests.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};

use http::{request, response};
use prometheus::IntCounter;
use serde_json::{Map, Value};

use super::log::{LogVar, capture_request, capture_response};
use super::{Chain, Ctx, Flow, Phases, Plugin, Slot};
use crate::metrics::Metrics;

/// The fields written when none are chosen.
pub const DEFAULT_FIELDS: &[&str] = &[
    "time",
    "remote_addr",
    "request_method",
    "request_uri",
    "host",
    "status",
    "bytes_sent",
    "request_time",
    "upstream_addr",
    "upstream_status",
    "upstream_response_time",
    "route_id",
    "service_id",
    "consumer_name",
    "http_user_agent",
];

/// Lines waiting for the writer at most.
const QUEUE: usize = 16_384;

/// Where access log lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Standard output.
    Stdout,
    /// A file, appended to.
    File(PathBuf),
}

/// The access log's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessLog {
    /// Where lines go.
    pub target: Target,
    /// The fields of each line: log variables (`status`, `route_id`, `http_user_agent`, ...).
    pub fields: Vec<String>,
}

impl AccessLog {
    /// Starts the writer and returns the plugin as a global chain of one; an unknown field or a file that cannot
    /// be opened is an error.
    pub fn start(&self, metrics: &Metrics) -> Result<Chain, String> {
        let fields = self
            .fields
            .iter()
            .map(|f| LogVar::parse(f).map(|v| (f.clone(), v)).ok_or_else(|| format!("unknown access log field {f:?}")))
            .collect::<Result<Vec<_>, _>>()?;
        let mut out: Box<dyn Write + Send> = match &self.target {
            Target::Stdout => Box::new(std::io::stdout()),
            Target::File(path) => Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|e| format!("access log {}: {e}", path.display()))?,
            ),
        };
        let (tx, rx) = sync_channel::<String>(QUEUE);
        std::thread::Builder::new()
            .name("sluice-access-log".into())
            .spawn(move || {
                let mut buffered = std::io::BufWriter::new(&mut out);
                while let Ok(line) = rx.recv() {
                    let _ = buffered.write_all(line.as_bytes());
                    // Flush when the queue is drained, so lines show promptly without a write per line under load.
                    while let Ok(more) = rx.try_recv() {
                        let _ = buffered.write_all(more.as_bytes());
                    }
                    let _ = buffered.flush();
                }
            })
            .map_err(|e| format!("access log writer: {e}"))?;
        let plugin: Arc<dyn Plugin> =
            Arc::new(Writer { fields, queue: tx, dropped: metrics.log_dropped("access-log") });
        Ok(Chain::new([Slot {
            name: "access-log",
            // Last of all: it logs what every other plugin did.
            priority: i32::MIN,
            phases: plugin.phases(),
            filter: None,
            disabled: false,
            auth: false,
            prefer_route: false,
            plugin,
        }]))
    }
}

#[derive(Debug)]
struct Writer {
    fields: Vec<(String, LogVar)>,
    queue: SyncSender<String>,
    dropped: IntCounter,
}

impl Plugin for Writer {
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
        let line: Map<String, Value> =
            self.fields.iter().map(|(name, var)| (name.clone(), var.value(ctx).unwrap_or(Value::Null))).collect();
        let mut text = Value::Object(line).to_string();
        text.push('\n');
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) = self.queue.try_send(text) {
            self.dropped.inc();
        }
    }
}
