//! `traffic-split`: the first rule whose `match` holds picks one of its weighted shares, and the request goes to
//! that share's upstream instead of the route's.
//!
//! The plugin only decides: it records the share's number (counted over every rule, in order) in
//! [`Ctx::split`], and the proxy takes the upstream the configuration state resolved for that number with the
//! route (`Target::splits`), so upstreams named here are compiled, health-checked and tracked as dependencies like
//! the route's own.
//!
//! With a `key` (sluice), the choice is a consistent hash of the key: the hash's position in `0..2⁶⁴`, scaled to
//! the rule's total weight, falls into one share's range. The hash is the same in every replica and version, so
//! a user stays in one share across requests and data planes; and since ranges are laid out in order, raising a
//! canary's weight only moves users into the canary (none move between other shares). Without a key, or when a
//! request has none, shares are taken in turn by smooth weighted round robin (APISIX's behaviour).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use http::header::{HeaderName, HeaderValue};
use http::request;
use sluice_model::PluginConf;
use sluice_model::plugins::{Schema, traffic_split as model};

use super::registry::{BuildCtx, Factory, mismatch};
use super::{Ctx, Flow, Phases, Plugin, values};
use crate::router::Vars;
use crate::upstream::runtime::HashKey;

/// traffic-split's place in the registry (APISIX priority 966).
pub(super) const FACTORY: Factory =
    Factory { name: model::TrafficSplit::NAME, priority: 966, auth: false, prefer_route: false, build };

/// Round-robin turns are precomputed up to this many per rule; beyond, shares are taken in contiguous runs.
const MAX_SCHEDULE: u64 = 4096;

