//! Query errors as clients see them: a PostgreSQL SQLSTATE (both interfaces report one) and,
//! over HTTP, a status code.
//!
//! | SQLSTATE | meaning                                         | HTTP |
//! |----------|-------------------------------------------------|------|
//! | 42601    | syntax error                                    | 400  |
//! | 42P01    | unknown table                                   | 400  |
//! | 42703    | unknown column                                  | 400  |
//! | 42000    | any other query the planner rejects             | 400  |
//! | 0A000    | a feature DataFusion does not implement         | 400  |
//! | 25006    | DDL, DML, COPY, SET of engine settings: refused | 400  |
//! | 22000    | a data error while running (a bad cast, …)      | 400  |
//! | 57014    | the query ran past `[serve] query_timeout`      | 503  |
//! | 53200    | the query needed more than its memory limit     | 507  |
//! | XX000    | anything else (a bug)                           | 500  |

use alertflow_queries::QueryError;
use datafusion::error::DataFusionError;
use datafusion::sql::sqlparser::parser::ParserError;

/// SQLSTATE: syntax error.
pub const SYNTAX: &str = "42601";
/// SQLSTATE: undefined table.
pub const UNDEFINED_TABLE: &str = "42P01";
/// SQLSTATE: undefined column.
pub const UNDEFINED_COLUMN: &str = "42703";
/// SQLSTATE: syntax error or access rule violation (the planner's other refusals).
pub const INVALID_QUERY: &str = "42000";
/// SQLSTATE: feature not supported.
pub const NOT_SUPPORTED: &str = "0A000";
/// SQLSTATE: read-only SQL transaction (a statement that would write or configure).
pub const READ_ONLY: &str = "25006";
/// SQLSTATE: data exception.
pub const DATA: &str = "22000";
/// SQLSTATE: query canceled (the time limit).
pub const TIMED_OUT: &str = "57014";
/// SQLSTATE: out of memory.
pub const OUT_OF_MEMORY: &str = "53200";
/// SQLSTATE: internal error.
pub const INTERNAL: &str = "XX000";

/// The SQLSTATE of a query error.
pub fn sqlstate(e: &QueryError) -> &'static str {
    match e {
        QueryError::TimedOut(_) => TIMED_OUT,
        QueryError::DataFusion(e) => datafusion_sqlstate(e),
        QueryError::Io(..) | QueryError::Output(_) => INTERNAL,
    }
}

/// The SQLSTATE of a DataFusion error: by its innermost DataFusion error (a memory error
/// surfaces wrapped in Arrow and context errors), then by the planner's wording where its
/// variant is too coarse (an unknown table and a refused DDL are both `Plan`).
pub fn datafusion_sqlstate(e: &DataFusionError) -> &'static str {
    let root = e.find_root();
    let text = root.to_string();
    match root {
        DataFusionError::SQL(..) => SYNTAX,
        DataFusionError::ResourcesExhausted(_) => OUT_OF_MEMORY,
        DataFusionError::SchemaError(s, _) => match s.as_ref() {
            datafusion::common::SchemaError::FieldNotFound { .. } => UNDEFINED_COLUMN,
            _ => INVALID_QUERY,
        },
        DataFusionError::Plan(m) => plan_sqlstate(m),
        DataFusionError::NotImplemented(_) => NOT_SUPPORTED,
        DataFusionError::Execution(_) | DataFusionError::ArrowError(..) => {
            if text.contains("Resources exhausted") {
                OUT_OF_MEMORY
            } else {
                DATA
            }
        }
        _ if text.contains("Resources exhausted") => OUT_OF_MEMORY,
        _ => INTERNAL,
    }
}

fn plan_sqlstate(m: &str) -> &'static str {
    if m.starts_with("table '") && m.ends_with("not found") {
        UNDEFINED_TABLE
    } else if m.starts_with("DDL not supported") || m.starts_with("DML not supported") || m.starts_with("Statement not supported") {
        READ_ONLY
    } else {
        INVALID_QUERY
    }
}

/// The SQLSTATE of any error a pgwire query path produced (DataFusion's, or the SQL parser's
/// in front of it); `None` for errors that are not about the query.
pub fn boxed_sqlstate(e: &(dyn std::error::Error + 'static)) -> Option<&'static str> {
    if let Some(e) = e.downcast_ref::<DataFusionError>() {
        return Some(datafusion_sqlstate(e));
    }
    if e.downcast_ref::<ParserError>().is_some() {
        return Some(SYNTAX);
    }
    if let Some(e) = e.downcast_ref::<QueryError>() {
        return Some(sqlstate(e));
    }
    None
}

/// The HTTP status of a SQLSTATE (see the table above).
pub fn http_status(sqlstate: &str) -> u16 {
    match sqlstate {
        TIMED_OUT => 503,
        OUT_OF_MEMORY => 507,
        INTERNAL => 500,
        s if ["42", "25", "22", "0A"].iter().any(|p| s.starts_with(p)) => 400,
        _ => 500,
    }
}

/// An error's message without DataFusion's backtrace.
pub fn message(e: &QueryError) -> String {
    match e {
        QueryError::DataFusion(e) => e.strip_backtrace(),
        e => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn planner_refusals_are_told_apart() {
        assert_eq!(plan_sqlstate("table 'alertflow.public.nope' not found"), UNDEFINED_TABLE);
        assert_eq!(plan_sqlstate("DDL not supported: CreateExternalTable"), READ_ONLY);
        assert_eq!(plan_sqlstate("DML not supported: COPY"), READ_ONLY);
        assert_eq!(plan_sqlstate("Statement not supported: SetVariable"), READ_ONLY);
        assert_eq!(plan_sqlstate("Projections require unique expression names"), INVALID_QUERY);
        let wrapped = DataFusionError::Context(
            "while sorting".into(),
            Box::new(DataFusionError::ResourcesExhausted("Failed to allocate additional 1.0 MB".into())),
        );
        assert_eq!(datafusion_sqlstate(&wrapped), OUT_OF_MEMORY);
        assert_eq!(http_status(OUT_OF_MEMORY), 507);
        assert_eq!(http_status(TIMED_OUT), 503);
        assert_eq!(http_status(UNDEFINED_TABLE), 400);
        assert_eq!(http_status(INTERNAL), 500);
    }
}
