//! `alertflow sql`: queries over a pipeline's output folder, or (`--url`) over a running
//! engine's HTTP interface.

use std::path::PathBuf;

use alertflow_queries::{OutputFormat, QueryError, context_for_dir, export_parquet, render};
use datafusion::prelude::SessionContext;

use super::{BAD_CONFIG, FAILED, OK};

/// Arguments of `alertflow sql`.
#[derive(clap::Args, Debug)]
pub struct SqlArgs {
    /// The query. Without one, an interactive prompt opens.
    pub query: Option<String>,
    /// A pipeline's output folder: every table folder in it is a table.
    #[arg(long, default_value = "out")]
    pub data: PathBuf,
    /// `table`, `csv`, `json`, `ndjson`, or `parquet` (with --output).
    #[arg(long, default_value = "table")]
    pub format: String,
    /// With `--format parquet`: the file to write.
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// Ask a running engine instead (`http://HOST:PORT`, its `[serve] http`): the query is
    /// sent to `POST /sql`, the answer comes back as Arrow and is printed here.
    #[arg(long)]
    pub url: Option<String>,
    /// With `--url`: the token (`[serve] tokens`) to present.
    #[arg(long, requires = "url")]
    pub token: Option<String>,
}

enum Target {
    Text(OutputFormat),
    Parquet(PathBuf),
}

/// Runs `alertflow sql`.
pub fn sql(args: SqlArgs) -> u8 {
    let target = match (args.format.as_str(), &args.output) {
        ("parquet", Some(p)) => Target::Parquet(p.clone()),
        ("parquet", None) => {
            eprintln!("error: --format parquet needs --output FILE");
            return BAD_CONFIG;
        }
        (f, out) => match f.parse::<OutputFormat>() {
            Ok(f) => {
                if out.is_some() {
                    eprintln!("error: --output goes with --format parquet");
                    return BAD_CONFIG;
                }
                Target::Text(f)
            }
            Err(e) => {
                eprintln!("error: --format: {e}");
                return BAD_CONFIG;
            }
        },
    };
    if let Some(url) = &args.url {
        let Target::Text(format) = target else {
            eprintln!("error: --format parquet is not available with --url");
            return BAD_CONFIG;
        };
        let Some(query) = &args.query else {
            eprintln!("error: --url needs a query (the interactive prompt reads a local --data folder)");
            return BAD_CONFIG;
        };
        let (code, out, err) = remote(url, args.token.as_deref(), query, format);
        print!("{out}");
        eprint!("{err}");
        return code;
    }
    if !args.data.is_dir() {
        eprintln!("error: --data {}: no such folder (point it at a pipeline's output folder)", args.data.display());
        return BAD_CONFIG;
    }
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the query runtime: {e}");
            return FAILED;
        }
    };
    rt.block_on(async move {
        let (ctx, _tables) = match context_for_dir(&args.data).await {
            Ok(c) => c,
            Err(e) => {
                eprintln!("error: {e}");
                return FAILED;
            }
        };
        match args.query {
            Some(q) => match run_one(&ctx, &q, &target).await {
                Ok(()) => OK,
                Err(e) => {
                    eprintln!("error: {e}");
                    FAILED
                }
            },
            None => prompt(&ctx, &target).await,
        }
    })
}

/// Runs `query` on the engine at `url`: the exit code, what to print on stdout, on stderr.
fn remote(url: &str, token: Option<&str>, query: &str, format: OutputFormat) -> (u8, String, String) {
    use alertflow_serve::client::{ClientError, query as ask};
    match ask(url, token, query) {
        Ok((schema, batches)) => {
            // An empty answer still shows its columns.
            let batches = if batches.is_empty() { vec![datafusion::arrow::record_batch::RecordBatch::new_empty(schema)] } else { batches };
            match render(&batches, format) {
                Ok(mut text) => {
                    if format == OutputFormat::Table {
                        text.push('\n');
                    }
                    (OK, text, String::new())
                }
                Err(e) => (FAILED, String::new(), format!("error: {e}\n")),
            }
        }
        Err(ClientError::Server { message, sqlstate, .. }) => {
            let code = sqlstate.map(|s| format!(" (SQLSTATE {s})")).unwrap_or_default();
            (FAILED, String::new(), format!("error: {message}{code}\n"))
        }
        Err(e @ ClientError::Unreachable { .. }) => {
            (FAILED, String::new(), format!("error: {e} (is the engine running with [serve] http?)\n"))
        }
        Err(e) => (FAILED, String::new(), format!("error: {e}\n")),
    }
}

