//! Tasks: fire-and-forget background processes that run one job and exit
//! (send an email, resize an image).
//!
//! ```no_run
//! use daemonic::task::{Task, TaskContext};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize)]
//! struct SendEmail { to: String }
//!
//! #[daemonic::task]
//! impl Task for SendEmail {
//!     fn run(self, ctx: &mut TaskContext) -> Result<(), daemonic::BoxError> {
//!         ctx.log(format_args!("sending to {}", self.to));
//!         Ok(())
//!     }
//! }
//! ```
//!
//! Inside a daemon, start one with [`LoopContext::task`](crate::LoopContext::task);
//! its exit arrives as a [`TaskExited`](crate::event::TaskExited) event. Outside a
//! daemon, [`spawn`] returns a [`TaskChild`] to wait on.

mod manager;

pub use manager::TaskHandle;
pub(crate) use manager::{StopTasks, TaskManager, TaskRegistry};

use crate::error::{BoxError, Error, Result};
use crate::log::Logger;
use crate::process::{wire, ChildStart, ExitStatus, SpawnOptions};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::fmt::Display;
use std::io::Read;
use std::os::unix::net::UnixStream;
use std::time::Duration;

/// A job that runs in its own child process. Register the implementation
/// with `#[daemonic::task]`.
///
/// ```
/// use daemonic::{BoxError, Task, TaskContext};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize)]
/// struct Resize {
///     path: String,
///     width: u32,
/// }
///
/// #[daemonic::task]
/// impl Task for Resize {
///     const MAX_CONCURRENT: Option<usize> = Some(2);
///
///     fn run(self, ctx: &mut TaskContext) -> Result<(), BoxError> {
///         ctx.log(format_args!("resizing {} to {} px", self.path, self.width));
///         Ok(())
///     }
/// }
/// ```
pub trait Task: Serialize + DeserializeOwned + Send + 'static {
    /// At most this many of this task run at once; more are refused with
    /// [`Error::Busy`] (the caller decides whether to retry). `None`: no limit.
    const MAX_CONCURRENT: Option<usize> = None;

    /// Runs in the child. `Err` is logged and exits with code 1; a panic is
    /// caught, logged and reported as [`TaskStatus::Panicked`].
    fn run(self, ctx: &mut TaskContext) -> Result<(), BoxError>;
}

/// Implemented by `#[daemonic::task]`: the task's stable name.
///
/// ```
/// use daemonic::task::RegisteredTask;
/// use daemonic::{BoxError, Task, TaskContext};
///
/// #[derive(serde::Serialize, serde::Deserialize)]
/// struct Ping;
///
/// #[daemonic::task]
/// impl Task for Ping {
///     fn run(self, _: &mut TaskContext) -> Result<(), BoxError> {
///         Ok(())
///     }
/// }
///
/// assert!(<Ping as RegisteredTask>::NAME.ends_with("::Ping"));
/// ```
pub trait RegisteredTask: Task {
    /// `module::path::Type`.
    const NAME: &'static str;
}

/// What a running task gets.
///
/// ```
/// use daemonic::{BoxError, Task, TaskContext};
///
/// #[derive(serde::Serialize, serde::Deserialize)]
/// struct Report;
///
/// #[daemonic::task]
/// impl Task for Report {
///     fn run(self, ctx: &mut TaskContext) -> Result<(), BoxError> {
///         ctx.log(format_args!("{} writing the report", ctx.role()));
///         ctx.logger().debug(1, "details");
///         Ok(())
///     }
/// }
/// ```
#[derive(Debug)]
pub struct TaskContext {
    logger: Logger,
    role: String,
}

impl TaskContext {
    /// A logger whose lines reach the daemon's log with this task's pid and role.
    pub fn logger(&self) -> &Logger {
        &self.logger
    }

    /// Logs an informational line.
    pub fn log(&self, message: impl Display) {
        self.logger.log(message);
    }

    /// Logs an error line.
    pub fn error(&self, message: impl Display) {
        self.logger.error(message);
    }

    /// The role (`task:<name>`).
    pub fn role(&self) -> &str {
        &self.role
    }
}

/// How a task ended.
///
/// ```
/// use daemonic::TaskStatus;
///
/// let status = TaskStatus::Failed("SMTP refused".into());
/// assert!(!status.success());
/// assert_eq!(status.to_string(), "failed: SMTP refused");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TaskStatus {
    /// `run` returned `Ok` (exit code 0), or the task exited with this code.
    Exited(i32),
    /// `run` returned `Err` with this message.
    Failed(String),
    /// `run` panicked with this message.
    Panicked(String),
    /// A signal killed it.
    Signaled(i32),
}

