//! The chaos harness' deliberately broken mode ([`BREAK_ENV`]), which exists to prove its checkers
//! can fail: a node in it never stops itself as a primary. Only a binary built with the
//! `chaos-break` cargo feature (off by default) honours it; any other build logs that it ignores it
//! and fences as always, so one environment variable cannot turn off a production node's fence.
//! It must not read anything but [`BREAK_ENV`], and decides once per process.

use std::sync::OnceLock;

/// The environment variable that turns on a deliberately broken node (`no-demote`: a primary
/// never stops itself). Only the chaos harness sets it, with `--break`; see [`unsafe_break_no_demote`].
/// Honoured only by a binary built with the `chaos-break` feature (never a default or release build):
/// one variable must not be able to turn off the fence of a production node.
pub const BREAK_ENV: &str = "CHAOS_UNSAFE_BREAK";

/// Whether this node runs deliberately broken: a primary that must stop itself (lost lease, a
/// newer leader key, fence deadline, guard deadline) does not. Set only by `raftgres chaos
/// --break no-demote` to prove its checkers catch a split brain; never set it on a real cluster.
/// Always false without the `chaos-break` feature. Decided once, on the first call, which logs a
/// warning whenever [`BREAK_ENV`] is set (`raftgres run` calls it at start).
pub fn unsafe_break_no_demote() -> bool {
    static BROKEN: OnceLock<bool> = OnceLock::new();
    *BROKEN.get_or_init(|| {
        let value = std::env::var_os(BREAK_ENV).map(|value| value.to_string_lossy().into_owned());
        match break_mode(value.as_deref()) {
            BreakMode::Off => false,
            BreakMode::NoDemote => {
                tracing::warn!(env = BREAK_ENV, "UNSAFE: running with self-demotion disabled for a chaos test");
                true
            }
            BreakMode::NotBuiltIn => {
                tracing::warn!(
                    env = BREAK_ENV,
                    "{BREAK_ENV} is set but ignored: this binary was built without the `chaos-break` feature; self-demotion and fencing stay on"
                );
                false
            }
            BreakMode::Unknown => {
                tracing::warn!(
                    env = BREAK_ENV,
                    value = value.as_deref().unwrap_or_default(),
                    "{BREAK_ENV} is set but ignored: the only broken mode is `no-demote`; self-demotion and fencing stay on"
                );
                false
            }
        }
    })
}

/// What a node makes of [`BREAK_ENV`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BreakMode {
    /// Not set: the node fences.
    Off,
    /// `no-demote` in a build with the `chaos-break` feature: the node never stops itself.
    NoDemote,
    /// Set in a build without the feature: ignored (with a warning), the node fences.
    NotBuiltIn,
    /// Set to another value in a build with the feature: ignored (with a warning), the node fences.
    Unknown,
}

/// The decision of [`unsafe_break_no_demote`], from [`BREAK_ENV`]'s value (pure).
fn break_mode(value: Option<&str>) -> BreakMode {
    match value {
        None => BreakMode::Off,
        Some(_) if !cfg!(feature = "chaos-break") => BreakMode::NotBuiltIn,
        Some("no-demote") => BreakMode::NoDemote,
        Some(_) => BreakMode::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unset_is_off_in_every_build() {
        assert_eq!(break_mode(None), BreakMode::Off);
    }

    #[cfg(not(feature = "chaos-break"))]
    #[test]
    fn without_the_feature_the_variable_never_breaks_a_node() {
        for value in ["no-demote", "", "yes"] {
            assert_eq!(break_mode(Some(value)), BreakMode::NotBuiltIn, "{value:?}");
        }
    }

    #[cfg(feature = "chaos-break")]
    #[test]
    fn with_the_feature_only_no_demote_breaks_a_node() {
        assert_eq!(break_mode(Some("no-demote")), BreakMode::NoDemote);
        assert_eq!(break_mode(Some("yes")), BreakMode::Unknown);
    }
}
