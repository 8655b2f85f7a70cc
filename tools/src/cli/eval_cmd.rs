//! `alertflow eval`: scores a pipeline's output against ground truth (see
//! `alertflow_tools::eval` for what is counted and how).

use std::path::PathBuf;

use alertflow_tools::eval::{Evaluation, baseline_groups, evaluate, parse_truth, read_output, render};

use super::{BAD_CONFIG, FAILED, OK};

/// `alertflow eval …`
#[derive(clap::Args, Debug)]
pub struct EvalArgs {
    /// What to evaluate.
    #[command(subcommand)]
    pub what: EvalWhat,
}

/// The evaluations.
#[derive(clap::Subcommand, Debug)]
pub enum EvalWhat {
    /// Incident correlation against `alertflow gen alerts`' truth.csv
    ///
    /// Elements are output alert episodes (tenant, fingerprint, starts_at of the `alerts`
    /// table), each in the incident of its latest row, matched to the truth episode of the same
    /// fingerprint. Prints noise reduction (1 − incidents / alert notifications), pairwise and
    /// B-cubed precision/recall/F1, the adjusted Rand index and root-cause top-1 accuracy.
    Correlation {
        /// The truth file (tenant,fingerprint,first_ts,last_ts,incident,root_service).
        #[arg(long)]
        truth: PathBuf,
        /// The pipeline's output folder (with the `alerts` and `incidents` tables).
        #[arg(long)]
        data: PathBuf,
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
        /// Also score Alertmanager-style grouping by these labels (comma-separated, e.g.
        /// `alertname,cluster`) over the same alert episodes.
        #[arg(long)]
        baseline: Option<String>,
        /// The label naming an alert's service (for the baseline's root cause).
        #[arg(long, default_value = "service")]
        service_label: String,
    },
}

/// Runs `alertflow eval`; 0 ok, 1 bad truth or data, 2 bad arguments.
pub fn run(args: EvalArgs) -> u8 {
    let EvalWhat::Correlation { truth, data, json, baseline, service_label } = args.what;
    let group_by: Option<Vec<String>> = baseline.map(|b| b.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect());
    if group_by.as_ref().is_some_and(|g| g.is_empty()) {
        eprintln!("error: --baseline needs at least one label, e.g. --baseline alertname,cluster");
        return BAD_CONFIG;
    }
    let text = match std::fs::read_to_string(&truth) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: cannot read {}: {e}", truth.display());
            return FAILED;
        }
    };
    let truth_rows = match parse_truth(&truth.display().to_string(), &text) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {e}");
            return FAILED;
        }
    };
    if !data.is_dir() {
        eprintln!("error: --data {}: no such folder (point it at a pipeline's output folder)", data.display());
        return FAILED;
    }
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the query runtime: {e}");
            return FAILED;
        }
    };
    let output = match rt.block_on(read_output(&data)) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("error: {e}");
            return FAILED;
        }
    };
    let ours = evaluate(&truth_rows, &output.episodes, &output.predicted(), &output.roots);
    let base: Option<(String, Evaluation)> = group_by.map(|g| {
        let (pred, roots) = baseline_groups(&output.episodes, &g, &service_label);
        (g.join(","), evaluate(&truth_rows, &output.episodes, &pred, &roots))
    });
    if json {
        let mut v = ours.json();
        if let Some((g, b)) = &base {
            let mut bj = b.json();
            bj["group_by"] = serde_json::Value::from(g.split(',').collect::<Vec<_>>());
            v["baseline"] = bj;
        }
        println!("{v}");
    } else {
        let label = base.as_ref().map(|(g, _)| format!("by {g}"));
        print!("{}", render(&ours, base.as_ref().map(|(_, b)| (label.as_deref().unwrap_or(""), b))));
    }
    OK
}