impl TaskStatus {
    /// Whether the task succeeded.
    pub fn success(&self) -> bool {
        *self == TaskStatus::Exited(0)
    }
}

impl std::fmt::Display for TaskStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TaskStatus::Exited(code) => write!(f, "exit code {code}"),
            TaskStatus::Failed(msg) => write!(f, "failed: {msg}"),
            TaskStatus::Panicked(msg) => write!(f, "panicked: {msg}"),
            TaskStatus::Signaled(sig) => {
                write!(f, "killed by {}", crate::signal::signal_name(*sig))
            }
        }
    }
}

/// What a task's child tells the host before it exits abnormally.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum TaskReport {
    Failed(String),
    Panicked(String),
}

/// Exit code of a task whose `run` returned `Err`.
pub(crate) const EXIT_FAILED: i32 = 1;
/// Exit code of a task that panicked (as for a Rust program).
pub(crate) const EXIT_PANICKED: i32 = 101;
/// Exit code of a task whose payload could not be decoded.
pub(crate) const EXIT_BAD_PAYLOAD: i32 = 65;

/// Entry point of every registered task (generated code calls it).
#[doc(hidden)]
pub fn run_in_child<T: RegisteredTask>(mut start: ChildStart) -> i32 {
    let logger = start.logger();
    let role = start.role.clone();
    let task: T = match start.read_payload() {
        Ok(t) => t,
        Err(e) => {
            logger.error(format_args!("cannot decode task {}: {e}", T::NAME));
            return EXIT_BAD_PAYLOAD;
        }
    };
    crate::panic_capture::install();
    let mut ctx = TaskContext { logger, role };
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| task.run(&mut ctx)));
    let (report, code) = match outcome {
        Ok(Ok(())) => (None, 0),
        Ok(Err(e)) => {
            ctx.logger.error(format_args!("task failed: {e}"));
            (Some(TaskReport::Failed(e.to_string())), EXIT_FAILED)
        }
        Err(payload) => {
            let message =
                crate::panic_capture::take().unwrap_or_else(|| crate::panic_message(&*payload));
            ctx.logger.error(format_args!("task panicked: {message}"));
            (Some(TaskReport::Panicked(message)), EXIT_PANICKED)
        }
    };
    if let Some(report) = report {
        send_report(start.channel(), report);
    }
    code
}

/// Largest failure message a task reports; the rest is cut (the full text is
/// in the task's log line).
const MAX_REPORT: usize = 64 * 1024;

/// Sends the failure report without ever blocking: the host reads it only
/// after the exit, so a report that did not fit in the socket's buffer would
/// keep the task from exiting. It is cut to [`MAX_REPORT`], which fits in
/// the empty buffer of a fresh channel; if even that does not go through,
/// the host still sees the exit code.
fn send_report(channel: &mut UnixStream, report: TaskReport) {
    let cut = |message: String| {
        if message.len() <= MAX_REPORT {
            return message;
        }
        let mut end = MAX_REPORT;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        format!(
            "{}… ({} more bytes in the task's log)",
            &message[..end],
            message.len() - end
        )
    };
    let report = match report {
        TaskReport::Failed(m) => TaskReport::Failed(cut(m)),
        TaskReport::Panicked(m) => TaskReport::Panicked(cut(m)),
    };
    if let Ok(bytes) = wire::encode(&report) {
        let _ = channel.set_nonblocking(true);
        let _ = crate::ipc::frame::write_frame(channel, &bytes);
    }
}

/// A task child started with [`spawn`], outside a daemon.
///
/// ```no_run
/// # use daemonic::{BoxError, Task, TaskContext};
/// # #[derive(serde::Serialize, serde::Deserialize)]
/// # struct Backup;
/// # #[daemonic::task]
/// # impl Task for Backup {
/// #     fn run(self, _: &mut TaskContext) -> Result<(), BoxError> { Ok(()) }
/// # }
/// let mut child = daemonic::task::spawn(&Backup)?;
/// println!("backup running as pid {}", child.pid());
/// let status = child.wait_blocking()?;
/// assert!(status.success());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct TaskChild {
    process: crate::process::ChildProcess,
    channel: UnixStream,
    name: &'static str,
}

impl TaskChild {
    /// The child's pid.
    pub fn pid(&self) -> i32 {
        self.process.pid()
    }

