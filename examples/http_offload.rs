//! daemonic inside a larger actix application: an actix-web server whose
//! handler sends CPU-heavy work to a pool of worker processes. The web
//! threads never block; a crashing or hanging job cannot take the server
//! down (it gets a 500 or 504, and the worker is replaced).
//!
//! ```text
//! cargo run --example http_offload -- --port 8080
//! curl 'http://127.0.0.1:8080/hash?input=hello&rounds=200000'
//! ```

use actix_web::{web, App, HttpResponse, HttpServer};
use clap::Parser;
use daemonic::prelude::*;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// CPU-heavy work: iterated FNV-1a hashing.
#[daemonic::worker]
#[derive(Clone, Serialize, Deserialize)]
struct Hasher {
    max_rounds: u64,
}

#[daemonic::worker]
impl Hasher {
    pub fn digest(&mut self, input: String, rounds: u64) -> Result<String, String> {
        if rounds > self.max_rounds {
            return Err(format!("at most {} rounds", self.max_rounds));
        }
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for round in 0..rounds {
            for byte in input.bytes().chain(round.to_le_bytes()) {
                hash ^= u64::from(byte);
                hash = hash.wrapping_mul(0x0100_0000_01b3);
            }
        }
        Ok(format!("{hash:016x}"))
    }
}

#[derive(Parser)]
struct Args {
    /// Port to listen on (127.0.0.1).
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Worker processes.
    #[arg(long, default_value_t = 2)]
    workers: usize,
}

#[derive(Deserialize)]
struct Query {
    input: String,
    #[serde(default = "default_rounds")]
    rounds: u64,
}

fn default_rounds() -> u64 {
    100_000
}

async fn hash(pool: web::Data<Addr<WorkerPool<Hasher>>>, query: web::Query<Query>) -> HttpResponse {
    let Query { input, rounds } = query.into_inner();
    match pool.call(hasher::Digest { input, rounds }).await {
        Ok(digest) => HttpResponse::Ok().body(format!("{digest}\n")),
        Err(CallError::Method(bad_request)) => {
            HttpResponse::BadRequest().body(format!("{bad_request}\n"))
        }
        Err(CallError::Worker(WorkerError::Timeout { .. })) => {
            HttpResponse::GatewayTimeout().body("timed out\n")
        }
        Err(CallError::Worker(WorkerError::Busy { .. })) => {
            HttpResponse::ServiceUnavailable().body("busy, retry later\n")
        }
        Err(e) => HttpResponse::InternalServerError().body(format!("{e}\n")),
    }
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let pool = WorkerPool::builder(Hasher {
        max_rounds: 50_000_000,
    })
    .size(args.workers)
    .call_timeout(Duration::from_secs(10))
    .queue_capacity(256)
    .start()
    .map_err(std::io::Error::other)?;
    eprintln!(
        "http_offload: listening on http://127.0.0.1:{} with {} worker processes",
        args.port, args.workers
    );
    HttpServer::new(move || {
        App::new()
            .app_data(web::Data::new(pool.clone()))
            .route("/hash", web::get().to(hash))
    })
    .workers(2)
    .bind(("127.0.0.1", args.port))?
    .run()
    .await
}
