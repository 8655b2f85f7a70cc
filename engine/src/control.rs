//! Control input of the notify stage: silences and incident actions from the HTTP port
//! enter the dataflow as records (see `alertflow_notify::control`).
//!
//! A request is put on the [`ControlDesk`]; worker 0's control source takes it at its next
//! activation, stamps it with the event time the alert data has reached (its capability
//! follows the alert sources' frontier, like the topology's reader), journals it (with
//! `state_dir`: `notify/control.ndjson`, fsynced), sends one copy to every worker, and only
//! then answers the request. A restart replays the journal's records from the checkpoint's
//! time on at their original times, so a replay applies them exactly where the first run did.
//! Once the alert data has ended, requests are refused: nothing is routed any more.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use alertflow_model::time::{Millis, format_rfc3339, parse_time_text};
use alertflow_notify::{Control, NotifyInput, SilenceSpec};
use alertflow_operators::Time;
use alertflow_serve::notify_api::{ApiReply, NotifyApi};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::{Scope, Stream};
use timely::scheduling::SyncActivator;

/// How long a request waits for the dataflow to take it.
const TAKE_WITHIN: Duration = Duration::from_secs(10);

type Reply = tokio::sync::oneshot::Sender<Result<Millis, String>>;

/// A journalled control record.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Entry {
    ts: Millis,
    seq: u64,
    control: Control,
}

/// Where requests wait for the control source, and what the HTTP side lists.
pub struct ControlDesk {
    queue: Mutex<Vec<(Control, Reply)>>,
    activator: Mutex<Option<SyncActivator>>,
    /// False once the alert data has ended.
    open: AtomicBool,
    /// The event time the source last stamped at.
    now: AtomicU64,
    /// Silences as the notifier has them (configured, added, expired).
    silences: Mutex<BTreeMap<String, SilenceSpec>>,
    journal: Option<PathBuf>,
    fsync: bool,
    next_id: AtomicU64,
}

impl ControlDesk {
    /// A desk knowing the configured silences; `journal`: the file control records are kept
    /// in (with `state_dir`).
    pub fn new(configured: Vec<SilenceSpec>, journal: Option<PathBuf>, fsync: bool) -> Arc<ControlDesk> {
        Arc::new(ControlDesk {
            queue: Mutex::default(),
            activator: Mutex::default(),
            open: AtomicBool::new(true),
            now: AtomicU64::new(0),
            silences: Mutex::new(configured.into_iter().map(|s| (s.id.clone(), s)).collect()),
            journal,
            fsync,
            next_id: AtomicU64::new(0),
        })
    }

    /// Puts a request on the desk and waits for the dataflow to take it; returns its time.
    async fn submit(&self, c: Control) -> Result<Millis, ApiReply> {
        if !self.open.load(Ordering::Acquire) {
            return Err(ApiReply::error(409, "the pipeline's alert input has ended: nothing is routed any more"));
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        lock(&self.queue).push((c, tx));
        if let Some(a) = &*lock(&self.activator) {
            let _ = a.activate();
        }
        match tokio::time::timeout(TAKE_WITHIN, rx).await {
            Ok(Ok(Ok(ts))) => Ok(ts),
            Ok(Ok(Err(e))) => Err(ApiReply::error(500, e)),
            Ok(Err(_)) => Err(ApiReply::error(409, "the pipeline's alert input has ended: nothing is routed any more")),
            Err(_) => Err(ApiReply::error(503, "the dataflow did not take the request in time; try again")),
        }
    }

    fn journal_entries(&self) -> Vec<Entry> {
        let Some(path) = &self.journal else { return Vec::new() };
        std::fs::read_to_string(path).map(|t| t.lines().filter_map(|l| serde_json::from_str(l).ok()).collect()).unwrap_or_default()
    }

    fn record(&self, file: &mut Option<File>, e: &Entry) -> Result<(), String> {
        let Some(path) = &self.journal else { return Ok(()) };
        if file.is_none() {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
            }
            let f = std::fs::OpenOptions::new().create(true).append(true).open(path);
            *file = Some(f.map_err(|e| format!("cannot open {}: {e}", path.display()))?);
        }
        let f = file.as_mut().expect("opened");
        let line = serde_json::to_string(e).map_err(|e| e.to_string())?;
        writeln!(f, "{line}").map_err(|e| format!("cannot append to {}: {e}", path.display()))?;
        if self.fsync {
            f.sync_data().map_err(|e| format!("cannot sync {}: {e}", path.display()))?;
        }
        Ok(())
    }

