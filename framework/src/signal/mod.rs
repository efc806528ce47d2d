//! The signal handler actor.
//!
//! Signals arrive through tokio's self-pipe driver on the supervisor's thread,
//! which never runs user code, so they are handled promptly even while
//! `execute` is busy on the main loop's thread.
//!
//! Caught: SIGTERM, SIGINT, SIGHUP, SIGUSR1 (handled by the framework) and
//! every other catchable signal, delivered as a
//! [`SignalReceived`](crate::event::SignalReceived). Left alone on purpose: SIGKILL
//! and SIGSTOP (uncatchable); SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGTRAP, SIGSYS,
//! SIGABRT (faults: a handler would hide the crash); SIGCHLD (children are
//! reaped by the process layer through pidfds); SIGPIPE (stays ignored, so a
//! broken pipe is an `EPIPE` error where it happens); SIGTSTP, SIGTTIN,
//! SIGTTOU (shell job control keeps working in a terminal).

use actix::prelude::*;
use futures_util::stream::{self, StreamExt};
use std::sync::OnceLock;
use tokio::signal::unix::{signal, SignalKind};

/// A signal arrived.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub struct CaughtSignal {
    /// Signal number.
    pub signal: i32,
    /// Signal name.
    pub name: &'static str,
}

/// The catchable signals the daemon listens for.
pub fn handled_signals() -> Vec<i32> {
    let mut list = vec![
        libc::SIGTERM,
        libc::SIGINT,
        libc::SIGHUP,
        libc::SIGUSR1,
        libc::SIGUSR2,
        libc::SIGQUIT,
        libc::SIGALRM,
        libc::SIGVTALRM,
        libc::SIGPROF,
        libc::SIGWINCH,
        libc::SIGURG,
        libc::SIGIO,
        libc::SIGPWR,
        libc::SIGXCPU,
        libc::SIGXFSZ,
        libc::SIGCONT,
    ];
    list.extend(libc::SIGRTMIN()..=libc::SIGRTMAX());
    list
}

/// Unblocks every signal the daemon handles. The mask survives `exec`: a
/// daemon started by a parent that blocked SIGTERM would never see it.
/// Called before any thread exists, so every thread inherits the mask.
pub(crate) fn unblock_handled() {
    // SAFETY: plain libc calls on a local, initialized set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for sig in handled_signals() {
            libc::sigaddset(&mut set, sig);
        }
        libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
    }
}

/// The conventional name of a signal (`SIGRTMIN+3` for real-time signals).
pub fn signal_name(signal: i32) -> &'static str {
    static RT_NAMES: OnceLock<Vec<&'static str>> = OnceLock::new();
    if let Ok(sig) = nix::sys::signal::Signal::try_from(signal) {
        return sig.as_str();
    }
    let (min, max) = (libc::SIGRTMIN(), libc::SIGRTMAX());
    if (min..=max).contains(&signal) {
        let names = RT_NAMES.get_or_init(|| {
            (0..=(max - min))
                .map(|k| &*Box::leak(format!("SIGRTMIN+{k}").into_boxed_str()))
                .collect()
        });
        return names[(signal - min) as usize];
    }
    "SIG?"
}

/// Listens for signals and forwards each to the supervisor.
pub struct SignalActor {
    target: Recipient<CaughtSignal>,
    streams: Vec<(i32, tokio::signal::unix::Signal)>,
}

impl SignalActor {
    /// Installs the handlers now (inside a tokio runtime) so start-up fails
    /// loudly if the OS refuses one.
    pub fn new(target: Recipient<CaughtSignal>) -> std::io::Result<Self> {
        unblock_handled();
        let streams = handled_signals()
            .into_iter()
            .map(|sig| signal(SignalKind::from_raw(sig)).map(|s| (sig, s)))
            .collect::<Result<_, _>>()?;
        Ok(Self { target, streams })
    }
}

impl Actor for SignalActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        for (sig, listener) in self.streams.drain(..) {
            let name = signal_name(sig);
            let s = stream::unfold(
                listener,
                |mut l| async move { l.recv().await.map(|()| ((), l)) },
            )
            .map(move |()| CaughtSignal { signal: sig, name });
            ctx.add_stream(s);
        }
    }
}

impl StreamHandler<CaughtSignal> for SignalActor {
    fn handle(&mut self, msg: CaughtSignal, _: &mut Context<Self>) {
        self.target.do_send(msg);
    }

    fn finished(&mut self, _: &mut Context<Self>) {
        // One signal's stream ending must not stop the others.
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(signal_name(libc::SIGTERM), "SIGTERM");
        assert_eq!(signal_name(libc::SIGRTMIN() + 2), "SIGRTMIN+2");
        assert!(!handled_signals().contains(&libc::SIGCHLD));
        assert!(!handled_signals().contains(&libc::SIGPIPE));
    }
}
