//! `traffic-split`: rules that send matching requests to weighted upstreams instead of the route's (APISIX's
//! fields), and sluice's stable assignment: with `key`, a request goes to the upstream its key hashes to, so
//! one user stays in the same canary across requests and across data plane replicas; `tag_header` tells the
//! services behind which share a request was sent to.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{FieldError, Schema, check};
use crate::Upstream;

/// `traffic-split`'s configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrafficSplit {
    /// Tried in order; the first whose `match` holds decides. No rule holding: the route's own upstream.
    #[serde(default)]
    pub rules: Vec<Rule>,
    /// Where the assignment key comes from: `vars` (default), `header`, `cookie`, `consumer` or
    /// `vars_combinations` (sluice; as an upstream's `hash_on`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash_on: Option<String>,
    /// The name of the value hashed for stable assignment (sluice). Without it, or when a request has no such
    /// value, the weights are applied in turn (APISIX's weighted round robin).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The request header that carries the chosen upstream's `tag` to the node (sluice).
    #[serde(default = "default_tag_header")]
    pub tag_header: String,
}

/// One rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Conditions, any of which makes the rule hold; none: it always holds.
    #[serde(rename = "match", default, skip_serializing_if = "Vec::is_empty")]
    pub matches: Vec<Match>,
    /// Where the rule sends requests, by weight.
    pub weighted_upstreams: Vec<WeightedUpstream>,
}

/// One condition: a `vars` expression list, every expression of which must hold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Match {
    /// The expressions, in the route `vars` syntax.
    #[serde(default)]
    pub vars: Vec<Value>,
}

/// One share of a rule's traffic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeightedUpstream {
    /// An upstream object by id.
    #[serde(default, deserialize_with = "crate::id::opt", skip_serializing_if = "Option::is_none")]
    pub upstream_id: Option<String>,
    /// An upstream written here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<Box<Upstream>>,
    /// Its share; 0 sends it nothing. Neither `upstream_id` nor `upstream`: the share goes to the route's own
    /// upstream.
    #[serde(default = "one")]
    pub weight: u32,
    /// The value of `tag_header` on requests sent to this share (sluice).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
}

fn one() -> u32 {
    1
}

/// The tag header's name when none is given.
pub const DEFAULT_TAG_HEADER: &str = "X-Traffic-Split-Tag";

fn default_tag_header() -> String {
    DEFAULT_TAG_HEADER.into()
}

/// The hash sources `hash_on` may name.
const HASH_ON: &[&str] = &["vars", "header", "cookie", "consumer", "vars_combinations"];

/// The most rules, and shares per rule, a configuration may have: assignment scans them per request.
const MAX_RULES: usize = 64;
/// The most shares of one rule.
const MAX_SHARES: usize = 64;

/// Whether `text` can be an HTTP field value (visible ASCII and spaces, no control characters).
fn field_value(text: &str) -> bool {
    text.bytes().all(|b| b == b' ' || b == b'\t' || (0x21..0x7f).contains(&b))
}