    /// What a record does to the listing.
    fn note(&self, e: &Entry) {
        let mut s = lock(&self.silences);
        match &e.control {
            Control::AddSilence(spec) => {
                s.insert(spec.id.clone(), spec.clone());
            }
            Control::ExpireSilence(id) => {
                if let Some(spec) = s.get_mut(id) {
                    spec.ends_at = spec.ends_at.min(e.ts.max(spec.starts_at));
                }
            }
            Control::Ack { .. } | Control::Resolve { .. } => {}
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The control source: worker 0 takes the desk's requests; every worker gets a copy.
/// `frontier_of` is the alert data it follows; `resumed_at` the checkpoint the run resumes
/// from (0: none).
pub fn control_source<'s, D: timely::Container>(
    scope: Scope<'s, Time>,
    desk: Arc<ControlDesk>,
    frontier_of: Stream<'s, Time, D>,
    resumed_at: Time,
) -> Stream<'s, Time, Vec<NotifyInput>> {
    let mut builder = OperatorBuilder::new("notify-control".to_string(), scope);
    let (out, stream) = builder.new_output::<Vec<NotifyInput>>();
    let mut out = OutputBuilder::<Time, CapacityContainerBuilder<Vec<NotifyInput>>>::from(out);
    let mut input = builder.new_input(frontier_of, Pipeline);
    let reader = scope.index() == 0;
    let peers = scope.peers() as u32;
    if reader {
        *lock(&desk.activator) = Some(scope.worker().sync_activator_for(builder.operator_info().address.to_vec()));
    }
    builder.build(move |mut caps| {
        let mut cap = caps.pop().filter(|_| reader);
        // The journal's records from the checkpoint on are sent again at their times; those
        // before it are in the notifier's restored state. All update the listing.
        let mut replay: Vec<Entry> = if reader { desk.journal_entries() } else { Vec::new() };
        for e in &replay {
            desk.note(e);
        }
        replay.retain(|e| e.ts as u64 >= resumed_at);
        let mut seq = desk.journal_entries().iter().map(|e| e.seq + 1).max().unwrap_or(0);
        let mut file: Option<File> = None;
        move |frontiers| {
            input.for_each(|_, _| {});
            let Some(c) = cap.as_mut() else { return };
            let copies = |e: &Entry| -> Vec<NotifyInput> {
                (0..peers).map(|w| NotifyInput::Control { worker: w, ts: e.ts, seq: e.seq, control: e.control.clone() }).collect()
            };
            for e in std::mem::take(&mut replay) {
                let at = (e.ts.max(0) as Time).max(*c.time());
                out.activate().session(&c.delayed(&at)).give_container(&mut copies(&e));
            }
            let low = frontiers[0].frontier().iter().next().copied();
            if let Some(low) = low
                && low > *c.time()
            {
                c.downgrade(&low);
            }
            desk.now.store(*c.time(), Ordering::Relaxed);
            let taken = std::mem::take(&mut *lock(&desk.queue));
            for (control, reply) in taken {
                let e = Entry { ts: *c.time() as Millis, seq, control };
                seq += 1;
                match desk.record(&mut file, &e) {
                    Ok(()) => {
                        desk.note(&e);
                        out.activate().session(&*c).give_container(&mut copies(&e));
                        let _ = reply.send(Ok(e.ts));
                    }
                    Err(err) => {
                        tracing::error!("notify control: {err}");
                        let _ = reply.send(Err(err));
                    }
                }
            }
            if low.is_none() {
                // The alert data is done: refuse what comes, and answer what waits.
                desk.open.store(false, Ordering::Release);
                lock(&desk.queue).clear();
                cap = None;
            }
        }
    });
    stream
}

/// The HTTP side of the desk.
pub struct Api(pub Arc<ControlDesk>);

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PostableMatcher {
    name: String,
    value: String,
    #[serde(default)]
    is_regex: bool,
    #[serde(default = "yes")]
    is_equal: bool,
}

fn yes() -> bool {
    true
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PostableSilence {
    #[serde(default)]
    id: Option<String>,
    matchers: Vec<PostableMatcher>,
    starts_at: String,
    ends_at: String,
    #[serde(default)]
    created_by: String,
    #[serde(default)]
    comment: String,
}

#[derive(Deserialize, Default)]
struct Who {
    #[serde(default)]
    by: String,
}

impl Api {
    fn silence_json(&self, s: &SilenceSpec, now: Millis) -> serde_json::Value {
        let matchers: Vec<serde_json::Value> = s
            .matchers
            .iter()
            .filter_map(|m| alertflow_notify::matcher::parse_matcher(m).ok())
            .map(|m| {
                let op = m.op();
                serde_json::json!({
                    "name": m.name(),
                    "value": m.value(),
                    "isRegex": matches!(op, alertflow_notify::MatchOp::Regex | alertflow_notify::MatchOp::NotRegex),
                    "isEqual": matches!(op, alertflow_notify::MatchOp::Equal | alertflow_notify::MatchOp::Regex),
                })
            })
            .collect();
        let state = if now < s.starts_at {
            "pending"
        } else if now < s.ends_at {
            "active"
        } else {
            "expired"
        };
        serde_json::json!({
            "id": s.id,
            "matchers": matchers,
            "startsAt": format_rfc3339(s.starts_at),
            "endsAt": format_rfc3339(s.ends_at),
            "createdBy": s.created_by,
            "comment": s.comment,
            "status": { "state": state },
        })
    }
}

#[async_trait]
impl NotifyApi for Api {
    fn silences(&self) -> ApiReply {
        let now = self.0.now.load(Ordering::Relaxed) as Millis;
        let list: Vec<serde_json::Value> = lock(&self.0.silences).values().map(|s| self.silence_json(s, now)).collect();
        ApiReply::ok(serde_json::Value::Array(list))
    }

    async fn add_silence(&self, body: alertflow_serve::push::Bytes) -> ApiReply {
        let p: PostableSilence = match serde_json::from_slice(&body) {
            Ok(p) => p,
            Err(e) => return ApiReply::error(400, format!("not a silence (Alertmanager v2 postableSilence): {e}")),
        };
        let mut matchers = Vec::new();
        for (i, m) in p.matchers.iter().enumerate() {
            let op = match (m.is_regex, m.is_equal) {
                (false, true) => alertflow_notify::MatchOp::Equal,
                (false, false) => alertflow_notify::MatchOp::NotEqual,
                (true, true) => alertflow_notify::MatchOp::Regex,
                (true, false) => alertflow_notify::MatchOp::NotRegex,
            };
            match alertflow_notify::Matcher::new(m.name.clone(), op, m.value.clone()) {
                Ok(m) => matchers.push(m.to_string()),
                Err(e) => return ApiReply::error(400, format!("matchers[{i}]: {e}")),
            }
        }
        let time = |field: &str, t: &str| {
            parse_time_text(t).ok_or_else(|| ApiReply::error(400, format!("{field}: `{t}` is not an RFC 3339 time")))
        };
        let (starts_at, ends_at) = match (time("startsAt", &p.starts_at), time("endsAt", &p.ends_at)) {
            (Ok(s), Ok(e)) => (s, e),
            (Err(r), _) | (_, Err(r)) => return r,
        };
        let n = self.0.next_id.fetch_add(1, Ordering::Relaxed);
        let id = format!(
            "{:016x}",
            xxhash_rust::xxh3::xxh3_64(&[&body[..], &n.to_le_bytes(), &alertflow_model::time::wall_now().to_le_bytes()].concat())
        );
        let spec = SilenceSpec { id: id.clone(), matchers, starts_at, ends_at, created_by: p.created_by, comment: p.comment };
        if let Err(e) = spec.to_silence() {
            return ApiReply::error(400, e.to_string());
        }
        // An id names the silence this one replaces (Alertmanager's update).
        if let Some(old) = p.id.filter(|old| lock(&self.0.silences).contains_key(old))
            && let Err(r) = self.0.submit(Control::ExpireSilence(old)).await
        {
            return r;
        }
        match self.0.submit(Control::AddSilence(spec)).await {
            // `at`: the event time from which the notifier knows it (beyond Alertmanager's answer).
            Ok(at) => ApiReply::ok(serde_json::json!({ "silenceID": id, "at": format_rfc3339(at) })),
            Err(r) => r,
        }
    }

    async fn expire_silence(&self, id: String) -> ApiReply {
        if !lock(&self.0.silences).contains_key(&id) {
            return ApiReply::error(404, format!("no silence `{id}`"));
        }
        match self.0.submit(Control::ExpireSilence(id)).await {
            Ok(_) => ApiReply::ok(serde_json::json!({})),
            Err(r) => r,
        }
    }

    async fn incident(&self, id: String, resolve: bool, body: alertflow_serve::push::Bytes) -> ApiReply {
        if id.len() != 16 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return ApiReply::error(400, format!("`{id}` is not an incident id (16 hex digits, as in the incidents table)"));
        }
        let who: Who = if body.is_empty() {
            Who::default()
        } else {
            match serde_json::from_slice(&body) {
                Ok(w) => w,
                Err(e) => return ApiReply::error(400, format!("the body, if any, is {{\"by\": \"…\"}}: {e}")),
            }
        };
        let incident = id.to_ascii_lowercase();
        let c = if resolve {
            Control::Resolve { incident: incident.clone(), by: who.by }
        } else {
            Control::Ack { incident: incident.clone(), by: who.by }
        };
        match self.0.submit(c).await {
            Ok(at) => ApiReply::ok(serde_json::json!({ "incident": incident, "at": format_rfc3339(at) })),
            Err(r) => r,
        }
    }
}
