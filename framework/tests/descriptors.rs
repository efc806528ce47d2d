//! Descriptor hygiene: a program a worker or task execs sees only what the
//! user passed it, never the child's channel (fd 3) or log socket (fd 4).

use daemonic::worker::Transport;
use daemonic::{Daemon, DaemonBuilder, LoopContext};
use serde::{Deserialize, Serialize};

#[daemonic::worker]
#[derive(Clone, Serialize, Deserialize)]
pub struct Shell {
    program: String,
}

#[daemonic::worker]
impl Shell {
    /// `ls -l /proc/self/fd/` as the exec'd program sees it.
    pub fn exec_ls(&mut self) -> String {
        match std::process::Command::new(&self.program)
            .args(["-l", "/proc/self/fd/"])
            .output()
        {
            Ok(out) => String::from_utf8_lossy(&out.stdout).into_owned(),
            Err(e) => format!("cannot run {}: {e}", self.program),
        }
    }

    /// This worker's own descriptors 3 and 4 (what ls must not see).
    pub fn own_fds(&mut self) -> Vec<String> {
        [3, 4]
            .iter()
            .filter_map(|fd| std::fs::read_link(format!("/proc/self/fd/{fd}")).ok())
            .map(|p| p.display().to_string())
            .collect()
    }
}

struct Idle;

impl Daemon for Idle {
    fn execute(&mut self, _: &mut LoopContext<'_, Self>) {}
}

async fn an_execd_program_sees_neither_the_channel_nor_the_log_socket(transport: Transport) {
    // Inside a daemon, so the worker has its log socket on fd 4 too.
    let handle = DaemonBuilder::new(Idle)
        .handle_signals(false)
        .log_file("/dev/null")
        .start()
        .unwrap();
    let pool = handle
        .workers(Shell {
            program: "ls".into(),
        })
        .transport(transport)
        .size(1)
        .start()
        .unwrap();
    let own = pool.send(shell::OwnFds {}).await.unwrap().unwrap();
    assert_eq!(own.len(), 2, "the worker holds fds 3 and 4: {own:?}");
    assert!(own.iter().all(|l| l.starts_with("socket:")), "{own:?}");

    let listing = pool.send(shell::ExecLs {}).await.unwrap().unwrap();
    assert!(listing.contains(" 0 -> "), "ls ran: {listing}");
    assert!(
        !listing.contains("socket:"),
        "an exec'd program inherited a socket of the worker:\n{listing}"
    );
    handle.shutdown();
    handle.wait().await;
}

#[actix::test]
async fn socket_transport() {
    an_execd_program_sees_neither_the_channel_nor_the_log_socket(Transport::Socket).await
}

#[actix::test]
async fn ipc_channel_transport() {
    an_execd_program_sees_neither_the_channel_nor_the_log_socket(Transport::IpcChannel).await
}
