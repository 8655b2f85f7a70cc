//! Re-sent alert notices decoded by their *shape*.
//!
//! A sender re-sends a firing alert until it resolves (Alertmanager clients every 30 s to
//! 1 min), and the notices of one alert differ only in their time fields (`ts`, and in
//! Alertmanager's format the `endsAt` a sender moves ahead) and, once, in their `status`.
//! Decoding such a line in full — reading every member, sorting the labels, hashing them
//! twice to find the interned label set, the same again for the annotations — was half the
//! cost of the alert chain per notice.
//!
//! The **shape** of a line is the line with the values of its time members and of its
//! `status` cut out: the bytes between them, in order, each cut marked by a byte that UTF-8
//! never contains. A decoder keeps the alerts of recent shapes (their interned label set and
//! annotations and generator URL) under 128 bits of hash of the shape, and decodes a line
//! whose shape it holds by parsing only the cut-out values. The status is cut out because
//! the `resolved` notice of an alert would otherwise be a shape of its own: with a stream's
//! alerts resolving once each, that doubled the lines decoded in full. Only a plain string
//! that is a status (`"firing"`, `"resolved"`, in any case) is cut; any other `status` value
//! (Alertmanager's `{"state": …}` object, an escaped string, a wrong one) stays in the shape.
//!
//! Why that is the line's full decoding. A line is *remembered* only when its full decoding
//! succeeded and consumed as top-level time fields and explicit status exactly the values this
//! scan cut out, each as what the scan took it for, no more and no fewer. A later line with
//! the same shape has the same bytes up to its first cut, so the decoder is in the same state
//! there: about to read the value of the same top-level time member (or the status). The
//! scan parsed that value with the decoder's own code, as a scalar that is a valid time (or
//! as a string without escapes that names a status), so the decoder would end it at the same
//! byte and be in the same state after it, and so on to the end of the line. Everything but
//! the cut values is therefore decoded the same, and the time values and status go through
//! the same rules ([`Times`]) as in a full decoding.
//! Members whose keys look like time keys but are not top-level time fields (a label named
//! `ts` inside `labels`, an escaped quote before `ts` in a string) make the two lists differ,
//! and such a line is simply never remembered.
//!
//! Shapes are told apart by 96 bits of XXH3-128 of the shape. A lookup compares them with the
//! two entries of one set, so it takes a wrong entry with probability under 2^-95 (DESIGN §2
//! accepts 2^-108 per lookup for label sets; this one is a bit weaker to keep a set of two
//! entries in one cache line, and still far below any hardware's error rate). The decoder's
//! unit tests decode every hit in full too and compare (not every debug build: that doubled
//! the decoding of the engine's timed end-to-end tests).

use std::sync::Arc;

use super::DecodeError;
use super::json::Cursor;
use crate::alert::{Alert, Status};
use crate::labels::LabelSet;
use crate::time::Millis;

/// A top-level time member of an alert object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TimeField {
    /// `ts`: the notice's event time.
    Ts,
    /// `receivedAt`.
    Received,
    /// `updatedAt`.
    Updated,
    /// `starts_at` / `startsAt`.
    Starts,
    /// `ends_at` / `endsAt`.
    Ends,
}

impl TimeField {
    /// The field of a member key, if it is a time member.
    #[inline]
    pub(crate) fn of_key(key: &[u8]) -> Option<TimeField> {
        Some(match key {
            b"ts" => TimeField::Ts,
            b"receivedAt" => TimeField::Received,
            b"updatedAt" => TimeField::Updated,
            b"starts_at" | b"startsAt" => TimeField::Starts,
            b"ends_at" | b"endsAt" => TimeField::Ends,
            _ => return None,
        })
    }

    /// The name errors give it.
    pub(crate) fn name(self) -> &'static str {
        match self {
            TimeField::Ts => "ts",
            TimeField::Received => "receivedAt",
            TimeField::Updated => "updatedAt",
            TimeField::Starts => "startsAt",
            TimeField::Ends => "endsAt",
        }
    }
}

