//! What data planes write about themselves under `<prefix>/data_plane/`, each under its own etcd lease, so that an
//! entry disappears when its data plane stops renewing it.

use serde::{Deserialize, Serialize};

/// `<prefix>/data_plane/server_info/<id>`: one live data plane, in APISIX's shape (its `server-info` report),
/// with sluice's additions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerInfo {
    /// The data plane's id, the last segment of its key.
    pub id: String,
    /// The host (in Kubernetes, the pod) it runs on.
    pub hostname: String,
    /// The sluice version it runs.
    pub version: String,
    /// When it started, in seconds since the Unix epoch.
    pub boot_time: u64,
}

/// Why a data plane id cannot be used in a key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("data plane id {0:?} must be 1 to 253 characters of letters, digits, `-`, `_` and `.`")]
pub struct InvalidDataPlaneId(pub String);

/// Checks a data plane id: it is one key segment.
pub fn check_id(id: &str) -> Result<(), InvalidDataPlaneId> {
    let fine = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if id.is_empty() || id.len() > 253 || !id.chars().all(fine) {
        return Err(InvalidDataPlaneId(id.to_string()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_one_key_segment() {
        assert!(check_id("sluice-dataplane-7d9f-x2k.1").is_ok());
        assert!(check_id("").is_err());
        assert!(check_id("a/b").is_err());
        let info = ServerInfo { id: "n1".into(), hostname: "h".into(), version: "0.1.0".into(), boot_time: 1 };
        let json = serde_json::to_value(&info).unwrap();
        assert_eq!(json["id"], "n1");
        assert_eq!(serde_json::from_value::<ServerInfo>(json).unwrap(), info);
    }
}
