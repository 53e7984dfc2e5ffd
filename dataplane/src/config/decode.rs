//! Objects decoded and checked before they meet the state.
//!
//! Decoding depends on nothing but an object's kind, id and bytes, so [`State`](super::State) can decode a full
//! listing on several threads and apply the results in order, and a result decoded ahead stands for the one it
//! would have computed itself. Building runtimes, which needs the previous version and the metrics, is left to the
//! state.

use std::num::NonZeroUsize;
use std::sync::Arc;

use serde::Deserialize;
use sluice_model::{
    Consumer, Kind, Plugins, Route, Ssl, Status, Timeout, decode_consumer, decode_global_rule, decode_plugin_config,
    decode_route, decode_service,
};

use super::RawObject;
use crate::error::Rejected;
use crate::router::{Hosts, Rule};
use crate::upstream::UpstreamSpec;

/// Below this many objects per thread, starting a thread costs more than it saves.
const MIN_PER_THREAD: usize = 512;

/// An object's served kind and id, when it is to be decoded.
pub(super) type Wanted = Option<(Kind, Arc<str>)>;

/// An object's decoding, or `None` where it was not done.
pub(super) type Ahead = Option<Result<Decoded, Rejected>>;

/// What a route names besides itself.
#[derive(Debug, Default)]
pub(super) struct Refs {
    pub(super) upstream_id: Option<Arc<str>>,
    pub(super) service_id: Option<Arc<str>>,
    pub(super) plugin_config_id: Option<Arc<str>>,
}

/// A checked route: its rule, what it refers to, its plugins (not built yet) and its inline upstream still
/// without a runtime.
#[derive(Debug)]
pub(super) struct RouteDef {
    pub(super) rule: Rule,
    pub(super) refs: Refs,
    pub(super) inline: Option<UpstreamSpec>,
    pub(super) timeout: Option<Timeout>,
    pub(super) name: Option<Arc<str>>,
    /// The first path and host patterns, for metrics labels.
    pub(super) matched: (Arc<str>, Arc<str>),
    pub(super) plugins: Plugins,
    /// `enable_websocket` as written (unset: the service's decides).
    pub(super) websocket: Option<bool>,
}

/// A checked service.
#[derive(Debug)]
pub(super) struct ServiceDef {
    pub(super) hosts: Hosts,
    pub(super) upstream_id: Option<Arc<str>>,
    pub(super) inline: Option<UpstreamSpec>,
    pub(super) name: Option<Arc<str>>,
    pub(super) plugins: Plugins,
    /// `enable_websocket` as written.
    pub(super) websocket: Option<bool>,
}

/// One decoded object of a served kind.
#[derive(Debug)]
pub(super) enum Decoded {
    Route(RouteDef),
    Upstream(UpstreamSpec),
    Service(ServiceDef),
    PluginConfig(Plugins),
    Consumer(Consumer),
    GlobalRule(Plugins),
    Ssl(Box<Ssl>),
}

/// Decodes and checks the bytes of object `id` of `kind` (one of the served kinds).
pub(super) fn decode(kind: Kind, id: &str, value: &[u8]) -> Result<Decoded, Rejected> {
    match kind {
        Kind::Route => route(id, value).map(Decoded::Route),
        Kind::Upstream => Ok(Decoded::Upstream(UpstreamSpec::from_model(&sluice_model::decode_upstream(value)?)?)),
        Kind::Service => service(value).map(Decoded::Service),
        Kind::Consumer => {
            let consumer = decode_consumer(value)?;
            if consumer.username != id {
                return Err(Rejected::Conflict(format!(
                    "username {:?} differs from the key's {id:?}",
                    consumer.username
                )));
            }
            Ok(Decoded::Consumer(consumer))
        }
        Kind::GlobalRule => Ok(Decoded::GlobalRule(decode_global_rule(value)?.plugins)),
        // Checked once its sealed private keys are opened (`State::put_ssl`), which needs the keyring.
        Kind::Ssl => Ok(Decoded::Ssl(Box::new(sluice_model::parse_ssl(value)?))),
        _ => Ok(Decoded::PluginConfig(decode_plugin_config(value)?.plugins)),
    }
}

/// Decodes the objects for which `wanted` gives a kind and id, spread over the available cores; the others (and
/// any share whose thread could not be started) are `None`. Results are in the order of `objects`.
pub(super) fn decode_all(objects: &[RawObject], wanted: Vec<Wanted>) -> Vec<Ahead> {
    let work: Vec<_> = objects.iter().zip(wanted).collect();
    let threads = std::thread::available_parallelism().map_or(1, NonZeroUsize::get);
    let share = work.len().div_ceil(threads).max(MIN_PER_THREAD);
    std::thread::scope(|scope| {
        let mut shares = work.chunks(share);
        let own = shares.next().unwrap_or_default();
        let helpers: Vec<_> = shares
            .map(|part| {
                let thread = std::thread::Builder::new().name("sluice-decode".into());
                (part.len(), thread.spawn_scoped(scope, move || decode_share(part)))
            })
            .collect();
        // This thread takes the first share instead of waiting idle.
        let mut decoded = decode_share(own);
        for (len, helper) in helpers {
            match helper {
                Ok(handle) => {
                    decoded.extend(handle.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)));
                }
                // Decoded one at a time when applied instead.
                Err(_) => decoded.extend(std::iter::repeat_with(|| None).take(len)),
            }
        }
        decoded
    })
}

