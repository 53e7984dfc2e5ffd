//! `consumer-restriction`: allows or refuses requests by consumer, consumer group, service or route.

use serde::{Deserialize, Serialize};

use super::{FieldError, Schema, check};

/// What consumer-restriction compares with its lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Subject {
    /// The authenticated consumer's name.
    #[default]
    ConsumerName,
    /// The consumer's group (sluice consumers have none, so such a restriction refuses every request).
    ConsumerGroupId,
    /// The route's service.
    ServiceId,
    /// The route.
    RouteId,
}

impl Subject {
    /// The name as written in `type`.
    pub fn as_str(self) -> &'static str {
        match self {
            Subject::ConsumerName => "consumer_name",
            Subject::ConsumerGroupId => "consumer_group_id",
            Subject::ServiceId => "service_id",
            Subject::RouteId => "route_id",
        }
    }
}

/// The methods one user may use.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserMethods {
    /// The subject value (a consumer name, for the default `type`).
    pub user: String,
    /// Methods allowed to it.
    pub methods: Vec<String>,
}

/// `consumer-restriction`'s configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsumerRestriction {
    /// What the lists name.
    #[serde(default, rename = "type")]
    pub subject: Subject,
    /// Refused values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blacklist: Option<Vec<String>>,
    /// The only values allowed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub whitelist: Option<Vec<String>>,
    /// Methods per value, for values not whitelisted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_by_methods: Option<Vec<UserMethods>>,
    /// The status of the refusal.
    #[serde(default = "default_code")]
    pub rejected_code: u16,
    /// The `message` of the refusal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejected_msg: Option<String>,
}

fn default_code() -> u16 {
    403
}

/// The methods APISIX accepts here.
const METHODS: [&str; 10] = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "CONNECT", "TRACE", "PURGE"];

impl Schema for ConsumerRestriction {
    const NAME: &'static str = "consumer-restriction";

    fn check(&self) -> Result<(), FieldError> {
        if self.blacklist.is_none() && self.whitelist.is_none() && self.allowed_by_methods.is_none() {
            return Err(FieldError::new("", "set at least one of blacklist, whitelist and allowed_by_methods"));
        }
        for (field, list) in [("blacklist", &self.blacklist), ("whitelist", &self.whitelist)] {
            if let Some(list) = list {
                check::min_items(field, list, 1)?;
            }
        }
        for (i, entry) in self.allowed_by_methods.iter().flatten().enumerate() {
            let field = format!("allowed_by_methods[{i}].methods");
            check::min_items(&field, &entry.methods, 1)?;
            if let Some(m) = entry.methods.iter().find(|m| !METHODS.contains(&m.as_str())) {
                return Err(FieldError::new(field, format!("{m:?} is not one of {METHODS:?}")));
            }
        }
        check::status("rejected_code", self.rejected_code)
    }
}
