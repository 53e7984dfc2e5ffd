//! Object ids derived from their owners, so that the same Kubernetes object always writes the same keys.

use sha2::{Digest, Sha256};

/// Turns readable parts into an APISIX id: joined by `.` when that fits the 64-character id rule, else a
/// prefix plus a hash of the parts (still deterministic, still unique).
pub(super) fn make(prefix: &str, parts: &[&str]) -> String {
    let readable = std::iter::once(prefix).chain(parts.iter().copied()).collect::<Vec<_>>().join(".");
    let allowed = |b: u8| b.is_ascii_alphanumeric() || b"-_.".contains(&b);
    if readable.len() <= 64 && readable.bytes().all(allowed) {
        return readable;
    }
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part.as_bytes());
        hasher.update([0]);
    }
    let digest = hasher.finalize();
    let hex: String = digest.iter().take(12).map(|b| format!("{b:02x}")).collect();
    format!("{prefix}-{hex}")
}

#[cfg(test)]
mod tests {
    use super::make;

    #[test]
    fn readable_when_short_hashed_when_long() {
        assert_eq!(make("ing", &["default", "web", "0", "1"]), "ing.default.web.0.1");
        let long = "x".repeat(70);
        let id = make("ing", &["default", &long]);
        assert!(id.starts_with("ing-") && id.len() <= 64, "{id}");
        assert_eq!(id, make("ing", &["default", &long]));
        assert_ne!(id, make("ing", &["default2", &long]));
    }
}
