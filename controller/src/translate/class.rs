//! Which Ingresses belong to this controller, by IngressClass.

use k8s_openapi::api::networking::v1::{Ingress, IngressClass};

/// The `spec.controller` value sluice answers to by default.
pub const DEFAULT_CONTROLLER_NAME: &str = "sluice.dev/ingress-controller";
/// The deprecated annotation that named a class before `spec.ingressClassName` existed.
const CLASS_ANNOTATION: &str = "kubernetes.io/ingress.class";
/// The annotation that marks an IngressClass as the default for Ingresses that name none.
const DEFAULT_CLASS_ANNOTATION: &str = "ingressclass.kubernetes.io/is-default-class";

/// The IngressClasses served by this controller.
pub(super) struct Classes<'a> {
    ours: Vec<&'a IngressClass>,
}

impl<'a> Classes<'a> {
    pub(super) fn new(all: &'a [IngressClass], controller: &str) -> Self {
        let ours =
            all.iter().filter(|c| c.spec.as_ref().and_then(|s| s.controller.as_deref()) == Some(controller)).collect();
        Classes { ours }
    }

    fn has(&self, name: &str) -> bool {
        self.ours.iter().any(|c| c.metadata.name.as_deref() == Some(name))
    }

    fn has_default(&self) -> bool {
        self.ours.iter().any(|c| {
            c.metadata.annotations.as_ref().and_then(|a| a.get(DEFAULT_CLASS_ANNOTATION)).map(String::as_str)
                == Some("true")
        })
    }

    /// Whether the Ingress names one of our classes, or names none while one of ours is the default.
    pub(super) fn owns(&self, ing: &Ingress) -> bool {
        let named = ing.spec.as_ref().and_then(|s| s.ingress_class_name.as_deref());
        let annotated = ing.metadata.annotations.as_ref().and_then(|a| a.get(CLASS_ANNOTATION)).map(String::as_str);
        self.owns_class(named.or(annotated))
    }

    /// Whether a resource naming `class` (or none) is ours.
    pub(super) fn owns_class(&self, class: Option<&str>) -> bool {
        match class {
            Some(name) => self.has(name),
            None => self.has_default(),
        }
    }
}
