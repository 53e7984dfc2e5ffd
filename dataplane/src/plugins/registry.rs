//! The registry: plugin names → factories (with each plugin's default priority), and the set this data plane runs.
//!
//! Building happens on the configuration thread. An instance is reused while its configuration (and `_meta`) is
//! unchanged, so a plugin's counters and caches survive updates of the object that carries it.

use std::collections::BTreeSet;
use std::sync::Arc;

use sluice_model::{Plugin as PluginModel, PluginConf, Plugins};

use super::chain::Slot;
use super::limit_count::{CountGroups, RedisGroups};
use super::{
    Plugin, api_breaker, basic_auth, brotli, client_control, consumer_restriction, cors, fault_injection, forward_auth,
    gzip, hmac_auth, http_logger, ip_restriction, jwt_auth, key_auth, limit_conn, limit_count, limit_req, mocking,
    opentelemetry, prometheus, proxy_mirror, proxy_rewrite, real_ip, redirect, referer_restriction, request_id,
    response_rewrite, traffic_split, ua_restriction, uri_blocker,
};
use crate::membership::ClusterSize;
use crate::metrics::Metrics;
use crate::redis::RedisLinks;
use crate::router::Vars;
use crate::upstream::policy::AddressPolicy;
use crate::upstream::tls::Trust;

/// What a factory may use besides the plugin's configuration.
#[derive(Debug)]
pub struct BuildCtx<'a> {
    /// The data plane's metrics (the prometheus plugin registers its series there).
    pub metrics: &'a Metrics,
    /// The port clients reach the HTTPS listener on, for redirects to HTTPS (none: 443).
    pub https_port: Option<u16>,
    /// The number of live data planes, which cluster-wide limits are divided by.
    pub cluster: &'a ClusterSize,
    /// The counters of limit-count groups, shared by the routes that name one.
    pub count_groups: &'a CountGroups,
    /// The Redis-backed counts of limit-count groups.
    pub redis_groups: &'a RedisGroups,
    /// The connections to Redis, shared by the limits naming the same deployment.
    pub redis: &'a RedisLinks,
    /// The object carrying the plugin (`routes/r1`, `consumers/alice`): names its counters in shared stores.
    pub owner: &'a str,
    /// The certificate authorities `https://` services of plugins are verified against.
    pub trust: &'a Trust,
    /// The addresses plugins' services may be dialled at.
    pub policy: &'a Arc<AddressPolicy>,
}

/// Builds one plugin instance from its configuration (which is of the factory's own plugin).
type Build = fn(&PluginConf, &BuildCtx<'_>) -> Result<Arc<dyn Plugin>, String>;

/// One plugin the data plane can run.
#[derive(Debug, Clone, Copy)]
pub struct Factory {
    /// Its name.
    pub name: &'static str,
    /// Its default priority (APISIX's): higher runs first.
    pub priority: i32,
    /// Whether it authenticates callers (runs in the rewrite phase and attaches a consumer).
    pub auth: bool,
    /// In a global rule, it stands down for routes that configure it themselves.
    pub prefer_route: bool,
    /// Builds an instance.
    pub build: Build,
}

/// Every plugin sluice implements.
pub static FACTORIES: &[Factory] = &[
    key_auth::FACTORY,
    basic_auth::FACTORY,
    jwt_auth::FACTORY,
    hmac_auth::FACTORY,
    consumer_restriction::FACTORY,
    forward_auth::FACTORY,
    ip_restriction::FACTORY,
    ua_restriction::FACTORY,
    referer_restriction::FACTORY,
    uri_blocker::FACTORY,
    cors::FACTORY,
    limit_conn::FACTORY,
    limit_count::FACTORY,
    limit_req::FACTORY,
    api_breaker::FACTORY,
    client_control::FACTORY,
    real_ip::FACTORY,
    proxy_mirror::FACTORY,
    traffic_split::FACTORY,
    proxy_rewrite::FACTORY,
    response_rewrite::FACTORY,
    redirect::FACTORY,
    request_id::FACTORY,
    fault_injection::FACTORY,
    mocking::FACTORY,
    gzip::FACTORY,
    brotli::FACTORY,
    prometheus::FACTORY,
    http_logger::FACTORY,
    opentelemetry::FACTORY,
];

/// The factory of plugin `name`.
pub fn factory(name: &str) -> Option<&'static Factory> {
    FACTORIES.iter().find(|f| f.name == name)
}

