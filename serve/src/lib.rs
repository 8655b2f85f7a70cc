//! Serving a [`Catalog`](alertflow_queries::Catalog): HTTP and the PostgreSQL wire protocol.
//! (Placeholder API while the implementation lands on its branch.)

use std::net::SocketAddr;
use std::sync::Arc;

use alertflow_queries::{Access, Catalog, Metrics};

pub struct ServeConfig {
    pub http: Option<SocketAddr>,
    pub pg: Option<SocketAddr>,
    pub tokens: Vec<Token>,
}
pub struct Token {
    pub token: String,
    pub access: Access,
}
pub struct Health {
    pub running: bool,
}
#[derive(Debug, thiserror::Error)]
#[error("serve")]
pub struct ServeError;
pub struct Server;
impl Server {
    pub fn start(
        _cfg: &ServeConfig,
        _catalog: Catalog,
        _metrics: Arc<Metrics>,
        _health: Arc<dyn Fn() -> Health + Send + Sync>,
        _rt: &tokio::runtime::Handle,
    ) -> Result<Server, ServeError> {
        Ok(Server)
    }
    pub fn http_addr(&self) -> Option<SocketAddr> {
        None
    }
    pub fn pg_addr(&self) -> Option<SocketAddr> {
        None
    }
    pub fn shutdown(self) {}
}
