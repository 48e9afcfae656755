//! `ferris-sql serve`: the job server. Hosts many jobs at once (`FERRIS_MAX_JOBS`, default 50)
//! behind a REST API with Prometheus metrics, and serves their output over Arrow Flight (live
//! streams) and Flight SQL (queries over jobs' latest results and the tables they read).
//!
//! ```text
//! ferris-sql serve --http-port 8080 --flight-port 50051
//! ferris-sql deploy configs/ecommerce_pipeline.sql --server http://127.0.0.1:8080
//! ferris-sql jobs --server http://127.0.0.1:8080
//! ```

pub mod catalog;
pub mod client;
pub mod flight;
pub mod jobs;
pub mod prometheus;
pub mod rest;

use std::net::SocketAddr;
use std::sync::Arc;

use arrow_flight::flight_service_server::FlightServiceServer;
use ferris_engine::config::{ConfigContext, Limits};
use tracing::{info, warn};

/// Runs the server until Ctrl-C; then stops every job (sinks flushed).
pub async fn serve(ctx: ConfigContext, limits: Limits, http_port: u16, flight_port: u16, bind: Option<String>) -> Result<(), String> {
    let token = std::env::var("FERRIS_AUTH_TOKEN").ok().filter(|t| !t.is_empty());
    let host = match (&bind, &token) {
        (Some(b), _) => b.clone(),
        (None, Some(_)) => "0.0.0.0".to_string(),
        (None, None) => {
            info!("no FERRIS_AUTH_TOKEN: binding to 127.0.0.1 only (set a token to accept other hosts)");
            "127.0.0.1".to_string()
        }
    };
    if token.is_none() && host != "127.0.0.1" && host != "localhost" {
        warn!("serving on {host} without authentication: set FERRIS_AUTH_TOKEN");
    }
    let prometheus = prometheus::install()?;
    let catalog = Arc::new(catalog::Catalog::new(limits.max_memory_mb)?);
    let registry = Arc::new(jobs::Registry::new(ctx, limits, Arc::clone(&catalog)));
    let state = Arc::new(rest::AppState { registry: Arc::clone(&registry), prometheus, token: token.clone() });
    let addr: SocketAddr = format!("{host}:{http_port}").parse().map_err(|e| format!("bad address {host}:{http_port}: {e}"))?;
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    info!("REST API on http://{} (jobs: /api/jobs, metrics: /metrics, OpenAPI: /api/openapi.json)", listener.local_addr().map_err(|e| e.to_string())?);
    let flight_addr: SocketAddr = format!("{host}:{flight_port}").parse().map_err(|e| format!("bad address {host}:{flight_port}: {e}"))?;
    let flight_listener = tokio::net::TcpListener::bind(flight_addr).await.map_err(|e| format!("cannot listen on {flight_addr}: {e}"))?;
    info!("Arrow Flight and Flight SQL on grpc://{} (DoGet a job's name for its live output)", flight_listener.local_addr().map_err(|e| e.to_string())?);
    let service = FlightServiceServer::with_interceptor(flight::FerrisFlight::new(catalog, registry), flight::check_token(token));
    tokio::spawn(async move {
        let incoming = tonic::transport::server::TcpIncoming::from(flight_listener).with_nodelay(Some(true));
        if let Err(e) = tonic::transport::Server::builder().add_service(service).serve_with_incoming(incoming).await {
            warn!("the Flight server stopped: {e}");
        }
    });
    let shutdown_state = Arc::clone(&state);
    axum::serve(listener, rest::router(state))
        .with_graceful_shutdown(async move {
            let _ = tokio::signal::ctrl_c().await;
            info!("stopping every job");
            shutdown_state.registry.stop_all();
            // Give the jobs a moment to flush their sinks.
            for _ in 0..50 {
                if shutdown_state.registry.list().iter().all(|j| !matches!(j.state(), jobs::JobState::Running | jobs::JobState::Stopping)) {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        })
        .await
        .map_err(|e| e.to_string())
}
