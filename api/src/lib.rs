//! The leaderboard HTTP API: JSON over the read models of the active
//! generation, plus `/healthz` and Prometheus `/metrics`.
//!
//! Reads go through `read_model::read`; this crate only parses
//! parameters, maps answers to HTTP and keeps a short-lived page cache for
//! the hot leaderboard pages. It never writes to Redis.

mod cache;
mod params;

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use fred::clients::Pool;
use fred::interfaces::ClientLike;
use metrics_exporter_prometheus::PrometheusHandle;
use params::{ParamError, QueryPairs};
use read_model::read::{self, BoardEntry};
use read_model::ReadModelKeys;
use rps_core::{Config, Keys, MatchState, PlayerStats, SeasonId};
use serde_json::{json, Value as Json};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Counter, labels `route`, `status`: requests answered.
pub const REQUESTS: &str = "rps_api_requests_total";
/// Histogram, label `route`: time to answer, seconds.
pub const REQUEST_SECONDS: &str = "rps_api_request_seconds";

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("redis: {0}")]
    Redis(#[from] fred::error::Error),
    #[error("cannot listen on {bind}: {source}")]
    Bind {
        bind: String,
        #[source]
        source: std::io::Error,
    },
    #[error("http server: {0}")]
    Serve(#[source] std::io::Error),
}

/// Tunables of the API that are not part of `rps.toml`.
#[derive(Debug, Clone)]
pub struct ApiOptions {
    /// Redis connections shared by all requests.
    pub pool_size: usize,
    /// How long a leaderboard page may be served from memory. Bounds the
    /// staleness it adds; zero disables the cache.
    pub page_cache_ttl: Duration,
}

impl Default for ApiOptions {
    fn default() -> Self {
        ApiOptions {
            pool_size: 4,
            page_cache_ttl: Duration::from_millis(100),
        }
    }
}

struct AppState {
    pool: Pool,
    keys: Keys,
    shard_count: u16,
    metrics: PrometheusHandle,
    pages: cache::PageCache,
}

type Shared = Arc<AppState>;

/// Serves on `config.api.bind` until `shutdown` is cancelled.
pub async fn run(
    config: Arc<Config>,
    metrics: PrometheusHandle,
    shutdown: CancellationToken,
) -> Result<(), ApiError> {
    let listener = tokio::net::TcpListener::bind(&config.api.bind)
        .await
        .map_err(|source| ApiError::Bind {
            bind: config.api.bind.clone(),
            source,
        })?;
    serve(listener, config, metrics, ApiOptions::default(), shutdown).await
}

/// Serves on an already bound listener (tests bind port 0).
pub async fn serve(
    listener: tokio::net::TcpListener,
    config: Arc<Config>,
    metrics: PrometheusHandle,
    options: ApiOptions,
    shutdown: CancellationToken,
) -> Result<(), ApiError> {
    let app = router(&config, metrics, &options).await?;
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "leaderboard API listening");
    }
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
        .map_err(ApiError::Serve)
}

/// The routes, connected to Redis.
pub async fn router(
    config: &Config,
    metrics: PrometheusHandle,
    options: &ApiOptions,
) -> Result<Router, ApiError> {
    let pool = rps_core::redis_client::ClientPolicy::read_only()
        .builder(&config.redis.url)?
        .build_pool(options.pool_size.max(1))?;
    pool.init().await?;
    let state = Arc::new(AppState {
        pool,
        keys: Keys::new(&config.redis.prefix),
        shard_count: config.shard_count,
        metrics,
        pages: cache::PageCache::new(options.page_cache_ttl),
    });
    Ok(Router::new()
        .route("/v1/leaderboard", get(leaderboard))
        .route("/v1/players/{id}", get(player))
        .route("/v1/players/{id}/around", get(around))
        .route("/v1/matches/{id}", get(match_state))
        .route("/v1/status", get(status))
        .route("/healthz", get(healthz))
        .route("/metrics", get(render_metrics))
        .with_state(state))
}

/// What a handler fails with; every variant is a JSON answer.
enum Failure {
    BadParam(ParamError),
    NotFound(String),
    Unavailable(String),
    Redis(fred::error::Error),
}

impl From<ParamError> for Failure {
    fn from(e: ParamError) -> Self {
        Failure::BadParam(e)
    }
}

