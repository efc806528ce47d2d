//! The daemon's own supervision tree: its fixed actors and steps (the log
//! watcher, the signal handler, the plugins, the control socket, … the main
//! loop) are the children of a supervisor named after the daemon, in start
//! order, with the application's tree (`DaemonBuilder::supervise`, the
//! pools of `ctx.workers`) among them. The supervisor starts them in this
//! order and stops them in reverse; the daemon actor does each child's
//! work (`startup.rs`, `shutdown.rs`), the tree says when.
//!
//! The root's intensity is 0: a child that fails (in practice the
//! application's tree giving up) is a fatal error of the daemon, handed
//! over at once (`SupervisorBuilder::hand_over_escalation`) so that the
//! daemon logs and bounds its shutdown as for any other fatal error.

use super::{RequestShutdown, Supervisor as Daemon};
use crate::event::ShutdownReason;
use crate::supervision::{ChildKind, ChildLink, ChildSpec, StopMode, TreeStats};
use actix::prelude::*;
use futures_util::future::LocalBoxFuture;
use futures_util::FutureExt;
use std::time::Duration;

/// Declares the children once, in start order: the enum, each one's name
/// and kind (as `status` shows them) and the order.
macro_rules! fixed_children {
    ($($(#[$doc:meta])* $variant:ident => $name:literal, $kind:literal;)*) => {
        /// One child of the daemon's root, in start order.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub(crate) enum Fixed {
            $($(#[$doc])* $variant,)*
        }

        impl Fixed {
            /// Every child a daemon may have, in start order.
            const ORDER: &'static [Fixed] = &[$(Fixed::$variant),*];

            pub(crate) fn name(self) -> &'static str {
                match self {
                    $(Fixed::$variant => $name,)*
                }
            }

            fn kind(self) -> &'static str {
                match self {
                    $(Fixed::$variant => $kind,)*
                }
            }
        }
    };
}

fixed_children! {
    /// Reopens the log file when logrotate moves it.
    LogWatcher => "log-watcher", "actor";
    Signals => "signals", "actor";
    /// Every plugin, set up in order and torn down in reverse (lazy ones
    /// too, first); a lock is released after everything under it stopped.
    Plugins => "plugins", "plugins";
    /// Written after the plugins: an instance refused by a lock never
    /// touches the running one's pid file.
    PidFile => "pid-file", "file";
    /// The control socket (`status`, `stop`), bound after the locks.
    Control => "control", "actor";
    /// `--metrics`: before the privilege drop, the port may be privileged.
    StatusServer => "status-server", "server";
    /// `--user`, `--group`, `--chroot`: last of what needs root.
    Privileges => "privileges", "step";
    Tasks => "tasks", "actor";
    /// The NATS connection: up before `initialize`, closed after the pools.
    Nats => "nats", "connection";
    /// The application's tree and any pool outside it.
    App => "app", "supervisor";
    /// Serving pools to NATS: stops taking calls before the pools stop.
    NatsHost => "nats-host", "host";
    /// The main loop: `initialize` to start, `StopLoop` to stop.
    Loop => "main-loop", "actor";
}

/// Which children a daemon has, in start order (only what it is
/// configured with).
pub(crate) fn sequence(present: impl Fn(Fixed) -> bool) -> Vec<Fixed> {
    Fixed::ORDER
        .iter()
        .copied()
        .filter(|f| present(*f))
        .collect()
}

/// Starts one child (the daemon does its work; an `Err` has already
/// begun the daemon's shutdown with the right exit code).
pub(crate) struct StartFixed(pub Fixed);

impl Message for StartFixed {
    type Result = Result<(), String>;
}

/// Stops one child (resolves once it stopped).
pub(crate) struct StopFixed(pub Fixed);

impl Message for StopFixed {
    type Result = ();
}

/// A fixed child as its supervisor sees it.
struct FixedChild {
    which: Fixed,
    daemon: Addr<Daemon>,
}

impl ChildKind for FixedChild {
    fn kind(&self) -> &'static str {
        self.which.kind()
    }

    fn start(&mut self, _: ChildLink) -> LocalBoxFuture<'static, Result<(), String>> {
        let started = self.daemon.send(StartFixed(self.which));
        async move {
            started
                .await
                .unwrap_or_else(|_| Err("the daemon is gone".into()))
        }
        .boxed_local()
    }

    fn stop(&mut self, _: StopMode, _: Option<Duration>) -> LocalBoxFuture<'static, ()> {
        let stopped = self.daemon.send(StopFixed(self.which));
        async move {
            let _ = stopped.await;
        }
        .boxed_local()
    }
}

/// The application's tree, with the daemon's pools outside it stopped
/// alongside.
struct AppChild {
    tree: Box<dyn ChildKind>,
    daemon: Addr<Daemon>,
}

impl ChildKind for AppChild {
    fn kind(&self) -> &'static str {
        self.tree.kind()
    }

    fn start(&mut self, link: ChildLink) -> LocalBoxFuture<'static, Result<(), String>> {
        self.tree.start(link)
    }

    fn stop(&mut self, mode: StopMode, timeout: Option<Duration>) -> LocalBoxFuture<'static, ()> {
        let tree = self.tree.stop(mode, timeout);
        let others = self.daemon.send(StopFixed(Fixed::App));
        async move {
            let _ = futures_util::future::join(tree, others).await;
        }
        .boxed_local()
    }

    fn tree(&self) -> Option<LocalBoxFuture<'static, Option<TreeStats>>> {
        self.tree.tree()
    }
}

/// The child spec of `which`; `app` is the application's tree as a child.
pub(crate) fn child(which: Fixed, daemon: &Addr<Daemon>, app: &mut Option<ChildSpec>) -> ChildSpec {
    let daemon = daemon.clone();
    let app = if which == Fixed::App {
        app.take()
    } else {
        None
    };
    let kind: Box<dyn ChildKind> = match app {
        Some(tree) => Box::new(AppChild {
            tree: tree.kind,
            daemon,
        }),
        None => Box::new(FixedChild { which, daemon }),
    };
    // Unbounded each: the daemon's shutdown timeout bounds them all.
    ChildSpec::new(which.name().into(), None, kind)
}

/// What the root does when it gives up: a fatal error of the daemon.
pub(crate) fn on_escalation(daemon: Addr<Daemon>) -> impl FnOnce(String) + Send + 'static {
    move |reason| {
        daemon.do_send(RequestShutdown(ShutdownReason::Error(format!(
            "the supervision tree gave up: {reason}"
        ))));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fixed_children_start_in_the_daemons_order() {
        let all = sequence(|_| true);
        let names: Vec<_> = all.iter().map(|f| f.name()).collect();
        assert_eq!(
            names,
            [
                "log-watcher",
                "signals",
                "plugins",
                "pid-file",
                "control",
                "status-server",
                "privileges",
                "tasks",
                "nats",
                "app",
                "nats-host",
                "main-loop"
            ]
        );
        let some = sequence(|f| matches!(f, Fixed::App | Fixed::Loop | Fixed::Signals));
        assert_eq!(some, [Fixed::Signals, Fixed::App, Fixed::Loop]);
    }
}