/// The time members of one alert object, as read (`None`: absent, `null` or Go's zero time).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Times {
    pub ts: Option<Millis>,
    pub received: Option<Millis>,
    pub updated: Option<Millis>,
    pub starts_at: Option<Millis>,
    pub ends_at: Option<Millis>,
}

impl Times {
    /// Sets one member (a later member of the same name wins, as in the full decoding).
    #[inline]
    pub(crate) fn set(&mut self, f: TimeField, v: Option<Millis>) {
        match f {
            TimeField::Ts => self.ts = v,
            TimeField::Received => self.received = v,
            TimeField::Updated => self.updated = v,
            TimeField::Starts => self.starts_at = v,
            TimeField::Ends => self.ends_at = v,
        }
    }

    /// The notice's event time: NDJSON alerts take `ts`; Alertmanager objects `ts`, else
    /// `receivedAt`, else `updatedAt`, else `startsAt`. `default_ts` (a Kafka message's
    /// timestamp) stands in for a missing one.
    pub(crate) fn event_time(&self, default_ts: Option<Millis>, am: bool) -> Result<Millis, DecodeError> {
        if am {
            self.ts.or(self.received).or(self.updated).or(self.starts_at).or(default_ts).ok_or(DecodeError::Missing("startsAt"))
        } else {
            self.ts.or(default_ts).ok_or(DecodeError::Missing("ts"))
        }
    }

    /// The notice's status: an explicit one wins; Alertmanager notices without one are
    /// resolved when their `endsAt` is at or before the event time; NDJSON alerts default to
    /// firing.
    pub(crate) fn status(&self, explicit: Option<Status>, ts: Millis, am: bool) -> Status {
        match (explicit, self.ends_at) {
            (Some(s), _) => s,
            (None, Some(e)) if am && e <= ts => Status::Resolved,
            (None, _) => Status::Firing,
        }
    }
}

/// Most time and status members a remembered line may have.
const MAX_CUTS: usize = 8;

/// What a cut-out value is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Field {
    Time(TimeField),
    /// The explicit `status`, and what it says.
    Status(Status),
}

/// One cut-out value: its member, its byte range in the line and what it says.
#[derive(Clone, Copy, Debug)]
struct Cut {
    field: Field,
    start: u32,
    end: u32,
    value: Option<Millis>,
}

/// A value the full decoding read as a top-level time field (`status: None`) or as the
/// explicit status: its byte range in the line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Consumed {
    pub start: u32,
    pub end: u32,
    pub status: Option<Status>,
}

/// A line's shape: its hash and its cuts.
pub(crate) struct Key {
    hash: u64,
    check: u32,
    cuts: [Cut; MAX_CUTS],
    n: usize,
}

impl Key {
    /// A key without cuts (to be written by [`ShapeCache::key_into`]).
    pub(crate) const fn empty() -> Key {
        Key { hash: 0, check: 0, cuts: [Cut { field: Field::Time(TimeField::Ts), start: 0, end: 0, value: None }; MAX_CUTS], n: 0 }
    }

    /// The line's time members, as the cut-out values say.
    pub(crate) fn times(&self) -> Times {
        let mut t = Times::default();
        for c in &self.cuts[..self.n] {
            if let Field::Time(f) = c.field {
                t.set(f, c.value);
            }
        }
        t
    }

    /// The line's explicit status (the last `status` member, as in the full decoding).
    pub(crate) fn status(&self) -> Option<Status> {
        self.cuts[..self.n].iter().rev().find_map(|c| match c.field {
            Field::Status(s) => Some(s),
            Field::Time(_) => None,
        })
    }

    /// Whether these cuts are exactly `consumed`: the values the full decoding read as
    /// top-level time values and status, in order, each as the cut takes it.
    pub(crate) fn cuts_are(&self, consumed: &[Consumed]) -> bool {
        self.n == consumed.len()
            && self.cuts[..self.n].iter().zip(consumed).all(|(c, r)| {
                (c.start, c.end) == (r.start, r.end)
                    && match c.field {
                        Field::Time(_) => r.status.is_none(),
                        Field::Status(s) => r.status == Some(s),
                    }
            })
    }
}