impl From<fred::error::Error> for Failure {
    fn from(e: fred::error::Error) -> Self {
        Failure::Redis(e)
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let (status, body) = match self {
            Failure::BadParam(e) => (
                StatusCode::BAD_REQUEST,
                json!({"error": e.message, "parameter": e.parameter}),
            ),
            Failure::NotFound(what) => (StatusCode::NOT_FOUND, json!({"error": what})),
            Failure::Unavailable(why) => (StatusCode::SERVICE_UNAVAILABLE, json!({"error": why})),
            Failure::Redis(e) => {
                tracing::warn!(error = %e, "redis error while answering");
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    json!({"error": "read models temporarily unavailable"}),
                )
            }
        };
        (status, axum::Json(body)).into_response()
    }
}

fn observe(route: &'static str, started: Instant, status: StatusCode) {
    metrics::histogram!(REQUEST_SECONDS, "route" => route).record(started.elapsed().as_secs_f64());
    metrics::counter!(REQUESTS, "route" => route, "status" => status.as_str().to_owned())
        .increment(1);
}

async fn finish(route: &'static str, started: Instant, r: Result<Response, Failure>) -> Response {
    let resp = match r {
        Ok(r) => r,
        Err(f) => f.into_response(),
    };
    observe(route, started, resp.status());
    resp
}

async fn generation(state: &AppState) -> Result<u64, Failure> {
    let client = state.pool.next();
    match read_model::generation::active(client, &state.keys).await {
        Ok(Some(g)) => Ok(g),
        Ok(None) => Err(Failure::Unavailable(format!(
            "read models not available: `{}` is not set (the projector has not started, or Redis lost its state and a replay is needed)",
            state.keys.generation()
        ))),
        Err(read_model::generation::GenerationError::Redis(e)) => Err(Failure::Redis(e)),
        Err(e) => Err(Failure::Unavailable(e.to_string())),
    }
}

fn stats_json(s: &PlayerStats) -> serde_json::Map<String, Json> {
    let mut m = serde_json::Map::new();
    m.insert("points".into(), s.points().into());
    m.insert("wins".into(), s.wins.into());
    m.insert("draws".into(), s.draws.into());
    m.insert("losses".into(), s.losses.into());
    m.insert("forfeits".into(), s.forfeits.into());
    m.insert("matches".into(), s.matches.into());
    m
}

fn entry_json(e: &BoardEntry) -> Json {
    let mut m = serde_json::Map::new();
    m.insert("rank".into(), e.rank.into());
    m.insert("player_id".into(), e.player_id.into());
    m.extend(stats_json(&e.stats));
    Json::Object(m)
}

fn season_json(s: Option<SeasonId>) -> Json {
    s.map_or(Json::Null, |s| Json::String(s.to_string()))
}

fn json_response(body: Vec<u8>) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

async fn leaderboard(State(st): State<Shared>, q: QueryPairs) -> Response {
    let started = Instant::now();
    let r = async {
        let q = q.0?;
        let season = params::season(&q)?;
        let offset = params::uint(&q, "offset", 0, u64::MAX / 2)?;
        let limit = params::uint(&q, "limit", 100, 1000)?;
        if limit == 0 {
            return Err(ParamError::new("limit", "`limit` must be between 1 and 1000").into());
        }
        let gen = generation(&st).await?;
        let key = (gen, season, offset, limit);
        if let Some(body) = st.pages.get(&key) {
            return Ok(json_response(body.to_vec()));
        }
        let gk = st.keys.generation_keys(gen);
        let entries = read::leaderboard(st.pool.next(), &gk, season, offset, limit).await?;
        let body = json!({
            "season": season_json(season),
            "entries": entries.iter().map(entry_json).collect::<Vec<_>>(),
        });
        let bytes = serde_json::to_vec(&body).unwrap_or_default();
        st.pages.put(key, bytes.clone());
        Ok(json_response(bytes))
    }
    .await;
    finish("leaderboard", started, r).await
}

async fn player(State(st): State<Shared>, Path(id): Path<String>, q: QueryPairs) -> Response {
    let started = Instant::now();
    let r = async {
        let q = q.0?;
        let id = params::id(&id, "id")?;
        let season = params::season(&q)?;
        let gen = generation(&st).await?;
        let gk = st.keys.generation_keys(gen);
        let client = st.pool.next();
        let (stats, rank) = tokio::try_join!(
            read::player_stats(client, &gk, id, season),
            read::rank(client, &gk, id, season),
        )?;
        let (Some(stats), Some(rank)) = (stats, rank) else {
            return Err(Failure::NotFound(format!(
                "player {id} has no counted match{}",
                season
                    .map(|s| format!(" in season {s}"))
                    .unwrap_or_default()
            )));
        };
        let mut m = serde_json::Map::new();
        m.insert("player_id".into(), id.into());
        m.insert("season".into(), season_json(season));
        m.insert("rank".into(), rank.into());
        m.extend(stats_json(&stats));
        Ok(axum::Json(Json::Object(m)).into_response())
    }
    .await;
    finish("player", started, r).await
}

