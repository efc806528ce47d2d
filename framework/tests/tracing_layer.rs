//! The documented way to add a `tracing` layer of one's own: a global
//! subscriber with `daemonic::log::tracing_layer()` in it, set before the
//! daemon starts. Both layers see the events; the daemon's level filters the
//! daemon's layer only.

use daemonic::{Daemon, DaemonBuilder, LoopContext};
use parking_lot::Mutex;
use std::sync::Arc;
use std::time::Duration;
use tracing_subscriber::layer::SubscriberExt;

/// A user's layer: keeps the message of every event it sees.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<String>>>);

struct Message<'a>(&'a mut String);

impl tracing::field::Visit for Message<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            *self.0 = format!("{value:?}");
        }
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Seen {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        let mut message = String::new();
        event.record(&mut Message(&mut message));
        self.0.lock().push(message);
    }
}

struct Once;

impl Daemon for Once {
    fn execute(&mut self, ctx: &mut LoopContext<'_, Self>) {
        tracing::info!(answer = 42, "from execute");
        tracing::debug!("a debug event");
        ctx.shutdown();
    }
}

#[test]
fn a_users_layer_and_the_daemons_log_both_get_the_events() {
    let seen = Seen::default();
    let subscriber = tracing_subscriber::registry()
        .with(daemonic::log::tracing_layer())
        .with(seen.clone());
    tracing::subscriber::set_global_default(subscriber).expect("the first subscriber");

    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("d.log");
    let system = actix::System::new();
    let code = system.block_on({
        let log = log.clone();
        async move {
            DaemonBuilder::new(Once)
                .name("layers")
                .interval(Duration::from_millis(10))
                .handle_signals(false)
                .log_file(log)
                .start()
                .expect("start")
                .wait()
                .await
        }
    });
    assert_eq!(code, daemonic::ExitCode::Ok);

    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.lines()
            .any(|l| l.contains("[")
                && l.ends_with("INFO  from execute answer=42 target=tracing_layer")),
        "{text}"
    );
    assert!(
        !text.contains("a debug event"),
        "above the daemon's level: {text}"
    );
    // The user's layer is not filtered by the daemon's level (the events ran
    // synchronously in `execute`, before the daemon stopped).
    let seen = seen.0.lock();
    assert!(seen.iter().any(|m| m == "from execute"), "{seen:?}");
    assert!(seen.iter().any(|m| m == "a debug event"), "{seen:?}");
}
