//! `completions SHELL` and `man`, checked with the real bash and man.

use integration_tests::*;
use std::process::Command;

/// What bash completes for `words` (the last one being completed), with the
/// script `bin completions bash` printed.
fn complete(bin: &str, words: &[&str]) -> Vec<String> {
    let path = example_bin(bin);
    let script = run(&path, ["completions", "bash"]);
    assert_eq!(script.exit.code(), Some(0), "{script:?}");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("completion.bash");
    std::fs::write(&file, &script.stdout).unwrap();
    let line = words.join(" ");
    let program = format!(
        "source {file}; COMP_WORDS=({line}); COMP_CWORD={cword}; COMP_LINE='{line}'; \
         COMP_POINT=${{#COMP_LINE}}; $(complete -p {bin} | sed 's/.*-F \\([^ ]*\\) .*/\\1/') \
         {bin} '{cur}' '{prev}'; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        file = file.display(),
        cword = words.len() - 1,
        cur = words[words.len() - 1],
        prev = words[words.len() - 2],
    );
    let mut cmd = Command::new("bash");
    cmd.arg("-c").arg(program);
    let out = run_command(cmd);
    assert_eq!(out.exit.code(), Some(0), "{out:?}");
    out.stdout.lines().map(str::to_string).collect()
}

#[test]
fn bash_completes_the_standard_flags_the_daemons_own_and_the_subcommands() {
    let flags = complete("hello_world", &["hello_world", "--pid"]);
    assert_eq!(flags, ["--pidfile"]);
    let metrics = complete("hello_world", &["hello_world", "--metr"]);
    assert_eq!(metrics, ["--metrics"]);
    let commands = complete("hello_world", &["hello_world", "sta"]);
    assert_eq!(commands, ["status"]);
    // A daemon with flags of its own (cli::Cli<TaskArgs>) completes them too.
    let own = complete("simple_task", &["simple_task", "--ev"]);
    assert_eq!(own, ["--every"]);
}

#[test]
fn the_man_page_renders_with_man() {
    let page = run(&example_bin("hello_world"), ["man"]);
    assert_eq!(page.exit.code(), Some(0), "{page:?}");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("hello_world.1");
    std::fs::write(&file, &page.stdout).unwrap();
    let mut cmd = Command::new("man");
    cmd.arg("-l")
        .arg(&file)
        .env("MANPAGER", "cat")
        .env("MANWIDTH", "100")
        .env("LANG", "C.UTF-8");
    let out = run_command(cmd);
    assert_eq!(out.exit.code(), Some(0), "{out:?}");
    let text = &out.stdout;
    for needle in [
        "hello_world",
        "Logs `Hello World. Loop N` every second.",
        "--pidfile",
        "--metrics",
        "--daemon",
        "completions",
    ] {
        assert!(text.contains(needle), "{needle:?} missing:\n{text}");
    }
}
