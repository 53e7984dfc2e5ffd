//! `opentelemetry`: W3C trace-context propagation. The node receives a `traceparent` naming a span of sluice's
//! (the client's trace continued, or a new one), sampled as configured. Spans are not exported yet.

use serde::{Deserialize, Serialize};

use super::{FieldError, Schema};

/// A sampling decision rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SamplerName {
    /// Every trace.
    AlwaysOn,
    /// No trace (still propagated, marked not sampled).
    #[default]
    AlwaysOff,
    /// A fraction of traces, by trace id.
    TraceIdRatio,
    /// The parent's decision, else `options.root`'s.
    ParentBase,
}

/// The options of a sampler.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SamplerOptions {
    /// For `trace_id_ratio`: the fraction sampled, 0 to 1.
    #[serde(default)]
    pub fraction: f64,
    /// For `parent_base`: the rule for traces that start here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root: Option<Root>,
}

/// The root rule of `parent_base`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Root {
    /// `always_on`, `always_off` or `trace_id_ratio`.
    #[serde(default)]
    pub name: SamplerName,
    /// Its options.
    #[serde(default)]
    pub options: RootOptions,
}

/// The options of a root rule.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RootOptions {
    /// For `trace_id_ratio`.
    #[serde(default)]
    pub fraction: f64,
}

/// The sampler.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sampler {
    /// The rule.
    #[serde(default)]
    pub name: SamplerName,
    /// Its options.
    #[serde(default)]
    pub options: SamplerOptions,
}

/// `opentelemetry`'s configuration.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Opentelemetry {
    /// How traces are sampled.
    #[serde(default)]
    pub sampler: Sampler,
}

impl Schema for Opentelemetry {
    const NAME: &'static str = "opentelemetry";

    fn check(&self) -> Result<(), FieldError> {
        let fractions = [
            ("sampler.options.fraction", self.sampler.options.fraction),
            (
                "sampler.options.root.options.fraction",
                self.sampler.options.root.as_ref().map_or(0.0, |r| r.options.fraction),
            ),
        ];
        if let Some((field, _)) = fractions.iter().find(|(_, f)| !(0.0..=1.0).contains(f)) {
            return Err(FieldError::new(*field, "must be between 0 and 1"));
        }
        if self.sampler.options.root.as_ref().is_some_and(|r| r.name == SamplerName::ParentBase) {
            return Err(FieldError::new("sampler.options.root.name", "cannot be parent_base"));
        }
        Ok(())
    }
}
