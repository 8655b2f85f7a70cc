//! The Kafka sink operator: an output table's rows as JSON messages, keyed by tenant and the
//! row's id, sent span by span of timely time like the Parquet files; a span counts as durable
//! (and Kafka source offsets may be committed past it) once every message of it is delivered.
//!
//! **With checkpoints** a checkpoint at `B` the frontier has passed sends the rows before `B`
//! at once (the span it falls in is sent in two parts), and the sink acknowledges it only once
//! every message sent before it is delivered: a committed checkpoint never lacks a row, and a
//! restored run sends again only rows at or after its checkpoint — at least once.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use alertflow_model::tables::{TableBuilder, TableRow};
use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Schema};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use rdkafka::ClientConfig;
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::DeliveryResult;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ProducerContext};
use serde::{Deserialize, Serialize};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::Stream;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;

use super::{FieldProblem, KafkaContext, OWN_PROPERTIES, librdkafka_message, quote_key};
use crate::durable::Durability;
use crate::parquet::take_before;
use crate::{Failure, Time};

/// A `[[sink]]` section of `type = "kafka"`: one output table to a topic.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSinkConfig {
    /// The output table to send (`incidents`, `alerts`, `storms`, an aggregate's name …).
    pub table: String,
    /// Bootstrap brokers, `host:port[,host:port…]`.
    pub brokers: String,
    /// The topic the rows go to.
    pub topic: String,
    /// librdkafka producer properties (security, compression, batching …), passed through.
    #[serde(default)]
    pub options: BTreeMap<String, String>,
}

/// A validated Kafka sink.
#[derive(Debug, Clone)]
pub struct KafkaSink {
    /// The table.
    pub table: String,
    /// The topic.
    pub topic: String,
    config: ClientConfig,
}

impl KafkaSink {
    /// Validates `cfg` (librdkafka checks the options; a producer is created, no broker is
    /// contacted).
    pub fn plan(cfg: &KafkaSinkConfig) -> Result<KafkaSink, Vec<FieldProblem>> {
        let mut p = Vec::new();
        if cfg.brokers.trim().is_empty() {
            p.push(("brokers".to_string(), "must not be empty: `host:port[,host:port…]`".to_string()));
        }
        if cfg.topic.is_empty() || !cfg.topic.bytes().all(|c| c.is_ascii_alphanumeric() || b"._-".contains(&c)) {
            p.push(("topic".into(), format!("`{}` is not a valid topic name (letters, digits, `.`, `_`, `-`)", cfg.topic)));
        }
        let mut config = ClientConfig::new();
        config.set("linger.ms", "20").set("compression.type", "lz4");
        for (k, v) in &cfg.options {
            let field = format!("options.{}", quote_key(k));
            if OWN_PROPERTIES.iter().any(|(o, _)| o == k) {
                p.push((field, "set by alertflow (set `brokers`)".into()));
                continue;
            }
            let mut one = ClientConfig::new();
            one.set(k, v);
            if let Err(e) = one.create_native_config() {
                p.push((field, librdkafka_message(&e)));
            }
            config.set(k, v);
        }
        config.set("bootstrap.servers", &cfg.brokers);
        let sink = KafkaSink { table: cfg.table.clone(), topic: cfg.topic.clone(), config };
        if p.is_empty()
            && let Err(e) = sink.quiet_producer()
        {
            p.push(("options".into(), librdkafka_message(&e)));
        }
        if p.is_empty() { Ok(sink) } else { Err(p) }
    }

    fn producer(&self) -> Result<BaseProducer<SinkContext>, KafkaError> {
        self.config.create_with_context(SinkContext {
            log: KafkaContext::new(&self.table),
            deliveries: Mutex::default(),
            served: AtomicU64::new(0),
        })
    }

    fn quiet_producer(&self) -> Result<BaseProducer<SinkContext>, KafkaError> {
        self.config.create_with_context(SinkContext {
            log: KafkaContext::quiet(&self.table),
            deliveries: Mutex::default(),
            served: AtomicU64::new(0),
        })
    }
}

/// Delivery bookkeeping: messages in flight per batch (a span, or the part of one before a
/// checkpoint), and the first failure.
#[derive(Default)]
struct Deliveries {
    in_flight: HashMap<u64, u64>,
    failed: Option<String>,
}

struct SinkContext {
    log: KafkaContext,
    deliveries: Mutex<Deliveries>,
    /// Delivery reports served so far (see [`serve_deliveries`]).
    served: AtomicU64,
}

impl ClientContext for SinkContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, msg: &str) {
        self.log.log(level, fac, msg)
    }
    fn error(&self, error: KafkaError, reason: &str) {
        self.log.error(error, reason)
    }
}

impl ProducerContext for SinkContext {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, batch: usize) {
        self.served.fetch_add(1, Ordering::Relaxed);
        let mut d = self.deliveries.lock().unwrap_or_else(|p| p.into_inner());
        if let Err((e, _)) = result
            && d.failed.is_none()
        {
            d.failed = Some(e.to_string());
        }
        if let Some(n) = d.in_flight.get_mut(&(batch as u64)) {
            *n -= 1;
            if *n == 0 {
                d.in_flight.remove(&(batch as u64));
            }
        }
    }
}