async fn around(State(st): State<Shared>, Path(id): Path<String>, q: QueryPairs) -> Response {
    let started = Instant::now();
    let r = async {
        let q = q.0?;
        let id = params::id(&id, "id")?;
        let season = params::season(&q)?;
        let radius = params::uint(&q, "radius", 5, 100)?;
        let gen = generation(&st).await?;
        let gk = st.keys.generation_keys(gen);
        let Some(entries) = read::around(st.pool.next(), &gk, id, season, radius).await? else {
            return Err(Failure::NotFound(format!(
                "player {id} is on no board{}",
                season
                    .map(|s| format!(" of season {s}"))
                    .unwrap_or_default()
            )));
        };
        Ok(axum::Json(json!({
            "season": season_json(season),
            "player_id": id,
            "radius": radius,
            "entries": entries.iter().map(entry_json).collect::<Vec<_>>(),
        }))
        .into_response())
    }
    .await;
    finish("around", started, r).await
}

fn match_json(m: &MatchState) -> Json {
    let ts = |t: rps_core::Timestamp| Json::String(t.to_rfc3339());
    json!({
        "match_id": m.match_id,
        "status": m.status.as_str(),
        "version": m.version,
        "season": m.season.to_string(),
        "players": {"a": m.player_a, "b": m.player_b},
        "gestures": {
            "a": m.gesture_a.map(|g| g.as_str()),
            "b": m.gesture_b.map(|g| g.as_str()),
        },
        "result": if m.status.is_over() {
            json!({
                "outcome": m.result.outcome.map(|o| o.as_str()),
                "winner": m.result.winner,
                "loser": m.result.loser,
                "forfeit_a": m.result.forfeit_a,
                "forfeit_b": m.result.forfeit_b,
            })
        } else {
            Json::Null
        },
        "deadline_at": m.deadline_at.map_or(Json::Null, ts),
        "started_at": ts(m.started_at),
        "updated_at": ts(m.updated_at),
    })
}

async fn match_state(State(st): State<Shared>, Path(id): Path<String>) -> Response {
    let started = Instant::now();
    let r = async {
        let id = params::id(&id, "id")?;
        let gen = generation(&st).await?;
        let gk = st.keys.generation_keys(gen);
        match read::match_state(st.pool.next(), &gk, id).await? {
            Some(m) => Ok(axum::Json(match_json(&m)).into_response()),
            None => Err(Failure::NotFound(format!("match {id} has no valid event"))),
        }
    }
    .await;
    finish("match", started, r).await
}

async fn status(State(st): State<Shared>) -> Response {
    let started = Instant::now();
    let r = async {
        let gen = generation(&st).await?;
        let shards = read::progress_with_lag(st.pool.next(), &st.keys, gen, st.shard_count).await?;
        let ts = |t: Option<rps_core::Timestamp>| t.map_or(Json::Null, |t| t.to_rfc3339().into());
        let shards: Vec<Json> = shards
            .iter()
            .map(|p| {
                json!({
                    "shard": p.shard,
                    "last_applied_id": p.last_id,
                    "last_event_at": ts(p.event_at),
                    "applied_at": ts(p.applied_at),
                    "stream_last_id": p.stream_last_id,
                    "lag_entries": p.lag_entries,
                    "lag_seconds": p.lag_seconds,
                })
            })
            .collect();
        Ok(axum::Json(json!({"generation": gen, "shards": shards})).into_response())
    }
    .await;
    finish("status", started, r).await
}

async fn healthz(State(st): State<Shared>) -> Response {
    let started = Instant::now();
    let r = match st.pool.next().ping::<String>(None).await {
        Ok(_) => Ok(axum::Json(json!({"status": "ok"})).into_response()),
        Err(e) => Err(Failure::Redis(e)),
    };
    finish("healthz", started, r).await
}

async fn render_metrics(State(st): State<Shared>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        st.metrics.render(),
    )
        .into_response()
}
