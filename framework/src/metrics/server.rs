//! The HTTP server behind `--metrics`: actix-web with one worker thread,
//! driven from an arbiter of its own so that stopping it (which joins its
//! accept thread) never blocks the supervisor's thread. Every answer asks the
//! supervisor for a fresh [`GetStats`] without waiting on it synchronously.

use super::Metrics;
use crate::daemon::{GetStats, Supervisor};
use crate::error::{Error, Result};
use crate::log::Logger;
use crate::Stats;
use actix::prelude::*;
use actix_web::body::MessageBody;
use actix_web::dev::{ServerHandle, ServiceRequest, ServiceResponse};
use actix_web::http::header;
use actix_web::middleware::{from_fn, Next};
use actix_web::{web, App, HttpResponse, HttpServer};
use prometheus_client::encoding::prometheus_text::CONTENT_TYPE;
use std::net::SocketAddr;
use std::time::Instant;

/// Where to listen and what to serve.
pub(crate) struct ServerConfig {
    pub addr: SocketAddr,
    pub metrics: Metrics,
}

struct State {
    supervisor: Addr<Supervisor>,
    metrics: Metrics,
}

/// A running server; [`stop`](Self::stop) it with the daemon.
pub(crate) struct StatusServer {
    handle: ServerHandle,
    arbiter: Arbiter,
}

impl StatusServer {
    /// Binds `config.addr` (an error names the address) and starts serving.
    pub(crate) fn start(
        config: ServerConfig,
        supervisor: Addr<Supervisor>,
        logger: &Logger,
    ) -> Result<Self> {
        let addr = config.addr;
        let cant = |e: std::io::Error| Error::os(format!("cannot serve --metrics on {addr}"), e);
        let listener = std::net::TcpListener::bind(addr).map_err(cant)?;
        let local = listener.local_addr().map_err(cant)?;
        let state = web::Data::new(State {
            supervisor,
            metrics: config.metrics,
        });
        let server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .wrap(from_fn(trace_request))
                // Resources answer other methods with 405: the server is read-only.
                .service(web::resource("/").get(page))
                .service(web::resource("/metrics").get(metrics))
                .service(web::resource("/status.json").get(status_json))
                .default_service(web::to(not_found))
        })
        .workers(1)
        // The daemon handles signals; the server stops with it.
        .disable_signals()
        .shutdown_timeout(1)
        .listen(listener)
        .map_err(cant)?
        .run();
        let handle = server.handle();
        let arbiter = Arbiter::new();
        let spawned = arbiter.spawn(async move {
            if let Err(e) = server.await {
                tracing::error!(error = %e, "the metrics server stopped");
            }
        });
        if !spawned {
            return Err(Error::os(
                "cannot start the metrics server's thread",
                std::io::Error::other("arbiter stopped"),
            ));
        }
        logger.log(format_args!(
            "metrics on http://{local}/metrics, status page on http://{local}/"
        ));
        Ok(Self { handle, arbiter })
    }

    /// Stops accepting and serving (the listener closes on the server's own
    /// thread).
    pub(crate) fn stop(self) {
        // The command is sent at once; nobody needs to wait for it here.
        drop(self.handle.stop(false));
        self.arbiter.stop();
    }
}

/// Each request in a span with its method and path; a debug event when done.
async fn trace_request(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> std::result::Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let span = tracing::debug_span!("http_request", method = %req.method(), path = %req.path());
    let started = Instant::now();
    let response = next.call(req).await;
    span.in_scope(|| {
        let micros = started.elapsed().as_micros() as u64;
        match &response {
            Ok(r) => tracing::debug!(status = r.status().as_u16(), micros, "served"),
            Err(e) => tracing::debug!(error = %e, micros, "failed"),
        }
    });
    response
}

async fn stats(state: &State) -> std::result::Result<Stats, HttpResponse> {
    state
        .supervisor
        .send(GetStats)
        .await
        .map_err(|_| HttpResponse::ServiceUnavailable().body("the daemon is stopping\n"))
}

async fn metrics(state: web::Data<State>) -> HttpResponse {
    let stats = match stats(&state).await {
        Ok(s) => s,
        Err(response) => return response,
    };
    match state.metrics.encode(stats) {
        Ok(text) => HttpResponse::Ok().content_type(CONTENT_TYPE).body(text),
        Err(_) => HttpResponse::InternalServerError().body("cannot encode the metrics\n"),
    }
}

/// The document `status --json` prints: the same [`Stats`] from the same
/// [`GetStats`], serialized the same way.
async fn status_json(state: web::Data<State>) -> HttpResponse {
    let stats = match stats(&state).await {
        Ok(s) => s,
        Err(response) => return response,
    };
    match serde_json::to_string_pretty(&stats) {
        Ok(mut json) => {
            json.push('\n');
            HttpResponse::Ok()
                .content_type("application/json")
                .insert_header((header::CACHE_CONTROL, "no-store"))
                .body(json)
        }
        Err(e) => HttpResponse::InternalServerError().body(format!("{e}\n")),
    }
}

async fn page(state: web::Data<State>) -> HttpResponse {
    match stats(&state).await {
        Ok(stats) => HttpResponse::Ok()
            .content_type("text/html; charset=utf-8")
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .body(state.metrics.page(&stats)),
        Err(response) => response,
    }
}

async fn not_found() -> HttpResponse {
    HttpResponse::NotFound().body("not found: try /, /metrics or /status.json\n")
}
