//! Plugin configurations: one typed struct per plugin (`<name>.rs`, APISIX's field names, defaults and limits),
//! and [`Plugins`], the typed `plugins` map that routes, services, plugin configs and global rules carry.
//! Consumers carry [`ConsumerPlugins`]: the credentials of the authentication plugins (their consumer schemas)
//! beside ordinary plugins.
//!
//! A `plugins` map decodes only when every plugin in it is known and its configuration passes every check, so the
//! controller (which validates with these types) and the data plane (which builds plugins from them) can never
//! disagree about what a configuration means. Errors name the plugin and the field.

use std::fmt;

use serde::de::{DeserializeOwned, Error as _};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

pub mod api_breaker;
pub mod basic_auth;
pub mod brotli;
pub(crate) mod check;
pub mod client_control;
pub mod consumer_restriction;
pub mod cors;
pub mod fault_injection;
pub mod forward_auth;
pub mod gzip;
mod header_ops;
pub mod hmac_auth;
pub mod http_logger;
pub mod ip_restriction;
pub mod jwt_auth;
pub mod key_auth;
pub mod limit;
pub mod limit_conn;
pub mod limit_count;
pub mod limit_req;
pub mod mocking;
pub mod opentelemetry;
pub mod prometheus;
pub mod proxy_mirror;
pub mod proxy_rewrite;
pub mod real_ip;
pub mod redirect;
pub mod redis;
pub mod referer_restriction;
pub mod request_id;
pub mod response_rewrite;
pub mod traffic_split;
pub mod ua_restriction;
pub mod uri_blocker;

pub use check::FieldError;

/// A plugin's configuration type: its name and the checks serde cannot express.
pub trait Schema: Serialize + DeserializeOwned + Clone + PartialEq + fmt::Debug {
    /// The plugin's name, as in `plugins` maps.
    const NAME: &'static str;

    /// Checks limits and relations between fields; the first broken rule names its field.
    fn check(&self) -> Result<(), FieldError> {
        Ok(())
    }
}

/// Why a `plugins` map (or one plugin in it) cannot be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum InvalidPlugin {
    /// No plugin of that name exists (in this scope: consumers carry only some).
    #[error("unknown plugin {0:?}")]
    Unknown(String),
    /// The configuration is not a JSON object.
    #[error("plugin {0:?} must be configured with an object")]
    NotAnObject(String),
    /// A field has the wrong shape or breaks a limit.
    #[error("plugin {plugin:?}: {error}")]
    Field {
        /// The plugin.
        plugin: String,
        /// What is wrong, naming the field.
        error: FieldError,
    },
}

/// Decodes and checks one configuration of `T` from its JSON object (without `_meta`).
fn decode_schema<T: Schema>(value: Value) -> Result<T, InvalidPlugin> {
    let field = |error: FieldError| InvalidPlugin::Field { plugin: T::NAME.to_string(), error };
    let conf: T = serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        field(FieldError::new(if path == "." { String::new() } else { path }, e.into_inner().to_string()))
    })?;
    conf.check().map_err(field)?;
    Ok(conf)
}

fn encode_schema<T: Schema>(conf: &T) -> Value {
    serde_json::to_value(conf).unwrap_or_else(|_| Value::Object(Map::new()))
}

