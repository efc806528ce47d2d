//! One ordered outbound stream per actor: actors hand messages over without
//! waiting (an actor's handler cannot await), and a task feeds them to the
//! client in the order given. The order matters: a host's heartbeat or
//! "running" notice must reach the server before the sync message that
//! follows it (see `host/mod.rs`).

use super::options::ConnectionEvents;
use async_nats::message::OutboundMessage;
use async_nats::{Client, Subject, SubscribeError, Subscriber};
use bytes::Bytes;
use futures_util::SinkExt;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

enum Outgoing {
    Message(OutboundMessage),
    /// Answered once everything before it was written to the connection.
    Flush(oneshot::Sender<()>),
    /// A subscription, ordered with the messages around it.
    Subscribe(String, oneshot::Sender<Result<Subscriber, SubscribeError>>),
}

#[derive(Clone)]
pub(crate) struct Publisher {
    tx: mpsc::UnboundedSender<Outgoing>,
}

impl Publisher {
    /// Starts the feeding task on the current runtime. It ends when every
    /// `Publisher` clone is dropped, after feeding what was queued.
    /// Messages the client refuses (too large, connection closed) are
    /// counted in `events`, which `status` shows.
    pub(crate) fn start(client: Client, events: Arc<ConnectionEvents>) -> Self {
        let (tx, mut rx) = mpsc::unbounded_channel::<Outgoing>();
        actix_rt::spawn(async move {
            let mut client = client;
            let mut batch = Vec::with_capacity(256);
            while rx.recv_many(&mut batch, 256).await > 0 {
                for outgoing in batch.drain(..) {
                    match outgoing {
                        Outgoing::Message(message) => {
                            if let Err(e) = client.feed(message).await {
                                events.error(format!("publish failed: {e}"));
                            }
                        }
                        Outgoing::Flush(done) => {
                            let _ = client.flush().await;
                            let _ = done.send(());
                        }
                        Outgoing::Subscribe(subject, done) => {
                            let _ = done.send(client.subscribe(subject).await);
                        }
                    }
                }
            }
        });
        Self { tx }
    }

    pub(crate) fn publish(
        &self,
        subject: String,
        reply: Option<String>,
        payload: impl Into<Bytes>,
    ) {
        let message = OutboundMessage {
            subject: Subject::from(subject),
            reply: reply.map(Subject::from),
            payload: payload.into(),
            headers: None,
        };
        // Fails only once the task ended, with the runtime: nothing to do.
        let _ = self.tx.send(Outgoing::Message(message));
    }

    /// Resolves once everything published before was written to the
    /// connection (or the connection is gone).
    pub(crate) fn flushed(&self) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        let _ = self.tx.send(Outgoing::Flush(tx));
        rx
    }

    /// Subscribes to `subject` after everything published before, and
    /// before anything published after.
    pub(crate) fn subscribe(
        &self,
        subject: String,
    ) -> oneshot::Receiver<Result<Subscriber, SubscribeError>> {
        let (tx, rx) = oneshot::channel();
        let _ = self.tx.send(Outgoing::Subscribe(subject, tx));
        rx
    }
}
