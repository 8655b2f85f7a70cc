//! The PostgreSQL wire protocol (pgwire through datafusion-postgres): simple and extended
//! query flows, PostgreSQL types for Arrow types, `pg_catalog` and `information_schema` so
//! `psql`'s `\dt`/`\d`, JDBC and BI drivers' metadata queries work.
//!
//! Each connection gets its own handlers ([`PgHandlers`]); once the caller is authenticated
//! (cleartext password = token; without tokens, anyone), the connection builds its session:
//! `Catalog::context` for the caller's [`Access`] (tenant-scoped tables, its own memory pool)
//! with datafusion-postgres's `pg_catalog` set up over it, served by a
//! [`DfSessionService`]. Around that service this module adds what the library leaves to
//! its user:
//!
//! - Read-only: a query hook that runs first sees every statement. Queries (and `EXPLAIN`,
//!   `SHOW TABLES`, cursors over queries) are planned by the hook itself and the plan is
//!   checked with [`alertflow_queries::session::read_only`] before it runs, so whatever the
//!   SQL says the plan never creates a table (a tenant could otherwise create an external
//!   table over any file), writes or reconfigures. `SET`, `SHOW` and transaction statements
//!   go to the library's hooks (they only touch per-connection settings), except a `SET` of a
//!   `datafusion.*` setting (the memory limit is one). Anything else is refused with 25006.
//! - The time limit: each query's planning and every row it sends must happen before its
//!   deadline, else 57014 (a client's own `statement_timeout` can only shorten it).
//! - SQLSTATEs: the library reports DataFusion's errors as XX000; the error handler gives
//!   them their PostgreSQL codes ([`crate::errors`]).
//! - Metrics: queries and their latency, `interface="pg"`.

use std::fmt::Debug;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use alertflow_queries::session::read_only;
use alertflow_queries::{Access, Catalog, QueryError};
use async_trait::async_trait;
use datafusion::common::ParamValues;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionContext;
use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::{SetExpr, Statement};
use datafusion_postgres::arrow_pg::datatypes::df::encode_dataframe;
use datafusion_postgres::datafusion_pg_catalog::pg_catalog::context::EmptyContextProvider;
use datafusion_postgres::datafusion_pg_catalog::pg_catalog::setup_pg_catalog;
use datafusion_postgres::hooks::HookClient;
use datafusion_postgres::hooks::cursor::CursorStatementHook;
use datafusion_postgres::hooks::set_show::SetShowHook;
use datafusion_postgres::hooks::transactions::TransactionStatementHook;
use datafusion_postgres::pgwire;
use datafusion_postgres::{DfSessionService, QueryHook};
use futures::{Sink, SinkExt, Stream, StreamExt};
use pgwire::api::auth::{
    DefaultServerParameterProvider, StartupHandler, finish_authentication, protocol_negotiation, save_startup_parameters_to_metadata,
};
use pgwire::api::cancel::DefaultCancelHandler;
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::{FieldInfo, QueryResponse, Response};
use pgwire::api::stmt::QueryParser;
use pgwire::api::store::PortalStore;
use pgwire::api::{
    ClientInfo, ClientPortalStore, ConnectionGuard, ConnectionHandle, ConnectionManager, ErrorHandler, METADATA_USER,
    PgWireConnectionState, PgWireServerHandlers, PidSecretKeyGenerator, RandomPidSecretKeyGenerator, Type,
};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::startup::Authentication;
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use pgwire::types::format::FormatOptions;

use crate::auth::Tokens;
use crate::errors;
use crate::stats::QueryStats;

/// What every connection shares.
pub(crate) struct PgShared {
    pub(crate) catalog: Catalog,
    pub(crate) tokens: Tokens,
    pub(crate) stats: QueryStats,
    /// Cancel requests find their connection here.
    connections: Arc<ConnectionManager>,
    pids: RandomPidSecretKeyGenerator,
    params: DefaultServerParameterProvider,
}