/// Whether `text` is an HTTP field name (an RFC 9110 token).
fn field_name(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

impl Schema for TrafficSplit {
    const NAME: &'static str = "traffic-split";

    fn check(&self) -> Result<(), FieldError> {
        if self.rules.len() > MAX_RULES {
            return Err(FieldError::new("rules", format!("must have at most {MAX_RULES} rules")));
        }
        let hash_on = self.hash_on.as_deref().unwrap_or("vars");
        if !HASH_ON.contains(&hash_on) {
            return Err(FieldError::new("hash_on", format!("must be one of {}", HASH_ON.join(", "))));
        }
        match (&self.key, hash_on) {
            (None, "consumer") => {}
            (None, _) if self.hash_on.is_some() => {
                return Err(FieldError::new("key", "is required when hash_on is set (except for consumer)"));
            }
            (Some(key), _) => check::min_len("key", key, 1)?,
            (None, _) => {}
        }
        if !field_name(&self.tag_header) {
            return Err(FieldError::new("tag_header", "must be an HTTP header name"));
        }
        for (i, rule) in self.rules.iter().enumerate() {
            let field = |rest: &str| format!("rules[{i}].{rest}");
            check::min_items(&field("weighted_upstreams"), &rule.weighted_upstreams, 1)?;
            if rule.weighted_upstreams.len() > MAX_SHARES {
                let message = format!("must have at most {MAX_SHARES} items");
                return Err(FieldError::new(field("weighted_upstreams"), message));
            }
            for (m, matched) in rule.matches.iter().enumerate() {
                check::min_items(&field(&format!("match[{m}].vars")), &matched.vars, 1)?;
            }
            let total: u64 = rule.weighted_upstreams.iter().map(|w| u64::from(w.weight)).sum();
            if total == 0 {
                return Err(FieldError::new(field("weighted_upstreams"), "at least one weight must be above 0"));
            }
            for (j, share) in rule.weighted_upstreams.iter().enumerate() {
                let field = |rest: &str| field(&format!("weighted_upstreams[{j}].{rest}"));
                if share.upstream_id.is_some() && share.upstream.is_some() {
                    return Err(FieldError::new(field("upstream"), "give upstream_id or upstream, not both"));
                }
                if let Some(up) = &share.upstream {
                    up.validate().map_err(|e| FieldError::new(field("upstream"), e.to_string()))?;
                    if up.nodes.is_empty() {
                        return Err(FieldError::new(field("upstream.nodes"), "must have at least one node"));
                    }
                }
                if let Some(tag) = &share.tag
                    && (tag.is_empty() || !field_value(tag))
                {
                    return Err(FieldError::new(field("tag"), "must be a non-empty HTTP header value"));
                }
            }
        }
        Ok(())
    }
}

impl TrafficSplit {
    /// Every share of every rule, in order: the flat numbering the data plane resolves upstreams by.
    pub fn shares(&self) -> impl Iterator<Item = &WeightedUpstream> {
        self.rules.iter().flat_map(|r| &r.weighted_upstreams)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::PluginConf;
    use serde_json::json;

    fn decode(v: Value) -> Result<PluginConf, String> {
        PluginConf::decode("traffic-split", v).map_err(|e| e.to_string())
    }

    #[test]
    fn reads_apisix_examples_and_sluice_fields() {
        let conf = decode(json!({"rules": [{
        "match": [{"vars": [["arg_name", "==", "jack"], ["http_user-id", ">", "23"]]}],
        "weighted_upstreams": [
            {"upstream": {"name": "canary", "type": "roundrobin", "nodes": {"127.0.0.1:1981": 1}}, "weight": 3},
            {"weight": 2}
        ]}]}))
        .unwrap();
        let PluginConf::TrafficSplit(split) = conf else { panic!("{conf:?}") };
        assert_eq!(split.tag_header, "X-Traffic-Split-Tag");
        assert_eq!(split.shares().map(|s| s.weight).collect::<Vec<_>>(), [3, 2]);

        let sticky = decode(json!({"hash_on": "header", "key": "x-user", "tag_header": "x-gray",
            "rules": [{"weighted_upstreams": [{"upstream_id": 7, "weight": 1, "tag": "canary"}, {"weight": 9}]}]}));
        let PluginConf::TrafficSplit(sticky) = sticky.unwrap() else { panic!() };
        assert_eq!(sticky.rules[0].weighted_upstreams[0].upstream_id.as_deref(), Some("7"));
        assert!(decode(json!({"hash_on": "consumer", "rules": []})).is_ok());
    }

    #[test]
    fn refuses_what_cannot_be_served() {
        let shares = |s: Value| json!({"rules": [{"weighted_upstreams": s}]});
        let cases = [
            (shares(json!([])), "weighted_upstreams"),
            (shares(json!([{"weight": 0}])), "at least one weight"),
            (shares(json!([{"upstream_id": "a", "upstream": {"nodes": {"a:1": 1}}}])), "not both"),
            (shares(json!([{"upstream": {"nodes": {}}}])), "upstream.nodes"),
            (shares(json!([{"upstream": {"nodes": {"a:1": 1}, "bogus": 1}}])), "upstream"),
            (shares(json!([{"tag": "a\nb"}])), "tag"),
            (json!({"hash_on": "header", "rules": []}), "key"),
            (json!({"hash_on": "ip", "key": "x", "rules": []}), "hash_on"),
            (json!({"tag_header": "bad header", "rules": []}), "tag_header"),
            (json!({"rules": [{"match": [{"vars": []}], "weighted_upstreams": [{}]}]}), "match[0].vars"),
            (json!({"rules": [], "extra": 1}), "extra"),
        ];
        for (value, expected) in cases {
            let err = decode(value.clone()).unwrap_err();
            assert!(err.contains(expected), "{value}: {err}");
        }
    }
}
