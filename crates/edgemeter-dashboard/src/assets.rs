//! The page and everything it loads, served by the cloud itself from the
//! `web/` directory: `index.html`, `app.js`, `style.css` and Chart.js from
//! `web/node_modules` (installed by `npm ci` from `web/package-lock.json`).
//!
//! Only the files in [`ASSETS`] are served, by fixed route, so no request
//! path ever becomes a file path. Every answer carries a Content Security
//! Policy that lets the page load and fetch only from its own origin: the
//! original pulled jQuery and Chart.js from CDNs, and this page must work on
//! a host without internet.

use crate::{ApiError, DashboardState};
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use edgemeter_cloud::Cache;
use std::io::ErrorKind;
use std::path::Path;
use std::sync::Arc;

/// The largest file served. Chart.js's UMD build, the largest, is about
/// 210 KB; 4 MiB leaves room for a new major version while refusing to
/// stream whatever a wrong path might point at.
pub const ASSET_BYTES_MAX: u64 = 4 * 1024 * 1024;

/// Only this origin, for everything: scripts, styles, images, fetches.
/// `data:` images allow the empty favicon the page declares.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; font-src 'self'; \
     object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Asset {
    pub route: &'static str,
    /// Relative to the web directory.
    pub file: &'static str,
    pub content_type: &'static str,
    /// What to tell the operator when the file is missing.
    pub missing_hint: &'static str,
}

pub const ASSETS: [Asset; 4] = [
    Asset {
        route: "/",
        file: "index.html",
        content_type: "text/html; charset=utf-8",
        missing_hint: "the web directory is wrong",
    },
    Asset {
        route: "/assets/app.js",
        file: "app.js",
        content_type: "text/javascript; charset=utf-8",
        missing_hint: "the web directory is wrong",
    },
    Asset {
        route: "/assets/style.css",
        file: "style.css",
        content_type: "text/css; charset=utf-8",
        missing_hint: "the web directory is wrong",
    },
    Asset {
        route: "/assets/chart.umd.js",
        file: "node_modules/chart.js/dist/chart.umd.js",
        content_type: "text/javascript; charset=utf-8",
        missing_hint: "Chart.js is not installed: run `npm ci` in web/",
    },
];

/// Adds one GET route per asset.
pub fn routes<C: Cache>(mut router: Router<DashboardState<C>>) -> Router<DashboardState<C>> {
    for asset in ASSETS {
        router = router.route(
            asset.route,
            get(move |State(state): State<DashboardState<C>>| serve(state.web_dir, asset)),
        );
    }
    router
}

async fn serve(web_dir: Arc<Path>, asset: Asset) -> Result<Response, ApiError> {
    let bytes = read(&web_dir, asset).await?;
    let headers = [
        (header::CONTENT_TYPE, asset.content_type),
        // The files change when the repository does; a reload must see it.
        (header::CACHE_CONTROL, "no-cache"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
    ];
    Ok((headers, bytes).into_response())
}

async fn read(web_dir: &Path, asset: Asset) -> Result<Vec<u8>, ApiError> {
    let path = web_dir.join(asset.file);
    let unreadable = |reason: String| ApiError::AssetUnreadable {
        file: asset.file.to_owned(),
        reason,
    };
    let metadata = match tokio::fs::metadata(&path).await {
        Ok(metadata) => metadata,
        Err(error) if error.kind() == ErrorKind::NotFound => {
            return Err(ApiError::AssetMissing {
                file: asset.file.to_owned(),
                reason: format!("{} not found; {}", path.display(), asset.missing_hint),
            })
        }
        Err(error) => return Err(unreadable(error.to_string())),
    };
    if !metadata.is_file() || metadata.len() > ASSET_BYTES_MAX {
        return Err(unreadable(format!(
            "not a file of at most {ASSET_BYTES_MAX} bytes"
        )));
    }
    let bytes = tokio::fs::read(&path)
        .await
        .map_err(|error| unreadable(error.to_string()))?;
    if bytes.len() as u64 > ASSET_BYTES_MAX {
        return Err(unreadable(format!("grew past {ASSET_BYTES_MAX} bytes")));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Goal: an asset over the size bound is refused, never read whole.
    /// Method: a sparse file one byte over the bound in place of `app.js`.
    #[tokio::test]
    async fn an_asset_over_the_size_bound_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let app = ASSETS[1];
        assert_eq!(app.file, "app.js");
        std::fs::write(dir.path().join(app.file), b"console.log(1)").unwrap();
        assert!(read(dir.path(), app).await.is_ok());
        let file = std::fs::File::create(dir.path().join(app.file)).unwrap();
        file.set_len(ASSET_BYTES_MAX + 1).unwrap();
        match read(dir.path(), app).await {
            Err(ApiError::AssetUnreadable { file, reason }) => {
                assert_eq!(file, "app.js");
                assert!(reason.contains(&ASSET_BYTES_MAX.to_string()), "{reason}");
            }
            other => panic!(
                "an oversized asset was not refused: {:?}",
                other.map(|b| b.len())
            ),
        }
    }
}
