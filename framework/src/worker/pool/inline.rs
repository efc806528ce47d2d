//! Inline mode: the worker runs in this process, on a thread of its own.
//!
//! Not on the pool's thread: an `async` method that awaits a timer or I/O
//! needs a runtime it can block on, which an actix arbiter's thread cannot
//! give it (it would wait for itself), and a slow method would stall every
//! other message of the pool.

use super::super::{WorkerContext, WorkerError, WorkerMethods};
use crate::error::{Error, Result};
use std::sync::mpsc;

/// One call for the inline worker.
struct Job {
    id: u64,
    method: u16,
    args: Vec<u8>,
    reply: tokio::sync::oneshot::Sender<std::result::Result<Vec<u8>, WorkerError>>,
}

/// The pool's handle on its inline worker thread (which ends when this is
/// dropped).
pub(super) struct Inline {
    jobs: mpsc::Sender<Job>,
}

impl Inline {
    pub(super) fn start<W: WorkerMethods>(
        mut worker: W,
        mut context: WorkerContext,
        name: &str,
    ) -> Result<Self> {
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name(format!("daemonic-inline:{name}"))
            .spawn(move || {
                worker.started(&mut context);
                while let Ok(job) = rx.recv() {
                    // Inline calls have no timeout: no deadline.
                    context.set_call(Some((job.id, None)));
                    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        worker.dispatch(&mut context, job.method, &job.args)
                    }));
                    context.set_call(None);
                    let result = match outcome {
                        Ok(Ok(bytes)) => Ok(bytes),
                        Ok(Err(e)) => Err(WorkerError::Protocol(e.to_string())),
                        Err(payload) => Err(WorkerError::Panicked {
                            message: crate::panic_message(&*payload),
                        }),
                    };
                    let _ = job.reply.send(result);
                }
                worker.stopping(&mut context);
            })
            .map_err(|e| Error::os("cannot start the inline worker's thread", e))?;
        Ok(Self { jobs: tx })
    }

    /// Runs one call; the answer arrives on the returned receiver.
    pub(super) fn call(
        &self,
        id: u64,
        method: u16,
        args: Vec<u8>,
    ) -> tokio::sync::oneshot::Receiver<std::result::Result<Vec<u8>, WorkerError>> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        let job = Job {
            id,
            method,
            args,
            reply,
        };
        if let Err(mpsc::SendError(job)) = self.jobs.send(job) {
            let _ = job.reply.send(Err(WorkerError::ShuttingDown));
        }
        rx
    }
}
