//! Throughput and timing per queue and minute (schema/0012): the counters
//! the dashboard's charts and `/metrics`' histograms read, which survive
//! purges of the jobs they count.
//!
//! Every transaction that ends tries tallies them here ([`Tally`]: per
//! queue and minute, jobs succeeded, dead and cancelled, tries failed, and
//! run time and queue wait as histograms) and writes the tally with one
//! upsert per queue and minute — one statement for a whole batch of
//! completions.  The bucketing is written once, for every backend.

use rusqlite::{params, Transaction};
use serde::Serialize;

use crate::clock::Millis;
use crate::error::Result;
use crate::store::SqliteStore;

/// Upper bounds of the histograms' buckets, in ms; a last bucket holds the
/// rest.  The columns are named after them (`run_10ms` … `run_5m`, `run_more`).
pub const BUCKET_BOUNDS_MS: [Millis; 12] = [
    10, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 30_000, 60_000, 300_000,
];

/// Buckets per histogram: one per bound and one above them all.
pub const BUCKETS: usize = BUCKET_BOUNDS_MS.len() + 1;

/// One queue's counts for one minute (or, at [`Rollup::minute`] 0, for
/// everything before the rollups kept: purged minutes fold into it).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Rollup {
    pub queue: String,
    /// Minutes since the Unix epoch.
    pub minute: i64,
    /// Jobs that succeeded, died and were cancelled in the minute.
    pub succeeded: i64,
    pub dead: i64,
    pub cancelled: i64,
    /// Tries that failed (to be retried or not).
    pub failed: i64,
    /// Run time (started → ended) of the tries that ended, summed (ms) and
    /// bucketed by [`BUCKET_BOUNDS_MS`] (not cumulative).
    pub run_ms: i64,
    pub run: [i64; BUCKETS],
    /// Queue wait (due → started) of the tries that ended, likewise — of
    /// those whose due time the store knew: every failed or acknowledged
    /// try, and the completions of a sample of claims on SQLite
    /// ([`WAIT_SAMPLE_EVERY`]); so this histogram's count may be below
    /// `run`'s.
    pub wait_ms: i64,
    pub wait: [i64; BUCKETS],
}

/// How a try ended, for the tally.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ended {
    Succeeded,
    /// Failed; `dead` when the job is out of tries.
    Failed {
        dead: bool,
    },
    /// The job was cancelled (by its worker, or failing with a cancel asked).
    Cancelled,
}

fn bucket(ms: Millis) -> usize {
    BUCKET_BOUNDS_MS
        .iter()
        .position(|b| ms <= *b)
        .unwrap_or(BUCKET_BOUNDS_MS.len())
}

impl Rollup {
    /// Tries whose run time is counted.
    pub fn tries(&self) -> i64 {
        self.run.iter().sum()
    }

    /// Add `other`'s counts to these.
    pub fn add(&mut self, other: &Rollup) {
        self.succeeded += other.succeeded;
        self.dead += other.dead;
        self.cancelled += other.cancelled;
        self.failed += other.failed;
        self.run_ms += other.run_ms;
        self.wait_ms += other.wait_ms;
        for i in 0..BUCKETS {
            self.run[i] += other.run[i];
            self.wait[i] += other.wait[i];
        }
    }

    /// The `q` quantile (0..=1) of a histogram of this rollup, in ms, by
    /// linear interpolation inside its bucket (as Prometheus'
    /// `histogram_quantile`); `None` without counts.  Above the last bound
    /// the answer is that bound.
    pub fn quantile(histogram: &[i64; BUCKETS], q: f64) -> Option<f64> {
        let total: i64 = histogram.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * total as f64;
        let mut seen = 0.0;
        for (i, n) in histogram.iter().enumerate() {
            let n = *n as f64;
            if n > 0.0 && seen + n >= rank {
                let Some(upper) = BUCKET_BOUNDS_MS.get(i) else {
                    return Some(BUCKET_BOUNDS_MS[BUCKETS - 2] as f64);
                };
                let lower = if i == 0 {
                    0.0
                } else {
                    BUCKET_BOUNDS_MS[i - 1] as f64
                };
                return Some(lower + (*upper as f64 - lower) * ((rank - seen) / n));
            }
            seen += n;
        }
        Some(BUCKET_BOUNDS_MS[BUCKETS - 2] as f64)
    }

