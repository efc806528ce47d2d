//! Captures a panic's message and location in child processes, where the
//! default hook's stderr output would bypass the daemon's log.

use parking_lot::Mutex;
use std::sync::Once;

static LAST: Mutex<Option<String>> = Mutex::new(None);

/// Replaces the panic hook (once per process) with one that records the
/// message for [`take`].
pub(crate) fn install() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            let message = crate::panic_message(info.payload());
            let full = match info.location() {
                Some(loc) => format!("{message} (at {}:{})", loc.file(), loc.line()),
                None => message,
            };
            *LAST.lock() = Some(full);
        }));
    });
}

/// The last panic's message, if one was captured.
pub(crate) fn take() -> Option<String> {
    LAST.lock().take()
}
