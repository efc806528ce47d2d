use super::*;

struct Nop;
impl Daemon for Nop {
    fn execute(&mut self, _: &mut crate::LoopContext<'_, Self>) {}
}

#[test]
fn negative_or_nan_interval_is_a_config_error() {
    for bad in [-1.0, f64::NAN, f64::INFINITY] {
        let err = DaemonBuilder::new(Nop)
            .interval_secs(bad)
            .prepare()
            .err()
            .unwrap();
        assert_eq!(err.exit_code(), ExitCode::Config, "{bad}");
        assert!(err.to_string().contains("interval"), "{err}");
    }
}

#[test]
fn out_of_range_durations_are_config_errors() {
    let builders = [
        DaemonBuilder::new(Nop).shutdown_timeout(Duration::ZERO),
        DaemonBuilder::new(Nop).restart_after(Duration::ZERO),
        DaemonBuilder::new(Nop).interval(Duration::MAX),
        DaemonBuilder::new(Nop).min_runtime(Duration::MAX),
    ];
    for mut builder in builders {
        let err = builder.prepare().err().unwrap();
        assert_eq!(err.exit_code(), ExitCode::Config, "{err}");
    }
}

fn command_line(args: &[&str]) -> DaemonArgs {
    Program::new("from-cli")
        .version("9.9")
        .about("Parsed.")
        .try_parse_from::<NoArgs, _, _>(args)
        .unwrap()
        .daemon
}

/// Everything `prepare` decides from the settings, for comparing builders.
fn decided(mut builder: DaemonBuilder<Nop>) -> (String, Duration, Duration, RestartPolicy) {
    let prepared = builder.prepare().unwrap();
    let name = builder.program().name().to_string();
    (
        name,
        prepared.interval,
        prepared.shutdown_timeout,
        builder.restart,
    )
}

#[test]
fn the_command_line_wins_whatever_the_call_order() {
    let args = command_line(&[
        "d",
        "--interval",
        "250ms",
        "--shutdown-timeout",
        "3",
        "--restart-after",
        "1h",
        "--min-runtime",
        "0",
    ]);
    let settings = |b: DaemonBuilder<Nop>| {
        b.name("from-builder")
            .interval_secs(5.0)
            .shutdown_timeout(Duration::from_secs(7))
            .restart_after(Duration::from_secs(60))
            .min_runtime(Duration::from_secs(30))
    };
    let args_first = settings(DaemonBuilder::new(Nop).args(&args));
    let args_last = settings(DaemonBuilder::new(Nop)).args(&args);
    let expected = RestartPolicy {
        after: Some(Duration::from_secs(3600)),
        min_runtime: Duration::ZERO,
        ..RestartPolicy::default()
    };
    let want = (
        "from-cli".to_string(),
        Duration::from_millis(250),
        Duration::from_secs(3),
        expected,
    );
    assert_eq!(decided(args_first), want);
    assert_eq!(decided(args_last), want);
}

#[test]
fn flags_not_given_keep_the_builders_settings() {
    let args = command_line(&["d"]);
    let builder = DaemonBuilder::new(Nop)
        .args(&args)
        .interval(Duration::from_millis(20))
        .shutdown_timeout(Duration::from_secs(4));
    let (_, interval, shutdown_timeout, _) = decided(builder);
    assert_eq!(interval, Duration::from_millis(20));
    assert_eq!(shutdown_timeout, Duration::from_secs(4));
}

#[test]
fn main_parses_with_the_builders_name_version_and_about() {
    let builder = DaemonBuilder::new(Nop)
        .about("Does nothing.")
        .name("nop")
        .version("1.0");
    let program = Program::new("nop").version("1.0").about("Does nothing.");
    assert_eq!(builder.program(), program);
}

#[test]
fn unwritable_log_file_is_refused_before_start() {
    let err = DaemonBuilder::new(Nop)
        .log_file("/nonexistent-dir/x.log")
        .prepare()
        .err()
        .unwrap();
    assert_eq!(err.exit_code(), ExitCode::CantCreate);
    assert!(err.to_string().contains("/nonexistent-dir/x.log"));
}

#[test]
fn start_outside_a_system_is_an_error() {
    let err = DaemonBuilder::new(Nop).start().err().unwrap();
    assert!(matches!(err, Error::NoSystem));
}
