//! `prometheus`: counts the route's requests, latencies and bytes in the data plane's metrics.

use serde::{Deserialize, Serialize};

use super::Schema;

/// `prometheus`'s configuration.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Prometheus {
    /// Labels series with the route's and service's names instead of their ids.
    #[serde(default)]
    pub prefer_name: bool,
}

impl Schema for Prometheus {
    const NAME: &'static str = "prometheus";
}
