//! Reading a worker's link on the pool's thread: each frame goes to the
//! pool straight from the read buffer (decoded in place), with no batch of
//! copied frames passed through a stream and a `StreamHandler` between.

use super::super::WorkerMethods;
use super::WorkerPool;
use crate::ipc::FrameSource;
use actix::prelude::*;
use std::pin::Pin;
use std::task::Poll;
use std::time::Instant;

/// Reads at most this many times per poll, then yields (as actix's own
/// stream handling does after 16 items): one busy link must not starve the
/// pool's mailbox and its other links.
const READS_PER_POLL: usize = 16;

/// The reader of worker `key`'s link, an item of the pool's context: it
/// ends when the link does, and settles that end with the pool.
pub(super) struct LinkReader {
    key: u64,
    source: Box<dyn FrameSource>,
}

impl LinkReader {
    pub(super) fn new(key: u64, source: Box<dyn FrameSource>) -> Self {
        Self { key, source }
    }
}

impl<W: WorkerMethods> ActorFuture<WorkerPool<W>> for LinkReader {
    type Output = ();

    fn poll(
        self: Pin<&mut Self>,
        act: &mut WorkerPool<W>,
        ctx: &mut Context<WorkerPool<W>>,
        task: &mut std::task::Context<'_>,
    ) -> Poll<()> {
        let this = self.get_mut();
        let key = this.key;
        for _ in 0..READS_PER_POLL {
            // One clock read for all the replies of a read (their latency
            // ends when they were read), and none for a link that had
            // nothing.
            let mut now = None;
            let read = this.source.poll_frames(task, &mut |bytes, fd| {
                let read = *now.get_or_insert_with(Instant::now);
                act.on_frame(key, (bytes, fd), read, ctx)
            });
            match read {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(()))) => act.after_frames(ctx),
                Poll::Ready(end) => {
                    let error = end.and_then(|r| r.err()).map(|e| e.to_string());
                    act.on_link_closed(key, error, ctx);
                    return Poll::Ready(());
                }
            }
        }
        task.waker().wake_by_ref();
        Poll::Pending
    }
}
