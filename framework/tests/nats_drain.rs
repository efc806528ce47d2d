//! A drained NATS subscription hands over every message the server routed
//! to it before the unsubscribe. A host stopping gracefully relies on it
//! (framework/src/remote/host/mod.rs): a call on its way to the host when it
//! leaves the queue group must reach it, to be answered `ShuttingDown` and
//! sent elsewhere, instead of vanishing with its caller left to guess.
//!
//! Real `nats-server`, real clients: a publisher floods a subject while the
//! subscriber drains; every message the subscriber's connection read must
//! have come out of the drained stream.

mod common;

use common::nats::start_server;
use futures_util::StreamExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[actix_rt::test]
async fn a_drained_subscription_delivers_every_message_routed_to_it() {
    let (_server, port) = start_server();
    let url = format!("nats://127.0.0.1:{port}");
    for round in 0..20 {
        // Room for every message of the round: a full channel drops
        // messages too (a slow consumer), which is not what is measured.
        let subscriber = async_nats::ConnectOptions::new()
            .subscription_capacity(1 << 24)
            .connect(&url)
            .await
            .expect("connect subscriber");
        let subject = format!("flood.{round}");
        let mut messages = subscriber
            .queue_subscribe(subject.clone(), "hosts".into())
            .await
            .expect("subscribe");
        subscriber.flush().await.expect("flush the subscription");
        // Flood until the drain is over, so that messages are on their way
        // when the server processes the unsubscribe.
        let flooding = Arc::new(AtomicBool::new(true));
        let flood = {
            let url = url.clone();
            let flooding = flooding.clone();
            std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a runtime for the publisher");
                runtime.block_on(async move {
                    let publisher = async_nats::connect(&url).await.expect("connect publisher");
                    while flooding.load(Ordering::Relaxed) {
                        for _ in 0..64 {
                            let _ = publisher.publish(subject.clone(), "call".into()).await;
                        }
                        let _ = publisher.flush().await;
                    }
                })
            })
        };
        let mut received = 0u64;
        while received < 2_000 {
            if messages.next().await.is_some() {
                received += 1;
            }
        }
        messages.drain().await.expect("drain");
        let ended = tokio::time::timeout(Duration::from_secs(10), async {
            while messages.next().await.is_some() {
                received += 1;
            }
        })
        .await;
        flooding.store(false, Ordering::Relaxed);
        let _ = flood.join();
        assert!(
            ended.is_ok(),
            "round {round}: the drained stream never ended"
        );
        let read = subscriber.statistics().in_messages.load(Ordering::Relaxed);
        assert_eq!(
            received, read,
            "round {round}: the connection read {read} messages, the drained subscription delivered {received}"
        );
    }
}