/// Sends a stream of table rows to Kafka.
pub trait KafkaSinkExt<R> {
    /// Buffers rows by span of timely time (`span` ms) and sends each span once the frontier
    /// has passed it; reports to `durability` what is delivered.
    fn sink_kafka<B: TableBuilder<R>>(
        self,
        sink: Arc<KafkaSink>,
        builder: B,
        span: u64,
        durability: Option<Arc<Durability>>,
        failure: Failure,
    );
}

impl<R: TableRow> KafkaSinkExt<R> for Stream<'_, Time, Vec<R>> {
    fn sink_kafka<B: TableBuilder<R>>(
        self,
        sink: Arc<KafkaSink>,
        builder: B,
        span: u64,
        durability: Option<Arc<Durability>>,
        failure: Failure,
    ) {
        let name = format!("kafka-sink:{}", sink.table);
        let span = span.max(1);
        let scope = self.scope();
        let slot = durability.as_ref().map(|d| d.slot());
        let keys = key_columns(&builder.schema());
        let mut ckpt = alertflow_checkpoint::register(&format!("kafka-sink:{}:{}", sink.table, sink.topic), scope.index());
        self.unary_frontier::<CapacityContainerBuilder<Vec<()>>, _, _, _>(Pipeline, &name, move |_cap, info| {
            let activator = scope.activator_for(info.address.clone());
            let producer = match sink.producer() {
                Ok(p) => Some(p),
                Err(e) => {
                    failure.set(format!("kafka sink `{}`: cannot create a producer: {e}", sink.table));
                    None
                }
            };
            // Rows by their time; batches sent (numbered in order) with the least time of each.
            let mut pending: BTreeMap<u64, Vec<R>> = BTreeMap::new();
            let mut sent: BTreeMap<u64, Time> = BTreeMap::new();
            let mut next_batch = 0u64;
            // Checkpoints acknowledged once every batch before them is delivered.
            let mut marks: Vec<(alertflow_checkpoint::Deferred, u64)> = Vec::new();
            let mut line = Vec::new();
            let mut key = String::new();
            move |(input, frontier), _output| {
                let floor = durability.as_ref().map_or(0, |d| d.resume_floor());
                input.for_each_stamp(|cap, data| {
                    let Some(t) = cap.least().copied() else { return };
                    if t >= floor {
                        let rows = pending.entry(t).or_default();
                        for batch in data {
                            rows.append(batch);
                        }
                    }
                });
                let Some(producer) = &producer else { return };
                // Sends a batch; returns how many batches have been sent.
                let mut send = |rows: Vec<R>, start: Time| -> Result<u64, String> {
                    if rows.is_empty() || failure.is_set() {
                        return Ok(next_batch);
                    }
                    let mut rows = rows;
                    builder.sort(&mut rows);
                    let batch = builder.build(&rows).map_err(|e| format!("internal error building a batch (a bug): {e}"))?;
                    sent.insert(next_batch, start);
                    send_batch(producer, &sink.topic, &batch, &keys, next_batch, &mut line, &mut key)?;
                    next_batch += 1;
                    Ok(next_batch)
                };
                loop {
                    // A checkpoint the frontier has passed: the rows before it go first.
                    let cut = ckpt.as_ref().and_then(|p| p.pending()).filter(|&b| frontier.frontier().iter().all(|f| *f >= b));
                    while let Some((&first, _)) = pending.first_key_value() {
                        let start = first - first % span;
                        let end = start.saturating_add(span);
                        if frontier.less_than(&end) || cut.is_some_and(|b| end > b) {
                            break;
                        }
                        if let Err(e) = send(take_before(&mut pending, end), start) {
                            return failure.set(format!("kafka sink `{}`: {e}", sink.table));
                        }
                    }
                    let (Some(b), Some(p)) = (cut, ckpt.as_mut()) else { break };
                    let before = match send(take_before(&mut pending, b), b - b % span) {
                        Ok(n) => n,
                        Err(e) => return failure.set(format!("kafka sink `{}`: {e}", sink.table)),
                    };
                    if let Some(mark) = p.hand_off(b) {
                        marks.push((mark, before));
                    }
                }
                if frontier.is_empty() && !failure.is_set() {
                    // Bounded input has ended: the run ends once this returns, so wait here
                    // for every delivery (rows were only sent now, when the frontier emptied).
                    if let Err(e) = producer.flush(Duration::from_secs(60)) {
                        failure.set(format!("kafka sink `{}`: messages not delivered within 60 s: {e}", sink.table));
                        return;
                    }
                }
                serve_deliveries(producer);
                let d = producer.context().deliveries.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(e) = &d.failed {
                    failure.set(format!("kafka sink `{}`: a message was not delivered: {e}", sink.table));
                    return;
                }
                sent.retain(|b, _| d.in_flight.contains_key(b));
                // Every batch numbered below a mark's is delivered: the checkpoint may count.
                let oldest = sent.keys().next().copied().unwrap_or(u64::MAX);
                for (mark, _) in marks.extract_if(.., |(_, before)| *before <= oldest) {
                    mark.ack(Vec::new());
                }
                if let Some(slot) = &slot {
                    let f = frontier.frontier().iter().copied().min().unwrap_or(Time::MAX);
                    let waiting = pending.keys().chain(sent.values()).min().map_or(Time::MAX, |w| w - w % span);
                    slot.set(f.min(waiting));
                }
                // The input has ended and everything is delivered: later checkpoints count this
                // sink as done.
                if frontier.is_empty()
                    && pending.is_empty()
                    && marks.is_empty()
                    && !failure.is_set()
                    && let Some(p) = ckpt.take()
                {
                    p.finisher().finish(Vec::new());
                }
                if !d.in_flight.is_empty() {
                    activator.activate_after(Duration::from_millis(5));
                }
            }
        });
    }
}