macro_rules! plugin_set {
    ($(#[$doc:meta])* $enum:ident { $($(#[$vdoc:meta])* $variant:ident($ty:ty),)* }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq)]
        pub enum $enum {
            $($(#[$vdoc])* $variant($ty),)*
        }

        impl $enum {
            /// Every plugin name of this set.
            pub const NAMES: &'static [&'static str] = &[$(<$ty as Schema>::NAME,)*];

            /// The plugin's name.
            pub fn name(&self) -> &'static str {
                match self {
                    $($enum::$variant(_) => <$ty as Schema>::NAME,)*
                }
            }

            /// Decodes and checks the configuration of plugin `name`.
            pub fn decode(name: &str, value: Value) -> Result<$enum, InvalidPlugin> {
                match name {
                    $(n if n == <$ty as Schema>::NAME => decode_schema::<$ty>(value).map($enum::$variant),)*
                    other => Err(InvalidPlugin::Unknown(other.to_string())),
                }
            }

            fn encode(&self) -> Value {
                match self {
                    $($enum::$variant(c) => encode_schema(c),)*
                }
            }
        }
    };
}

plugin_set! {
    /// One plugin's typed configuration, for routes, services, plugin configs, global rules and consumers.
    PluginConf {
        /// `key-auth` on a route.
        KeyAuth(key_auth::KeyAuth),
        /// `basic-auth` on a route.
        BasicAuth(basic_auth::BasicAuth),
        /// `jwt-auth` on a route.
        JwtAuth(jwt_auth::JwtAuth),
        /// `hmac-auth` on a route.
        HmacAuth(hmac_auth::HmacAuth),
        /// `consumer-restriction`.
        ConsumerRestriction(consumer_restriction::ConsumerRestriction),
        /// `ip-restriction`.
        IpRestriction(ip_restriction::IpRestriction),
        /// `ua-restriction`.
        UaRestriction(ua_restriction::UaRestriction),
        /// `referer-restriction`.
        RefererRestriction(referer_restriction::RefererRestriction),
        /// `uri-blocker`.
        UriBlocker(uri_blocker::UriBlocker),
        /// `cors`.
        Cors(cors::Cors),
        /// `limit-req`.
        LimitReq(limit_req::LimitReq),
        /// `limit-conn`.
        LimitConn(limit_conn::LimitConn),
        /// `limit-count`.
        LimitCount(limit_count::LimitCount),
        /// `api-breaker`.
        ApiBreaker(api_breaker::ApiBreaker),
        /// `forward-auth`.
        ForwardAuth(forward_auth::ForwardAuth),
        /// `proxy-mirror`.
        ProxyMirror(proxy_mirror::ProxyMirror),
        /// `traffic-split` (routes, services and plugin configs only).
        TrafficSplit(traffic_split::TrafficSplit),
        /// `client-control`.
        ClientControl(client_control::ClientControl),
        /// `real-ip`.
        RealIp(real_ip::RealIp),
        /// `proxy-rewrite`.
        ProxyRewrite(proxy_rewrite::ProxyRewrite),
        /// `response-rewrite`.
        ResponseRewrite(response_rewrite::ResponseRewrite),
        /// `redirect`.
        Redirect(redirect::Redirect),
        /// `request-id`.
        RequestId(request_id::RequestId),
        /// `fault-injection`.
        FaultInjection(fault_injection::FaultInjection),
        /// `mocking`.
        Mocking(mocking::Mocking),
        /// `gzip`.
        Gzip(gzip::Gzip),
        /// `brotli`.
        Brotli(brotli::Brotli),
        /// `prometheus`.
        Prometheus(prometheus::Prometheus),
        /// `http-logger`.
        HttpLogger(http_logger::HttpLogger),
        /// `opentelemetry` (W3C trace-context propagation).
        Opentelemetry(opentelemetry::Opentelemetry),
    }
}

plugin_set! {
    /// One authentication plugin's credential, as a consumer carries it (APISIX's `consumer_schema`).
    Credential {
        /// `key-auth`: the key.
        KeyAuth(key_auth::Credential),
        /// `basic-auth`: user name and password.
        BasicAuth(basic_auth::Credential),
        /// `jwt-auth`: the key and its secret or public key.
        JwtAuth(jwt_auth::Credential),
        /// `hmac-auth`: the key id and its secret.
        HmacAuth(hmac_auth::Credential),
    }
}

/// `_meta`: settings every plugin accepts besides its own fields.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Meta {
    /// The plugin is configured but does not run.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub disable: bool,
    /// Runs the plugin at this priority instead of its default (higher runs first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i32>,
    /// A `vars` expression: the plugin runs only for requests it holds for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<Vec<Value>>,
}

impl Meta {
    fn is_default(&self) -> bool {
        *self == Meta::default()
    }
}

/// One configured plugin.
#[derive(Debug, Clone, PartialEq)]
pub struct Plugin {
    /// Its typed configuration.
    pub conf: PluginConf,
    /// Its `_meta`.
    pub meta: Meta,
}

impl Plugin {
    /// The plugin's name.
    pub fn name(&self) -> &'static str {
        self.conf.name()
    }

    /// Decodes and checks one `name: {...}` entry of a `plugins` map.
    pub fn decode(name: &str, value: Value) -> Result<Plugin, InvalidPlugin> {
        let (meta, rest) = split_meta(name, value)?;
        Ok(Plugin { conf: PluginConf::decode(name, rest)?, meta })
    }
}

/// Takes `_meta` out of one plugin's object and decodes it.
fn split_meta(name: &str, value: Value) -> Result<(Meta, Value), InvalidPlugin> {
    let Value::Object(mut map) = value else { return Err(InvalidPlugin::NotAnObject(name.to_string())) };
    let meta = match map.remove("_meta") {
        None => Meta::default(),
        Some(meta) => serde_path_to_error::deserialize(meta).map_err(|e| InvalidPlugin::Field {
            plugin: name.to_string(),
            error: FieldError::new(format!("_meta.{}", e.path()).trim_end_matches('.'), e.into_inner().to_string()),
        })?,
    };
    Ok((meta, Value::Object(map)))
}

fn with_meta(mut value: Value, meta: &Meta) -> Value {
    if let (Value::Object(map), false) = (&mut value, meta.is_default()) {
        map.insert("_meta".into(), serde_json::to_value(meta).unwrap_or(Value::Null));
    }
    value
}

/// A `plugins` map: each plugin at most once, ordered by name.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Plugins(Vec<Plugin>);

