//! What the cloud hands the dashboard: its cache, the electricity price, the
//! directory holding the page, and a way to ask which edges are connected.
//! The dashboard owns none of these; it only reads them.

use edgemeter_cloud::{Cache, EdgeView};
use edgemeter_wire::Backlog;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The original's assumption, kept as the default: 0.30 € per kWh.
pub const PRICE_EUR_PER_KWH_DEFAULT: f64 = 0.30;

/// The highest price accepted. German household prices peaked near
/// 0.50 €/kWh in 2023; 100 €/kWh can only be a typo (cents for euros, or
/// a missing decimal point), so it is refused rather than drawn.
pub const PRICE_EUR_PER_KWH_MAX: f64 = 100.0;

/// One edge as the cloud's link layer sees it right now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgeLink {
    pub edge_id: String,
    /// Whether the cloud counts this edge as connected (for example: a
    /// heartbeat within the last few intervals).
    pub connected: bool,
    /// What the edge still holds for the cloud, as its last heartbeat
    /// reported it, if it did.
    pub backlog: Option<Backlog>,
}

/// Asks the cloud which edges are connected. Called once per
/// `GET /api/edges`, on the request's task: it must answer at once (read a
/// snapshot under a lock), never wait on the network.
pub type EdgeLinks = Arc<dyn Fn() -> Vec<EdgeLink> + Send + Sync>;

/// Edge links from a `(edge id, connected)` list with no backlog, the shape
/// `edgemeter_cloud::Cloud::edge_liveness` returns:
/// `liveness_links(move || cloud.edge_liveness())`.
pub fn liveness_links<F>(liveness: F) -> EdgeLinks
where
    F: Fn() -> Vec<(String, bool)> + Send + Sync + 'static,
{
    Arc::new(move || {
        liveness()
            .into_iter()
            .map(|(edge_id, connected)| EdgeLink {
                edge_id,
                connected,
                backlog: None,
            })
            .collect()
    })
}

/// Edge links from the cloud's heartbeat views, backlog included:
/// `view_links(move || cloud.edge_views())`.
pub fn view_links<F>(views: F) -> EdgeLinks
where
    F: Fn() -> Vec<EdgeView> + Send + Sync + 'static,
{
    Arc::new(move || {
        views()
            .into_iter()
            .map(|view| EdgeLink {
                edge_id: view.edge_id,
                connected: view.alive,
                backlog: view.backlog,
            })
            .collect()
    })
}

/// The router's state. Cheap to clone: every field is shared.
pub struct DashboardState<C> {
    pub cache: Arc<C>,
    /// Euros per kWh, for `annual_cost_eur` and the original's `cost`.
    pub price_eur_per_kwh: f64,
    /// The directory holding `index.html`, `app.js`, `style.css` and
    /// `node_modules/chart.js` (after `npm ci`).
    pub web_dir: Arc<Path>,
    pub edge_links: EdgeLinks,
}

impl<C> Clone for DashboardState<C> {
    fn clone(&self) -> Self {
        DashboardState {
            cache: Arc::clone(&self.cache),
            price_eur_per_kwh: self.price_eur_per_kwh,
            web_dir: Arc::clone(&self.web_dir),
            edge_links: Arc::clone(&self.edge_links),
        }
    }
}

impl<C: Cache> DashboardState<C> {
    /// The default price and this repository's `web/` directory.
    pub fn new(cache: Arc<C>, edge_links: EdgeLinks) -> Self {
        DashboardState {
            cache,
            price_eur_per_kwh: PRICE_EUR_PER_KWH_DEFAULT,
            web_dir: Arc::from(default_web_dir()),
            edge_links,
        }
    }

    /// Sets the price, refusing one that is not a number from 0 to
    /// [`PRICE_EUR_PER_KWH_MAX`].
    pub fn with_price_eur_per_kwh(mut self, price_eur_per_kwh: f64) -> Result<Self, PriceError> {
        check_price(price_eur_per_kwh)?;
        self.price_eur_per_kwh = price_eur_per_kwh;
        Ok(self)
    }

    pub fn with_web_dir(mut self, web_dir: impl Into<PathBuf>) -> Self {
        self.web_dir = Arc::from(web_dir.into());
        self
    }

    /// Checks what a caller may have set through the public fields.
    pub fn check(&self) -> Result<(), PriceError> {
        check_price(self.price_eur_per_kwh)
    }
}

/// `web/` in this repository, found from this crate's source directory at
/// build time. A binary run from elsewhere passes its own directory.
pub fn default_web_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../web")
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PriceError {
    pub price_eur_per_kwh: f64,
}

impl fmt::Display for PriceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "price {} €/kWh is not a number from 0 to {PRICE_EUR_PER_KWH_MAX}",
            self.price_eur_per_kwh
        )
    }
}

impl std::error::Error for PriceError {}

fn check_price(price_eur_per_kwh: f64) -> Result<(), PriceError> {
    if (0.0..=PRICE_EUR_PER_KWH_MAX).contains(&price_eur_per_kwh) {
        Ok(())
    } else {
        Err(PriceError { price_eur_per_kwh })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn liveness_becomes_links_without_backlog() {
        let links = liveness_links(|| vec![("edge-1".into(), true), ("edge-2".into(), false)]);
        let got = links();
        assert_eq!(got.len(), 2);
        assert_eq!(
            (got[0].edge_id.as_str(), got[0].connected),
            ("edge-1", true)
        );
        assert_eq!(
            (got[1].edge_id.as_str(), got[1].connected),
            ("edge-2", false)
        );
        assert!(got.iter().all(|link| link.backlog.is_none()));
    }

    #[test]
    fn views_become_links_with_their_backlog() {
        let backlog = Backlog {
            queued: 5,
            sent: 1,
            oldest_unacked_age_ms: 2_000,
        };
        let links = view_links(move || {
            vec![EdgeView {
                edge_id: "edge-1".into(),
                alive: true,
                backlog: Some(backlog),
            }]
        });
        assert_eq!(
            links(),
            vec![EdgeLink {
                edge_id: "edge-1".into(),
                connected: true,
                backlog: Some(backlog),
            }]
        );
    }

    #[test]
    fn prices_outside_the_range_are_refused() {
        assert!(check_price(PRICE_EUR_PER_KWH_DEFAULT).is_ok());
        assert!(check_price(0.0).is_ok());
        assert!(check_price(PRICE_EUR_PER_KWH_MAX).is_ok());
        assert!(check_price(-0.01).is_err());
        assert!(check_price(PRICE_EUR_PER_KWH_MAX + 0.01).is_err());
        assert!(check_price(f64::NAN).is_err());
        assert!(check_price(f64::INFINITY).is_err());
    }
}
