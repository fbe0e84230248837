//! The HTTP API (axum): one route per file under [`routes`], JSON errors ([`ApiError`]).
//!
//! The same router is served over TCP (`api.listen`, for probes, peers and the operator) and
//! over the Unix socket `<runDir>/manager.sock` (for the CLI inside the pod). A third socket,
//! `<runDir>/wal.sock`, owned by Postgres' OS user, serves only the WAL routes its
//! `archive_command` and `restore_command` call.
//!
//! With `api.tls` the TCP listener speaks HTTPS only ([`crate::tls::TlsListener`]); its
//! certificate is reloaded when its files change, and a verified client certificate
//! authorises the mutating endpoints like the bearer token (see `auth`). The Unix sockets
//! stay plain HTTP: they are reachable only from inside the pod. `manager.sock` is 0600 and
//! the manager's; `wal.sock` is 0600 and Postgres' OS user's (see [`crate::paths`]).
//!
//! Every socket limits request bodies to [`MAX_BODY`] bytes (see `limit`), and every listener
//! its connections, concurrent requests and the time a client may take ([`server`], with caps
//! from the file descriptor budget in [`capacity`]): no client, with or without a token, can
//! exhaust the manager's descriptors or memory through the API.

mod auth;
pub mod capacity;
pub mod coalesce;
mod error;
mod limit;
pub mod routes;
pub mod server;

use std::path::Path;
use std::sync::Arc;

use axum::Router;
use tokio::net::{TcpListener, UnixListener};

pub use error::ApiError;
pub use limit::MAX_BODY;

use crate::instance::Instance;

/// Errors binding the API.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The TCP address could not be bound.
    #[error("cannot listen on {addr}: {source} (hint: another process may use the port; change api.listen)")]
    Tcp {
        /// The address.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// The API's certificate, key or CA could not be loaded.
    #[error("cannot use api.tls: {0}")]
    Tls(#[from] crate::tls::Error),
    /// The Unix socket could not be bound.
    #[error("cannot listen on {path}: {source}")]
    Unix {
        /// The socket path.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

/// The API router for `instance`. On TCP (`authenticated`) the mutating routes need the
/// bearer token; on the local socket they do not.
pub fn router(instance: Arc<Instance>, authenticated: bool) -> Router {
    let control = if authenticated {
        routes::control().route_layer(axum::middleware::from_fn_with_state(Arc::clone(&instance), auth::require_token))
    } else {
        routes::control()
    };
    let coalesced = coalesce::Coalesced::new(Arc::clone(&instance));
    limited(routes::all().merge(control)).layer(axum::Extension(coalesced)).with_state(instance)
}

/// The router of the WAL socket: the archive and restore routes of Postgres' commands, and
/// nothing else.
pub fn wal_router(instance: Arc<Instance>) -> Router {
    limited(routes::local().fallback(routes::not_found)).with_state(instance)
}

/// `routes` with the body size limit and JSON errors.
fn limited(routes: Router<Arc<Instance>>) -> Router<Arc<Instance>> {
    routes
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::from_fn(limit::read_body_within))
        .layer(axum::middleware::from_fn(limit::refuse_declared_oversize))
        .layer(axum::middleware::map_response(error::json_errors))
}

/// Binds the TCP listener and the Unix sockets, then serves them in background tasks, each
/// within its [`capacity::Capacity`] limits.
pub async fn serve(instance: Arc<Instance>, tasks: &crate::tasks::Tasks) -> Result<(), Error> {
    let addr = instance.config().api_listen;
    let tls = match &instance.config().config.api.tls {
        Some(spec) => Some(Arc::new(crate::tls::ServerTls::load(spec)?)),
        None => None,
    };
    if let Some(tls) = &tls {
        instance.set_api_tls(Arc::clone(tls));
    }
    let caps = capacity::Capacity::current();
    let tcp = TcpListener::bind(addr).await.map_err(|source| Error::Tcp { addr: addr.to_string(), source })?;
    let socket = instance.paths.manager_socket();
    let unix = bind_unix(&socket)?;
    let app = router(Arc::clone(&instance), false);
    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!(%addr, scheme, socket = %socket.display(), max_connections = caps.api.max_connections,
        max_requests = caps.api.max_requests, "HTTP API listening");
    let wal_socket = instance.paths.wal_socket();
    let wal = bind_unix(&wal_socket)?;
    // Postgres' archive_command runs as Postgres' OS user: that user may reach the WAL
    // routes, and nothing else.
    if nix::unistd::geteuid().is_root() {
        instance.config().os_user.chown(&wal_socket).map_err(|e| Error::Unix {
            path: wal_socket.display().to_string(),
            source: std::io::Error::other(e.to_string()),
        })?;
    }
    let wal_app = wal_router(Arc::clone(&instance));
    tasks.spawn("wal socket", server::serve(wal, wal_app, caps.wal_socket, "wal socket"));
    let tcp_app = router(instance, true);
    match tls {
        None => tasks.spawn("api", server::serve(tcp, tcp_app, caps.api, "api")),
        Some(tls) => {
            crate::tls::watch_server_tls(Arc::clone(&tls), tasks);
            let listener = crate::tls::TlsListener::new(tcp, tls);
            tasks.spawn("api (https)", server::serve(listener, tcp_app, caps.api, "api (https)"));
        }
    }
    tasks.spawn("manager socket", server::serve(unix, app, caps.manager_socket, "manager socket"));
    Ok(())
}

#[cfg(test)]
mod body_tests;
#[cfg(test)]
mod limit_tests;

/// An instance of a minimal configuration under `dir` (never started), for the routers' tests.
#[cfg(test)]
#[allow(clippy::unwrap_used)]
fn test_instance(dir: &Path) -> Arc<crate::instance::Instance> {
    use crate::config::{Overrides, parse, validate};
    let yaml = format!(
        "name: pg-1\ndataDir: {0}/pgdata\nrunDir: {0}/run\nbinDir: /usr/lib/postgresql/15/bin\n",
        dir.display()
    );
    let v = validate(parse(&yaml, Path::new("t.yaml")).unwrap()).unwrap();
    Arc::new(crate::instance::Instance::new(v, dir.join("t.yaml"), Overrides::default()))
}

fn bind_unix(path: &Path) -> Result<UnixListener, Error> {
    let err = |source| Error::Unix { path: path.display().to_string(), source };
    // A socket left by a previous manager would make bind fail; only ever remove a socket.
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        use std::os::unix::fs::FileTypeExt;
        if meta.file_type().is_socket() {
            std::fs::remove_file(path).map_err(err)?;
        }
    }
    let listener = UnixListener::bind(path).map_err(err)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
    Ok(listener)
}
