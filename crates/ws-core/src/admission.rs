//! Connection limits that span the hub's shards: the global cap and the per-user cap.
//!
//! Touched once when a connection opens and once when it ends, never per message, so one
//! lock around it costs nothing on the publish path.

use std::collections::HashMap;

use crate::close_code::Close;
use crate::ids::UserId;

/// Connection limits.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct AdmissionConfig {
    /// Connections the whole server accepts.
    pub max_connections: usize,
    /// Connections one user may hold at once, across projects.
    pub max_connections_per_user: usize,
}

impl Default for AdmissionConfig {
    fn default() -> Self {
        Self {
            max_connections: 100_000,
            max_connections_per_user: 32,
        }
    }
}

/// Counts open connections and refuses those over a limit with 1013.
///
/// ```
/// use ws_core::{Admission, AdmissionConfig, CloseCode, UserId};
/// let mut config = AdmissionConfig::default();
/// config.max_connections_per_user = 1;
/// let mut admission = Admission::new(config);
/// let alice = UserId::new("alice");
/// assert!(admission.admit(&alice).is_ok());
/// let refused = admission.admit(&alice).unwrap_err();
/// assert_eq!(refused.code(), CloseCode::TRY_AGAIN_LATER);
/// admission.release(&alice);
/// assert!(admission.admit(&alice).is_ok());
/// ```
#[derive(Debug)]
pub struct Admission {
    config: AdmissionConfig,
    total: usize,
    per_user: HashMap<UserId, usize>,
}

impl Admission {
    /// No connection yet.
    pub fn new(config: AdmissionConfig) -> Self {
        Self {
            config,
            total: 0,
            per_user: HashMap::new(),
        }
    }

    /// Counts a new connection of `user`, or refuses it with the close frame to send.
    pub fn admit(&mut self, user: &UserId) -> Result<(), Close> {
        if self.total >= self.config.max_connections {
            return Err(Close::server_overloaded());
        }
        let count = self.per_user.get(user).copied().unwrap_or(0);
        if count >= self.config.max_connections_per_user {
            return Err(Close::too_many_for_user());
        }
        self.total += 1;
        self.per_user.insert(user.clone(), count + 1);
        Ok(())
    }

    /// A connection admitted for `user` ended.
    pub fn release(&mut self, user: &UserId) {
        match self.per_user.get_mut(user) {
            Some(count) if *count > 1 => *count -= 1,
            Some(_) => {
                self.per_user.remove(user);
            }
            None => {
                debug_assert!(false, "release without admit for {user}");
                return;
            }
        }
        self.total -= 1;
    }

    /// Connections counted now.
    pub fn connections(&self) -> usize {
        self.total
    }

    /// Connections counted now for `user`.
    pub fn connections_of(&self, user: &UserId) -> usize {
        self.per_user.get(user).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::CloseCode;
    use proptest::prelude::*;

    #[test]
    fn global_limit_comes_first() {
        let mut a = Admission::new(AdmissionConfig {
            max_connections: 2,
            max_connections_per_user: 1,
        });
        a.admit(&UserId::new("a")).unwrap();
        a.admit(&UserId::new("b")).unwrap();
        let refused = a.admit(&UserId::new("c")).unwrap_err();
        assert_eq!(refused, Close::server_overloaded());
        assert_eq!(refused.code(), CloseCode::TRY_AGAIN_LATER);
    }

    proptest! {
        /// Counts always equal admissions minus releases, and never exceed the limits.
        #[test]
        fn counts_stay_exact(ops in prop::collection::vec((0u8..4, any::<bool>()), 0..200)) {
            let config = AdmissionConfig { max_connections: 10, max_connections_per_user: 3 };
            let mut a = Admission::new(config);
            let mut model: HashMap<u8, usize> = HashMap::new();
            for (user, open) in ops {
                let id = UserId::new(user.to_string());
                let held = model.get(&user).copied().unwrap_or(0);
                if open {
                    let total: usize = model.values().sum();
                    let ok = a.admit(&id).is_ok();
                    prop_assert_eq!(ok, total < 10 && held < 3);
                    if ok { *model.entry(user).or_default() += 1; }
                } else if held > 0 {
                    a.release(&id);
                    *model.get_mut(&user).unwrap() -= 1;
                }
                prop_assert_eq!(a.connections(), model.values().sum::<usize>());
                prop_assert_eq!(a.connections_of(&id), model.get(&user).copied().unwrap_or(0));
            }
        }
    }
}
