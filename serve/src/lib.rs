//! Serving a [`Catalog`](alertflow_queries::Catalog): HTTP and the PostgreSQL wire protocol.
