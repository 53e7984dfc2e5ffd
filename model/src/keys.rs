//! The key layout under the etcd prefix: `<prefix>/<kind directory>/<id>`.

use std::fmt;

/// The prefix used when none is configured.
pub const DEFAULT_PREFIX: &str = "/sluice";

/// The kinds of object stored under the prefix, one directory each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// `routes/`: what to match and where to send it.
    Route,
    /// `upstreams/`: a set of nodes and how to balance over them.
    Upstream,
    /// `services/`: plugins and an upstream shared by routes.
    Service,
    /// `consumers/`: callers and their credentials.
    Consumer,
    /// `plugin_configs/`: reusable plugin sets.
    PluginConfig,
    /// `global_rules/`: plugins run on every request.
    GlobalRule,
    /// `ssls/`: certificates and keys with their SNIs.
    Ssl,
}

impl Kind {
    /// Every kind, in the order a writer should create them (referenced objects before referrers).
    pub const ALL: [Kind; 7] =
        [Kind::Upstream, Kind::Service, Kind::PluginConfig, Kind::Consumer, Kind::GlobalRule, Kind::Ssl, Kind::Route];

    /// The directory name under the prefix, as APISIX names it.
    pub fn dir(self) -> &'static str {
        match self {
            Kind::Route => "routes",
            Kind::Upstream => "upstreams",
            Kind::Service => "services",
            Kind::Consumer => "consumers",
            Kind::PluginConfig => "plugin_configs",
            Kind::GlobalRule => "global_rules",
            Kind::Ssl => "ssls",
        }
    }

    /// A short lowercase name, used as a metric label value.
    pub fn label(self) -> &'static str {
        match self {
            Kind::Route => "route",
            Kind::Upstream => "upstream",
            Kind::Service => "service",
            Kind::Consumer => "consumer",
            Kind::PluginConfig => "plugin_config",
            Kind::GlobalRule => "global_rule",
            Kind::Ssl => "ssl",
        }
    }

    fn from_dir(dir: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.dir() == dir)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// Builds and parses keys under one configured prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    /// Always starts with `/` and never ends with one.
    prefix: String,
}

impl Default for Keys {
    fn default() -> Self {
        Keys::new(DEFAULT_PREFIX)
    }
}

impl Keys {
    /// A key layout under `prefix`; a missing leading `/` is added and trailing ones are dropped.
    pub fn new(prefix: &str) -> Keys {
        let trimmed = prefix.trim_end_matches('/');
        let prefix = if trimmed.starts_with('/') { trimmed.to_string() } else { format!("/{trimmed}") };
        Keys { prefix }
    }

    /// The prefix itself, without a trailing `/`.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The range every object lives in: the prefix followed by `/`.
    pub fn all(&self) -> String {
        format!("{}/", self.prefix)
    }

    /// The directory holding objects of one kind, with a trailing `/`.
    pub fn dir(&self, kind: Kind) -> String {
        format!("{}/{}/", self.prefix, kind.dir())
    }

    /// The key of one object.
    pub fn key(&self, kind: Kind, id: &str) -> String {
        format!("{}/{}/{}", self.prefix, kind.dir(), id)
    }

    /// The directory where live data planes register (`server_info/`, APISIX's), with a trailing `/`.
    pub fn server_infos(&self) -> String {
        format!("{}/data_plane/server_info/", self.prefix)
    }

    /// The registration key of data plane `id`.
    pub fn server_info(&self, id: &str) -> String {
        format!("{}{id}", self.server_infos())
    }

    /// Splits a key into its kind and id; `None` for keys outside the known layout.
    pub fn parse<'k>(&self, key: &'k str) -> Option<(Kind, &'k str)> {
        let rest = key.strip_prefix(self.prefix.as_str())?.strip_prefix('/')?;
        let (dir, id) = rest.split_once('/')?;
        if id.is_empty() || id.contains('/') {
            return None;
        }
        Some((Kind::from_dir(dir)?, id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_and_parses_keys() {
        let keys = Keys::new("/sluice/");
        assert_eq!(keys.key(Kind::Route, "r1"), "/sluice/routes/r1");
        assert_eq!(keys.parse("/sluice/routes/r1"), Some((Kind::Route, "r1")));
        assert_eq!(keys.parse("/sluice/plugin_configs/p"), Some((Kind::PluginConfig, "p")));
        assert_eq!(keys.parse("/sluice/routes/"), None);
        assert_eq!(keys.parse("/sluice/unknown/x"), None);
        assert_eq!(keys.parse("/sluicex/routes/r1"), None);
        assert_eq!(keys.parse("/sluice/data_plane/server_info/n1"), None);
        assert_eq!(Keys::new("apisix").all(), "/apisix/");
        assert_eq!(keys.server_info("n1"), "/sluice/data_plane/server_info/n1");
    }
}
