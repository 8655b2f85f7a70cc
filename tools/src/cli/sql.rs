//! `alertflow sql`: queries over a pipeline's output folder.

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
