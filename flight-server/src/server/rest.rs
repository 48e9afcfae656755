//! The REST API of `ferris-sql serve` (axum): deploy, list, status, metrics, stop and delete
//! jobs; `/health`; `/metrics` for Prometheus; the OpenAPI document at `/api/openapi.json`.
//! With `FERRIS_AUTH_TOKEN` set, everything but `/health` demands `Authorization: Bearer <token>`.
//!
//! ```text
//! curl -X POST --data-binary @job.sql http://127.0.0.1:8080/api/jobs
//! curl http://127.0.0.1:8080/api/jobs/big_orders/status
//! ```

use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::{json, Value};

use super::jobs::{ApiError, Registry};

/// What every handler shares.
pub struct AppState {
    /// The jobs.
    pub registry: Arc<Registry>,
    /// Renders `/metrics`.
    pub prometheus: PrometheusHandle,
    /// The bearer token demanded, if any.
    pub token: Option<String>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match &self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) | ApiError::StreamInUse(..) => StatusCode::CONFLICT,
            ApiError::TooManyJobs(_) => StatusCode::TOO_MANY_REQUESTS,
        };
        (status, Json(json!({ "error": self.to_string() }))).into_response()
    }
}

/// The router.
pub fn router(state: Arc<AppState>) -> Router {
    let api = Router::new()
        .route("/api/jobs", get(list).post(deploy))
        .route("/api/jobs/{name}", get(status).delete(delete))
        .route("/api/jobs/{name}/status", get(status))
        .route("/api/jobs/{name}/metrics", get(job_metrics))
        .route("/api/jobs/{name}/stop", post(stop))
        .route("/api/openapi.json", get(openapi))
        .route("/metrics", get(prometheus))
        .route_layer(middleware::from_fn_with_state(Arc::clone(&state), auth));
    Router::new().route("/health", get(health)).merge(api).with_state(state)
}

async fn auth(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    if let Some(token) = &state.token {
        let given = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).unwrap_or("");
        if !token_matches(given, token) {
            return (StatusCode::UNAUTHORIZED, Json(json!({"error": "missing or wrong bearer token (Authorization: Bearer <FERRIS_AUTH_TOKEN>)"})))
                .into_response();
        }
    }
    next.run(req).await
}

/// True when the `authorization` header `given` is `Bearer <token>` (compared in constant time).
pub fn token_matches(given: &str, token: &str) -> bool {
    let Some(given) = given.strip_prefix("Bearer ") else { return false };
    given.len() == token.len() && given.bytes().zip(token.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}

async fn health(State(state): State<Arc<AppState>>) -> Json<Value> {
    Json(json!({ "status": "ok", "jobs": state.registry.list().len() }))
}

async fn list(State(state): State<Arc<AppState>>) -> Json<Value> {
    Json(Value::Array(state.registry.list().iter().map(|j| j.summary()).collect()))
}

/// The body is the SQL text, or JSON `{"sql": "…"}`.
async fn deploy(State(state): State<Arc<AppState>>, headers: HeaderMap, body: String) -> Result<(StatusCode, Json<Value>), ApiError> {
    let is_json = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.starts_with("application/json"));
    let sql = if is_json {
        let v: Value = serde_json::from_str(&body).map_err(|e| ApiError::BadRequest(format!("the body is not JSON: {e}")))?;
        v["sql"].as_str().ok_or_else(|| ApiError::BadRequest("the JSON body needs a string field 'sql'".into()))?.to_string()
    } else {
        body
    };
    let names = state.registry.deploy(&sql).await?;
    Ok((StatusCode::CREATED, Json(json!({ "deployed": names }))))
}

async fn status(State(state): State<Arc<AppState>>, Path(name): Path<String>) -> Result<Json<Value>, ApiError> {
    Ok(Json(state.registry.get(&name)?.status()))
}

async fn job_metrics(State(state): State<Arc<AppState>>, Path(name): Path<String>) -> Result<Json<Value>, ApiError> {
    Ok(Json(state.registry.get(&name)?.metrics()))
}

async fn stop(State(state): State<Arc<AppState>>, Path(name): Path<String>) -> Result<Json<Value>, ApiError> {
    let job = state.registry.stop(&name)?;
    Ok(Json(json!({ "name": job.name, "status": "Stopping" })))
}

async fn delete(State(state): State<Arc<AppState>>, Path(name): Path<String>) -> Result<Json<Value>, ApiError> {
    state.registry.delete(&name)?;
    Ok(Json(json!({ "deleted": name })))
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], include_str!("openapi.json")).into_response()
}

async fn prometheus(State(state): State<Arc<AppState>>) -> Response {
    if !state.registry.metrics_enabled() {
        return (StatusCode::NOT_FOUND, Json(json!({ "error": "metrics are off: the profile sets metrics_enabled: false" }))).into_response();
    }
    let text = super::prometheus::render(&state.prometheus, &state.registry);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}
