//! `gzip`: compresses responses for clients that accept gzip.

use serde::{Deserialize, Serialize};

use super::{FieldError, Schema, check};

/// Which content types are compressed: a list of media types, or `"*"` for any.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Types {
    /// These media types (parameters ignored).
    List(Vec<String>),
    /// `"*"`: any type.
    Any(String),
}

impl Default for Types {
    fn default() -> Self {
        Types::List(vec!["text/html".into()])
    }
}

impl Types {
    /// Whether `media` (without parameters) is compressed.
    pub fn allows(&self, media: &str) -> bool {
        match self {
            Types::Any(_) => true,
            Types::List(list) => list.iter().any(|t| t == media),
        }
    }

    pub(crate) fn check(&self) -> Result<(), FieldError> {
        match self {
            Types::Any(s) if s == "*" => Ok(()),
            Types::Any(_) => Err(FieldError::new("types", "must be a list of media types or \"*\"")),
            Types::List(list) => {
                check::min_items("types", list, 1)?;
                list.iter().try_for_each(|t| check::min_len("types", t, 1))
            }
        }
    }
}

/// Output buffers (accepted for APISIX compatibility; sluice streams each chunk as it is compressed).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Buffers {
    /// How many.
    #[serde(default = "default_number")]
    pub number: u32,
    /// Their size in bytes.
    #[serde(default = "default_size")]
    pub size: u32,
}

fn default_number() -> u32 {
    32
}

fn default_size() -> u32 {
    4096
}

impl Default for Buffers {
    fn default() -> Self {
        Buffers { number: default_number(), size: default_size() }
    }
}

/// The lowest HTTP version whose requests are compressed: 1.0 or 1.1.
pub(crate) fn http_version(v: f64) -> Result<(), FieldError> {
    if v != 1.0 && v != 1.1 {
        return Err(FieldError::new("http_version", "must be 1.0 or 1.1"));
    }
    Ok(())
}

/// `gzip`'s configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Gzip {
    /// The content types compressed.
    #[serde(default)]
    pub types: Types,
    /// Responses whose length is known and smaller are sent as they are.
    #[serde(default = "default_min_length")]
    pub min_length: u64,
    /// The deflate level, 1 (fastest) to 9 (smallest).
    #[serde(default = "default_level")]
    pub comp_level: u32,
    /// The lowest HTTP version compressed.
    #[serde(default = "default_version")]
    pub http_version: f64,
    /// Output buffers.
    #[serde(default)]
    pub buffers: Buffers,
    /// Adds `Vary: Accept-Encoding`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vary: Option<bool>,
}

fn default_min_length() -> u64 {
    20
}

fn default_level() -> u32 {
    1
}

pub(crate) fn default_version() -> f64 {
    1.1
}

impl Schema for Gzip {
    const NAME: &'static str = "gzip";

    fn check(&self) -> Result<(), FieldError> {
        self.types.check()?;
        check::range("min_length", self.min_length, 1, u64::MAX)?;
        check::range("comp_level", self.comp_level, 1, 9)?;
        http_version(self.http_version)?;
        check::range("buffers.number", self.buffers.number, 1, u32::MAX)?;
        check::range("buffers.size", self.buffers.size, 1, u32::MAX)
    }
}
