//! Serves the dashboard crate's REST API and page over HTTP for `cloud` and
//! `demo`, on the cloud's own cache and its view of the edges.

use crate::cli::HttpArgs;
use crate::command_error::CommandError;
use crate::shutdown::Shutdown;
use edgemeter_cloud::{Cache, Cloud};
use edgemeter_dashboard::{default_web_dir, liveness_links, router, DashboardState};
use edgemeter_env::WallClock;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::net::TcpListener;

/// Binds `--http`, before anything else starts, so a busy port is the
/// first error and the address can be the first log line. Returns the bound
/// address (the real port when `--http` asked for port 0).
pub async fn bind(args: &HttpArgs) -> Result<(TcpListener, SocketAddr), CommandError> {
    let listener = TcpListener::bind(&args.http).await.map_err(|error| {
        CommandError::config(format!(
            "cannot serve the dashboard on {}: {error}; pass another --http ADDR",
            args.http
        ))
    })?;
    let address = listener
        .local_addr()
        .map_err(|error| CommandError::config(format!("--http {}: {error}", args.http)))?;
    Ok((listener, address))
}

/// The page directory: `--web-dir`, else `web/` here, else the checkout's.
fn web_dir(args: &HttpArgs) -> PathBuf {
    if let Some(dir) = &args.web_dir {
        return dir.clone();
    }
    let here = PathBuf::from("web");
    if here.join("index.html").is_file() {
        return here;
    }
    default_web_dir()
}

/// Serves the API and the page on `listener` until shutdown.
pub fn serve<C: Cache, W: WallClock>(
    listener: TcpListener,
    cloud: Arc<Cloud<C, W>>,
    args: &HttpArgs,
    shutdown: Shutdown,
) -> Result<(), CommandError> {
    let liveness = {
        let cloud = cloud.clone();
        liveness_links(move || cloud.edge_liveness())
    };
    let state = DashboardState::new(cloud.cache().clone(), liveness)
        .with_price_eur_per_kwh(args.price_eur_per_kwh)
        .map_err(|error| CommandError::config(format!("--price-eur-per-kwh: {error}")))?
        .with_web_dir(web_dir(args));
    tokio::spawn(async move {
        let served = axum::serve(listener, router(state))
            .with_graceful_shutdown(shutdown.wait())
            .await;
        if let Err(error) = served {
            tracing::error!(%error, "the dashboard server stopped");
        }
    });
    Ok(())
}
