//! The agency registry: which OINs may call, under which name and role. Loaded from configuration;
//! the only source of roles.

use std::collections::HashMap;

use signaalpoort_core::{Agency, Oin, Role};

use crate::config::AgencyEntry;

#[derive(Debug, Clone, Default)]
pub struct Registry {
    by_oin: HashMap<Oin, Agency>,
}

impl Registry {
    /// Entries were validated with the config; invalid ones are skipped defensively.
    pub fn from_entries(entries: &[AgencyEntry]) -> Registry {
        let by_oin = entries
            .iter()
            .filter_map(|e| {
                let oin = Oin::parse(&e.oin).ok()?;
                let role = Role::from_code(&e.role)?;
                Some((
                    oin.clone(),
                    Agency {
                        oin,
                        name: e.name.clone(),
                        role,
                    },
                ))
            })
            .collect();
        Registry { by_oin }
    }

    pub fn get(&self, oin: &Oin) -> Option<&Agency> {
        self.by_oin.get(oin)
    }

    pub fn len(&self) -> usize {
        self.by_oin.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_oin.is_empty()
    }
}