/// The message a factory gives when handed another plugin's configuration (a registry bug, not user input).
pub(super) fn mismatch(expected: &str, conf: &PluginConf) -> String {
    format!("{expected} was built from the configuration of {}", conf.name())
}

/// The plugins a data plane runs (APISIX's `plugins` list in its config file).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Enabled(Option<BTreeSet<&'static str>>);

impl Enabled {
    /// Every plugin sluice implements.
    pub fn all() -> Enabled {
        Enabled(None)
    }

    /// Only these; an unknown name is an error naming it.
    pub fn only<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<Enabled, String> {
        let mut set = BTreeSet::new();
        for name in names {
            let f = factory(name.trim()).ok_or_else(|| format!("unknown plugin {name:?}"))?;
            set.insert(f.name);
        }
        Ok(Enabled(Some(set)))
    }

    /// Whether plugin `name` may run.
    pub fn allows(&self, name: &str) -> bool {
        self.0.as_ref().is_none_or(|set| set.contains(name))
    }
}

/// Why a plugin could not be built; the object carrying it fails closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    /// The plugin is valid but this data plane does not run it (`--plugins`), or sluice does not implement it.
    #[error("plugin {0:?} is not enabled on this data plane")]
    NotEnabled(String),
    /// The configuration is well formed but cannot be used (a key that does not parse, a bad `_meta.filter`).
    #[error("plugin {plugin:?}: {reason}")]
    Invalid {
        /// The plugin.
        plugin: String,
        /// Why.
        reason: String,
    },
}

/// One plugin as configured and as built.
#[derive(Debug, Clone)]
pub struct Built {
    /// What it was built from.
    pub source: PluginModel,
    /// The instance with its place in a chain.
    pub slot: Slot,
}

/// Builds plugins for the configuration state.
#[derive(Debug, Clone)]
pub struct Registry {
    enabled: Enabled,
    metrics: Metrics,
    https_port: Option<u16>,
    cluster: ClusterSize,
    count_groups: Arc<CountGroups>,
    redis_groups: Arc<RedisGroups>,
    redis: Arc<RedisLinks>,
    trust: Trust,
    policy: Arc<AddressPolicy>,
}

impl Registry {
    /// A registry running `enabled`, registering metrics in `metrics`.
    pub fn new(enabled: Enabled, metrics: Metrics) -> Registry {
        Registry {
            enabled,
            metrics,
            https_port: None,
            cluster: ClusterSize::default(),
            count_groups: Arc::default(),
            redis_groups: Arc::default(),
            redis: Arc::default(),
            trust: Trust::default(),
            policy: Arc::default(),
        }
    }

    /// Divides cluster-wide limits by `size`.
    pub fn with_cluster(mut self, size: ClusterSize) -> Registry {
        self.cluster = size;
        self
    }

    /// Verifies plugins' `https://` services against `trust`.
    pub fn with_trust(mut self, trust: Trust) -> Registry {
        self.trust = trust;
        self
    }

    /// Dials plugins' services only at the addresses `policy` admits.
    pub fn with_policy(mut self, policy: Arc<AddressPolicy>) -> Registry {
        self.policy = policy;
        self
    }

    /// Redirects to HTTPS name `port` (when it is not 443).
    pub fn with_https_port(mut self, port: Option<u16>) -> Registry {
        self.https_port = port;
        self
    }

