//! `redirect`: answers with a redirection (to a URI, a regex rewrite of the path, or to HTTPS).

use serde::{Deserialize, Serialize};

use super::{FieldError, Schema, check};

/// `redirect`'s configuration: exactly one of `uri`, `regex_uri` and `http_to_https`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Redirect {
    /// The status (ignored by `http_to_https`, which sends 301 or 308).
    #[serde(default = "default_code")]
    pub ret_code: u16,
    /// The target; `$var` references are replaced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    /// A pattern and a template for the path (`$1` for captures); no match means no redirect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex_uri: Option<Vec<String>>,
    /// Sends plain-HTTP requests to the same URL over HTTPS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_to_https: Option<bool>,
    /// Percent-encodes the path of the target.
    #[serde(default)]
    pub encode_uri: bool,
    /// Appends the request's query string to the target.
    #[serde(default)]
    pub append_query_string: bool,
}

fn default_code() -> u16 {
    302
}

impl Schema for Redirect {
    const NAME: &'static str = "redirect";

    fn check(&self) -> Result<(), FieldError> {
        let set = [self.uri.is_some(), self.regex_uri.is_some(), self.http_to_https.is_some()];
        if set.iter().filter(|s| **s).count() != 1 {
            return Err(FieldError::new("", "set exactly one of uri, regex_uri and http_to_https"));
        }
        check::status("ret_code", self.ret_code)?;
        if let Some(uri) = &self.uri {
            check::min_len("uri", uri, 2)?;
        }
        if let Some(pair) = &self.regex_uri {
            if pair.len() != 2 {
                return Err(FieldError::new("regex_uri", "must be a pattern and a template"));
            }
            check::regex("regex_uri[0]", &pair[0])?;
        }
        if self.http_to_https == Some(true) && self.append_query_string {
            return Err(FieldError::new("append_query_string", "cannot be used with http_to_https"));
        }
        Ok(())
    }
}
