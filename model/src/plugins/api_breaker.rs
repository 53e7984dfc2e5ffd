//! `api-breaker`: a circuit breaker per route. APISIX's fields (trip after `unhealthy.failures` failures in a row,
//! stay open 2, 4, 8… seconds up to `max_breaker_sec`, close after `healthy.successes` successes) and sluice's:
//! a failure rate over a window with a minimum number of requests, and a bounded number of half-open probes.

use serde::{Deserialize, Serialize};

use super::{FieldError, Schema, check};

/// `api-breaker`'s configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiBreaker {
    /// The status answered while the breaker is open.
    pub break_response_code: u16,
    /// The body answered while the breaker is open.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub break_response_body: Option<String>,
    /// Headers of the answer while the breaker is open.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub break_response_headers: Vec<Header>,
    /// The longest the breaker stays open, in seconds (at least 3).
    #[serde(default = "default_max_breaker_sec")]
    pub max_breaker_sec: u64,
    /// What counts as a failure, and how many in a row trip the breaker.
    #[serde(default)]
    pub unhealthy: Unhealthy,
    /// What counts as a success, and how many close the breaker again.
    #[serde(default)]
    pub healthy: Healthy,
    /// Also trip on the share of failures over a window (sluice).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_rate: Option<FailureRate>,
    /// Requests let through at once while the breaker is half open (sluice; default 1).
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub half_open_requests: u32,
}

/// A header of the breaker's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Header {
    /// Its name.
    pub key: String,
    /// Its value.
    pub value: String,
}

/// Failures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Unhealthy {
    /// Statuses (500–599) that count as failures.
    #[serde(default = "default_unhealthy_statuses")]
    pub http_statuses: Vec<u16>,
    /// Failures in a row that trip the breaker.
    #[serde(default = "three")]
    pub failures: u32,
}

impl Default for Unhealthy {
    fn default() -> Self {
        Unhealthy { http_statuses: default_unhealthy_statuses(), failures: 3 }
    }
}

/// Successes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Healthy {
    /// Statuses (200–499) that count as successes.
    #[serde(default = "default_healthy_statuses")]
    pub http_statuses: Vec<u16>,
    /// Successes of half-open probes that close the breaker.
    #[serde(default = "three")]
    pub successes: u32,
}

impl Default for Healthy {
    fn default() -> Self {
        Healthy { http_statuses: default_healthy_statuses(), successes: 3 }
    }
}

/// Tripping on a failure rate (sluice).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FailureRate {
    /// The share of failures (above 0, at most 1) at or above which the breaker trips.
    pub threshold: f64,
    /// The window the share is measured over, in seconds (1–60).
    #[serde(default = "default_window")]
    pub window: u32,
    /// Requests the window must hold before the share may trip the breaker.
    #[serde(default = "default_min_requests")]
    pub min_requests: u32,
}

fn default_max_breaker_sec() -> u64 {
    300
}
fn default_unhealthy_statuses() -> Vec<u16> {
    vec![500]
}
fn default_healthy_statuses() -> Vec<u16> {
    vec![200]
}
fn three() -> u32 {
    3
}
fn one() -> u32 {
    1
}
fn is_one(n: &u32) -> bool {
    *n == 1
}
fn default_window() -> u32 {
    10
}
fn default_min_requests() -> u32 {
    20
}

fn statuses(field: &str, list: &[u16], min: u16, max: u16) -> Result<(), FieldError> {
    check::min_items(field, list, 1)?;
    for (i, code) in list.iter().enumerate() {
        check::range(&format!("{field}[{i}]"), *code, min, max)?;
        if list[..i].contains(code) {
            return Err(FieldError::new(format!("{field}[{i}]"), "is listed twice"));
        }
    }
    Ok(())
}

impl Schema for ApiBreaker {
    const NAME: &'static str = "api-breaker";

    fn check(&self) -> Result<(), FieldError> {
        check::range("break_response_code", self.break_response_code, 200, 599)?;
        for (i, h) in self.break_response_headers.iter().enumerate() {
            let field = format!("break_response_headers[{i}]");
            check::header_name(&format!("{field}.key"), &h.key)?;
            check::min_len(&format!("{field}.value"), &h.value, 1)?;
            check::header_value(&format!("{field}.value"), &h.value)?;
        }
        check::range("max_breaker_sec", self.max_breaker_sec, 3, 86_400)?;
        statuses("unhealthy.http_statuses", &self.unhealthy.http_statuses, 500, 599)?;
        check::range("unhealthy.failures", self.unhealthy.failures, 1, 1_000_000)?;
        statuses("healthy.http_statuses", &self.healthy.http_statuses, 200, 499)?;
        check::range("healthy.successes", self.healthy.successes, 1, 1_000_000)?;
        if let Some(rate) = &self.failure_rate {
            if !(rate.threshold > 0.0 && rate.threshold <= 1.0) {
                return Err(FieldError::new("failure_rate.threshold", "must be above 0 and at most 1"));
            }
            check::range("failure_rate.window", rate.window, 1, 60)?;
            check::range("failure_rate.min_requests", rate.min_requests, 1, 1_000_000)?;
        }
        check::range("half_open_requests", self.half_open_requests, 1, 1000)
    }
}
