//! The `Accepted` and `Programmed` conditions every sluice resource reports.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

use crate::translate::{Problem, StatusUpdate};

/// The API's limit on a condition message.
const MAX_MESSAGE: usize = 32 * 1024;

/// The reason word a condition carries for a problem: the specific lookups fold into the resource vocabulary.
pub fn reason(problem: &Problem) -> &'static str {
    use crate::translate::Reason::*;
    match problem.reason {
        ServiceNotFound | PortNotFound | RefNotFound => "RefNotFound",
        InvalidPath | InvalidHost | InvalidSpec | UnsupportedBackend => "InvalidSpec",
        Conflict => "Conflict",
        HostConflict => "HostConflict",
        SyncFailed => "SyncFailed",
    }
}

fn message(problems: &[Problem]) -> String {
    let mut text = problems.iter().map(|p| p.message.as_str()).collect::<Vec<_>>().join("; ");
    if text.len() > MAX_MESSAGE {
        let mut cut = MAX_MESSAGE - 3;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push_str("...");
    }
    text
}

/// The conditions for one status; `synced` is whether the configuration reached etcd. A condition keeps its
/// previous `lastTransitionTime` when its status did not change.
pub fn conditions(update: &StatusUpdate, synced: Result<(), &str>, previous: &[Condition]) -> Vec<Condition> {
    let generation = update.generation;
    let make = |kind: &str, ok: bool, reason: &str, message: String| {
        let status = if ok { "True" } else { "False" }.to_string();
        let since = previous
            .iter()
            .find(|c| c.type_ == kind && c.status == status)
            .map(|c| c.last_transition_time.clone())
            .unwrap_or_else(|| Time(Timestamp::now()));
        Condition {
            type_: kind.to_string(),
            status,
            reason: reason.to_string(),
            message,
            observed_generation: generation,
            last_transition_time: since,
        }
    };
    let accepted = match update.problems.first() {
        None => make("Accepted", true, "Accepted", "spec is valid and every reference resolves".into()),
        Some(first) => make("Accepted", false, reason(first), message(&update.problems)),
    };
    let programmed = match synced {
        Ok(()) => make("Programmed", true, "Programmed", "written to etcd".into()),
        Err(e) => make("Programmed", false, "SyncFailed", format!("writing to etcd failed: {e}")),
    };
    vec![accepted, programmed]
}

/// Whether two condition lists say the same thing (ignoring transition times).
pub fn same(a: &[Condition], b: &[Condition]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| {
            (&x.type_, &x.status, &x.reason, &x.message, x.observed_generation)
                == (&y.type_, &y.status, &y.reason, &y.message, y.observed_generation)
        })
}
