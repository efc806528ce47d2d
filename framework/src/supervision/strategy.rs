//! The supervisor's pure decisions: whether an exited child restarts (its
//! [`Restart`] type) and which siblings restart with it (the [`Strategy`]).

use serde::{Deserialize, Serialize};
use std::fmt;
use std::ops::Range;

/// Which children restart when one fails (OTP's restart strategies).
///
/// ```
/// use daemonic::supervision::Strategy;
///
/// // Children 0..4; child 1 failed.
/// assert_eq!(Strategy::OneForOne.restart_set(1, 4), 1..2);
/// assert_eq!(Strategy::OneForAll.restart_set(1, 4), 0..4);
/// assert_eq!(Strategy::RestForOne.restart_set(1, 4), 1..4);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Only the failed child restarts.
    #[default]
    OneForOne,
    /// Every child stops (in reverse order) and all restart (in order).
    OneForAll,
    /// The failed child and the ones started after it stop (in reverse
    /// order) and restart (in order): later children depend on earlier ones.
    RestForOne,
}

impl Strategy {
    /// The children (by position) that restart when child `failed` of `n`
    /// failed.
    pub fn restart_set(self, failed: usize, n: usize) -> Range<usize> {
        let failed = failed.min(n.saturating_sub(1));
        match self {
            Strategy::OneForOne => failed..(failed + 1).min(n),
            Strategy::OneForAll => 0..n,
            Strategy::RestForOne => failed..n,
        }
    }

    /// The name `status` shows.
    pub fn name(self) -> &'static str {
        match self {
            Strategy::OneForOne => "one_for_one",
            Strategy::OneForAll => "one_for_all",
            Strategy::RestForOne => "rest_for_one",
        }
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// When a child is restarted (OTP's restart types).
///
/// ```
/// use daemonic::supervision::{Exit, Restart};
///
/// let failed = Exit::Failed("crashed".into());
/// assert!(Restart::Permanent.restarts_after(&Exit::Normal));
/// assert!(Restart::Transient.restarts_after(&failed));
/// assert!(!Restart::Transient.restarts_after(&Exit::Normal));
/// assert!(!Restart::Temporary.restarts_after(&failed));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Restart {
    /// Always restarted.
    #[default]
    Permanent,
    /// Restarted only after a failure, not after a normal exit.
    Transient,
    /// Never restarted (not even when a sibling's failure stops it).
    Temporary,
}

impl Restart {
    /// Whether a child of this type restarts after `exit`.
    pub fn restarts_after(self, exit: &Exit) -> bool {
        match self {
            Restart::Permanent => true,
            Restart::Transient => !exit.is_normal(),
            Restart::Temporary => false,
        }
    }

    /// The name `status` shows.
    pub fn name(self) -> &'static str {
        match self {
            Restart::Permanent => "permanent",
            Restart::Transient => "transient",
            Restart::Temporary => "temporary",
        }
    }
}

/// How a child ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    /// It finished its job (an actor that called
    /// [`stop_normally`](crate::supervision::stop_normally)).
    Normal,
    /// It failed: a pool over its restart limit, an actor that stopped by
    /// itself, a child that could not start, a nested supervisor that gave up.
    Failed(String),
}

impl Exit {
    /// `true` for [`Exit::Normal`].
    pub fn is_normal(&self) -> bool {
        matches!(self, Exit::Normal)
    }
}

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Exit::Normal => f.write_str("normal exit"),
            Exit::Failed(why) => f.write_str(why),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_strategy_restarts_its_set() {
        for n in 1..6 {
            for failed in 0..n {
                assert_eq!(
                    Strategy::OneForOne.restart_set(failed, n),
                    failed..failed + 1
                );
                assert_eq!(Strategy::OneForAll.restart_set(failed, n), 0..n);
                assert_eq!(Strategy::RestForOne.restart_set(failed, n), failed..n);
            }
        }
        // The last child: rest_for_one is one_for_one.
        assert_eq!(Strategy::RestForOne.restart_set(3, 4), 3..4);
        // Out of range (a child removed meanwhile) never panics.
        assert_eq!(Strategy::OneForOne.restart_set(9, 4), 3..4);
        assert_eq!(Strategy::RestForOne.restart_set(0, 0), 0..0);
    }

    #[test]
    fn restart_types_follow_otp() {
        let failed = Exit::Failed("x".into());
        let table = [
            (Restart::Permanent, true, true),
            (Restart::Transient, false, true),
            (Restart::Temporary, false, false),
        ];
        for (restart, after_normal, after_failure) in table {
            assert_eq!(
                restart.restarts_after(&Exit::Normal),
                after_normal,
                "{restart:?}"
            );
            assert_eq!(
                restart.restarts_after(&failed),
                after_failure,
                "{restart:?}"
            );
        }
    }
}
