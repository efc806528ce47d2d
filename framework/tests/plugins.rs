//! Plugins under a running daemon: validation before start, set-up order,
//! teardown in reverse, stats, lazy start.

use daemonic::plugin::{Plugin, PluginContext};
use daemonic::{BoxError, Daemon, DaemonBuilder, Error, LoopContext};
use parking_lot::Mutex;
use std::sync::Arc;
use std::time::Duration;

struct Recorder {
    name: &'static str,
    journal: Arc<Mutex<Vec<String>>>,
    valid: bool,
}

impl Plugin for Recorder {
    fn name(&self) -> &str {
        self.name
    }
    fn validate(&self) -> Result<(), BoxError> {
        if self.valid {
            Ok(())
        } else {
            Err("limit must be > 0".into())
        }
    }
    fn setup(&mut self, _: &PluginContext) -> Result<(), BoxError> {
        self.journal.lock().push(format!("setup {}", self.name));
        Ok(())
    }
    fn stats(&self) -> Vec<(String, String)> {
        vec![("answer".into(), "42".into())]
    }
    fn teardown(&mut self, _: &PluginContext) {
        self.journal.lock().push(format!("teardown {}", self.name));
    }
}

struct StartsLazy {
    journal: Arc<Mutex<Vec<String>>>,
}

impl Daemon for StartsLazy {
    fn execute(&mut self, ctx: &mut LoopContext<'_, Self>) {
        if ctx.iteration() == 2 {
            let journal = self.journal.clone();
            let first = ctx.ensure_plugin("lazy");
            let again = ctx.ensure_plugin("lazy");
            ctx.spawn(async move {
                // Never hold the lock across an await.
                let first = format!("ensure {:?}", first.await);
                journal.lock().push(first);
                let again = format!("again {:?}", again.await.is_err());
                journal.lock().push(again);
            });
        }
    }
}

fn recorder(name: &'static str, journal: &Arc<Mutex<Vec<String>>>) -> Recorder {
    Recorder {
        name,
        journal: journal.clone(),
        valid: true,
    }
}

#[actix::test]
async fn plugins_start_in_order_stop_in_reverse_report_stats_and_start_lazily() {
    let journal: Arc<Mutex<Vec<String>>> = Arc::default();
    let handle = DaemonBuilder::new(StartsLazy {
        journal: journal.clone(),
    })
    .interval(Duration::from_millis(10))
    .handle_signals(false)
    .log_file("/dev/null")
    .plugin(recorder("a", &journal))
    .plugin(recorder("b", &journal))
    .lazy_plugin(recorder("lazy", &journal))
    .start()
    .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !journal.lock().iter().any(|l| l.starts_with("again"))
        && std::time::Instant::now() < deadline
    {
        actix_rt::time::sleep(Duration::from_millis(10)).await;
    }
    let stats = handle.stats().await.unwrap();
    assert_eq!(stats.plugins, ["a", "b", "lazy"]);
    assert!(stats
        .extra
        .contains(&("plugin a answer".to_string(), "42".to_string())));
    handle.shutdown();
    handle.wait().await;
    assert_eq!(
        *journal.lock(),
        [
            "setup a",
            "setup b",
            "setup lazy",
            "ensure Ok(())",
            "again true",
            "teardown lazy",
            "teardown b",
            "teardown a"
        ]
    );
}

#[actix::test]
async fn invalid_options_stop_the_start_before_anything_runs() {
    let journal: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut bad = recorder("bad", &journal);
    bad.valid = false;
    let err = DaemonBuilder::new(StartsLazy {
        journal: journal.clone(),
    })
    .handle_signals(false)
    .plugin(recorder("a", &journal))
    .plugin(bad)
    .start()
    .unwrap_err();
    assert!(matches!(err, Error::Config(_)));
    assert_eq!(
        err.to_string(),
        "invalid configuration: plugin bad: limit must be > 0"
    );
    assert_eq!(err.exit_code(), daemonic::ExitCode::Config);
    assert!(journal.lock().is_empty(), "nothing was set up");

    let err = DaemonBuilder::new(StartsLazy {
        journal: journal.clone(),
    })
    .plugin(recorder("same", &journal))
    .plugin(recorder("same", &journal))
    .start()
    .unwrap_err();
    assert!(
        err.to_string().contains("two plugins are named `same`"),
        "{err}"
    );
}