    /// The task's registered name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Sends a signal to the task.
    pub fn signal(&self, signal: i32) -> std::io::Result<bool> {
        self.process.signal(signal)
    }

    /// Waits for the task to end (in a tokio runtime).
    pub async fn wait(&mut self) -> std::io::Result<TaskStatus> {
        let status = self.process.wait().await?;
        Ok(self.status_of(status))
    }

    /// Waits for the task to end, blocking the thread.
    pub fn wait_blocking(&mut self) -> std::io::Result<TaskStatus> {
        let status = self.process.wait_blocking()?;
        Ok(self.status_of(status))
    }

    /// Time since spawn.
    pub fn runtime(&self) -> Duration {
        self.process.runtime()
    }

    fn status_of(&mut self, status: ExitStatus) -> TaskStatus {
        match status {
            ExitStatus::Signaled { signal, .. } => TaskStatus::Signaled(signal),
            ExitStatus::Exited(0) => TaskStatus::Exited(0),
            ExitStatus::Exited(code) => match read_report(&mut self.channel) {
                Some(TaskReport::Failed(msg)) => TaskStatus::Failed(msg),
                Some(TaskReport::Panicked(msg)) => TaskStatus::Panicked(msg),
                None => TaskStatus::Exited(code),
            },
        }
    }
}

/// The child exited, so its end of the channel is closed: reading stops at
/// end of stream and never blocks for long.
fn read_report(channel: &mut UnixStream) -> Option<TaskReport> {
    let _ = channel.set_nonblocking(true);
    let mut bytes = Vec::new();
    let _ = channel.read_to_end(&mut bytes);
    decode_report(&bytes)
}

/// The report in the bytes a task's child left on its channel, if any.
pub(crate) fn decode_report(bytes: &[u8]) -> Option<TaskReport> {
    let frame = crate::ipc::frame::read_frame(bytes).ok()??;
    wire::decode(&frame).ok()
}

/// Starts `task` in a child process now, outside any daemon (tests, tools).
/// Inside a daemon prefer [`LoopContext::task`](crate::LoopContext::task),
/// which applies limits, reports exits as events and stops tasks at shutdown.
///
/// ```no_run
/// use daemonic::{BoxError, Task, TaskContext};
///
/// #[derive(serde::Serialize, serde::Deserialize)]
/// struct Migrate {
///     version: u32,
/// }
///
/// #[daemonic::task]
/// impl Task for Migrate {
///     fn run(self, ctx: &mut TaskContext) -> Result<(), BoxError> {
///         ctx.log(format_args!("migrating to {}", self.version));
///         Ok(())
///     }
/// }
///
/// fn main() -> Result<(), Box<dyn std::error::Error>> {
///     let mut child = daemonic::task::spawn(&Migrate { version: 7 })?;
///     let status = child.wait_blocking()?;
///     println!("migration: {status}");
///     Ok(())
/// }
/// ```
pub fn spawn<T: RegisteredTask>(task: &T) -> Result<TaskChild> {
    let payload = wire::encode(task)
        .map_err(|e| Error::Spawn(format!("cannot serialize task {}: {e}", T::NAME)))?;
    let spawned = crate::process::spawn_blocking(&SpawnOptions {
        entry: T::NAME.to_string(),
        role: format!("task:{}", short_name(T::NAME)),
        confinement: None,
    })?;
    let mut channel = spawned.channel;
    // The child reads its payload first thing, so this cannot block for
    // long even when the payload exceeds the socket buffer.
    crate::ipc::frame::write_frame(&mut channel, &payload)
        .map_err(|e| Error::Spawn(format!("cannot send task payload: {e}")))?;
    Ok(TaskChild {
        process: spawned.process,
        channel,
        name: T::NAME,
    })
}

/// `crate::module::SendEmail` → `send_email`, `HTTPClient` → `http_client`:
/// the same conversion `#[worker]` uses for a worker's message module
/// (`macros/src/names.rs`), so a task and a worker named alike read alike.
pub(crate) fn short_name(name: &str) -> String {
    use heck::ToSnakeCase;
    name.rsplit("::").next().unwrap_or(name).to_snake_case()
}

#[cfg(test)]
mod tests {
    #[test]
    fn short_names() {
        for (name, short) in [
            ("a::b::SendEmail", "send_email"),
            ("X", "x"),
            ("app::HTTPClient", "http_client"),
            ("app::IOError", "io_error"),
            ("app::sleepy", "sleepy"),
        ] {
            assert_eq!(super::short_name(name), short, "{name}");
        }
    }
}
