//! The checks plugin schemas share: ranges, non-empty strings and lists, regular expressions, CIDR blocks.

use std::fmt;
use std::net::IpAddr;

/// A broken rule in one field of a plugin configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// The field's path (`headers.set`, `regex_uri[1]`); empty for the object as a whole.
    pub field: String,
    /// What is wrong.
    pub reason: String,
}

impl FieldError {
    /// A problem with `field`.
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> FieldError {
        FieldError { field: field.into(), reason: reason.into() }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            f.write_str(&self.reason)
        } else {
            write!(f, "field {}: {}", self.field, self.reason)
        }
    }
}

impl std::error::Error for FieldError {}

/// `value` within `min..=max`.
pub(crate) fn range<T: PartialOrd + fmt::Display>(field: &str, value: T, min: T, max: T) -> Result<(), FieldError> {
    if value < min || value > max {
        return Err(FieldError::new(field, format!("{value} is outside {min}..={max}")));
    }
    Ok(())
}

/// A string of at least `min` characters.
pub(crate) fn min_len(field: &str, value: &str, min: usize) -> Result<(), FieldError> {
    if value.chars().count() < min {
        return Err(FieldError::new(field, format!("must have at least {min} characters")));
    }
    Ok(())
}

/// A list with at least `min` items.
pub(crate) fn min_items<T>(field: &str, items: &[T], min: usize) -> Result<(), FieldError> {
    if items.len() < min {
        return Err(FieldError::new(field, format!("must have at least {min} items")));
    }
    Ok(())
}

/// A regular expression that compiles (the data plane compiles the same text with the same crate).
pub(crate) fn regex(field: &str, pattern: &str) -> Result<(), FieldError> {
    regex::Regex::new(pattern).map(drop).map_err(|e| FieldError::new(field, format!("invalid regex: {e}")))
}

/// An IP address or CIDR block (`10.0.0.0/8`, `::1`, `fe80::/10`).
pub(crate) fn cidr(field: &str, value: &str) -> Result<(), FieldError> {
    if parse_cidr(value).is_some() {
        Ok(())
    } else {
        Err(FieldError::new(field, format!("{value:?} is not an IP address or CIDR block")))
    }
}

/// Parses an address or CIDR block into the address and prefix length.
pub fn parse_cidr(value: &str) -> Option<(IpAddr, u8)> {
    let (addr, bits) = match value.split_once('/') {
        Some((a, b)) => (a, Some(b)),
        None => (value, None),
    };
    let addr: IpAddr = addr.parse().ok()?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let bits = match bits {
        None => max,
        Some(b) if !b.is_empty() && b.bytes().all(|c| c.is_ascii_digit()) => b.parse().ok().filter(|b| *b <= max)?,
        Some(_) => return None,
    };
    Some((addr, bits))
}

/// An HTTP header name.
pub(crate) fn header_name(field: &str, name: &str) -> Result<(), FieldError> {
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)) {
        return Err(FieldError::new(field, format!("{name:?} is not a valid header name")));
    }
    Ok(())
}

/// A value that can be sent in an HTTP header (no control characters but tab).
pub(crate) fn header_value(field: &str, value: &str) -> Result<(), FieldError> {
    if value.bytes().any(|b| (b < 0x20 && b != b'\t') || b == 0x7f) {
        return Err(FieldError::new(field, "header values may not contain control characters"));
    }
    Ok(())
}

/// A `WWW-Authenticate` realm: 1 to 128 printable ASCII characters other than `"` and `\`.
pub(crate) fn realm(field: &str, realm: &str) -> Result<(), FieldError> {
    let printable = realm.bytes().all(|b| (0x20..=0x7e).contains(&b) && b != b'"' && b != b'\\');
    if realm.is_empty() || realm.len() > 128 || !printable {
        return Err(FieldError::new(field, "must be 1 to 128 printable ASCII characters other than '\"' and '\\'"));
    }
    Ok(())
}

/// An `anonymous_consumer` name, when set.
pub(crate) fn anonymous_consumer(name: Option<&str>) -> Result<(), FieldError> {
    name.map_or(Ok(()), |n| min_len("anonymous_consumer", n, 1))
}

/// An HTTP status code.
pub(crate) fn status(field: &str, code: u16) -> Result<(), FieldError> {
    range(field, code, 100, 599)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cidrs() {
        assert_eq!(parse_cidr("10.0.0.0/8").map(|(_, b)| b), Some(8));
        assert_eq!(parse_cidr("::1").map(|(_, b)| b), Some(128));
        assert!(parse_cidr("10.0.0.0/33").is_none());
        assert!(parse_cidr("10.0.0.0/").is_none());
        assert!(parse_cidr("x").is_none());
        assert!(cidr("f", "fe80::/10").is_ok());
        assert!(header_name("f", "X-Ok").is_ok() && header_name("f", "bad name").is_err());
        assert!(header_value("f", "a\r\nb").is_err());
    }
}
