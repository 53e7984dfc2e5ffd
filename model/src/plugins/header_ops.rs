//! The header changes proxy-rewrite and response-rewrite share: `{add, set, remove}`, or the legacy plain map,
//! which means `set`.

use std::collections::BTreeMap;

use serde::Deserialize;

/// `{add, set, remove}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, bound(deserialize = "A: Deserialize<'de>, V: Deserialize<'de>"))]
pub(crate) struct Ops<A, V> {
    #[serde(default = "Option::default")]
    add: Option<A>,
    #[serde(default = "Option::default")]
    set: Option<BTreeMap<String, V>>,
    #[serde(default)]
    remove: Option<Vec<String>>,
}

/// Either form, as written.
#[derive(Deserialize)]
#[serde(untagged, bound(deserialize = "A: Deserialize<'de>, V: Deserialize<'de>"))]
pub(crate) enum Form<A, V> {
    /// `{add, set, remove}`.
    Ops(Ops<A, V>),
    /// A plain map of names to values: `set`.
    Legacy(BTreeMap<String, V>),
}

impl<A: Default, V> Form<A, V> {
    /// The additions, the values set and the names removed.
    pub(crate) fn parts(self) -> (A, BTreeMap<String, V>, Vec<String>) {
        match self {
            Form::Ops(o) => (o.add.unwrap_or_default(), o.set.unwrap_or_default(), o.remove.unwrap_or_default()),
            Form::Legacy(set) => (A::default(), set, Vec::new()),
        }
    }
}