    /// Builds one plugin of `owner` (`routes/r1`, `consumers/alice`).
    pub fn build(&self, source: &PluginModel, owner: &str) -> Result<Built, BuildError> {
        let name = source.name();
        let factory = factory(name).filter(|_| self.enabled.allows(name));
        let factory = factory.ok_or_else(|| BuildError::NotEnabled(name.to_string()))?;
        let invalid = |reason: String| BuildError::Invalid { plugin: name.to_string(), reason };
        let filter = match &source.meta.filter {
            None => None,
            Some(expr) => Some(Arc::new(Vars::compile(expr).map_err(|e| invalid(format!("_meta.filter: {e}")))?)),
        };
        let ctx = BuildCtx {
            metrics: &self.metrics,
            https_port: self.https_port,
            cluster: &self.cluster,
            count_groups: &self.count_groups,
            redis_groups: &self.redis_groups,
            redis: &self.redis,
            owner,
            trust: &self.trust,
            policy: &self.policy,
        };
        // A factory that panics (a bug) rejects this object alone instead of ending the configuration thread.
        let built = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (factory.build)(&source.conf, &ctx)));
        let plugin = built.map_err(|_| invalid("building the plugin panicked (a bug)".into()))?.map_err(invalid)?;
        let slot = Slot {
            name: factory.name,
            priority: source.meta.priority.unwrap_or(factory.priority),
            phases: plugin.phases(),
            filter,
            disabled: source.meta.disable,
            auth: factory.auth,
            prefer_route: factory.prefer_route,
            plugin,
        };
        Ok(Built { source: source.clone(), slot })
    }

    /// Builds every plugin of `plugins` of `owner`, reusing the instances in `old` whose configuration is
    /// unchanged.
    pub fn build_all(&self, plugins: &Plugins, old: &[Built], owner: &str) -> Result<Vec<Built>, BuildError> {
        plugins
            .iter()
            .map(|p| match old.iter().find(|b| b.source == *p) {
                Some(same) => Ok(same.clone()),
                None => self.build(p, owner),
            })
            .collect()
    }
}

/// The slots of built plugins, for merging into chains.
pub fn slots(built: &[Built]) -> Vec<Slot> {
    built.iter().map(|b| b.slot.clone()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_known_plugin_has_one_factory() {
        for name in sluice_model::PluginConf::NAMES {
            assert!(factory(name).is_some(), "{name} has no factory");
        }
        let mut names: Vec<_> = FACTORIES.iter().map(|f| f.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), FACTORIES.len(), "one factory per name");
    }

    #[test]
    fn builds_only_enabled_plugins_and_reuses_unchanged_ones() {
        let plugins = sluice_model::plugins::decode_map(serde_json::json!({
            "key-auth": {"_meta": {"priority": 3}}, "prometheus": {}
        }))
        .unwrap();
        let registry = Registry::new(Enabled::all(), Metrics::new());
        let built = registry.build_all(&plugins, &[], "routes/1").unwrap();
        assert_eq!(built[0].slot.priority, 3);
        assert!(built[0].slot.auth);
        let again = registry.build_all(&plugins, &built, "routes/1").unwrap();
        assert!(Arc::ptr_eq(&built[1].slot.plugin, &again[1].slot.plugin), "unchanged configuration, same instance");

        let only = Registry::new(Enabled::only(["prometheus"]).unwrap(), Metrics::new());
        assert_eq!(only.build_all(&plugins, &[], "routes/1").unwrap_err(), BuildError::NotEnabled("key-auth".into()));
        assert!(Enabled::only(["nope"]).is_err());

        let bad = sluice_model::plugins::decode_map(serde_json::json!({"key-auth": {"_meta": {"filter": [["x"]]}}}));
        let err = registry.build_all(&bad.unwrap(), &[], "routes/1").unwrap_err();
        assert!(matches!(err, BuildError::Invalid { .. }), "{err}");
    }
}
