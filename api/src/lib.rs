//! The leaderboard HTTP API: JSON over the read models of the active
//! generation, plus `/healthz`, Prometheus `/metrics` and the saga
//! dashboard (`/dashboard`, polling `/v1/dashboard`).
//!
//! Reads go through `read_model::read`; this crate only parses
//! parameters, maps answers to HTTP and keeps a short-lived page cache for
//! the hot leaderboard pages. It never writes to Redis.

mod cache;
pub mod dashboard;
mod params;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, MethodRouter};
use axum::Router;
use fred::clients::Pool;
use fred::interfaces::ClientLike;
use metrics_exporter_prometheus::PrometheusHandle;
use params::{ParamError, PathId, QueryPairs};
use read_model::read::{self, BoardEntry};
use read_model::ReadModelKeys;
use rps_core::{Config, Keys, MatchState, PlayerStats, SeasonId};
use serde_json::{json, Value as Json};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tower_http::cors::{AllowOrigin, CorsLayer};

pub mod metric;
pub use metric::{REQUESTS, REQUEST_SECONDS};

/// The OpenAPI 3.1 description of every route, served at `/openapi.json`.
/// Kept as a file rather than generated so the contract is reviewed as
/// such; a test holds it to the route table.
pub const OPENAPI_JSON: &str = include_str!("../openapi.json");

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
    #[error("api.cors_allow_origins: {0}")]
    Cors(String),
}

/// Tunables of the API that are not part of `rps.toml`.
#[derive(Debug, Clone)]
pub struct ApiOptions {
    /// Redis connections shared by all requests.
    pub pool_size: usize,
    /// How long a leaderboard page may be served from memory. Bounds the
    /// staleness it adds; zero disables the cache.
    pub page_cache_ttl: Duration,
    /// How often the dashboard samples Redis (`/v1/dashboard`).
    pub dashboard_interval: Duration,
    /// How much dashboard history the process keeps in memory.
    pub dashboard_history: Duration,
}

impl Default for ApiOptions {
    fn default() -> Self {
        ApiOptions {
            pool_size: 4,
            page_cache_ttl: Duration::from_millis(100),
            dashboard_interval: Duration::from_secs(2),
            dashboard_history: Duration::from_secs(300),
        }
    }
}

