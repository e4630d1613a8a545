//! Readiness of a running component, as its `/readyz` endpoint reports it.
//!
//! The component library keeps named checks current (one per server for
//! the reader, the lag for the projector, Redis for the compensator); the
//! process that serves the endpoint only reads them. Shared by clone, cheap
//! to update, std only, so every library can take one without a new
//! dependency.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

/// The reason reported before any check has been set: the component has
/// not got far enough to say anything yet.
pub const STARTING: &str = "starting";

/// A component's readiness: ready once at least one check was reported and
/// none of them fails.
#[derive(Debug, Clone, Default)]
pub struct Readiness {
    checks: Arc<Mutex<BTreeMap<String, Option<String>>>>,
}

impl Readiness {
    pub fn new() -> Readiness {
        Readiness::default()
    }

    /// Marks `check` as passing.
    pub fn ready(&self, check: &str) {
        self.set(check, None);
    }

    /// Marks `check` as failing for `reason`.
    pub fn not_ready(&self, check: &str, reason: impl Into<String>) {
        self.set(check, Some(reason.into()));
    }

    fn set(&self, check: &str, state: Option<String>) {
        let mut checks = self.checks.lock().unwrap_or_else(PoisonError::into_inner);
        match checks.get_mut(check) {
            // Called on every loop turn of busy components: no allocation
            // when nothing changed.
            Some(current) if *current == state => {}
            Some(current) => *current = state,
            None => {
                checks.insert(check.to_string(), state);
            }
        }
    }

    /// `Ok` when ready, else every failing check with its reason (or
    /// [`STARTING`] when none was reported yet).
    pub fn status(&self) -> Result<(), BTreeMap<String, String>> {
        let checks = self.checks.lock().unwrap_or_else(PoisonError::into_inner);
        if checks.is_empty() {
            return Err(BTreeMap::from([(
                "component".to_string(),
                STARTING.to_string(),
            )]));
        }
        let failing: BTreeMap<String, String> = checks
            .iter()
            .filter_map(|(k, v)| v.as_ref().map(|r| (k.clone(), r.clone())))
            .collect();
        if failing.is_empty() {
            Ok(())
        } else {
            Err(failing)
        }
    }

    pub fn is_ready(&self) -> bool {
        self.status().is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_ready_until_a_check_passes_and_none_fails() {
        let r = Readiness::new();
        assert_eq!(r.status().unwrap_err()["component"], STARTING);
        r.ready("mysql-a");
        assert!(r.is_ready());
        let shared = r.clone();
        shared.not_ready("mysql-b", "connecting");
        assert_eq!(
            r.status().unwrap_err(),
            BTreeMap::from([("mysql-b".to_string(), "connecting".to_string())])
        );
        shared.ready("mysql-b");
        assert!(r.is_ready());
    }
}