async fn run_one(ctx: &SessionContext, q: &str, target: &Target) -> Result<(), QueryError> {
    let df = ctx.sql(q).await?;
    match target {
        Target::Parquet(p) => {
            let rows = export_parquet(df, p).await?;
            eprintln!("wrote {rows} row(s) to {}", p.display());
        }
        Target::Text(f) => {
            let batches = df.collect().await?;
            print!("{}", render(&batches, *f)?);
            if *f == OutputFormat::Table {
                println!();
            }
        }
    }
    Ok(())
}

/// The interactive prompt: statements end with `;`; `\q` quits, `\d` lists tables.
async fn prompt(ctx: &SessionContext, target: &Target) -> u8 {
    let mut rl = match rustyline::DefaultEditor::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot open the prompt: {e}");
            return FAILED;
        }
    };
    eprintln!("alertflow sql — end statements with `;`, `\\d` lists tables, `\\q` quits.");
    let mut buf = String::new();
    loop {
        let line = match rl.readline(if buf.is_empty() { "alertflow> " } else { "        -> " }) {
            Ok(l) => l,
            Err(rustyline::error::ReadlineError::Interrupted) => {
                buf.clear();
                continue;
            }
            Err(_) => return OK, // end of input
        };
        let t = line.trim();
        if buf.is_empty() {
            match t {
                "" => continue,
                "\\q" | "quit" | "exit" => return OK,
                "\\d" => {
                    let _ = rl.add_history_entry(t);
                    if let Err(e) = run_one(ctx, "SHOW TABLES", target).await {
                        eprintln!("error: {e}");
                    }
                    continue;
                }
                _ => {}
            }
        }
        buf.push_str(&line);
        buf.push('\n');
        if t.ends_with(';') {
            let q = buf.trim().trim_end_matches(';').to_string();
            let _ = rl.add_history_entry(buf.trim());
            buf.clear();
            if let Err(e) = run_one(ctx, &q, target).await {
                eprintln!("error: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use alertflow_connectors::live::{LiveTable, LiveTables};
    use alertflow_queries::{Access, Catalog, Metrics, QueryLimits};
    use alertflow_serve::{Health, ServeConfig, Server, Token};
    use datafusion::arrow::array::{Int64Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::arrow::record_batch::RecordBatch;

    use super::*;

    /// `alertflow sql --url` against a started server: every format, a server error, a wrong
    /// token, an unreachable server.
    #[test]
    fn sql_url_asks_a_running_server() {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let schema = Arc::new(Schema::new(vec![Field::new("tenant", DataType::Utf8, false), Field::new("n", DataType::Int64, false)]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(StringArray::from(vec!["acme", "globex"])), Arc::new(Int64Array::from(vec![1, 2]))],
        )
        .unwrap();
        let mut live = LiveTables::new();
        live.add(LiveTable::fixed("counts", schema, vec![batch]));
        let catalog = rt.block_on(Catalog::open(None, &live, QueryLimits::default())).unwrap();
        let cfg = ServeConfig {
            http: Some("127.0.0.1:0".parse().unwrap()),
            pg: None,
            tokens: vec![Token { token: "t0k".into(), access: Access::Tenant(Arc::from("globex")) }],
            ..Default::default()
        };
        let server = Server::start(&cfg, catalog, Arc::new(Metrics::new()), Arc::new(Health::default), rt.handle()).unwrap();
        let url = format!("http://{}", server.http_addr().unwrap());
        let q = "SELECT tenant, n FROM counts ORDER BY n";

        let (code, out, err) = remote(&url, Some("t0k"), q, OutputFormat::Csv);
        assert_eq!((code, out.as_str(), err.as_str()), (OK, "tenant,n\nglobex,2\n", ""));
        let (code, out, _) = remote(&url, Some("t0k"), q, OutputFormat::Json);
        assert_eq!((code, out.as_str()), (OK, "[{\"tenant\":\"globex\",\"n\":2}]\n"));
        let (code, out, _) = remote(&url, Some("t0k"), q, OutputFormat::Table);
        assert_eq!(code, OK);
        assert!(out.contains("| globex | 2 |"), "{out}");
        let (code, out, _) = remote(&url, Some("t0k"), "SELECT n FROM counts WHERE n > 5", OutputFormat::Csv);
        assert_eq!((code, out.as_str()), (OK, "n\n"));

        let (code, out, err) = remote(&url, Some("t0k"), "SELECT * FROM nope", OutputFormat::Csv);
        assert_eq!((code, out.as_str()), (FAILED, ""));
        assert!(err.contains("nope") && err.contains("42P01"), "{err}");
        let (code, _, err) = remote(&url, Some("wrong"), q, OutputFormat::Csv);
        assert_eq!(code, FAILED);
        assert!(err.contains("token"), "{err}");

        server.shutdown();
        let (code, _, err) = remote(&url, Some("t0k"), q, OutputFormat::Csv);
        assert_eq!(code, FAILED);
        assert!(err.contains("cannot reach"), "{err}");
    }
}