impl Plugins {
    /// The plugins, ordered by name.
    pub fn iter(&self) -> std::slice::Iter<'_, Plugin> {
        self.0.iter()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// How many there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// The plugin called `name`, if configured.
    pub fn get(&self, name: &str) -> Option<&Plugin> {
        self.0.binary_search_by(|p| p.name().cmp(name)).ok().map(|i| &self.0[i])
    }

    /// Adds `plugin`, replacing one of the same name.
    pub fn insert(&mut self, plugin: Plugin) {
        match self.0.binary_search_by(|p| p.name().cmp(plugin.name())) {
            Ok(i) => self.0[i] = plugin,
            Err(i) => self.0.insert(i, plugin),
        }
    }

    /// Decodes a JSON object of plugins (the same as deserializing, for callers holding JSON).
    pub fn from_json(map: Map<String, Value>) -> Result<Plugins, InvalidPlugin> {
        let mut plugins = Plugins::default();
        for (name, value) in map {
            plugins.insert(Plugin::decode(&name, value)?);
        }
        Ok(plugins)
    }

    /// The JSON object of these plugins, as stored in etcd.
    pub fn to_json(&self) -> Map<String, Value> {
        self.0.iter().map(|p| (p.name().to_string(), with_meta(p.conf.encode(), &p.meta))).collect()
    }
}

impl FromIterator<Plugin> for Plugins {
    fn from_iter<I: IntoIterator<Item = Plugin>>(iter: I) -> Plugins {
        let mut plugins = Plugins::default();
        iter.into_iter().for_each(|p| plugins.insert(p));
        plugins
    }
}

impl<'a> IntoIterator for &'a Plugins {
    type Item = &'a Plugin;
    type IntoIter = std::slice::Iter<'a, Plugin>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl Serialize for Plugins {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for p in &self.0 {
            map.serialize_entry(p.name(), &with_meta(p.conf.encode(), &p.meta))?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for Plugins {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Plugins, D::Error> {
        let map = Map::<String, Value>::deserialize(deserializer)?;
        Plugins::from_json(map).map_err(D::Error::custom)
    }
}

/// A consumer's `plugins`: the credentials of authentication plugins and any other plugins, which run for the
/// consumer's requests once it is authenticated.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ConsumerPlugins {
    /// Credentials by plugin, ordered by name.
    pub credentials: Vec<Credential>,
    /// Their `_meta` is not used for credentials; other plugins.
    pub plugins: Plugins,
}

impl ConsumerPlugins {
    /// The credential of authentication plugin `name`, if the consumer has one.
    pub fn credential(&self, name: &str) -> Option<&Credential> {
        self.credentials.iter().find(|c| c.name() == name)
    }

    /// Whether there are no credentials and no plugins.
    pub fn is_empty(&self) -> bool {
        self.credentials.is_empty() && self.plugins.is_empty()
    }

    /// Adds a credential, replacing one of the same plugin.
    pub fn insert_credential(&mut self, credential: Credential) {
        self.credentials.retain(|c| c.name() != credential.name());
        self.credentials.push(credential);
        self.credentials.sort_by_key(Credential::name);
    }

    /// Decodes a consumer's JSON `plugins` object.
    pub fn from_json(map: Map<String, Value>) -> Result<ConsumerPlugins, InvalidPlugin> {
        let mut out = ConsumerPlugins::default();
        for (name, value) in map {
            if Credential::NAMES.contains(&name.as_str()) {
                // The consumer schema of an auth plugin; `_meta` has no meaning there and is dropped.
                let (_meta, rest) = split_meta(&name, value)?;
                out.insert_credential(Credential::decode(&name, rest)?);
            } else {
                out.plugins.insert(Plugin::decode(&name, value)?);
            }
        }
        Ok(out)
    }

    /// The JSON object, as stored in etcd.
    pub fn to_json(&self) -> Map<String, Value> {
        let mut map = self.plugins.to_json();
        for c in &self.credentials {
            map.insert(c.name().to_string(), c.encode());
        }
        map
    }
}

impl Serialize for ConsumerPlugins {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let map = self.to_json();
        let mut out = serializer.serialize_map(Some(map.len()))?;
        for (k, v) in &map {
            out.serialize_entry(k, v)?;
        }
        out.end()
    }
}

impl<'de> Deserialize<'de> for ConsumerPlugins {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<ConsumerPlugins, D::Error> {
        let map = Map::<String, Value>::deserialize(deserializer)?;
        ConsumerPlugins::from_json(map).map_err(D::Error::custom)
    }
}

/// The names of every plugin sluice knows, for listings and flags.
pub fn known() -> impl Iterator<Item = &'static str> {
    PluginConf::NAMES.iter().copied()
}

/// A helper for tests and callers that build plugin maps from JSON: decodes `{"name": {...}, ...}`.
pub fn decode_map(value: Value) -> Result<Plugins, InvalidPlugin> {
    match value {
        Value::Object(map) => Plugins::from_json(map),
        _ => Err(InvalidPlugin::NotAnObject("plugins".into())),
    }
}

#[cfg(test)]
mod tests;