    /// The row of a statement selecting `queue, minute` and then the
    /// counters in the schema's order.
    pub(crate) fn from_values(queue: String, minute: i64, v: &[i64]) -> Rollup {
        let mut r = Rollup {
            queue,
            minute,
            succeeded: v[0],
            failed: v[1],
            dead: v[2],
            cancelled: v[3],
            run_ms: v[4],
            wait_ms: v[5],
            ..Rollup::default()
        };
        r.run.copy_from_slice(&v[6..6 + BUCKETS]);
        r.wait.copy_from_slice(&v[6 + BUCKETS..6 + 2 * BUCKETS]);
        r
    }

    /// The counters in the schema's order (after `queue, minute`).
    pub(crate) fn values(&self) -> [i64; COUNTERS] {
        let mut v = [0; COUNTERS];
        v[..6].copy_from_slice(&[
            self.succeeded,
            self.failed,
            self.dead,
            self.cancelled,
            self.run_ms,
            self.wait_ms,
        ]);
        v[6..6 + BUCKETS].copy_from_slice(&self.run);
        v[6 + BUCKETS..].copy_from_slice(&self.wait);
        v
    }
}

/// The counter columns of a rollup row.
pub(crate) const COUNTERS: usize = 6 + 2 * BUCKETS;

/// What one transaction ends, per queue and minute (a handful of entries:
/// a linear search beats a map).
#[derive(Debug, Default)]
pub(crate) struct Tally(Vec<Rollup>);

impl Tally {
    /// The entry of `queue` at minute `minute`.  The last one first: a
    /// batch is mostly one queue and minute.
    fn entry(&mut self, queue: &str, minute: i64) -> &mut Rollup {
        let at = match self.0.last() {
            Some(r) if r.minute == minute && r.queue == queue => self.0.len() - 1,
            _ => match self
                .0
                .iter()
                .position(|r| r.minute == minute && r.queue == queue)
            {
                Some(i) => i,
                None => {
                    self.0.push(Rollup {
                        queue: queue.to_string(),
                        minute,
                        ..Rollup::default()
                    });
                    self.0.len() - 1
                }
            },
        };
        &mut self.0[at]
    }

    /// A try of a job of `queue` ended `ended` at `now`; it started at
    /// `started_at` and was due at `due_at` (each where known: a try reaped
    /// counts no times, and a claim not sampled no wait).
    pub(crate) fn ended(
        &mut self,
        queue: &str,
        now: Millis,
        ended: Ended,
        started_at: Option<Millis>,
        due_at: Option<Millis>,
    ) {
        let r = self.entry(queue, now.div_euclid(60_000));
        match ended {
            Ended::Succeeded => r.succeeded += 1,
            Ended::Failed { dead } => {
                r.failed += 1;
                r.dead += dead as i64;
            }
            Ended::Cancelled => r.cancelled += 1,
        }
        if let Some(started) = started_at {
            let run = (now - started).max(0);
            r.run_ms += run;
            r.run[bucket(run)] += 1;
            if let Some(due) = due_at {
                let wait = (started - due).max(0);
                r.wait_ms += wait;
                r.wait[bucket(wait)] += 1;
            }
        }
    }

    /// `n` tries of jobs of `queue` that started at `started_at` succeeded
    /// at `now` (their due times unknown).
    fn succeeded_n(&mut self, queue: &str, now: Millis, started_at: Millis, n: i64) {
        let r = self.entry(queue, now.div_euclid(60_000));
        let run = (now - started_at).max(0);
        r.succeeded += n;
        r.run_ms += run * n;
        r.run[bucket(run)] += n;
    }

    pub(crate) fn rows(&self) -> &[Rollup] {
        &self.0
    }

