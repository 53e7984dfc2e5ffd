//! APISIX accepts object ids written as JSON strings or numbers; both become a `String` here.

use serde::{Deserialize, Deserializer};

#[derive(Deserialize)]
#[serde(untagged)]
enum RawId {
    Text(String),
    Number(serde_json::Number),
}

impl From<RawId> for String {
    fn from(raw: RawId) -> Self {
        match raw {
            RawId::Text(s) => s,
            RawId::Number(n) => n.to_string(),
        }
    }
}

/// Deserializes an optional id that may be a string or a number.
pub(crate) fn opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(Option::<RawId>::deserialize(d)?.map(String::from))
}