fn build(conf: &PluginConf, _: &BuildCtx<'_>) -> Result<Arc<dyn Plugin>, String> {
    let PluginConf::TrafficSplit(c) = conf else { return Err(mismatch(FACTORY.name, conf)) };
    // The model requires a key whenever `hash_on` is set, except for `consumer`, which needs none.
    let key = match (&c.key, &c.hash_on) {
        (None, None) => None,
        (key, hash_on) => {
            Some(HashKey::parse(hash_on.as_deref(), key.as_deref().unwrap_or("")).map_err(|e| e.to_string())?)
        }
    };
    let tag_header = HeaderName::try_from(c.tag_header.as_str()).map_err(|e| format!("tag_header: {e}"))?;
    let mut rules = Vec::with_capacity(c.rules.len());
    let mut first = 0;
    for (i, rule) in c.rules.iter().enumerate() {
        let matches = rule
            .matches
            .iter()
            .map(|m| Vars::compile(&m.vars).map_err(|e| format!("rules[{i}].match: {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        let weights: Vec<u64> = rule.weighted_upstreams.iter().map(|w| u64::from(w.weight)).collect();
        let tags = rule
            .weighted_upstreams
            .iter()
            .map(|w| w.tag.as_deref().map(HeaderValue::from_str).transpose())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("rules[{i}]: tag: {e}"))?;
        rules.push(Rule::new(matches, first, &weights, tags));
        first += weights.len();
    }
    Ok(Arc::new(TrafficSplit { rules, key, tag_header }))
}

#[derive(Debug)]
struct TrafficSplit {
    rules: Vec<Rule>,
    /// Where the stable assignment key comes from; `None`: round robin.
    key: Option<HashKey>,
    tag_header: HeaderName,
}

/// One compiled rule.
#[derive(Debug)]
struct Rule {
    /// Any of these holding makes the rule hold; none: it always does.
    matches: Vec<Vars>,
    /// The flat number of the rule's first share.
    first: usize,
    /// Running totals of the weights: share `i` takes positions `ends[i-1]..ends[i]`.
    ends: Vec<u64>,
    /// Round-robin turns, as share indices; empty when the total weight is too large to precompute.
    schedule: Box<[u16]>,
    /// The next round-robin turn.
    turn: AtomicUsize,
    /// Each share's `tag_header` value.
    tags: Vec<Option<HeaderValue>>,
}

impl Rule {
    fn new(matches: Vec<Vars>, first: usize, weights: &[u64], tags: Vec<Option<HeaderValue>>) -> Rule {
        let ends = weights
            .iter()
            .scan(0u64, |total, w| {
                *total += w;
                Some(*total)
            })
            .collect();
        Rule { matches, first, ends, schedule: schedule(weights), turn: AtomicUsize::new(0), tags }
    }

    fn holds(&self, req: &crate::router::RequestInfo<'_>) -> bool {
        self.matches.is_empty() || self.matches.iter().any(|m| m.matches(req))
    }

    fn total(&self) -> u64 {
        self.ends.last().copied().unwrap_or(0)
    }

    /// The share whose range holds `position` (below the total weight).
    fn at(&self, position: u64) -> usize {
        self.ends.partition_point(|end| *end <= position).min(self.ends.len().saturating_sub(1))
    }

    /// The share a key hashing to `hash` belongs to.
    fn by_hash(&self, hash: u64) -> usize {
        // Scaled, not reduced modulo the total, so that each share's range is one contiguous part of the hash space.
        let position = ((u128::from(hash) * u128::from(self.total())) >> 64) as u64;
        self.at(position)
    }

    /// The next share in turn.
    fn next(&self) -> usize {
        let turn = self.turn.fetch_add(1, Ordering::Relaxed);
        match self.schedule.get(turn % self.schedule.len().max(1)) {
            Some(share) => usize::from(*share),
            None => self.at(turn as u64 % self.total().max(1)),
        }
    }
}

/// Smooth weighted round robin's order over one cycle (weights divided by their greatest common divisor), as
/// nginx spreads weighted peers; empty when a cycle would be longer than [`MAX_SCHEDULE`].
fn schedule(weights: &[u64]) -> Box<[u16]> {
    let divisor = weights.iter().fold(0, |g, w| gcd(g, *w)).max(1);
    let reduced: Vec<i64> = weights.iter().map(|w| i64::try_from(w / divisor).unwrap_or(i64::MAX)).collect();
    let total: i64 = reduced.iter().sum();
    if total <= 0 || total as u64 > MAX_SCHEDULE || weights.len() > usize::from(u16::MAX) {
        return Box::default();
    }
    let mut current = vec![0i64; reduced.len()];
    let mut order = Vec::with_capacity(total as usize);
    for _ in 0..total {
        for (c, w) in current.iter_mut().zip(&reduced) {
            *c += w;
        }
        let (best, _) = current.iter().enumerate().max_by_key(|(i, c)| (**c, std::cmp::Reverse(*i))).unwrap_or((0, &0));
        current[best] -= total;
        order.push(best as u16);
    }
    order.into()
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

impl Plugin for TrafficSplit {
    fn phases(&self) -> Phases {
        Phases::ACCESS
    }

    fn access(&self, ctx: &mut Ctx, req: &mut request::Parts) -> Flow {
        let host = values::host(req);
        let info = values::info(req, &host, ctx);
        let Some(rule) = self.rules.iter().find(|r| r.holds(&info)) else { return Flow::Continue };
        let hash = self.key.as_ref().and_then(|k| k.hash_of(&info, ctx.consumer_name()));
        let share = match hash {
            Some(hash) => rule.by_hash(hash),
            None => rule.next(),
        };
        ctx.split = Some(rule.first + share);
        if let Some(tag) = rule.tags.get(share).cloned().flatten() {
            req.headers.insert(self.tag_header.clone(), tag);
        }
        Flow::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(weights: &[u64]) -> Rule {
        Rule::new(Vec::new(), 0, weights, vec![None; weights.len()])
    }

    #[test]
    fn round_robin_follows_the_weights_smoothly() {
        let r = rule(&[2, 1]);
        let turns: Vec<usize> = (0..6).map(|_| r.next()).collect();
        assert_eq!(turns, [0, 1, 0, 0, 1, 0]);
        let r = rule(&[0, 3]);
        assert!((0..5).all(|_| r.next() == 1), "a share of weight 0 gets nothing");
        // Past the precomputed cycle: contiguous runs, still in proportion.
        let r = rule(&[5000, 5001]);
        let first = (0..10_001).filter(|_| r.next() == 0).count();
        assert_eq!(first, 5000);
    }

    #[test]
    fn hashed_shares_are_proportional_and_grow_without_reshuffling() {
        let keys: Vec<u64> = (0..10_000u32).map(|i| crate::upstream::balancer::hash_key(&i.to_le_bytes())).collect();
        let (canary, stable) = (rule(&[10, 90]), rule(&[20, 80]));
        let in_canary = keys.iter().filter(|h| canary.by_hash(**h) == 0).count();
        assert!((900..1100).contains(&in_canary), "{in_canary} of 10000 in a 10% canary");
        for h in &keys {
            if canary.by_hash(*h) == 0 {
                assert_eq!(stable.by_hash(*h), 0, "raising the canary's weight keeps its users in it");
            }
        }
        assert_eq!(rule(&[0, 1]).by_hash(0), 1);
        assert_eq!(rule(&[1, 0]).by_hash(u64::MAX), 0);
    }
}