/// What a remembered line decodes to, apart from its time values and status.
pub(crate) struct Shape<'a> {
    pub labels: &'a LabelSet,
    pub annotations: &'a LabelSet,
    pub generator_url: Option<&'a Arc<str>>,
}

/// Two entries, in one cache line: a lookup reads one line of the table (then the label set
/// it clones). The older entry is way 0. A generator URL (not every sender has one) lives in a
/// side table, read only when `has_url` says there is one.
#[repr(C, align(64))]
#[derive(Default)]
struct Bucket {
    hash: [u64; 2],
    check: [u32; 2],
    labels: [Option<LabelSet>; 2],
    annotations: [Option<LabelSet>; 2],
    /// Whether a line was decoded from the entry since it was stored (see [`ShapeCache::insert`]).
    used: [bool; 2],
    has_url: [bool; 2],
}

impl Bucket {
    #[inline]
    fn way_of(&self, k: &Key) -> Option<usize> {
        (0..2).find(|&w| self.hash[w] == k.hash && self.check[w] == k.check && self.labels[w].is_some())
    }
    /// Whether way `w` is free or never served a line.
    fn evictable(&self, w: usize) -> bool {
        self.labels[w].is_none() || !self.used[w]
    }
}

/// An entry moved between buckets.
struct Entry {
    hash: u64,
    check: u32,
    labels: LabelSet,
    annotations: LabelSet,
    url: Option<Arc<str>>,
}

/// Sets a cache starts with, and most it grows to (2^16 sets of two: 4 MB, plus 16 bytes per
/// entry of URL side table).
const MIN_SETS: usize = 1 << 9;
const MAX_SETS: usize = 1 << 16;

/// Remembered shapes of one decoder: a two-way set-associative table that grows only while
/// it is too small for the alerts being re-sent — a line misses whose shape was evicted
/// lately, or both entries of a set served lines — so a stream of ever-new alerts (nothing
/// re-sent) keeps it at its first 32 KB.
#[derive(Default)]
pub(crate) struct ShapeCache {
    sets: Vec<Bucket>,
    urls: Vec<Option<Arc<str>>>,
    /// The hashes of the last two shapes evicted from each set (0 is none).
    ghosts: Vec<[u64; 2]>,
    /// The shape being hashed.
    buf: Vec<u8>,
    /// Lines decoded from a remembered shape (tests check that a line was, not only that its
    /// result is right: the label set would be the same one through the interner too).
    #[cfg(test)]
    pub(crate) hits: usize,
}

impl ShapeCache {
    /// The shape of `line` (UTF-8-checked) decoded in `mode` (a byte that tells the formats
    /// apart), or `None` when the line cannot be remembered: a time value that is not a valid
    /// scalar time (the full decoding reports it), or more than [`MAX_CUTS`] time members.
    pub(crate) fn key(&mut self, line: &[u8], mode: u8, scratch: &mut Vec<u8>) -> Option<Key> {
        let mut key = Key::empty();
        self.key_into(line, mode, scratch, &mut key).then_some(key)
    }