impl PgShared {
    pub(crate) fn new(catalog: Catalog, tokens: Tokens, stats: QueryStats) -> Self {
        let mut params = DefaultServerParameterProvider::default();
        // Tell clients what they get: a read-only session without superuser powers.
        params.default_transaction_read_only = true;
        params.is_superuser = false;
        PgShared {
            catalog,
            tokens,
            stats,
            connections: Arc::new(ConnectionManager::new()),
            pids: RandomPidSecretKeyGenerator::default(),
            params,
        }
    }
}

/// The handlers of one connection (pgwire asks for them once per connection).
pub(crate) struct PgHandlers {
    conn: Arc<PgConnection>,
}

impl PgHandlers {
    pub(crate) fn new(shared: Arc<PgShared>) -> Self {
        let session = Arc::new(OnceLock::new());
        PgHandlers { conn: Arc::new(PgConnection { shared, parser: Arc::new(ConnParser { session: session.clone() }), session }) }
    }
}

impl PgWireServerHandlers for PgHandlers {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        self.conn.clone()
    }

    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        self.conn.clone()
    }

    fn startup_handler(&self) -> Arc<impl StartupHandler> {
        self.conn.clone()
    }

    fn error_handler(&self) -> Arc<impl ErrorHandler> {
        Arc::new(SqlStates)
    }

    fn cancel_handler(&self) -> Arc<impl pgwire::api::cancel::CancelHandler> {
        Arc::new(DefaultCancelHandler::new(self.conn.shared.connections.clone()))
    }
}

/// One connection: its session once authenticated.
pub(crate) struct PgConnection {
    shared: Arc<PgShared>,
    session: Arc<OnceLock<Arc<DfSessionService>>>,
    parser: Arc<ConnParser>,
}

fn session_of(session: &OnceLock<Arc<DfSessionService>>) -> PgWireResult<Arc<DfSessionService>> {
    session.get().cloned().ok_or_else(|| user_error("28000", "not authenticated".into()))
}

fn user_error(code: &str, message: String) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new("ERROR".to_owned(), code.to_owned(), message)))
}

fn timed_out(limit: Duration) -> PgWireError {
    user_error(errors::TIMED_OUT, QueryError::TimedOut(limit).to_string())
}

fn refused(what: &str) -> PgWireError {
    user_error(errors::READ_ONLY, format!("cannot execute {what}: alertflow serves its tables read-only (queries, SET, SHOW only)"))
}

/// The session of a caller with `access`.
fn build_session(catalog: &Catalog, access: &Access) -> PgWireResult<Arc<DfSessionService>> {
    let ctx = catalog.context(access).map_err(|e| PgWireError::ApiError(Box::new(e)))?;
    setup_pg_catalog(&ctx, "alertflow", EmptyContextProvider).map_err(|e| PgWireError::ApiError(e))?;
    let hooks: Vec<Arc<dyn QueryHook>> =
        vec![Arc::new(ReadOnly), Arc::new(CursorStatementHook), Arc::new(SetShowHook), Arc::new(TransactionStatementHook)];
    Ok(Arc::new(DfSessionService::new_with_hooks(Arc::new(ctx), hooks)))
}

impl PgConnection {
    /// Authenticated: builds the session, registers for cancel requests, says hello.
    async fn admit<C>(&self, client: &mut C, access: Access) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let service = build_session(&self.shared.catalog, &access)?;
        let _ = self.session.set(service);
        let (pid, key) = self.shared.pids.generate(client);
        client.set_pid_and_secret_key(pid, key.clone());
        let (handle, guard) = self.shared.connections.register(pid, key);
        client.session_extensions().insert::<Arc<ConnectionHandle>>(handle);
        client.session_extensions().insert::<ConnectionGuard>(guard);
        finish_authentication(client, &self.shared.params).await
    }

    /// `inner` (one query's planning) under the deadline, its rows too, counted.
    async fn guarded<F>(&self, inner: F) -> PgWireResult<Vec<Response>>
    where
        F: Future<Output = PgWireResult<Vec<Response>>>,
    {
        let limit = self.shared.catalog.limits().timeout;
        let start = Instant::now();
        let deadline = tokio::time::Instant::now() + limit;
        let result = tokio::time::timeout_at(deadline, inner).await.unwrap_or_else(|_| Err(timed_out(limit)));
        match result {
            Ok(responses) => Ok(responses.into_iter().map(|r| self.watch(r, deadline, limit, start)).collect()),
            Err(e) => {
                self.shared.stats.record(false, start.elapsed());
                Err(e)
            }
        }
    }

    /// A response whose rows stop with 57014 at the deadline, counted when it ends.
    fn watch(&self, r: Response, deadline: tokio::time::Instant, limit: Duration, start: Instant) -> Response {
        let stats = self.shared.stats.clone();
        match r {
            Response::Query(q) => {
                let tag = q.command_tag().to_string();
                let schema = q.row_schema();
                let outcome = Outcome { stats, start, done: false };
                let mut out = QueryResponse::new(schema, until(q.data_rows, deadline, limit, outcome));
                out.set_command_tag(&tag);
                Response::Query(out)
            }
            Response::Error(e) => {
                stats.record(false, start.elapsed());
                Response::Error(e)
            }
            other => {
                stats.record(true, start.elapsed());
                other
            }
        }
    }
}