struct AppState {
    pool: Pool,
    keys: Keys,
    shard_count: u16,
    metrics: PrometheusHandle,
    pages: cache::PageCache,
    /// Topology names for the dashboard: every server with its shards, and
    /// the server of each shard.
    servers: Vec<(String, Vec<u16>)>,
    shard_server: Vec<String>,
    dashboard: dashboard::Dashboard,
    /// The last generation whose recorded partition count was found equal
    /// to `redis.partitions` (0: none yet).
    layout_checked: std::sync::atomic::AtomicU64,
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

/// One route of the API.
struct Route {
    path: &'static str,
    /// What the contract test compares with the document; the handler
    /// itself is already bound to it.
    #[cfg_attr(not(test), allow(dead_code))]
    method: Method,
    /// Its `route` label in the metrics.
    name: &'static str,
    handler: MethodRouter<Shared>,
}

impl Route {
    fn get<H, T>(path: &'static str, name: &'static str, handler: H) -> Route
    where
        H: axum::handler::Handler<T, Shared>,
        T: 'static,
    {
        Route {
            path,
            method: Method::GET,
            name,
            handler: get(handler),
        }
    }
}

/// Every route the API serves. The router is built from this table only,
/// and a test compares it with `openapi.json`, so a route cannot be added
/// without being documented.
fn routes() -> Vec<Route> {
    vec![
        Route::get("/v1/leaderboard", "leaderboard", leaderboard),
        Route::get("/v1/players/{id}", "player", player),
        Route::get("/v1/players/{id}/around", "around", around),
        Route::get("/v1/matches/{id}", "match", match_state),
        Route::get("/v1/status", "status", status),
        Route::get("/v1/dashboard", "dashboard", dashboard::snapshot),
        Route::get("/dashboard", "dashboard_page", dashboard::page),
        Route::get("/dashboard/{asset}", "dashboard_asset", dashboard::asset),
        Route::get("/healthz", "healthz", healthz),
        Route::get("/metrics", "metrics", render_metrics),
        Route::get("/openapi.json", "openapi", openapi),
    ]
}

/// The routes, connected to Redis.
pub async fn router(
    config: &Config,
    metrics: PrometheusHandle,
    options: &ApiOptions,
) -> Result<Router, ApiError> {
    let cors = cors_layer(&config.api.cors_allow_origins)?;
    let pool = rps_core::redis_client::ClientPolicy::read_only()
        .builder(&config.redis)?
        .build_pool(options.pool_size.max(1))?;
    pool.init().await?;
    let state = Arc::new(AppState {
        pool,
        keys: config.keys(),
        shard_count: config.shard_count,
        metrics,
        pages: cache::PageCache::new(options.page_cache_ttl),
        servers: config
            .servers
            .iter()
            .map(|s| (s.name.clone(), s.shards.clone()))
            .collect(),
        shard_server: (0..config.shard_count)
            .map(|shard| config.server_of(shard).name.clone())
            .collect(),
        dashboard: dashboard::Dashboard::new(options.dashboard_interval, options.dashboard_history),
        layout_checked: Default::default(),
    });
    dashboard::spawn_sampler(&state);
    let limit = Duration::from_millis(config.api.request_timeout_ms);
    Ok(assemble(routes(), state, limit, cors))
}

fn assemble(routes: Vec<Route>, state: Shared, limit: Duration, cors: Option<CorsLayer>) -> Router {
    let mut app = Router::new();
    for route in routes {
        let name = route.name;
        // A route layer, not a router layer: it runs after routing, so the
        // fallbacks are never timed and the route's name is known here.
        let handler =
            route
                .handler
                .route_layer(middleware::from_fn(move |req: Request, next: Next| {
                    with_timeout(name, limit, req, next)
                }));
        app = app.route(route.path, handler);
    }
    // Method fallbacks attach to the routes already added, so they come last.
    let app = app
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(no_route)
        .with_state(state);
    // Outermost, so that preflights are answered before routing (which
    // would say 405) and the error answers carry the headers too.
    match cors {
        Some(cors) => app.layer(cors),
        None => app,
    }
}

/// `None` when no origin is configured: no CORS header is ever sent.
fn cors_layer(origins: &[String]) -> Result<Option<CorsLayer>, ApiError> {
    if origins.is_empty() {
        return Ok(None);
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        let list = origins
            .iter()
            .map(|o| valid_origin(o).map_err(ApiError::Cors))
            .collect::<Result<Vec<_>, _>>()?;
        AllowOrigin::list(list)
    };
    Ok(Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([Method::GET, Method::HEAD])
            .max_age(Duration::from_secs(3600)),
    ))
}

/// Browsers send `Origin` as `scheme://host[:port]` exactly; anything else
/// in the list (a trailing slash, a path) would never match, so it is
/// refused at start-up instead of silently denying every request.
fn valid_origin(o: &str) -> Result<HeaderValue, String> {
    let rest = o
        .strip_prefix("https://")
        .or_else(|| o.strip_prefix("http://"));
    let ok = rest.is_some_and(|host| {
        !host.is_empty()
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b))
    });
    if !ok {
        return Err(format!(
            "{o:?} is not an origin: expected `*` or scheme://host[:port] (http or https, no path, no trailing slash)"
        ));
    }
    HeaderValue::from_str(o).map_err(|e| format!("{o:?}: {e}"))
}

/// Answers 504 when the handler has not finished within `limit` (zero: no
/// limit). Dropping the handler's future abandons its Redis reads; their
/// answers are discarded when they come.
async fn with_timeout(name: &'static str, limit: Duration, req: Request, next: Next) -> Response {
    if limit.is_zero() {
        return next.run(req).await;
    }
    let started = Instant::now();
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(resp) => resp,
        Err(_) => {
            let resp = Failure::Timeout(limit).into_response();
            observe(name, started, resp.status());
            resp
        }
    }
}