/// Serves every delivery report librdkafka has ready. A poll without waiting serves a single
/// event (the reports of one produce request), and the sink runs once per worker step: one poll
/// per step left thousands of messages counted in flight for seconds once a step was slow,
/// and held back the checkpoints waiting for them.
fn serve_deliveries(producer: &BaseProducer<SinkContext>) {
    loop {
        let before = producer.context().served.load(Ordering::Relaxed);
        producer.poll(Duration::ZERO);
        if producer.context().served.load(Ordering::Relaxed) == before {
            return;
        }
    }
}

/// Sends one span's rows, one JSON message per row.
fn send_batch(
    producer: &BaseProducer<SinkContext>,
    topic: &str,
    batch: &RecordBatch,
    keys: &[usize],
    span: u64,
    line: &mut Vec<u8>,
    key: &mut String,
) -> Result<(), String> {
    // Times as RFC 3339 with a `+00:00` offset: the writer cannot format a named "UTC" zone
    // without chrono-tz (the instant is the same).
    let batch = &utc_offsets(batch)?;
    let mut json = Vec::with_capacity(batch.num_rows() * 128);
    {
        let mut w = arrow::json::LineDelimitedWriter::new(&mut json);
        w.write(batch).map_err(|e| format!("cannot encode rows as JSON: {e}"))?;
        w.finish().map_err(|e| format!("cannot encode rows as JSON: {e}"))?;
    }
    let opts = FormatOptions::default();
    let fmts: Vec<ArrayFormatter<'_>> = keys
        .iter()
        .map(|&i| ArrayFormatter::try_new(batch.column(i).as_ref(), &opts))
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    producer.context().deliveries.lock().unwrap_or_else(|p| p.into_inner()).in_flight.insert(span, batch.num_rows() as u64);
    for (i, row) in json.split(|&b| b == b'\n').filter(|l| !l.is_empty()).enumerate() {
        use std::fmt::Write;
        key.clear();
        for (n, f) in fmts.iter().enumerate() {
            if n > 0 {
                key.push('/');
            }
            let _ = write!(key, "{}", f.value(i));
        }
        line.clear();
        line.extend_from_slice(row);
        let mut rec = BaseRecord::with_opaque_to(topic, span as usize).payload(line.as_slice()).key(key.as_bytes());
        loop {
            match producer.send(rec) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    // Back-pressure: serve delivery reports until the queue has room.
                    producer.poll(Duration::from_millis(10));
                    rec = r;
                }
                Err((e, _)) => return Err(format!("cannot send to `{topic}`: {e}")),
            }
        }
    }
    Ok(())
}

fn utc_offsets(batch: &RecordBatch) -> Result<RecordBatch, String> {
    let offset: Arc<str> = "+00:00".into();
    let mut fields = Vec::with_capacity(batch.num_columns());
    let mut cols = Vec::with_capacity(batch.num_columns());
    for (f, c) in batch.schema().fields().iter().zip(batch.columns()) {
        match f.data_type() {
            DataType::Timestamp(unit, Some(_)) => {
                let t = DataType::Timestamp(*unit, Some(offset.clone()));
                cols.push(arrow::compute::cast(c, &t).map_err(|e| e.to_string())?);
                fields.push(f.as_ref().clone().with_data_type(t));
            }
            _ => {
                cols.push(c.clone());
                fields.push(f.as_ref().clone());
            }
        }
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), cols).map_err(|e| e.to_string())
}

/// The columns a message key is made of: tenant and the row's id (`incident_id`, `storm_id`,
/// `fingerprint`); for window tables tenant, name, the group labels and `window_start`; for
/// dead letters `file` and `line`.
fn key_columns(schema: &Schema) -> Vec<usize> {
    let find = |n: &str| schema.index_of(n).ok();
    let tenant = find("tenant");
    for id in ["incident_id", "storm_id", "fingerprint"] {
        if let Some(i) = find(id) {
            return tenant.into_iter().chain([i]).collect();
        }
    }
    if let Some(ws) = find("window_start") {
        let mut v: Vec<usize> =
            schema.fields().iter().enumerate().filter(|(_, f)| *f.data_type() == DataType::Utf8).map(|(i, _)| i).collect();
        v.push(ws);
        return v;
    }
    [find("file"), find("line")].into_iter().flatten().collect()
}