/// Counts a streamed answer once: ok at its end (or when the client stops reading it), an
/// error if its rows fail.
struct Outcome {
    stats: QueryStats,
    start: Instant,
    done: bool,
}

impl Outcome {
    fn finish(&mut self, ok: bool) {
        if !self.done {
            self.done = true;
            self.stats.record(ok, self.start.elapsed());
        }
    }
}

impl Drop for Outcome {
    fn drop(&mut self) {
        self.finish(true);
    }
}

type Rows = pgwire::api::results::SendableRowStream;

/// `rows` until the deadline, then a 57014 error.
fn until(
    rows: Rows,
    deadline: tokio::time::Instant,
    limit: Duration,
    outcome: Outcome,
) -> impl Stream<Item = PgWireResult<pgwire::messages::data::DataRow>> + Send + 'static {
    let sleep = Box::pin(tokio::time::sleep_until(deadline));
    futures::stream::unfold(Some((rows, sleep, outcome)), move |state| async move {
        let (mut rows, mut sleep, mut outcome) = state?;
        // The deadline is polled first: a stream that is always ready must not hide it.
        tokio::select! {
            biased;
            _ = &mut sleep => {
                outcome.finish(false);
                Some((Err(timed_out(limit)), None))
            }
            item = rows.next() => match item {
                Some(Ok(row)) => Some((Ok(row), Some((rows, sleep, outcome)))),
                Some(Err(e)) => {
                    outcome.finish(false);
                    Some((Err(e), None))
                }
                None => {
                    outcome.finish(true);
                    None
                }
            },
        }
    })
}

/// Statements that write or configure, refused before parsing (the SQL parser in front of
/// DataFusion does not know `CREATE EXTERNAL TABLE` and would call it a syntax error, which
/// is true but misleading). The hook below is what enforces read-only; this only names it.
fn refused_keyword(sql: &str) -> Option<String> {
    let mut rest = sql.trim_start();
    // Skip leading comments.
    loop {
        if let Some(r) = rest.strip_prefix("--") {
            rest = r.split_once('\n').map(|(_, r)| r).unwrap_or("").trim_start();
        } else if let Some(r) = rest.strip_prefix("/*") {
            rest = r.split_once("*/").map(|(_, r)| r).unwrap_or("").trim_start();
        } else {
            break;
        }
    }
    let word: String = rest.chars().take_while(|c| c.is_ascii_alphabetic()).collect::<String>().to_ascii_uppercase();
    const WRITES: [&str; 13] =
        ["CREATE", "INSERT", "UPDATE", "DELETE", "DROP", "ALTER", "COPY", "TRUNCATE", "MERGE", "GRANT", "REVOKE", "VACUUM", "RESET"];
    WRITES.contains(&word.as_str()).then_some(word)
}