fn decode_share(share: &[(&RawObject, Wanted)]) -> Vec<Ahead> {
    share.iter().map(|(object, wanted)| wanted.as_ref().map(|(kind, id)| decode(*kind, id, &object.value))).collect()
}

fn route(id: &str, value: &[u8]) -> Result<RouteDef, Rejected> {
    let route = decode_route(value)?;
    check_route(&route)?;
    let rule = Rule::from_route(id, &route)?;
    let inline = route.upstream.as_ref().map(UpstreamSpec::from_model).transpose()?;
    let refs = Refs {
        upstream_id: route.upstream_id.as_deref().map(Arc::from),
        service_id: route.service_id.as_deref().map(Arc::from),
        plugin_config_id: route.plugin_config_id.as_deref().map(Arc::from),
    };
    let matched = (Arc::from(route.paths().next().unwrap_or("")), Arc::from(route.host_list().next().unwrap_or("")));
    Ok(RouteDef {
        rule,
        refs,
        inline,
        timeout: route.timeout,
        name: route.name.as_deref().map(Arc::from),
        matched,
        plugins: route.plugins.unwrap_or_default(),
        websocket: route.enable_websocket,
    })
}

fn service(value: &[u8]) -> Result<ServiceDef, Rejected> {
    let service = decode_service(value)?;
    let hosts = Hosts::compile(service.hosts.iter().flatten().map(String::as_str))?;
    let inline = service.upstream.as_ref().map(UpstreamSpec::from_model).transpose()?;
    let upstream_id = service.upstream_id.as_deref().map(Arc::from);
    let name = service.name.as_deref().map(Arc::from);
    let websocket = service.enable_websocket;
    Ok(ServiceDef { hosts, upstream_id, inline, name, plugins: service.plugins.unwrap_or_default(), websocket })
}

/// Checks conflicting route-level fields.
fn check_route(route: &Route) -> Result<(), Rejected> {
    if route.upstream.is_some() && route.upstream_id.is_some() {
        return Err(Rejected::Conflict("upstream and upstream_id are both set".into()));
    }
    Ok(())
}

/// The matching fields of a route, read leniently: whatever else is wrong with the route, these say which
/// requests it would have taken.
#[derive(Debug, Deserialize)]
struct Matching {
    #[serde(default)]
    uri: Option<String>,
    #[serde(default)]
    uris: Option<Vec<String>>,
    #[serde(default)]
    host: Option<String>,
    #[serde(default)]
    hosts: Option<Vec<String>>,
    #[serde(default)]
    methods: Option<Vec<String>>,
    #[serde(default)]
    remote_addr: Option<String>,
    #[serde(default)]
    remote_addrs: Option<Vec<String>>,
    #[serde(default)]
    vars: Option<Vec<serde_json::Value>>,
    #[serde(default)]
    priority: i64,
    #[serde(default)]
    status: Status,
}

/// The rule a rejected route would have matched with, so that it can answer 503 instead of letting its requests
/// fall through to a broader route (fail closed). A condition that cannot be compiled is dropped, which makes the
/// 503 cover more requests, never fewer; `None` when not even the paths and hosts can be read.
pub(super) fn fallback_rule(id: &str, value: &[u8]) -> Option<Rule> {
    let m: Matching = serde_json::from_slice(value).ok()?;
    let route = Route {
        uri: m.uri,
        uris: m.uris,
        host: m.host,
        hosts: m.hosts,
        methods: m.methods,
        remote_addr: m.remote_addr,
        remote_addrs: m.remote_addrs,
        vars: m.vars,
        priority: m.priority,
        status: m.status,
        upstream_id: Some("unused".into()),
        ..Route::default()
    };
    let attempts = [
        route.clone(),
        Route { vars: None, ..route.clone() },
        Route { vars: None, remote_addr: None, remote_addrs: None, methods: None, ..route },
    ];
    attempts.into_iter().find_map(|r| {
        r.validate().ok()?;
        Rule::from_route(id, &r).ok()
    })
}

/// The server names of an ssl object that was rejected, read leniently (`snis`, else `sni`), so that the
/// handshakes for them can be refused instead of falling back to a wildcard or the default certificate.
pub(super) fn fallback_snis(value: &[u8]) -> Vec<String> {
    #[derive(Deserialize)]
    struct Names {
        #[serde(default)]
        sni: Option<serde_json::Value>,
        #[serde(default)]
        snis: Option<serde_json::Value>,
    }
    let Ok(names) = serde_json::from_slice::<Names>(value) else { return Vec::new() };
    let texts = |v: serde_json::Value| match v {
        serde_json::Value::String(s) => vec![s],
        serde_json::Value::Array(items) => items.into_iter().filter_map(|i| i.as_str().map(str::to_string)).collect(),
        _ => Vec::new(),
    };
    names.snis.into_iter().chain(names.sni).flat_map(texts).collect()
}
