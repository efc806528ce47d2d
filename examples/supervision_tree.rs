//! A supervision tree inside an actix-web application: two supervisors, one
//! nested in the other, with worker pools and a plain actor as children.
//! `/crash` makes the renderer's worker die; each death fails its pool
//! (restart limit 0), the `thumbnails` supervisor restarts it with backoff,
//! gives up after too many, and `app` restarts the whole `thumbnails`
//! subtree. The crash loop stays inside that subtree: `/decode` and `/hits`
//! answer throughout, and the handlers' addresses stay valid across every
//! restart. `/remove?child=NAME` takes a child of `app` out of the tree for
//! good (`RemoveChild`).
//!
//! ```text
//! cargo run --example supervision_tree -- --port 8080
//! curl http://127.0.0.1:8080/render?n=7
//! curl http://127.0.0.1:8080/crash
//! curl http://127.0.0.1:8080/tree
//! curl http://127.0.0.1:8080/remove?child=hits
//! ```

use actix_web::{web, App, HttpResponse, HttpServer};
use clap::Parser;
use daemonic::actix::prelude::*;
use daemonic::event::{ChildRestarted, Events, SupervisorEscalated};
use daemonic::prelude::*;
use daemonic::supervision::{
    ActorSpec, Backoff, GetTree, IntoChild, PoolSpec, RemoveChild, Restart, Strategy, Supervisor,
};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Renders thumbnails (here: a string); `crash` kills its process.
#[daemonic::worker]
#[derive(Clone, Serialize, Deserialize)]
struct Renderer;

#[daemonic::worker]
impl Renderer {
    pub fn render(&mut self, n: u32) -> String {
        format!("thumbnail #{n} by pid {}", std::process::id())
    }

    pub fn crash(&mut self) -> u32 {
        std::process::exit(3)
    }
}

/// Decodes uploads (here: reverses a string).
#[daemonic::worker]
#[derive(Clone, Serialize, Deserialize)]
struct Decoder;

#[daemonic::worker]
impl Decoder {
    pub fn decode(&mut self, input: String) -> String {
        input.chars().rev().collect()
    }
}

/// A plain actor: counts requests; a restart resets it.
#[derive(Default)]
struct Hits(u64);

impl Actor for Hits {
    type Context = Context<Self>;
}

impl Supervised for Hits {
    fn restarting(&mut self, _: &mut Context<Self>) {
        self.0 = 0;
    }
}

#[derive(Message)]
#[rtype(result = "u64")]
struct Hit;

impl Handler<Hit> for Hits {
    type Result = u64;

    fn handle(&mut self, _: Hit, _: &mut Context<Self>) -> u64 {
        self.0 += 1;
        self.0
    }
}

#[derive(Parser)]
struct Args {
    /// Port to listen on (127.0.0.1; 0: any free port).
    #[arg(long, default_value_t = 8080)]
    port: u16,
}

struct State {
    renderer: Addr<WorkerPool<Renderer>>,
    decoder: Addr<WorkerPool<Decoder>>,
    hits: Addr<Hits>,
    tree: Addr<Supervisor>,
}

#[derive(Deserialize)]
struct RenderQuery {
    n: u32,
}

async fn render(state: web::Data<State>, q: web::Query<RenderQuery>) -> HttpResponse {
    let _ = state.hits.send(Hit).await;
    match state.renderer.call(renderer::Render { n: q.n }).await {
        Ok(thumbnail) => HttpResponse::Ok().body(format!("{thumbnail}\n")),
        Err(e) => HttpResponse::ServiceUnavailable().body(format!("{e}\n")),
    }
}

async fn crash(state: web::Data<State>) -> HttpResponse {
    match state.renderer.call(renderer::Crash {}).await {
        Ok(_) => HttpResponse::Ok().body("still alive?\n"),
        Err(e) => HttpResponse::Ok().body(format!("renderer: {e}\n")),
    }
}

