//! A chain: the plugins one request runs, merged from their sources and ordered by priority.

use std::sync::Arc;

use super::{Phases, Plugin};
use crate::router::Vars;

/// One built plugin with its place in a chain.
#[derive(Debug, Clone)]
pub struct Slot {
    /// The plugin's name.
    pub name: &'static str,
    /// Its priority (`_meta.priority`, else the plugin's default); higher runs first.
    pub priority: i32,
    /// The phases it implements.
    pub phases: Phases,
    /// `_meta.filter`: it runs only for requests this holds for.
    pub filter: Option<Arc<Vars>>,
    /// `_meta.disable`: configured (and overriding lower layers) but not run.
    pub disabled: bool,
    /// Whether it is an authentication plugin (it finds the consumer; it is not re-run for the consumer).
    pub auth: bool,
    /// In a global rule, it stands down for routes that configure it themselves (APISIX's `prefer_route`).
    pub prefer_route: bool,
    /// The instance.
    pub plugin: Arc<dyn Plugin>,
}

/// The plugins of one route (or of the global rules, or of one consumer), in the order they run. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Chain {
    /// `None` for an empty chain, so that the empty chain a request without global rules uses costs no allocation.
    slots: Option<Arc<[Slot]>>,
    phases: Phases,
    filtered: bool,
}

impl Chain {
    /// A chain of `slots` without the disabled ones, by descending priority (then name, so the order is stable).
    pub fn new(slots: impl IntoIterator<Item = Slot>) -> Chain {
        let mut slots: Vec<Slot> = slots.into_iter().filter(|s| !s.disabled).collect();
        slots.sort_by(|a, b| b.priority.cmp(&a.priority).then(a.name.cmp(b.name)));
        let phases = slots.iter().fold(Phases::default(), |p, s| p | s.phases);
        let filtered = slots.iter().any(|s| s.filter.is_some());
        let slots = (!slots.is_empty()).then(|| slots.into());
        Chain { slots, phases, filtered }
    }

    /// Merges layers by plugin name, a later layer's plugin replacing an earlier one's: pass them lowest
    /// precedence first (service, plugin config, route). A disabled plugin still replaces, then does not run.
    pub fn merge<'a>(layers: impl IntoIterator<Item = &'a [Slot]>) -> Chain {
        let mut merged: Vec<Slot> = Vec::new();
        for layer in layers {
            for slot in layer {
                match merged.iter_mut().find(|s| s.name == slot.name) {
                    Some(existing) => *existing = slot.clone(),
                    None => merged.push(slot.clone()),
                }
            }
        }
        Chain::new(merged)
    }

    /// This chain with `consumer`'s plugins merged over it (a consumer's configuration of a plugin wins).
    pub fn with_consumer(&self, consumer: &Chain) -> Chain {
        let kept = self.slots().iter().filter(|s| !consumer.slots().iter().any(|c| c.name == s.name));
        Chain::new(kept.chain(consumer.slots().iter()).cloned())
    }

    /// The plugins in running order.
    pub fn slots(&self) -> &[Slot] {
        self.slots.as_deref().unwrap_or_default()
    }

    /// Whether there is nothing to run.
    pub fn is_empty(&self) -> bool {
        self.slots.is_none()
    }

    /// Whether some plugin implements one of `phases`.
    pub fn has(&self, phases: Phases) -> bool {
        self.phases.0 & phases.0 != 0
    }

    /// Whether some plugin has a `_meta.filter`.
    pub fn filtered(&self) -> bool {
        self.filtered
    }
}
