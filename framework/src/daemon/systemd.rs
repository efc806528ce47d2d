//! systemd integration: `sd_notify` READY / STOPPING / STATUS / WATCHDOG.
//! Every call is a no-op outside systemd (no `NOTIFY_SOCKET`).

use sd_notify::NotifyState;
use std::time::Duration;

pub(crate) fn enabled() -> bool {
    std::env::var_os("NOTIFY_SOCKET").is_some()
}

fn notify(states: &[NotifyState<'_>]) {
    if enabled() {
        // A lost notification must not take the daemon down; systemd's own
        // timeouts report it.
        let _ = sd_notify::notify(false, states);
    }
}

pub(crate) fn ready(status: &str) {
    notify(&[NotifyState::Ready, NotifyState::Status(status)]);
}

pub(crate) fn stopping() {
    notify(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
}

/// An in-place restart: systemd keeps the unit active until the re-exec'd
/// image sends READY=1 (STOPPING=1 would make it stop the unit).
pub(crate) fn reloading() {
    if !enabled() {
        return;
    }
    match NotifyState::monotonic_usec_now() {
        Ok(now) => notify(&[
            NotifyState::Reloading,
            now,
            NotifyState::Status("restarting"),
        ]),
        Err(_) => notify(&[NotifyState::Reloading, NotifyState::Status("restarting")]),
    }
}

pub(crate) fn status(status: &str) {
    notify(&[NotifyState::Status(status)]);
}

pub(crate) fn watchdog() {
    notify(&[NotifyState::Watchdog]);
}

/// The watchdog period systemd expects pings within, if enabled for this pid.
pub(crate) fn watchdog_period() -> Option<Duration> {
    let mut usec = 0u64;
    (enabled() && sd_notify::watchdog_enabled(false, &mut usec) && usec > 0)
        .then(|| Duration::from_micros(usec))
}