#[async_trait]
impl StartupHandler for PgConnection {
    async fn on_startup<C>(&self, client: &mut C, message: PgWireFrontendMessage) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        match message {
            PgWireFrontendMessage::Startup(ref startup) => {
                protocol_negotiation(client, startup).await?;
                save_startup_parameters_to_metadata(client, startup);
                if self.shared.tokens.open() {
                    self.admit(client, Access::All).await?;
                } else {
                    client.set_state(PgWireConnectionState::AuthenticationInProgress);
                    client.send(PgWireBackendMessage::Authentication(Authentication::CleartextPassword)).await?;
                }
            }
            PgWireFrontendMessage::PasswordMessageFamily(pwd) => {
                let pwd = pwd.into_password()?;
                match self.shared.tokens.check(pwd.password.as_bytes()) {
                    Some(access) => self.admit(client, access).await?,
                    // The user name plays no part; it is only echoed back.
                    None => return Err(PgWireError::InvalidPassword(client.metadata().get(METADATA_USER).cloned().unwrap_or_default())),
                }
            }
            _ => {}
        }
        Ok(())
    }
}

#[async_trait]
impl SimpleQueryHandler for PgConnection {
    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let service = session_of(&self.session)?;
        if let Some(word) = refused_keyword(query) {
            self.shared.stats.record(false, Duration::ZERO);
            return Err(refused(&word));
        }
        self.guarded(async { <DfSessionService as SimpleQueryHandler>::do_query(&service, client, query).await }).await
    }
}

/// The statement type of datafusion-postgres's extended query flow.
type PgStatement = <DfSessionService as ExtendedQueryHandler>::Statement;

#[async_trait]
impl ExtendedQueryHandler for PgConnection {
    type Statement = PgStatement;
    type QueryParser = ConnParser;

    fn query_parser(&self) -> Arc<ConnParser> {
        self.parser.clone()
    }

    async fn do_query<C>(&self, client: &mut C, portal: &Portal<Self::Statement>, max_rows: usize) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let service = session_of(&self.session)?;
        let run = async { <DfSessionService as ExtendedQueryHandler>::do_query(&service, client, portal, max_rows).await.map(|r| vec![r]) };
        let mut responses = self.guarded(run).await?;
        Ok(responses.pop().unwrap_or(Response::EmptyQuery))
    }
}

/// The connection's parser: its session's, once there is one.
pub(crate) struct ConnParser {
    session: Arc<OnceLock<Arc<DfSessionService>>>,
}

#[async_trait]
impl QueryParser for ConnParser {
    type Statement = PgStatement;

    async fn parse_sql<C>(&self, client: &C, sql: &str, types: &[Option<Type>]) -> PgWireResult<Option<Self::Statement>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        if let Some(word) = refused_keyword(sql) {
            return Err(refused(&word));
        }
        let service = session_of(&self.session)?;
        service.query_parser().parse_sql(client, sql, types).await
    }

    fn get_parameter_types(&self, stmt: &Self::Statement) -> PgWireResult<Vec<Type>> {
        session_of(&self.session)?.query_parser().get_parameter_types(stmt)
    }

    fn get_result_schema(&self, stmt: &Self::Statement, column_format: Option<&Format>) -> PgWireResult<Vec<FieldInfo>> {
        session_of(&self.session)?.query_parser().get_result_schema(stmt, column_format)
    }
}

/// Gives DataFusion's and the parser's errors their SQLSTATE (the library sends XX000).
struct SqlStates;

impl ErrorHandler for SqlStates {
    fn on_error<C>(&self, _client: &C, error: &mut PgWireError)
    where
        C: ClientInfo,
    {
        if let PgWireError::ApiError(inner) = error
            && let Some(code) = errors::boxed_sqlstate(inner.as_ref())
        {
            let message = match inner.downcast_ref::<datafusion::error::DataFusionError>() {
                Some(e) => e.strip_backtrace(),
                None => inner.to_string(),
            };
            *error = user_error(code, message);
        }
        tracing::debug!("pgwire error: {error}");
    }
}

/// The read-only guard (see the module documentation).
struct ReadOnly;

