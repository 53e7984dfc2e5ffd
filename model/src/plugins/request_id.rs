//! `request-id`: gives every request an id, sent to the node and back to the client.

use serde::{Deserialize, Serialize};

use super::{FieldError, Schema, check};

/// How ids are made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Algorithm {
    /// A random UUID (version 4).
    #[default]
    Uuid,
    /// A time-ordered UUID (version 7).
    Uuidv7,
    /// 21 random characters of `-_0-9a-zA-Z`.
    Nanoid,
    /// Random characters of a chosen set and length.
    RangeId,
}

/// The settings of `range_id`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RangeId {
    /// How many characters.
    #[serde(default = "default_length")]
    pub length: usize,
    /// Which characters.
    #[serde(default = "default_char_set")]
    pub char_set: String,
}

fn default_length() -> usize {
    16
}

fn default_char_set() -> String {
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789".into()
}

impl Default for RangeId {
    fn default() -> Self {
        RangeId { length: default_length(), char_set: default_char_set() }
    }
}

/// `request-id`'s configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestId {
    /// The header carrying the id.
    #[serde(default = "default_header")]
    pub header_name: String,
    /// Sends the id back to the client too.
    #[serde(default = "yes")]
    pub include_in_response: bool,
    /// How ids are made.
    #[serde(default)]
    pub algorithm: Algorithm,
    /// The settings of `range_id`.
    #[serde(default)]
    pub range_id: RangeId,
}

fn default_header() -> String {
    "X-Request-Id".into()
}

fn yes() -> bool {
    true
}

impl Schema for RequestId {
    const NAME: &'static str = "request-id";

    fn check(&self) -> Result<(), FieldError> {
        check::header_name("header_name", &self.header_name)?;
        if self.range_id.length < 6 {
            return Err(FieldError::new("range_id.length", "must be at least 6"));
        }
        // Not in APISIX's schema: an id is made per request and sent in a header, so its size is bounded.
        if self.range_id.length > 1024 {
            return Err(FieldError::new("range_id.length", "must be at most 1024"));
        }
        check::min_len("range_id.char_set", &self.range_id.char_set, 6)?;
        if !self.range_id.char_set.is_ascii() {
            return Err(FieldError::new("range_id.char_set", "must be ASCII"));
        }
        Ok(())
    }
}