    /// Write the tally in `tx` (SQLite).
    pub(crate) fn write(&self, tx: &Transaction) -> rusqlite::Result<()> {
        if self.0.is_empty() {
            return Ok(());
        }
        for r in &self.0 {
            let v = r.values();
            let (sums, buckets) = v.split_at(6);
            let mut counted = buckets.iter().enumerate().filter(|(_, n)| **n != 0);
            let one = match (counted.next(), counted.next()) {
                (Some(one), None) => Some(one),
                _ => None,
            };
            let sql = match one {
                Some((k, _)) => ADD_ROLLUP_ONE_BUCKET[k].1,
                None => ADD_ROLLUP,
            };
            let mut stmt = tx.prepare_cached(sql)?;
            stmt.raw_bind_parameter(1, &r.queue)?;
            stmt.raw_bind_parameter(2, r.minute)?;
            for (i, x) in sums.iter().enumerate() {
                stmt.raw_bind_parameter(3 + i, *x)?;
            }
            match one {
                Some((_, n)) => stmt.raw_bind_parameter(9, *n)?,
                None => {
                    for (i, x) in buckets.iter().enumerate() {
                        stmt.raw_bind_parameter(9 + i, *x)?;
                    }
                }
            }
            stmt.raw_execute()?;
        }
        Ok(())
    }
}

/// The tries this store handle claimed and has not seen end, by job: what
/// the rollups need of a completion (queue, started, due), so that a batch
/// of completions — `complete_many`, the worker's turn, remote workers'
/// acknowledgements through the daemon — counts them without reading their
/// rows again.  A completion of a try claimed elsewhere (another process)
/// reads them from the file instead.  Entries of tries that ended another
/// way are dropped when they end here, or once the notes grow past
/// [`NOTES_KEPT`] and they started over an hour ago (a completion of a try
/// whose note is gone reads its times from the file, as one claimed
/// elsewhere).
#[derive(Debug, Default)]
pub(crate) struct ClaimNotes {
    notes: std::sync::Mutex<Notes>,
}

/// How often, at most, a store handle's claims of one queue read the jobs'
/// due times, for the rollups' queue wait — every claim of a queue claimed
/// from less often than this, a sample of a busier queue's (its tries'
/// run times and counts are all counted).  A due time is a column more in the
/// claim's `RETURNING`: 1.5% of a batched claim and completion, where all
/// the rest of the rollups costs about 1% (benches/README.md).  PostgreSQL
/// returns rows without that cost, and reads them on every claim.
pub const WAIT_SAMPLE_EVERY: std::time::Duration = std::time::Duration::from_millis(50);

/// The notes, by job id, and the names of their queues (a note holds its
/// queue's place in `queues`: no name copied or counted per job).
///
/// A job's note sits in the slot of its id modulo the slots' count — the ids
/// of the tries a handle holds are mostly a run of consecutive ones, so
/// they rarely meet — and in `overflow` when another's holds that slot.
/// A note costs a store and a compare instead of a hash map's probe
/// (benches/README.md: the notes were most of what the rollups cost a job).
#[derive(Debug, Default)]
pub(crate) struct Notes {
    slots: Vec<Slot>,
    overflow: std::collections::HashMap<i64, Note, std::hash::BuildHasherDefault<IdHasher>>,
    queues: Vec<NotedQueue>,
}

/// A queue this handle claimed from.
#[derive(Debug, Default)]
struct NotedQueue {
    name: String,
    /// When its claims last read the jobs' due times.
    timed_at: Option<Millis>,
}

/// A note's place: `id` 0 when free (job ids start at 1).
#[derive(Debug, Clone, Copy)]
struct Slot {
    id: i64,
    note: Note,
}

/// Slots per handle, allocated at its first claim (a power of two).
const SLOTS: usize = 4096;

