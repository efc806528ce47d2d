//! Shared helpers for the framework's process tests.
#![allow(dead_code)]

pub mod nats;
pub mod shm;

use daemonic::task::{Task, TaskContext};
use daemonic::BoxError;
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};

/// What a test task does in its child.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Behave {
    Succeed,
    Exit(i32),
    Panic(String),
    Fail(String),
    Sleep(u64),
    IgnoreTermAndSleep(u64),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Probe(pub Behave);

#[daemonic::task]
impl Task for Probe {
    fn run(self, ctx: &mut TaskContext) -> Result<(), BoxError> {
        match self.0 {
            Behave::Succeed => Ok(()),
            Behave::Exit(code) => std::process::exit(code),
            Behave::Panic(msg) => panic!("{msg}"),
            Behave::Fail(msg) => Err(msg.into()),
            Behave::Sleep(ms) => {
                std::thread::sleep(Duration::from_millis(ms));
                Ok(())
            }
            Behave::IgnoreTermAndSleep(ms) => {
                // SAFETY: ignoring a signal is always valid.
                unsafe { libc::signal(libc::SIGTERM, libc::SIG_IGN) };
                ctx.log("ignoring SIGTERM");
                std::thread::sleep(Duration::from_millis(ms));
                Ok(())
            }
        }
    }
}

/// Children of this process that are zombies.
pub fn zombie_children() -> Vec<i32> {
    let me = std::process::id() as i32;
    let mut zombies = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return zombies;
    };
    for entry in dir.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.first() == Some(&"Z")
            && fields.get(1).and_then(|p| p.parse::<i32>().ok()) == Some(me)
        {
            zombies.push(pid);
        }
    }
    zombies
}

/// Number of open descriptors of this process.
/// This process's descriptors and what each is (`/proc/self/fd`), for a
/// failure message.
pub fn fd_list() -> Vec<String> {
    let mut fds: Vec<String> = std::fs::read_dir("/proc/self/fd")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| {
            let target = std::fs::read_link(e.path()).unwrap_or_default();
            format!(
                "{} -> {}",
                e.file_name().to_string_lossy(),
                target.display()
            )
        })
        .collect();
    fds.sort();
    fds
}

pub fn fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Polls `cond` until it holds or `timeout` passes.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Runs each named `async fn(Transport)` as a test over both transports.
#[macro_export]
macro_rules! over_transports {
    ($($name:ident),* $(,)?) => {
        mod socket {
            $(#[actix::test]
            async fn $name() {
                super::$name(super::Transport::Socket).await
            })*
        }
        mod ipc_channel {
            $(#[actix::test]
            async fn $name() {
                super::$name(super::Transport::IpcChannel).await
            })*
        }
    };
}

/// The sockets this process holds, with their types (`SOCK_STREAM`, …).
#[allow(dead_code)] // not every test binary uses every helper
pub fn sockets() -> Vec<(std::os::fd::RawFd, libc::c_int)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc/self/fd")
        .into_iter()
        .flatten()
        .flatten()
    {
        let Ok(fd) = entry
            .file_name()
            .to_string_lossy()
            .parse::<std::os::fd::RawFd>()
        else {
            continue;
        };
        let mut kind: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: a plain getsockopt into a local int.
        let ok = unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_TYPE,
                (&mut kind as *mut libc::c_int).cast(),
                &mut len,
            )
        } == 0;
        if ok {
            found.push((fd, kind));
        }
    }
    found
}