/// The path as echoed in an error: a long one is cut, so a client cannot
/// make the answer arbitrarily large.
fn echoed(uri: &Uri) -> String {
    const MAX: usize = 200;
    let path = uri.path();
    if path.len() <= MAX {
        return path.to_string();
    }
    let cut = (0..=MAX)
        .rev()
        .find(|&i| path.is_char_boundary(i))
        .unwrap_or(0);
    format!("{}…", &path[..cut])
}

async fn no_route(method: Method, uri: Uri) -> Response {
    let resp = Failure::NoRoute(format!("no route for {method} {}", echoed(&uri))).into_response();
    observe("unmatched", Instant::now(), resp.status());
    resp
}

/// The router adds the `Allow` header to this answer.
async fn method_not_allowed(method: Method, uri: Uri) -> Response {
    let resp = Failure::MethodNotAllowed(format!(
        "method {method} is not allowed on {} (see the Allow header)",
        echoed(&uri)
    ))
    .into_response();
    observe("unmatched", Instant::now(), resp.status());
    resp
}

/// What a handler fails with; every variant is a JSON answer of the same
/// shape: `{"error": "…"}`, plus `"parameter"` for a bad parameter.
enum Failure {
    BadParam(ParamError),
    NotFound(String),
    NoRoute(String),
    MethodNotAllowed(String),
    Unavailable(String),
    Redis(fred::error::Error),
    Timeout(Duration),
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
            Failure::NotFound(what) | Failure::NoRoute(what) => {
                (StatusCode::NOT_FOUND, json!({"error": what}))
            }
            Failure::MethodNotAllowed(what) => {
                (StatusCode::METHOD_NOT_ALLOWED, json!({"error": what}))
            }
            Failure::Unavailable(why) => (StatusCode::SERVICE_UNAVAILABLE, json!({"error": why})),
            Failure::Redis(e) => {
                tracing::warn!(error = %e, "redis error while answering");
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    json!({"error": "read models temporarily unavailable"}),
                )
            }
            Failure::Timeout(limit) => {
                tracing::warn!(limit_ms = limit.as_millis() as u64, "request timed out");
                (
                    StatusCode::GATEWAY_TIMEOUT,
                    json!({"error": format!("no answer within {} ms (api.request_timeout_ms)", limit.as_millis())}),
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
        Ok(Some(g)) => {
            check_layout(state, g).await?;
            Ok(g)
        }
        Ok(None) => Err(Failure::Unavailable(format!(
            "read models not available: `{}` is not set (the projector has not started, or Redis lost its state and a replay is needed)",
            state.keys.generation()
        ))),
        Err(read_model::generation::GenerationError::Redis(e)) => Err(Failure::Redis(e)),
        Err(e) => Err(Failure::Unavailable(e.to_string())),
    }
}

