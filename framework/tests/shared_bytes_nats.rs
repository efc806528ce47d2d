//! `SharedBytes` past one machine: a remote pool's call crosses NATS as
//! bytes, so a `SharedBytes` in it must be plain bytes on the wire both
//! ways, although the serving host's own pool sends it to its worker as a
//! descriptor in typed calls. Real `nats-server`, a real host serving a
//! real pool, a real remote caller (in one process).

mod common;

use common::nats::start_server;
use daemonic::remote::{Nats, NatsOptions, StopRemotePool};
use daemonic::worker::{SharedBytes, StopPool, WorkerPool};
use serde::{Deserialize, Serialize};
use std::time::Duration;

#[daemonic::worker]
#[derive(Default, Serialize, Deserialize)]
pub struct Relay {
    /// Calls of `meet` that arrived.
    #[serde(skip)]
    arrived: std::cell::Cell<usize>,
    #[serde(skip)]
    arrival: tokio::sync::Notify,
}

#[daemonic::worker]
impl Relay {
    /// Whether the bytes came mapped from a memfd, and the bytes back.
    pub fn inspect(&mut self, data: SharedBytes) -> (bool, SharedBytes) {
        (data.is_shared(), data)
    }

    /// As `inspect`, once `calls` calls of it run at once in this worker
    /// (they interleave: each must encode its own result its own way).
    pub async fn meet(&self, data: SharedBytes, calls: usize) -> (bool, SharedBytes) {
        self.arrived.set(self.arrived.get() + 1);
        self.arrival.notify_waiters();
        loop {
            let next = self.arrival.notified();
            if self.arrived.get() >= calls {
                break;
            }
            next.await;
        }
        (data.is_shared(), data)
    }
}

#[actix_rt::test]
async fn a_remote_call_carries_shared_bytes_as_plain_bytes_both_ways() {
    let (_server, port) = start_server();
    daemonic::testing::fork_server().prestart().unwrap();
    let pool = WorkerPool::builder(Relay::default())
        .size(1)
        .max_concurrent(4)
        .call_timeout(Duration::from_secs(30))
        .start()
        .unwrap();
    // The pool's own typed call: the descriptor crosses, the worker maps it.
    let data = SharedBytes::copy_from_slice(&[7u8; 300_000]).unwrap();
    let typed = pool.send(relay::Inspect { data: data.clone() }).await;
    let (shared, back) = typed.unwrap().unwrap();
    assert!(shared && back.is_shared(), "local: as a descriptor");
    let nats = Nats::new(NatsOptions::new(format!("nats://127.0.0.1:{port}")));
    nats.connect().await.unwrap();
    nats.serve(&pool).unwrap();
    let remote = nats.remote::<Relay>().start().unwrap();
    // Served as soon as the host's subscription is in place: retried until
    // then (bounded), never a failure of the test by timing.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let (shared, back) = loop {
        match remote
            .send(relay::Inspect { data: data.clone() })
            .await
            .unwrap()
        {
            Ok(answer) => break answer,
            Err(e) if std::time::Instant::now() < deadline => {
                eprintln!("not served yet: {e}");
                actix_rt::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("the remote call failed: {e}"),
        }
    };
    assert!(!shared, "the worker decoded plain bytes");
    assert!(!back.is_shared(), "the caller decoded plain bytes");
    assert!(back == data, "the bytes came back changed");
    // A remote call and a local one running at once in the worker: the
    // remote one's result leaves as bytes, the local one's as a descriptor.
    let (remote_answer, local_answer) = futures_util::future::join(
        remote.send(relay::Meet {
            data: data.clone(),
            calls: 2,
        }),
        pool.send(relay::Meet {
            data: data.clone(),
            calls: 2,
        }),
    )
    .await;
    let (shared, back) = remote_answer.unwrap().unwrap();
    assert!(!shared && !back.is_shared() && back == data, "remote");
    let (shared, back) = local_answer.unwrap().unwrap();
    assert!(shared && back.is_shared() && back == data, "local");
    remote
        .send(StopRemotePool {
            grace: Duration::from_secs(5),
        })
        .await
        .ok();
    pool.send(StopPool {
        grace: Duration::from_secs(5),
    })
    .await
    .unwrap();
}
