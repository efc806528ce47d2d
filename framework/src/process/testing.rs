//! Fault injection for the framework's own tests (feature `testing`): the
//! next spawn request asks the fork server to misbehave at a precise point,
//! so that the host's recovery can be tested deterministically.

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

/// A misbehaviour of the fork server, right after it forked the child and
/// before it answered the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Fault {
    /// It stops (SIGSTOP), as a fork server stalled by an operator or a
    /// debugger would.
    StopAfterClone,
    /// It exits, as a fork server killed by the OOM killer would.
    ExitAfterClone,
}

static NEXT: Mutex<Option<Fault>> = Mutex::new(None);

/// The next spawn request, from any thread, carries `fault`.
pub fn inject_next_spawn(fault: Fault) {
    *NEXT.lock() = Some(fault);
}

pub(crate) fn take_fault() -> Option<Fault> {
    NEXT.lock().take()
}

/// Runs in the fork server after a successful clone.
pub(crate) fn inject_in_server(fault: Option<Fault>) {
    match fault {
        // SAFETY: signalling or ending our own single-threaded process.
        Some(Fault::StopAfterClone) => unsafe {
            libc::raise(libc::SIGSTOP);
        },
        Some(Fault::ExitAfterClone) => unsafe { libc::_exit(0) },
        None => {}
    }
}