/// What the guard does with a statement.
enum Verdict {
    /// Planned here, checked, run here.
    Plan,
    /// Left to the library's hooks (per-connection settings, transactions, cursors).
    Pass,
    /// Refused.
    Refuse(&'static str),
}

fn verdict(s: &Statement) -> Verdict {
    match s {
        Statement::Query(q) => match q.body.as_ref() {
            SetExpr::Select(sel) if sel.into.is_some() => Verdict::Refuse("SELECT INTO"),
            _ => Verdict::Plan,
        },
        Statement::Explain { .. } | Statement::ShowTables { .. } | Statement::ShowColumns { .. } => Verdict::Plan,
        Statement::Set(_) if s.to_string().to_ascii_lowercase().contains("datafusion") => Verdict::Refuse("SET of an engine setting"),
        Statement::Set(_) | Statement::ShowVariable { .. } | Statement::ShowStatus { .. } | Statement::ShowCatalogs { .. } => Verdict::Pass,
        Statement::StartTransaction { .. } | Statement::Commit { .. } | Statement::Rollback { .. } => Verdict::Pass,
        Statement::Declare { stmts } => {
            // A cursor is planned by the library: only over a query that creates nothing.
            let plain = stmts
                .iter()
                .all(|d| d.for_query.as_ref().is_some_and(|q| !matches!(q.body.as_ref(), SetExpr::Select(sel) if sel.into.is_some())));
            if plain { Verdict::Pass } else { Verdict::Refuse("this DECLARE") }
        }
        Statement::Fetch { .. } | Statement::Close { .. } => Verdict::Pass,
        Statement::Copy { .. } => Verdict::Refuse("COPY"),
        Statement::Insert(_) => Verdict::Refuse("INSERT"),
        _ => Verdict::Refuse("this statement"),
    }
}

/// Plans `s` and checks the plan reads only.
async fn checked_plan(s: &Statement, ctx: &SessionContext) -> PgWireResult<LogicalPlan> {
    let state = ctx.state();
    let plan =
        state.statement_to_plan(DfStatement::Statement(Box::new(s.clone()))).await.map_err(|e| PgWireError::ApiError(Box::new(e)))?;
    read_only().verify_plan(&plan).map_err(|e| PgWireError::ApiError(Box::new(e)))?;
    Ok(plan)
}

#[async_trait]
impl QueryHook for ReadOnly {
    async fn handle_simple_query(
        &self,
        statement: &Statement,
        ctx: &SessionContext,
        client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        match verdict(statement) {
            Verdict::Pass => None,
            Verdict::Refuse(what) => Some(Err(refused(what))),
            Verdict::Plan => Some(
                async {
                    let plan = checked_plan(statement, ctx).await?;
                    let df = ctx.execute_logical_plan(plan).await.map_err(|e| PgWireError::ApiError(Box::new(e)))?;
                    let options = Arc::new(FormatOptions::from_client_metadata(client.metadata()));
                    Ok(Response::Query(encode_dataframe(df, &Format::UnifiedText, Some(options)).await?))
                }
                .await,
            ),
        }
    }

    async fn handle_extended_parse_query(
        &self,
        statement: &Statement,
        ctx: &SessionContext,
        _client: &(dyn ClientInfo + Send + Sync),
    ) -> Option<PgWireResult<LogicalPlan>> {
        match verdict(statement) {
            Verdict::Pass => None,
            Verdict::Refuse(what) => Some(Err(refused(what))),
            // The checked plan is the one the portal runs (with its parameters bound).
            Verdict::Plan => Some(checked_plan(statement, ctx).await),
        }
    }

    async fn handle_extended_query(
        &self,
        statement: &Statement,
        _plan: &LogicalPlan,
        _params: &ParamValues,
        _ctx: &SessionContext,
        _client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        match verdict(statement) {
            Verdict::Refuse(what) => Some(Err(refused(what))),
            Verdict::Pass | Verdict::Plan => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_keywords_are_named() {
        assert_eq!(refused_keyword("  create external table t stored as parquet location '/'").as_deref(), Some("CREATE"));
        assert_eq!(refused_keyword("-- hi\n/* x */ COPY t TO '/tmp/x'").as_deref(), Some("COPY"));
        assert_eq!(refused_keyword("SELECT 'create'"), None);
        assert_eq!(refused_keyword("with x as (select 1) select * from x"), None);
    }
}
