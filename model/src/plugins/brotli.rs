//! `brotli`: compresses responses for clients that accept br (tried before gzip).

use serde::{Deserialize, Serialize};

use super::gzip::{Types, default_version, http_version};
use super::{FieldError, Schema, check};

/// `brotli`'s configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Brotli {
    /// The content types compressed.
    #[serde(default)]
    pub types: Types,
    /// Responses whose length is known and smaller are sent as they are.
    #[serde(default = "default_min_length")]
    pub min_length: u64,
    /// 0 generic, 1 UTF-8 text, 2 fonts.
    #[serde(default)]
    pub mode: u32,
    /// The quality, 0 to 11.
    #[serde(default = "default_level")]
    pub comp_level: u32,
    /// The window, in bits: 0 (the encoder's choice) or 10 to 24.
    #[serde(default = "default_lgwin")]
    pub lgwin: u32,
    /// The input block, in bits: 0 (automatic) or 16 to 24.
    #[serde(default)]
    pub lgblock: u32,
    /// The lowest HTTP version compressed.
    #[serde(default = "default_version")]
    pub http_version: f64,
    /// Adds `Vary: Accept-Encoding`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vary: Option<bool>,
}

fn default_min_length() -> u64 {
    20
}

fn default_level() -> u32 {
    6
}

fn default_lgwin() -> u32 {
    19
}

impl Schema for Brotli {
    const NAME: &'static str = "brotli";

    fn check(&self) -> Result<(), FieldError> {
        self.types.check()?;
        check::range("min_length", self.min_length, 1, u64::MAX)?;
        check::range("mode", self.mode, 0, 2)?;
        check::range("comp_level", self.comp_level, 0, 11)?;
        if self.lgwin != 0 && !(10..=24).contains(&self.lgwin) {
            return Err(FieldError::new("lgwin", "must be 0 or 10 to 24"));
        }
        if self.lgblock != 0 && !(16..=24).contains(&self.lgblock) {
            return Err(FieldError::new("lgblock", "must be 0 or 16 to 24"));
        }
        http_version(self.http_version)
    }
}