    /// [`key`](Self::key) into `key` (false: `None`), so that a key kept in a slot is written
    /// where it stays rather than moved there (280 bytes).
    pub(crate) fn key_into(&mut self, line: &[u8], mode: u8, scratch: &mut Vec<u8>, key: &mut Key) -> bool {
        key.n = 0;
        self.buf.clear();
        self.buf.push(mode);
        let mut from = 0;
        for p in memchr::memchr_iter(b':', line) {
            // `"key":` with a time key or `status` (each ends in `s` or `t`); colons inside a
            // value just cut out are skipped.
            if p < from + 3 || line[p - 1] != b'"' {
                continue;
            }
            let head = &line[from..p - 1];
            // The time member of the key, or `None` for `status`.
            let time = match line[p - 2] {
                b's' if head.ends_with(b"\"ts") => Some(TimeField::Ts),
                b's' if head.ends_with(b"\"status") => None,
                b't' => {
                    let Some(q) = memchr::memrchr(b'"', &head[head.len().saturating_sub(11)..]) else { continue };
                    match TimeField::of_key(&head[head.len().saturating_sub(11) + q + 1..]) {
                        Some(f) => Some(f),
                        None => continue,
                    }
                }
                _ => continue,
            };
            let mut c = Cursor { b: line, i: p + 1 };
            c.ws();
            let start = c.i;
            let (field, value) = match time {
                Some(f) => {
                    scratch.clear();
                    let Ok(v) = super::alert::time_value(&mut c, line, scratch, f.name()) else { return false };
                    (Field::Time(f), v)
                }
                None => match status_value(&line[start..]) {
                    Some((s, len)) => {
                        c.i += len;
                        (Field::Status(s), None)
                    }
                    // Not a plain status string: it stays in the shape.
                    None => continue,
                },
            };
            if key.n == MAX_CUTS {
                return false;
            }
            key.cuts[key.n] = Cut { field, start: start as u32, end: c.i as u32, value };
            key.n += 1;
            self.buf.extend_from_slice(&line[from..start]);
            self.buf.push(0xFF);
            from = c.i;
        }
        self.buf.extend_from_slice(&line[from..]);
        let h = xxhash_rust::xxh3::xxh3_128(&self.buf);
        (key.hash, key.check) = (h as u64, (h >> 64) as u32);
        true
    }

    /// The set a hash is in.
    #[inline]
    fn set_of(&self, hash: u64) -> usize {
        (hash as usize) & (self.sets.len() - 1)
    }

    /// Starts bringing the table line of shape `k` into the cache without waiting for it (see
    /// [`crate::decode::alert::AlertDecoder::read_ahead`]). A table that grows meanwhile only
    /// makes the hint useless.
    #[inline]
    pub(crate) fn prefetch(&self, k: &Key) {
        if !self.sets.is_empty() {
            crate::prefetch::prefetch(&self.sets[self.set_of(k.hash)]);
        }
    }

