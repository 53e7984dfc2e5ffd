//! Host rules shared by Ingress and ApiRoute: DNS names and `*.` wildcards that match exactly one label.
//!
//! APISIX's own wildcard matches any depth, so the route keeps APISIX's host list (for fast lookup) and adds one
//! `host` regex condition that narrows it to one label.

use serde_json::{Value, json};

use super::{Problem, Reason};

/// One host rule.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Host {
    /// A full name, lowercased.
    Exact(String),
    /// The suffix after `*.`, lowercased.
    Wildcard(String),
}

/// Accepts DNS names and `*.` wildcards of them, lowercased.
pub(super) fn parse(host: &str) -> Result<Host, Problem> {
    let lower = host.to_ascii_lowercase();
    let (wild, name) = match lower.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, lower.as_str()),
    };
    let valid = !name.is_empty()
        && name
            .split('.')
            .all(|label| !label.is_empty() && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
    if !valid {
        return Err(Problem {
            reason: Reason::InvalidHost,
            message: format!("host {host:?} must be a DNS name, optionally starting with '*.'"),
        });
    }
    Ok(if wild { Host::Wildcard(name.to_string()) } else { Host::Exact(name.to_string()) })
}

/// APISIX `hosts` plus, when any host is a wildcard, the `vars` condition that limits wildcards to one label.
pub(super) fn matcher(hosts: &[Host]) -> (Option<Vec<String>>, Option<Value>) {
    if hosts.is_empty() {
        return (None, None);
    }
    let list = hosts
        .iter()
        .map(|h| match h {
            Host::Exact(name) => name.clone(),
            Host::Wildcard(suffix) => format!("*.{suffix}"),
        })
        .collect();
    if !hosts.iter().any(|h| matches!(h, Host::Wildcard(_))) {
        return (Some(list), None);
    }
    // Names hold only letters, digits, '-' and '.', so escaping the dots is enough.
    let alternatives: Vec<String> = hosts
        .iter()
        .map(|h| match h {
            Host::Exact(name) => name.replace('.', "\\."),
            Host::Wildcard(suffix) => format!("[^.]+\\.{}", suffix.replace('.', "\\.")),
        })
        .collect();
    let pattern = match alternatives.as_slice() {
        [one] => format!("^{one}$"),
        many => format!("^(?:{})$", many.join("|")),
    };
    (Some(list), Some(json!(["host", "~~", pattern])))
}