/// The notes' hash of a job id: one multiplication (Fibonacci hashing, as
/// rustc's FxHash).  Ids are the file's own, not an attacker's choice, and
/// the default SipHash was most of what a note cost.
#[derive(Debug, Default)]
pub(crate) struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0.rotate_left(5) ^ u64::from(*b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }

    fn write_i64(&mut self, n: i64) {
        self.0 = (n as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Note {
    token: i64,
    queue: u32,
    pub(crate) started_at: Millis,
    pub(crate) due_at: Option<Millis>,
}

const FREE: Slot = Slot {
    id: 0,
    note: Note {
        token: 0,
        queue: 0,
        started_at: 0,
        due_at: None,
    },
};

/// Notes kept past the slots before the stale ones are swept.
const NOTES_KEPT: usize = 100_000;

/// A note older than this may be dropped for room: a completion of its try
/// then reads the times from the file.
const STALE_MS: Millis = 3_600_000;

impl Notes {
    fn slot(&self, id: i64) -> usize {
        (id as u64 as usize) & (SLOTS - 1)
    }

    /// Note the try of job `id`.
    fn put(&mut self, id: i64, note: Note, now: Millis) {
        if self.slots.is_empty() {
            self.slots = vec![FREE; SLOTS];
        }
        let at = self.slot(id);
        let slot = &mut self.slots[at];
        if slot.id == 0 || slot.id == id || slot.note.started_at < now - STALE_MS {
            *slot = Slot { id, note };
            if !self.overflow.is_empty() {
                self.overflow.remove(&id);
            }
            return;
        }
        if self.overflow.len() >= NOTES_KEPT {
            self.overflow.retain(|_, n| n.started_at >= now - STALE_MS);
        }
        self.overflow.insert(id, note);
    }

    /// Take the note of the try `id`/`token`, if this handle claimed it.
    pub(crate) fn take(&mut self, id: i64, token: i64) -> Option<Note> {
        if let Some(at) = (!self.slots.is_empty()).then(|| self.slot(id)) {
            let slot = &mut self.slots[at];
            if slot.id == id {
                if slot.note.token != token {
                    return None;
                }
                let note = slot.note;
                slot.id = 0;
                return Some(note);
            }
        }
        if self.overflow.is_empty() {
            return None;
        }
        match self.overflow.remove(&id) {
            Some(n) if n.token == token => Some(n),
            Some(n) => {
                self.overflow.insert(id, n);
                None
            }
            None => None,
        }
    }

    /// Drop the note of job `id`, whatever its try.
    fn forget(&mut self, id: i64) {
        if !self.slots.is_empty() {
            let at = self.slot(id);
            if self.slots[at].id == id {
                self.slots[at].id = 0;
            }
        }
        if !self.overflow.is_empty() {
            self.overflow.remove(&id);
        }
    }

    /// The queue of a note.
    pub(crate) fn queue(&self, note: &Note) -> &str {
        &self.queues[note.queue as usize].name
    }

    fn queue_place(&mut self, name: &str) -> u32 {
        match self.queues.iter().position(|q| q.name == name) {
            Some(i) => i as u32,
            None => {
                self.queues.push(NotedQueue {
                    name: name.to_string(),
                    timed_at: None,
                });
                (self.queues.len() - 1) as u32
            }
        }
    }
}

/// Successes counted from their notes, for a batch of completions: a run of
/// notes of one claim (one queue and start, no due time read) is counted
/// once, not per job.
#[derive(Debug, Default)]
pub(crate) struct NotedSuccesses {
    run: Option<(u32, Millis, i64)>,
}

impl NotedSuccesses {
    /// The try of note `n` succeeded at `now`.
    pub(crate) fn add(&mut self, notes: &Notes, n: Note, now: Millis, tally: &mut Tally) {
        if n.due_at.is_some() {
            let started = Some(n.started_at);
            tally.ended(notes.queue(&n), now, Ended::Succeeded, started, n.due_at);
            return;
        }
        if let Some((queue, started, count)) = &mut self.run {
            if *queue == n.queue && *started == n.started_at {
                *count += 1;
                return;
            }
        }
        self.flush(notes, now, tally);
        self.run = Some((n.queue, n.started_at, 1));
    }

    /// Count the run held.
    pub(crate) fn flush(&mut self, notes: &Notes, now: Millis, tally: &mut Tally) {
        if let Some((queue, started, count)) = self.run.take() {
            tally.succeeded_n(&notes.queues[queue as usize].name, now, started, count);
        }
    }
}

impl ClaimNotes {
    /// The notes, locked.  Taken inside a write transaction, they stay
    /// taken if it is tried again (its completions then read their times
    /// from the file).
    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, Notes> {
        self.notes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether a claim of `queue` at `now` is to read its jobs' due times:
    /// when this handle has not for [`WAIT_SAMPLE_EVERY`] (or the clock went
    /// back).
    pub(crate) fn time_claim(&self, queue: &str, now: Millis) -> bool {
        let every = crate::clock::duration_ms(WAIT_SAMPLE_EVERY);
        let mut notes = self.lock();
        let place = notes.queue_place(queue) as usize;
        let timed_at = &mut notes.queues[place].timed_at;
        match *timed_at {
            Some(last) if now >= last && now - last < every => false,
            _ => {
                *timed_at = Some(now);
                true
            }
        }
    }

    /// Note the tries just claimed from `queue`, in the claim's transaction
    /// (a try whose transaction does not commit leaves a note no token will
    /// match, and its slot to the next).
    pub(crate) fn claimed(&self, queue: &str, jobs: &[crate::store::ClaimedJob], now: Millis) {
        if jobs.is_empty() {
            return;
        }
        let mut notes = self.lock();
        let place = notes.queue_place(queue);
        for j in jobs {
            let note = Note {
                token: j.lease_token,
                queue: place,
                started_at: j.started_at,
                due_at: j.due_at,
            };
            notes.put(j.id, note, now);
        }
    }

    /// Take the note of one try: its queue, start and due time.
    pub(crate) fn take_one(&self, id: i64, token: i64) -> Option<(String, Millis, Option<Millis>)> {
        let mut notes = self.lock();
        let n = notes.take(id, token)?;
        Some((notes.queue(&n).to_string(), n.started_at, n.due_at))
    }

    /// Forget these jobs' notes (their tries ended another way).
    pub(crate) fn forget(&self, ids: impl Iterator<Item = i64>) {
        let mut notes = self.lock();
        for id in ids {
            notes.forget(id);
        }
    }
}

/// The upserts' additions of the counts and sums (the columns after
/// `queue, minute` up to the buckets).
macro_rules! add_counts {
    () => {
        "    succeeded = succeeded + excluded.succeeded,
    failed = failed + excluded.failed,
    dead = dead + excluded.dead,
    cancelled = cancelled + excluded.cancelled,
    run_ms = run_ms + excluded.run_ms,
    wait_ms = wait_ms + excluded.wait_ms,
"
    };
}

/// Add a tally's counts to a queue's minute: the values in the schema's
/// column order (the text is short because the statement cache hashes and
/// compares it on every use, once a transaction ending tries).
pub(crate) const ADD_ROLLUP: &str = concat!(
    "
INSERT INTO rollups VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT DO UPDATE SET
",
    add_counts!(),
    "    run_10ms = run_10ms + excluded.run_10ms,
    run_50ms = run_50ms + excluded.run_50ms,
    run_100ms = run_100ms + excluded.run_100ms,
    run_250ms = run_250ms + excluded.run_250ms,
    run_500ms = run_500ms + excluded.run_500ms,
    run_1s = run_1s + excluded.run_1s,
    run_2500ms = run_2500ms + excluded.run_2500ms,
    run_5s = run_5s + excluded.run_5s,
    run_10s = run_10s + excluded.run_10s,
    run_30s = run_30s + excluded.run_30s,
    run_1m = run_1m + excluded.run_1m,
    run_5m = run_5m + excluded.run_5m,
    run_more = run_more + excluded.run_more,
    wait_10ms = wait_10ms + excluded.wait_10ms,
    wait_50ms = wait_50ms + excluded.wait_50ms,
    wait_100ms = wait_100ms + excluded.wait_100ms,
    wait_250ms = wait_250ms + excluded.wait_250ms,
    wait_500ms = wait_500ms + excluded.wait_500ms,
    wait_1s = wait_1s + excluded.wait_1s,
    wait_2500ms = wait_2500ms + excluded.wait_2500ms,
    wait_5s = wait_5s + excluded.wait_5s,
    wait_10s = wait_10s + excluded.wait_10s,
    wait_30s = wait_30s + excluded.wait_30s,
    wait_1m = wait_1m + excluded.wait_1m,
    wait_5m = wait_5m + excluded.wait_5m,
    wait_more = wait_more + excluded.wait_more"
);

/// [`ADD_ROLLUP`] for a tally with one histogram bucket counted (the
/// common batch: one claim's jobs, ended together, no due times read): the
/// counts, the sums and that bucket's column only — a third of the values to
/// bind and add.  One statement per bucket column, run buckets first, in
/// [`Rollup::values`]' order.
macro_rules! add_rollup_one_bucket {
    ($($col:literal)*) => {
        [$(($col, concat!(
            "
INSERT INTO rollups (queue, minute, succeeded, failed, dead, cancelled, run_ms, wait_ms, ", $col, ")
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT DO UPDATE SET
", add_counts!(), "    ", $col, " = ", $col, " + excluded.", $col
        ))),*]
    };
}
pub(crate) const ADD_ROLLUP_ONE_BUCKET: [(&str, &str); 2 * BUCKETS] = add_rollup_one_bucket!("run_10ms" "run_50ms" "run_100ms" "run_250ms" "run_500ms" "run_1s" "run_2500ms" "run_5s" "run_10s" "run_30s" "run_1m" "run_5m" "run_more" "wait_10ms" "wait_50ms" "wait_100ms" "wait_250ms" "wait_500ms" "wait_1s" "wait_2500ms" "wait_5s" "wait_10s" "wait_30s" "wait_1m" "wait_5m" "wait_more");

/// The minutes from ?1 on, oldest first.
pub(crate) const ROLLUPS_SINCE: &str = "
SELECT * FROM rollups WHERE minute >= ?1 ORDER BY minute, queue";

/// Per queue, everything the file has counted (the purged minutes' fold
/// included).
pub(crate) const ROLLUP_TOTALS: &str = "
SELECT queue, 0, sum(succeeded), sum(failed), sum(dead), sum(cancelled), sum(run_ms), sum(wait_ms), sum(run_10ms), sum(run_50ms), sum(run_100ms), sum(run_250ms), sum(run_500ms), sum(run_1s), sum(run_2500ms), sum(run_5s), sum(run_10s), sum(run_30s), sum(run_1m), sum(run_5m), sum(run_more), sum(wait_10ms), sum(wait_50ms), sum(wait_100ms), sum(wait_250ms), sum(wait_500ms), sum(wait_1s), sum(wait_2500ms), sum(wait_5s), sum(wait_10s), sum(wait_30s), sum(wait_1m), sum(wait_5m), sum(wait_more)
FROM rollups GROUP BY queue ORDER BY queue";

/// Fold the minutes before ?1 into each queue's minute 0...
pub(crate) const FOLD_OLD_ROLLUPS: &str = "
INSERT INTO rollups
SELECT queue, 0, sum(succeeded), sum(failed), sum(dead), sum(cancelled), sum(run_ms), sum(wait_ms), sum(run_10ms), sum(run_50ms), sum(run_100ms), sum(run_250ms), sum(run_500ms), sum(run_1s), sum(run_2500ms), sum(run_5s), sum(run_10s), sum(run_30s), sum(run_1m), sum(run_5m), sum(run_more), sum(wait_10ms), sum(wait_50ms), sum(wait_100ms), sum(wait_250ms), sum(wait_500ms), sum(wait_1s), sum(wait_2500ms), sum(wait_5s), sum(wait_10s), sum(wait_30s), sum(wait_1m), sum(wait_5m), sum(wait_more)
FROM rollups WHERE minute > 0 AND minute < ?1
GROUP BY queue
ON CONFLICT (queue, minute) DO UPDATE SET
    succeeded = rollups.succeeded + excluded.succeeded,
    failed = rollups.failed + excluded.failed,
    dead = rollups.dead + excluded.dead,
    cancelled = rollups.cancelled + excluded.cancelled,
    run_ms = rollups.run_ms + excluded.run_ms,
    wait_ms = rollups.wait_ms + excluded.wait_ms,
    run_10ms = rollups.run_10ms + excluded.run_10ms,
    run_50ms = rollups.run_50ms + excluded.run_50ms,
    run_100ms = rollups.run_100ms + excluded.run_100ms,
    run_250ms = rollups.run_250ms + excluded.run_250ms,
    run_500ms = rollups.run_500ms + excluded.run_500ms,
    run_1s = rollups.run_1s + excluded.run_1s,
    run_2500ms = rollups.run_2500ms + excluded.run_2500ms,
    run_5s = rollups.run_5s + excluded.run_5s,
    run_10s = rollups.run_10s + excluded.run_10s,
    run_30s = rollups.run_30s + excluded.run_30s,
    run_1m = rollups.run_1m + excluded.run_1m,
    run_5m = rollups.run_5m + excluded.run_5m,
    run_more = rollups.run_more + excluded.run_more,
    wait_10ms = rollups.wait_10ms + excluded.wait_10ms,
    wait_50ms = rollups.wait_50ms + excluded.wait_50ms,
    wait_100ms = rollups.wait_100ms + excluded.wait_100ms,
    wait_250ms = rollups.wait_250ms + excluded.wait_250ms,
    wait_500ms = rollups.wait_500ms + excluded.wait_500ms,
    wait_1s = rollups.wait_1s + excluded.wait_1s,
    wait_2500ms = rollups.wait_2500ms + excluded.wait_2500ms,
    wait_5s = rollups.wait_5s + excluded.wait_5s,
    wait_10s = rollups.wait_10s + excluded.wait_10s,
    wait_30s = rollups.wait_30s + excluded.wait_30s,
    wait_1m = rollups.wait_1m + excluded.wait_1m,
    wait_5m = rollups.wait_5m + excluded.wait_5m,
    wait_more = rollups.wait_more + excluded.wait_more";

/// ...and delete them.
pub(crate) const PURGE_ROLLUPS: &str = "
DELETE FROM rollups WHERE minute > 0 AND minute < ?1";

#[cfg(test)]
pub(crate) const STATEMENTS: &[(&str, &str)] = &[
    ("ADD_ROLLUP", ADD_ROLLUP),
    ("ROLLUPS_SINCE", ROLLUPS_SINCE),
    ("ROLLUP_TOTALS", ROLLUP_TOTALS),
    ("FOLD_OLD_ROLLUPS", FOLD_OLD_ROLLUPS),
    ("PURGE_ROLLUPS", PURGE_ROLLUPS),
];

pub(crate) fn read_rollups(
    stmt: &mut rusqlite::CachedStatement<'_>,
    params: impl rusqlite::Params,
) -> rusqlite::Result<Vec<Rollup>> {
    let mut out = Vec::new();
    let mut rows = stmt.query(params)?;
    while let Some(row) = rows.next()? {
        let mut v = [0i64; COUNTERS];
        for (i, x) in v.iter_mut().enumerate() {
            *x = row.get(i + 2)?;
        }
        out.push(Rollup::from_values(row.get(0)?, row.get(1)?, &v));
    }
    Ok(out)
}

impl SqliteStore {
    /// Every queue's rollups from minute `since` (minutes since the epoch)
    /// on, oldest first.
    pub fn rollups(&self, since: i64) -> Result<Vec<Rollup>> {
        self.with_conn("rollups", |c| {
            Ok(read_rollups(
                &mut c.prepare_cached(ROLLUPS_SINCE)?,
                [since.max(1)],
            )?)
        })
    }

    /// Per queue, every try the file has counted (purged minutes included):
    /// counters that never go down.
    pub fn rollup_totals(&self) -> Result<Vec<Rollup>> {
        self.with_conn("rollup totals", |c| {
            Ok(read_rollups(&mut c.prepare_cached(ROLLUP_TOTALS)?, [])?)
        })
    }

    /// Fold the minutes ended before `cutoff` into each queue's total
    /// (minute 0) and delete them; how many were.
    pub fn purge_rollups(&self, cutoff: Millis) -> Result<usize> {
        let minute = cutoff.div_euclid(60_000);
        self.write("purge rollups", |tx| {
            tx.prepare_cached(FOLD_OLD_ROLLUPS)?
                .execute(params![minute])?;
            Ok(tx.prepare_cached(PURGE_ROLLUPS)?.execute(params![minute])?)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn note(token: i64, started_at: Millis) -> Note {
        Note {
            token,
            queue: 0,
            started_at,
            due_at: None,
        }
    }

    #[test]
    fn a_note_is_taken_once_by_its_try_and_ids_sharing_a_slot_both_kept() {
        let mut n = Notes::default();
        let far = 7 + SLOTS as i64; // the slot of 7
        n.put(7, note(70, 1_000), 1_000);
        n.put(far, note(71, 1_000), 1_000);
        assert_eq!(n.overflow.len(), 1, "the second of a slot overflows");
        assert!(n.take(7, 99).is_none(), "another try's token");
        assert_eq!(n.take(7, 70).map(|x| x.token), Some(70));
        assert!(n.take(7, 70).is_none(), "taken once");
        assert!(n.take(far, 99).is_none());
        assert_eq!(n.take(far, 71).map(|x| x.token), Some(71));
        assert!(n.overflow.is_empty());
        // Re-claimed by this handle: the new try's note replaces the old.
        n.put(8, note(80, 1_000), 1_000);
        n.put(8, note(81, 2_000), 2_000);
        assert!(n.take(8, 80).is_none());
        assert_eq!(n.take(8, 81).map(|x| x.started_at), Some(2_000));
        // Forgotten, in the slot and in the overflow.
        n.put(9, note(90, 1_000), 1_000);
        n.put(9 + SLOTS as i64, note(91, 1_000), 1_000);
        n.forget(9);
        n.forget(9 + SLOTS as i64);
        assert!(n.take(9, 90).is_none() && n.take(9 + SLOTS as i64, 91).is_none());
        // A stale note gives its slot up.
        n.put(10, note(100, 0), 0);
        let later = STALE_MS + 1;
        n.put(10 + SLOTS as i64, note(101, later), later);
        assert!(n.overflow.is_empty());
        assert!(
            n.take(10, 100).is_none(),
            "dropped: its completion reads the file"
        );
        assert!(n.take(10 + SLOTS as i64, 101).is_some());
    }

    #[test]
    fn a_queue_claim_reads_due_times_once_per_interval() {
        let c = ClaimNotes::default();
        let every = crate::clock::duration_ms(WAIT_SAMPLE_EVERY);
        assert!(c.time_claim("a", 1_000));
        assert!(!c.time_claim("a", 1_000));
        assert!(!c.time_claim("a", 1_000 + every - 1));
        assert!(c.time_claim("b", 1_000), "each queue its own");
        assert!(c.time_claim("a", 1_000 + every));
        assert!(c.time_claim("a", 500), "the clock went back");
    }

    #[test]
    fn a_run_of_one_claims_notes_tallies_as_each_would() {
        let notes = Notes {
            queues: ["q", "r"]
                .map(|name| NotedQueue {
                    name: name.into(),
                    timed_at: None,
                })
                .into(),
            ..Notes::default()
        };
        let q = |started_at, due_at| Note {
            token: 1,
            queue: 0,
            started_at,
            due_at,
        };
        let r = Note {
            queue: 1,
            ..q(900, None)
        };
        let ends = [
            q(1_000, None),
            q(1_000, None),
            q(1_000, Some(400)),
            q(1_000, None),
            r,
            q(950, None),
        ];
        let now = 61_000;
        let mut batched = Tally::default();
        let mut noted = NotedSuccesses::default();
        for n in ends {
            noted.add(&notes, n, now, &mut batched);
        }
        noted.flush(&notes, now, &mut batched);
        let mut each = Tally::default();
        for n in ends {
            each.ended(
                notes.queue(&n),
                now,
                Ended::Succeeded,
                Some(n.started_at),
                n.due_at,
            );
        }
        let sorted = |t: &Tally| {
            let mut v = t.rows().to_vec();
            v.sort_by(|a, b| a.queue.cmp(&b.queue));
            v
        };
        assert_eq!(sorted(&batched), sorted(&each));
        assert_eq!(sorted(&each)[0].succeeded, 5);
        assert_eq!(sorted(&each)[0].wait.iter().sum::<i64>(), 1);
    }
}