    /// The remembered alert of this shape.
    #[inline]
    pub(crate) fn get(&mut self, k: &Key) -> Option<Shape<'_>> {
        if self.sets.is_empty() {
            return None;
        }
        let i = self.set_of(k.hash);
        let b = &mut self.sets[i];
        let w = b.way_of(k)?;
        b.used[w] = true;
        #[cfg(test)]
        {
            self.hits += 1;
        }
        let b = &self.sets[i];
        Some(Shape {
            labels: b.labels[w].as_ref()?,
            annotations: b.annotations[w].as_ref()?,
            generator_url: if b.has_url[w] { self.urls[2 * i + w].as_ref() } else { None },
        })
    }

    /// Remembers the alert a line of shape `k` decoded to in full, if the decoding read
    /// exactly the shape's cut-out values (`consumed`) as its time fields and status.
    pub(crate) fn remember(&mut self, k: &Key, consumed: &[Consumed], a: &Alert) {
        if k.cuts_are(consumed) {
            self.insert(k, &a.labels, &a.annotations, &a.generator_url);
        }
    }

    /// Remembers what a line of shape `k` decoded to. An entry that never served a line is
    /// evicted first; when both of the set served lines, or this shape was evicted from it
    /// lately, the table doubles (up to [`MAX_SETS`]) — the stream re-sends more alerts than
    /// it holds.
    pub(crate) fn insert(&mut self, k: &Key, labels: &LabelSet, annotations: &LabelSet, url: &Option<Arc<str>>) {
        if self.sets.is_empty() {
            self.resize(MIN_SETS);
        }
        let i = self.set_of(k.hash);
        let b = &self.sets[i];
        let full = !b.evictable(0) && !b.evictable(1);
        if (full || self.ghosts[i].contains(&k.hash)) && self.sets.len() < MAX_SETS {
            let old = self.resize(self.sets.len() * 2);
            for e in old {
                self.put(e);
            }
        }
        let e = Entry { hash: k.hash, check: k.check, labels: labels.clone(), annotations: annotations.clone(), url: url.clone() };
        if let Some(gone) = self.put(e) {
            let i = self.set_of(gone.hash);
            self.ghosts[i][(gone.hash >> 32) as usize & 1] = gone.hash;
        }
    }

    /// Replaces the table by an empty one of `sets` sets; returns the entries of the old one,
    /// the older of each set first.
    fn resize(&mut self, sets: usize) -> Vec<Entry> {
        let n = self.sets.len();
        let mut out = Vec::new();
        for i in 0..n {
            for w in 0..2 {
                out.extend(self.take(i, w));
            }
        }
        self.sets = std::iter::repeat_with(Bucket::default).take(sets).collect();
        self.urls = vec![None; 2 * sets];
        self.ghosts = vec![[0; 2]; sets];
        out
    }

    /// Stores an entry in its set, which keeps its older entry in way 0: in a free way, else
    /// over an entry that served no line (the older if both), else over the older one, and
    /// the survivor must serve a line before the next store here to outlive the new one.
    /// Returns the entry evicted.
    fn put(&mut self, e: Entry) -> Option<Entry> {
        let i = self.set_of(e.hash);
        let b = &self.sets[i];
        let (gone, keep_used) = match (b.labels[0].is_some(), b.labels[1].is_some()) {
            (false, false) => {
                self.write(i, 0, e, false);
                return None;
            }
            (true, false) => {
                self.write(i, 1, e, false);
                return None;
            }
            (false, true) => (None, b.used[1]),
            (true, true) if b.evictable(0) => (self.take(i, 0), self.sets[i].used[1]),
            (true, true) if b.evictable(1) => {
                let gone = self.take(i, 1);
                self.write(i, 1, e, false);
                return gone;
            }
            // Both served lines: the older leaves, and the other must serve again to stay.
            (true, true) => (self.take(i, 0), false),
        };
        // Way 1 moves down to become the older; the new entry takes way 1.
        if let Some(older) = self.take(i, 1) {
            self.write(i, 0, older, keep_used);
        }
        self.write(i, 1, e, false);
        gone
    }

    /// Takes the entry in way `w` of set `i` out.
    fn take(&mut self, i: usize, w: usize) -> Option<Entry> {
        let b = &mut self.sets[i];
        let (labels, annotations) = (b.labels[w].take()?, b.annotations[w].take()?);
        b.has_url[w] = false;
        Some(Entry { hash: b.hash[w], check: b.check[w], labels, annotations, url: self.urls[2 * i + w].take() })
    }

    /// Writes entry `e` into way `w` of set `i`, which must be free.
    fn write(&mut self, i: usize, w: usize, e: Entry, used: bool) {
        let b = &mut self.sets[i];
        debug_assert!(b.labels[w].is_none());
        b.hash[w] = e.hash;
        b.check[w] = e.check;
        b.labels[w] = Some(e.labels);
        b.annotations[w] = Some(e.annotations);
        b.used[w] = used;
        b.has_url[w] = e.url.is_some();
        self.urls[2 * i + w] = e.url;
    }

    /// Remembered shapes (for tests).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.sets.iter().map(|b| b.labels.iter().flatten().count()).sum()
    }

    /// Entries it has room for (for tests).
    #[cfg(test)]
    pub(crate) fn capacity(&self) -> usize {
        2 * self.sets.len()
    }
}
/// The status a JSON value at the start of `v` names, and the value's length, if it is a
/// string without escapes that the full decoding takes as a status (`firing` or `resolved`,
/// in any case).
fn status_value(v: &[u8]) -> Option<(Status, usize)> {
    let body = v.strip_prefix(b"\"")?;
    let n = memchr::memchr2(b'"', b'\\', body)?;
    if body[n] != b'"' {
        return None;
    }
    let s = &body[..n];
    let status = if s.eq_ignore_ascii_case(b"firing") {
        Status::Firing
    } else if s.eq_ignore_ascii_case(b"resolved") {
        Status::Resolved
    } else {
        return None;
    };
    Some((status, n + 2))
}

#[cfg(test)]
mod size {
    #[test]
    fn a_set_is_one_cache_line() {
        assert_eq!(std::mem::size_of::<super::Bucket>(), 64);
    }
}
