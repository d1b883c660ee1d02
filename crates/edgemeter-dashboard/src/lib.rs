//! `edgemeter-dashboard` is the cloud's window for people: a REST API over
//! the cloud's [`Cache`] and the web page that draws it.
//!
//! # Layout
//! - [`state`]: [`DashboardState`], what the cloud hands the router (the
//!   cache, the electricity price, the page's directory, the edge links).
//! - [`error`]: [`ApiError`], every way a call can fail, as JSON with a status.
//! - [`cache_call`]: the one way a handler asks the cache, bounded in time.
//! - [`energy`]: average power to annual energy and cost.
//! - [`states`]: `GET /api/states`, one row per German state, all 16.
//! - [`tuples`]: `GET /api/tuples?limit=N`, the latest tuples.
//! - [`edges`]: `GET /api/edges`, what the cloud knows of each edge.
//! - [`legacy`]: `GET /api/data`, the original dashboard's shape.
//! - [`assets`]: the page (`/`), its script, its style sheet and Chart.js,
//!   read from `web/`, never from another host.
//!
//! Every call costs the same with ten tuples stored or ten million: the
//! handlers read the cache's incremental totals and a bounded number of
//! recent tuples, and never list keys. This crate never writes to the cache,
//! never spawns and never binds a socket: the caller serves the [`router`].

pub mod assets;
pub mod cache_call;
pub mod edges;
pub mod energy;
pub mod error;
pub mod legacy;
pub mod state;
pub mod states;
pub mod tuples;

pub use edgemeter_cloud::Cache;
pub use error::ApiError;
pub use state::{
    default_web_dir, liveness_links, view_links, DashboardState, EdgeLink, EdgeLinks, PriceError,
    PRICE_EUR_PER_KWH_DEFAULT, PRICE_EUR_PER_KWH_MAX,
};

use axum::routing::get;
use axum::Router;

/// The dashboard's routes, ready to be served by the caller, which owns the
/// listener and its shutdown. In the cloud, `cache` is `cloud.cache()` and
/// the liveness is `move || cloud.edge_liveness()`:
///
/// ```no_run
/// # use std::sync::Arc;
/// # async fn mount<C: edgemeter_dashboard::Cache>(
/// #     cache: Arc<C>,
/// #     liveness: impl Fn() -> Vec<(String, bool)> + Send + Sync + 'static,
/// # ) -> Result<(), Box<dyn std::error::Error>> {
/// use edgemeter_dashboard::{liveness_links, router, DashboardState};
/// let state = DashboardState::new(cache, liveness_links(liveness))
///     .with_price_eur_per_kwh(0.30)?
///     .with_web_dir("web");
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:5006").await?;
/// axum::serve(listener, router(state)).await?;
/// # Ok(())
/// # }
/// ```
///
/// Panics if `state.price_eur_per_kwh` is outside 0 to
/// [`PRICE_EUR_PER_KWH_MAX`]: set it with
/// [`DashboardState::with_price_eur_per_kwh`], which checks.
pub fn router<C: Cache>(state: DashboardState<C>) -> Router {
    state
        .check()
        .expect("the caller checks the price before it builds the router");
    let api = Router::new()
        .route("/api/states", get(states::get_states::<C>))
        .route("/api/tuples", get(tuples::get_tuples::<C>))
        .route("/api/edges", get(edges::get_edges::<C>))
        .route("/api/data", get(legacy::get_data::<C>));
    assets::routes(api)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::NotFound(uri.path().to_owned())
}

async fn method_not_allowed(method: axum::http::Method) -> ApiError {
    ApiError::MethodNotAllowed(method.to_string())
}
