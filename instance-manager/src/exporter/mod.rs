//! Serving the metrics: the `GET /metrics` listener on its own port ([`server`]), one scrape
//! of Postgres and the manager ([`scrape`]) and the manager's own families ([`manager`]), read
//! from the instance's snapshots. What is measured lives in `metrics`, below the instance.

pub mod collector;
pub mod manager;
pub mod scrape;
pub mod server;

pub use server::spawn;