/// Refuses to read a generation written with another partition count: its
/// players would be looked for in the wrong partitions. Checked once per
/// generation (a generation with nothing written yet is checked again).
async fn check_layout(state: &AppState, g: u64) -> Result<(), Failure> {
    use std::sync::atomic::Ordering;
    if state.layout_checked.load(Ordering::Relaxed) == g {
        return Ok(());
    }
    let gk = state.keys.generation_keys(g);
    match read::recorded_partitions(state.pool.next(), &gk).await? {
        Some(n) if n != gk.partitions() => Err(Failure::Unavailable(format!(
            "generation {g} spreads the players over {n} partitions, but `redis.partitions` is {}: set it to {n}",
            gk.partitions()
        ))),
        Some(_) => {
            state.layout_checked.store(g, Ordering::Relaxed);
            Ok(())
        }
        None => Ok(()),
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
        let offset = params::uint(&q, "offset", 0, 0, params::MAX_OFFSET)?;
        let limit = params::uint(&q, "limit", 100, 1, params::MAX_LIMIT)?;
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

async fn player(State(st): State<Shared>, id: PathId, q: QueryPairs) -> Response {
    let started = Instant::now();
    let r = async {
        let q = q.0?;
        let id = id.0?;
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

async fn around(State(st): State<Shared>, id: PathId, q: QueryPairs) -> Response {
    let started = Instant::now();
    let r = async {
        let q = q.0?;
        let id = id.0?;
        let season = params::season(&q)?;
        let radius = params::uint(&q, "radius", 5, 0, 100)?;
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

async fn match_state(State(st): State<Shared>, id: PathId) -> Response {
    let started = Instant::now();
    let r = async {
        let id = id.0?;
        let gen = generation(&st).await?;
        let gk = st.keys.generation_keys(gen);
        match read::find_match(st.pool.next(), &gk, st.shard_count, id).await? {
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

async fn openapi() -> Response {
    let started = Instant::now();
    let resp = ([(header::CONTENT_TYPE, "application/json")], OPENAPI_JSON).into_response();
    observe("openapi", started, resp.status());
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn document() -> Json {
        serde_json::from_str(OPENAPI_JSON).expect("openapi.json is JSON")
    }

    const METHODS: [&str; 8] = [
        "get", "put", "post", "delete", "options", "head", "patch", "trace",
    ];

    #[test]
    fn the_document_describes_exactly_the_routes() {
        let doc = document();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
        let documented: BTreeSet<(String, String)> = doc["paths"]
            .as_object()
            .expect("paths")
            .iter()
            .flat_map(|(path, item)| {
                item.as_object()
                    .expect("path item")
                    .keys()
                    .filter(|k| METHODS.contains(&k.as_str()))
                    .map(move |m| (path.clone(), m.to_uppercase()))
            })
            .collect();
        let served: BTreeSet<(String, String)> = routes()
            .iter()
            .map(|r| (r.path.to_string(), r.method.as_str().to_string()))
            .collect();
        let undocumented: Vec<_> = served.difference(&documented).collect();
        let unserved: Vec<_> = documented.difference(&served).collect();
        assert!(
            undocumented.is_empty() && unserved.is_empty(),
            "api/openapi.json is out of date: served but undocumented {undocumented:?}, documented but not served {unserved:?}"
        );
        let names: BTreeSet<_> = routes().iter().map(|r| r.name).collect();
        assert_eq!(names.len(), routes().len(), "metric names are unique");
    }

    #[test]
    fn every_reference_resolves() {
        fn walk(doc: &Json, v: &Json, refs: &mut usize) {
            match v {
                Json::Object(m) => {
                    if let Some(Json::String(r)) = m.get("$ref") {
                        let pointer = r.strip_prefix('#').expect("local reference");
                        assert!(doc.pointer(pointer).is_some(), "dangling {r}");
                        *refs += 1;
                    }
                    m.values().for_each(|v| walk(doc, v, refs));
                }
                Json::Array(a) => a.iter().for_each(|v| walk(doc, v, refs)),
                _ => {}
            }
        }
        let doc = document();
        let mut refs = 0;
        walk(&doc, &doc, &mut refs);
        assert!(refs > 10);
    }

    /// The real route table (plus a slow route) over a pool that never
    /// connects: enough for everything answered before the first read.
    fn offline(limit: Duration, cors: &[String], extra: Vec<Route>) -> Router {
        let pool = fred::types::Builder::default_centralized()
            .build_pool(1)
            .unwrap();
        let state = Arc::new(AppState {
            pool,
            keys: Keys::new("offline"),
            shard_count: 1,
            metrics: metrics_exporter_prometheus::PrometheusBuilder::new()
                .build_recorder()
                .handle(),
            pages: cache::PageCache::new(Duration::ZERO),
            servers: Vec::new(),
            shard_server: Vec::new(),
            dashboard: dashboard::Dashboard::new(Duration::from_secs(2), Duration::from_secs(60)),
            layout_checked: Default::default(),
        });
        let mut table = routes();
        table.extend(extra);
        assemble(table, state, limit, cors_layer(cors).unwrap())
    }

    async fn call(app: &Router, req: axum::http::Request<axum::body::Body>) -> (Response, Json) {
        use tower::ServiceExt;
        let resp = app.clone().oneshot(req).await.unwrap();
        let (parts, body) = resp.into_parts();
        let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap();
        let json = serde_json::from_slice(&bytes).unwrap_or(Json::Null);
        (Response::from_parts(parts, axum::body::Body::empty()), json)
    }

    fn req(method: Method, uri: &str) -> axum::http::Request<axum::body::Body> {
        axum::http::Request::builder()
            .method(method)
            .uri(uri)
            .body(axum::body::Body::empty())
            .unwrap()
    }

    #[tokio::test]
    async fn unknown_routes_and_methods_answer_json() {
        let app = offline(Duration::from_secs(5), &[], Vec::new());
        for path in [
            "/",
            "/v1",
            "/v1/players",
            "/v1/players/",
            "/v2/leaderboard",
            "/v1/players/1/x",
        ] {
            let (resp, body) = call(&app, req(Method::GET, path)).await;
            assert_eq!(resp.status(), StatusCode::NOT_FOUND, "{path}");
            assert_eq!(resp.headers()[header::CONTENT_TYPE], "application/json");
            assert_eq!(body, json!({"error": format!("no route for GET {path}")}));
        }
        let long = format!("/{}", "é".repeat(300));
        let (resp, body) = call(&app, req(Method::GET, &long.replace('é', "%C3%A9"))).await;
        assert_eq!(resp.status(), StatusCode::NOT_FOUND);
        assert!(body["error"].as_str().unwrap().len() < 260, "{body}");
        for method in [
            Method::POST,
            Method::PUT,
            Method::DELETE,
            Method::PATCH,
            Method::OPTIONS,
        ] {
            let (resp, body) = call(&app, req(method.clone(), "/v1/status")).await;
            assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED, "{method}");
            assert_eq!(resp.headers()[header::ALLOW], "GET,HEAD");
            assert!(resp
                .headers()
                .get(header::ACCESS_CONTROL_ALLOW_ORIGIN)
                .is_none());
            let error = body["error"].as_str().unwrap();
            assert!(
                error.contains(&format!("method {method} is not allowed on /v1/status")),
                "{error}"
            );
            assert_eq!(body.as_object().unwrap().len(), 1);
        }
        let (resp, body) = call(&app, req(Method::GET, "/openapi.json")).await;
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()[header::CONTENT_TYPE], "application/json");
        assert_eq!(body, document());
        // Bad parameters never reach Redis.
        let (resp, body) = call(&app, req(Method::GET, "/v1/players/%FF%FE")).await;
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
        assert_eq!(body["parameter"], "id");
    }

    #[tokio::test]
    async fn the_dashboard_page_and_its_files_are_built_in() {
        let doc = document();
        let documented: Vec<String> = doc["paths"]["/dashboard/{asset}"]["get"]["parameters"][0]
            ["schema"]["enum"]
            .as_array()
            .expect("asset enum")
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect();
        assert_eq!(documented, dashboard::asset_names());
        let app = offline(Duration::from_secs(5), &[], Vec::new());
        use tower::ServiceExt;
        let resp = app
            .clone()
            .oneshot(req(Method::GET, "/dashboard"))
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert!(resp.headers()[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/html"));
        let page = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap();
        let page = String::from_utf8(page.to_vec()).unwrap();
        for name in dashboard::asset_names() {
            assert!(page.contains(&format!("dashboard/{name}")), "{name}");
            let resp = app
                .clone()
                .oneshot(req(Method::GET, &format!("/dashboard/{name}")))
                .await
                .unwrap();
            assert_eq!(resp.status(), StatusCode::OK, "{name}");
        }
        // Nothing is loaded from another origin: the page works offline.
        assert!(!page.contains("http://") && !page.contains("https://"));
        let (resp, body) = call(&app, req(Method::GET, "/dashboard/nothing.js")).await;
        assert_eq!(resp.status(), StatusCode::NOT_FOUND);
        assert!(body["error"].as_str().unwrap().contains("nothing.js"));
    }

    #[tokio::test]
    async fn a_slow_answer_is_a_504() {
        let slow = Route::get("/slow", "slow", || async {
            tokio::time::sleep(Duration::from_secs(30)).await;
            "late"
        });
        let app = offline(Duration::from_millis(50), &[], vec![slow]);
        let started = Instant::now();
        let (resp, body) = call(&app, req(Method::GET, "/slow")).await;
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(resp.status(), StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(
            body,
            json!({"error": "no answer within 50 ms (api.request_timeout_ms)"})
        );
        // Zero disables the limit.
        let quick = Route::get("/quick", "quick", || async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            "in time"
        });
        let app = offline(Duration::ZERO, &[], vec![quick]);
        assert_eq!(
            call(&app, req(Method::GET, "/quick")).await.0.status(),
            StatusCode::OK
        );
    }

    #[tokio::test]
    async fn cors_only_when_configured() {
        let preflight = |origin: &str| {
            axum::http::Request::builder()
                .method(Method::OPTIONS)
                .uri("/v1/leaderboard")
                .header(header::ORIGIN, origin)
                .header(header::ACCESS_CONTROL_REQUEST_METHOD, "GET")
                .body(axum::body::Body::empty())
                .unwrap()
        };
        let get_from = |origin: &str| {
            axum::http::Request::builder()
                .uri("/nowhere")
                .header(header::ORIGIN, origin)
                .body(axum::body::Body::empty())
                .unwrap()
        };
        let off = offline(Duration::from_secs(5), &[], Vec::new());
        let (resp, _) = call(&off, preflight("https://rps.example")).await;
        assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
        let (resp, _) = call(&off, get_from("https://rps.example")).await;
        assert!(resp
            .headers()
            .get(header::ACCESS_CONTROL_ALLOW_ORIGIN)
            .is_none());

        let on = offline(
            Duration::from_secs(5),
            &["https://rps.example".into()],
            Vec::new(),
        );
        let (resp, _) = call(&on, preflight("https://rps.example")).await;
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(
            resp.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN],
            "https://rps.example"
        );
        let methods = resp.headers()[header::ACCESS_CONTROL_ALLOW_METHODS]
            .to_str()
            .unwrap();
        assert!(methods.contains("GET"), "{methods}");
        let (resp, body) = call(&on, get_from("https://rps.example")).await;
        assert_eq!(resp.status(), StatusCode::NOT_FOUND);
        assert_eq!(
            resp.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN],
            "https://rps.example"
        );
        assert!(body["error"].is_string());
        let (resp, _) = call(&on, get_from("https://evil.example")).await;
        assert!(resp
            .headers()
            .get(header::ACCESS_CONTROL_ALLOW_ORIGIN)
            .is_none());

        let any = offline(Duration::from_secs(5), &["*".into()], Vec::new());
        let (resp, _) = call(&any, get_from("https://anyone.example")).await;
        assert_eq!(resp.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
    }

    #[test]
    fn api_settings_are_optional_with_defaults() {
        let base = "shard_count = 1\n[redis]\nurl = \"redis://127.0.0.1:6380\"\n\
                    [[servers]]\nname = \"a\"\nurl = \"mysql://u@127.0.0.1:3307\"\nshards = [0]\n";
        let parse = |api: &str| {
            Config::parse(
                &format!("{base}[api]\n{api}"),
                std::path::Path::new("t.toml"),
            )
            .map(|c| c.api)
        };
        let api = parse("bind = \"127.0.0.1:1\"\n").unwrap();
        assert_eq!(api.request_timeout_ms, 5_000);
        assert!(api.cors_allow_origins.is_empty());
        let api = parse(
            "bind = \"127.0.0.1:1\"\nrequest_timeout_ms = 250\n\
             cors_allow_origins = [\"https://rps.example\"]\n",
        )
        .unwrap();
        assert_eq!(api.request_timeout_ms, 250);
        assert_eq!(api.cors_allow_origins, ["https://rps.example"]);
        assert!(
            parse("request_timeout_ms = 250\n").is_err(),
            "bind stays required"
        );
    }

    #[test]
    fn cors_origins_are_checked() {
        assert!(cors_layer(&[]).unwrap().is_none());
        assert!(cors_layer(&["*".into()]).unwrap().is_some());
        assert!(
            cors_layer(&["https://rps.example".into(), "http://localhost:3000".into()])
                .unwrap()
                .is_some()
        );
        for bad in [
            "https://rps.example/",
            "rps.example",
            "https://",
            "https://a b",
        ] {
            let e = cors_layer(&[bad.into()]).unwrap_err().to_string();
            assert!(e.contains("cors_allow_origins"), "{bad}: {e}");
        }
    }
}