#[derive(Deserialize)]
struct DecodeQuery {
    input: String,
}

async fn decode(state: web::Data<State>, q: web::Query<DecodeQuery>) -> HttpResponse {
    let _ = state.hits.send(Hit).await;
    let input = q.into_inner().input;
    match state.decoder.call(decoder::Decode { input }).await {
        Ok(text) => HttpResponse::Ok().body(format!("{text}\n")),
        Err(e) => HttpResponse::ServiceUnavailable().body(format!("{e}\n")),
    }
}

async fn hits(state: web::Data<State>) -> HttpResponse {
    match state.hits.send(Hit).await {
        Ok(n) => HttpResponse::Ok().body(format!("{n}\n")),
        Err(e) => HttpResponse::ServiceUnavailable().body(format!("{e}\n")),
    }
}

async fn tree(state: web::Data<State>) -> HttpResponse {
    match state.tree.send(GetTree).await {
        Ok(tree) => HttpResponse::Ok().body(tree.lines().join("\n") + "\n"),
        Err(e) => HttpResponse::ServiceUnavailable().body(format!("{e}\n")),
    }
}

#[derive(Deserialize)]
struct RemoveQuery {
    child: String,
}

async fn remove(state: web::Data<State>, q: web::Query<RemoveQuery>) -> HttpResponse {
    let child = q.into_inner().child;
    match state.tree.send(RemoveChild::new(child.clone())).await {
        Ok(Ok(())) => HttpResponse::Ok().body(format!("removed {child}\n")),
        Ok(Err(e)) => HttpResponse::NotFound().body(format!("{e}\n")),
        Err(e) => HttpResponse::ServiceUnavailable().body(format!("{e}\n")),
    }
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let events = Events::new();
    events.on(|e: &mut ChildRestarted| {
        eprintln!(
            "restarted {}/{} ({}): {}",
            e.supervisor, e.child, e.restarts, e.reason
        )
    });
    events.on(|e: &mut SupervisorEscalated| {
        eprintln!("supervisor {} gave up: {}", e.supervisor, e.reason)
    });

    // Each worker death fails its pool at once: the tree decides.
    let renderer = PoolSpec::new(
        WorkerPool::builder(Renderer)
            .name("renderer")
            .size(2)
            .restart_limit(0, Duration::from_secs(10)),
    );
    let decoder = PoolSpec::new(WorkerPool::builder(Decoder).name("decoder").size(2));
    let counter = ActorSpec::new(|_| Hits::default()).name("hits");
    let state = web::Data::new(State {
        renderer: renderer.addr(),
        decoder: decoder.addr(),
        hits: counter.addr(),
        tree: Supervisor::builder("app")
            .strategy(Strategy::OneForOne)
            .intensity(3, Duration::from_secs(30))
            .events(events)
            .child(decoder)
            .child(counter)
            .child(
                Supervisor::builder("thumbnails")
                    .strategy(Strategy::RestForOne)
                    .intensity(2, Duration::from_secs(10))
                    .backoff(Backoff::new(
                        Duration::from_millis(200),
                        Duration::from_secs(2),
                    ))
                    .child(renderer)
                    .child(ActorSpec::new(|_| Hits::default()).name("render-stats"))
                    .child(
                        // A one-off job: never restarted.
                        ActorSpec::new(|_| Hits::default())
                            .name("warm-cache")
                            .restart(Restart::Temporary),
                    ),
            )
            .start()
            .map_err(std::io::Error::other)?,
    });
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .route("/render", web::get().to(render))
            .route("/crash", web::get().to(crash))
            .route("/decode", web::get().to(decode))
            .route("/hits", web::get().to(hits))
            .route("/tree", web::get().to(tree))
            .route("/remove", web::get().to(remove))
    })
    .workers(2)
    .bind(("127.0.0.1", args.port))?;
    for addr in server.addrs() {
        eprintln!("supervision_tree: listening on http://{addr}");
    }
    server.run().await
}
