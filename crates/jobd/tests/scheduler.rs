//! The cron scheduler, in simulated time: exactly-once ticks with racing
//! schedulers, misfire policies, DST, management, bad input.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use chrono::{DateTime, Datelike, TimeZone, Timelike, Utc};
use jobd::scheduler::{Misfire, NewSchedule, ScheduleSpec, Scheduler, When};
use jobd::{Error, ManualClock, Millis, NewJob, Store, StoreOptions};

fn ms(s: &str) -> Millis {
    DateTime::parse_from_rfc3339(s).unwrap().timestamp_millis()
}

fn iso(t: Millis) -> String {
    DateTime::<Utc>::from_timestamp_millis(t)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// A set of schedules as an application ships them (the QR platform's
/// defaults): nightly, weekly, daily and every half hour.
fn shipped() -> Vec<NewSchedule> {
    vec![
        NewSchedule::cron(
            "tenant-backup",
            "0 2 * * *",
            "maintenance",
            "backup_tenants",
        )
        .payload(&serde_json::json!({ "keep": 7 }))
        .timeout(Duration::from_secs(3600)),
        NewSchedule::cron("job-cleanup", "0 3 * * 0", "maintenance", "cleanup"),
        NewSchedule::cron(
            "analytics-rollup",
            "0 1 * * *",
            "analytics",
            "analytics_rollup",
        ),
        NewSchedule::every(
            "health-check",
            Duration::from_secs(30 * 60),
            "maintenance",
            "health_check",
        )
        .misfire(Misfire::Skip),
    ]
}

fn install_shipped(store: &Store, again: bool) -> Vec<String> {
    store
        .install_schedules_once("shipped_installed_at", &shipped(), again)
        .unwrap()
}

fn open(path: &std::path::Path, clock: &ManualClock) -> Store {
    Store::open_with(path, StoreOptions::default().clock(clock.clone())).unwrap()
}

/// Where a test's queue lives: a SQLite file, or a fresh database on the
/// test process's PostgreSQL cluster.  Each [`Place::open`] is a new
/// handle, as another process would have.
struct Place {
    _dir: Option<tempfile::TempDir>,
    db: String,
}

fn place(postgres: bool) -> Option<Place> {
    if postgres {
        return Some(Place {
            _dir: None,
            db: jobd_testkit::pg::database()?,
        });
    }
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("queue.db").display().to_string();
    Some(Place {
        _dir: Some(dir),
        db,
    })
}

impl Place {
    fn open(&self, clock: &ManualClock) -> Store {
        Store::connect(&self.db, StoreOptions::default().clock(clock.clone())).unwrap()
    }
}

/// Run each named test — `fn name(place: &Place)` — on both backends.
macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[test]
            fn $name() {
                super::$name(&super::place(false).unwrap())
            })*
        }
        mod postgres {
            $(#[test]
            fn $name() {
                if let Some(p) = super::place(true) {
                    super::$name(&p)
                }
            })*
        }
    };
}

/// Rows of `sql` (no parameters) on the store's backend, each column
/// read by `row` from a list of its values.
fn query<T>(
    store: &Store,
    sql: &str,
    sqlite_row: impl Fn(&rusqlite::Row) -> rusqlite::Result<T>,
    pg_row: impl Fn(&::postgres::Row) -> T,
) -> Vec<T> {
    match store.sqlite() {
        Some(file) => {
            let conn = file.connection().unwrap();
            let mut stmt = conn.prepare(sql).unwrap();
            stmt.query_map([], |r| sqlite_row(r))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap()
        }
        None => {
            let mut c = ::postgres::Client::connect(&store.location(), ::postgres::NoTls).unwrap();
            c.query(sql, &[]).unwrap().iter().map(pg_row).collect()
        }
    }
}

/// Run `sql` (a change made behind jobd's back) on the store's backend.
fn exec(store: &Store, sql: &str) {
    match store.sqlite() {
        Some(file) => {
            file.connection().unwrap().execute_batch(sql).unwrap();
        }
        None => {
            let mut c = ::postgres::Client::connect(&store.location(), ::postgres::NoTls).unwrap();
            c.batch_execute(sql).unwrap();
        }
    }
}

/// `(schedule, fire_at, job_id, job kind, job run_at)` for every fire.
/// `(schedule, fire_at, job_id, job kind, job run_at)`.
type FireRow = (String, Millis, Option<i64>, Option<String>, Option<Millis>);

fn fires(store: &Store) -> Vec<FireRow> {
    query(
        store,
        "SELECT f.schedule, f.fire_at, f.job_id, j.kind, j.run_at
         FROM schedule_fires AS f LEFT JOIN jobs AS j ON j.id = f.job_id
         ORDER BY f.schedule, f.fire_at",
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
        |r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)),
    )
}

fn job_count(store: &Store) -> i64 {
    query(
        store,
        "SELECT count(*) FROM jobs",
        |r| r.get(0),
        |r| r.get(0),
    )[0]
}

/// Acceptance 1: a simulated week, three schedulers (each its own Store, as
/// separate processes would have) racing on one file after every clock step.
fn a_week_with_three_racing_schedulers_fires_every_tick_once(place: &Place) {
    let start = ms("2026-11-23T00:00:00Z"); // a Monday
    let clock = ManualClock::new(start - 1);
    let stores: Vec<Store> = (0..3).map(|_| place.open(&clock)).collect();
    let store = &stores[0];
    assert_eq!(install_shipped(store, false).len(), 4);
    store
        .add_schedule(&NewSchedule::cron(
            "every-7-min",
            "0 */7 * * * *",
            "q",
            "seven",
        ))
        .unwrap();
    store
        .add_schedule(
            &NewSchedule::cron("ny-weekday", "15 9 * * 1-5", "q", "ny")
                .timezone("America/New_York"),
        )
        .unwrap();

    // Steps of 37 s: ticks are fired up to 37 s late, inside the grace.
    let step = 37_000;
    let end = start + 7 * 86_400_000;
    let steps = ((end - start) / step) as usize;
    let barrier = Arc::new(Barrier::new(4));
    let fired_by: Vec<usize> = std::thread::scope(|scope| {
        let handles: Vec<_> = stores
            .iter()
            .map(|s| {
                let barrier = barrier.clone();
                let scheduler = Scheduler::new(s.clone());
                scope.spawn(move || {
                    let mut fired = 0;
                    for _ in 0..=steps {
                        barrier.wait(); // the clock has moved
                        fired += scheduler.tick().unwrap().fired.len();
                        barrier.wait(); // every scheduler is done with this step
                    }
                    fired
                })
            })
            .collect();
        for i in 0..=steps {
            clock.set(start + i as i64 * step);
            barrier.wait();
            barrier.wait();
        }
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let last = start + steps as i64 * step;

    // The expected ticks, from plain arithmetic on every minute of the week.
    let ny = chrono_tz::America::New_York;
    let mut expected: BTreeMap<&str, BTreeSet<Millis>> = BTreeMap::new();
    let mut t = start;
    while t <= last {
        let utc = Utc.timestamp_millis_opt(t).unwrap();
        let (h, m, dow) = (
            utc.hour(),
            utc.minute(),
            utc.weekday().num_days_from_sunday(),
        );
        let mut add = |name| {
            expected.entry(name).or_default().insert(t);
        };
        if h == 2 && m == 0 {
            add("tenant-backup");
        }
        if h == 3 && m == 0 && dow == 0 {
            add("job-cleanup");
        }
        if h == 1 && m == 0 {
            add("analytics-rollup");
        }
        if m % 30 == 0 {
            add("health-check");
        }
        if m % 7 == 0 {
            add("every-7-min");
        }
        let local = utc.with_timezone(&ny);
        let ny_dow = local.weekday().num_days_from_sunday();
        if (1..=5).contains(&ny_dow) && local.hour() == 9 && local.minute() == 15 {
            add("ny-weekday");
        }
        t += 60_000;
    }

    let fires = fires(store);
    let mut got: BTreeMap<&str, BTreeSet<Millis>> = BTreeMap::new();
    for (name, fire_at, job, kind, run_at) in &fires {
        assert!(
            job.is_some() && kind.is_some(),
            "{name} {} has no job",
            iso(*fire_at)
        );
        assert_eq!(*run_at, Some(*fire_at), "the job runs at its tick");
        got.entry(name.as_str()).or_default().insert(*fire_at);
    }
    assert_eq!(got, expected);
    assert_eq!(expected["tenant-backup"].len(), 7);
    assert_eq!(expected["job-cleanup"].len(), 1);
    assert_eq!(expected["health-check"].len(), 7 * 48);
    assert_eq!(expected["ny-weekday"].len(), 5);
    // One job per tick, no job without a tick.
    let total: usize = expected.values().map(|s| s.len()).sum();
    assert_eq!(fires.len(), total);
    assert_eq!(job_count(store), total as i64);
    assert_eq!(fired_by.iter().sum::<usize>(), total);
    eprintln!("fires per scheduler: {fired_by:?}");
    // The race was real: more than one scheduler fired ticks.
    assert!(
        fired_by.iter().filter(|n| **n > 0).count() >= 2,
        "fires per scheduler: {fired_by:?}"
    );
}

/// Acceptance 2: a five-hour gap, per policy.
#[test]
fn misfire_policies_after_a_five_hour_gap() {
    struct Case {
        misfire: Misfire,
        cap: i64,
        resume_at: &'static str,
        fired: &'static [&'static str],
    }
    let cases = [
        Case {
            misfire: Misfire::Skip,
            cap: 24,
            resume_at: "2026-11-23T15:05:00Z",
            fired: &[],
        },
        // A tick inside the grace is on time, even for `skip`.
        Case {
            misfire: Misfire::Skip,
            cap: 24,
            resume_at: "2026-11-23T15:00:30Z",
            fired: &["2026-11-23T15:00:00Z"],
        },
        Case {
            misfire: Misfire::Once,
            cap: 24,
            resume_at: "2026-11-23T15:05:00Z",
            fired: &["2026-11-23T15:00:00Z"],
        },
        Case {
            misfire: Misfire::All,
            cap: 4,
            resume_at: "2026-11-23T15:05:00Z",
            fired: &[
                "2026-11-23T13:30:00Z",
                "2026-11-23T14:00:00Z",
                "2026-11-23T14:30:00Z",
                "2026-11-23T15:00:00Z",
            ],
        },
        Case {
            misfire: Misfire::All,
            cap: 24,
            resume_at: "2026-11-23T15:05:00Z",
            fired: &[
                "2026-11-23T10:30:00Z",
                "2026-11-23T11:00:00Z",
                "2026-11-23T11:30:00Z",
                "2026-11-23T12:00:00Z",
                "2026-11-23T12:30:00Z",
                "2026-11-23T13:00:00Z",
                "2026-11-23T13:30:00Z",
                "2026-11-23T14:00:00Z",
                "2026-11-23T14:30:00Z",
                "2026-11-23T15:00:00Z",
            ],
        },
    ];
    for case in cases {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(ms("2026-11-23T09:59:00Z"));
        let store = open(&dir.path().join("queue.db"), &clock);
        store
            .add_schedule(
                &NewSchedule::cron("half-hourly", "*/30 * * * *", "q", "k")
                    .misfire(case.misfire)
                    .misfire_cap(case.cap),
            )
            .unwrap();
        let scheduler = Scheduler::new(store.clone());
        clock.set(ms("2026-11-23T10:00:00Z"));
        assert_eq!(scheduler.tick().unwrap().fired.len(), 1, "the on-time tick");

        // Down for five hours.
        clock.set(ms(case.resume_at));
        let report = scheduler.tick().unwrap();
        let fired: Vec<String> = report.fired.iter().map(|f| iso(f.fire_at)).collect();
        let want: Vec<String> = case.fired.iter().map(|s| s.to_string()).collect();
        assert_eq!(fired, want, "{:?} cap {}", case.misfire, case.cap);
        assert_eq!(report.skipped as usize, 10 - want.len());
        assert_eq!(report.next_fire_at, Some(ms("2026-11-23T15:30:00Z")));
        assert_eq!(job_count(&store), 1 + want.len() as i64);
        // Back to normal: the next tick fires once.
        assert!(scheduler.tick().unwrap().fired.is_empty());
        clock.set(ms("2026-11-23T15:30:01Z"));
        let next: Vec<String> = scheduler
            .tick()
            .unwrap()
            .fired
            .iter()
            .map(|f| iso(f.fire_at))
            .collect();
        assert_eq!(next, ["2026-11-23T15:30:00Z"]);
    }
}

/// Run `schedules` minute by minute from `from` to `to`; the fires per schedule.
fn simulate(from: &str, to: &str, schedules: &[NewSchedule]) -> BTreeMap<String, Vec<Millis>> {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(ms(from));
    let store = open(&dir.path().join("queue.db"), &clock);
    for s in schedules {
        store.add_schedule(s).unwrap();
    }
    let scheduler = Scheduler::new(store.clone());
    let mut out: BTreeMap<String, Vec<Millis>> = BTreeMap::new();
    let mut t = ms(from);
    while t <= ms(to) {
        clock.set(t);
        for f in scheduler.tick().unwrap().fired {
            out.entry(f.schedule).or_default().push(f.fire_at);
        }
        t += 60_000;
    }
    out
}

/// Acceptance 3: a daily 02:30 in zones with DST fires once on the change days.
#[test]
fn daily_0230_fires_once_on_dst_change_days() {
    for (zone, spring_from, spring_to, fall_from, fall_to, spring_fire, fall_fire) in [
        (
            "Europe/Berlin",
            "2026-03-27T12:00:00Z",
            "2026-03-31T12:00:00Z",
            "2026-10-23T12:00:00Z",
            "2026-10-27T12:00:00Z",
            // 02:30 CET does not exist on 03-29: the clock jumps 02:00 -> 03:00 CEST.
            "2026-03-29T01:00:00Z",
            // 02:30 happens twice on 10-25: the first (CEST) fires.
            "2026-10-25T00:30:00Z",
        ),
        (
            "America/New_York",
            "2026-03-06T12:00:00Z",
            "2026-03-10T12:00:00Z",
            "2026-10-30T12:00:00Z",
            "2026-11-03T12:00:00Z",
            "2026-03-08T07:00:00Z", // 03:00 EDT
            // New York repeats 01:00-02:00, so 02:30 (EST) happens once.
            "2026-11-01T07:30:00Z",
        ),
    ] {
        for expr in ["30 2 * * *", "0 30 2 * * *"] {
            let s = || NewSchedule::cron("daily", expr, "q", "k").timezone(zone);
            for (from, to, change_fire) in [
                (spring_from, spring_to, spring_fire),
                (fall_from, fall_to, fall_fire),
            ] {
                let fires = simulate(from, to, &[s()]).remove("daily").unwrap();
                let tz: chrono_tz::Tz = zone.parse().unwrap();
                let days: Vec<_> = fires
                    .iter()
                    .map(|t| {
                        Utc.timestamp_millis_opt(*t)
                            .unwrap()
                            .with_timezone(&tz)
                            .date_naive()
                    })
                    .collect();
                let unique: BTreeSet<_> = days.iter().collect();
                assert_eq!(
                    unique.len(),
                    days.len(),
                    "{zone} {expr}: a day fired twice: {fires:?}"
                );
                assert_eq!(
                    fires.len(),
                    4,
                    "{zone} {expr}: one fire per day: {:?}",
                    fires.iter().map(|t| iso(*t)).collect::<Vec<_>>()
                );
                assert!(
                    fires.contains(&ms(change_fire)),
                    "{zone} {expr}: {:?}",
                    fires.iter().map(|t| iso(*t)).collect::<Vec<_>>()
                );
            }
        }
    }
}

#[test]
fn hourly_follows_the_wall_clock_on_change_days() {
    let s = NewSchedule::cron("hourly", "0 * * * *", "q", "k").timezone("Europe/Berlin");
    // (Each simulation starts a minute early: a schedule's first tick is the
    // first one after it was added.)
    // 2026-03-29 local day: 23 hours long.
    let spring = simulate(
        "2026-03-28T22:59:00Z",
        "2026-03-29T21:59:00Z",
        std::slice::from_ref(&s),
    );
    assert_eq!(spring["hourly"].len(), 23);
    // 2026-10-25 local day: 25 hours long; the repeated 02:00 fires once.
    let fall = simulate("2026-10-24T21:59:00Z", "2026-10-25T22:59:00Z", &[s]);
    assert_eq!(fall["hourly"].len(), 24);
}

/// Acceptance 5: clear errors, nothing written.
#[test]
fn bad_expressions_and_zones_are_refused_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(ms("2026-11-23T10:00:00Z"));
    let store = open(&dir.path().join("queue.db"), &clock);
    store
        .add_schedule(&NewSchedule::cron("existing", "0 2 * * *", "q", "k"))
        .unwrap();
    let dump = |store: &Store| -> String {
        let conn = store.sqlite().unwrap().connection().unwrap();
        let mut stmt = conn
            .prepare("SELECT json_group_array(json_array(name, cron, interval_ms, timezone, queue, kind, payload, enabled, next_fire_at, updated_at)) FROM schedules")
            .unwrap();
        let s: String = stmt.query_row([], |r| r.get(0)).unwrap();
        let n: i64 = conn
            .query_row("SELECT count(*) FROM schedule_fires", [], |r| r.get(0))
            .unwrap();
        let j: i64 = conn
            .query_row("SELECT count(*) FROM jobs", [], |r| r.get(0))
            .unwrap();
        format!("{s} {n} {j}")
    };
    let before = dump(&store);
    let cases: Vec<(NewSchedule, &str)> = vec![
        (NewSchedule::cron("a", "0 2 * *", "q", "k"), "4 fields"),
        (
            NewSchedule::cron("a", "0 25 * * *", "q", "k"),
            "cron expression",
        ),
        (
            NewSchedule::cron("a", "0 2 * * 9", "q", "k"),
            "day of week 9",
        ),
        (
            NewSchedule::cron("a", "0 2 * * fri-mon", "q", "k"),
            "runs backwards",
        ),
        (NewSchedule::cron("a", "every day", "q", "k"), "2 fields"),
        (
            NewSchedule::cron("a", "30 2 30 2 *", "q", "k"),
            "matches no date",
        ),
        (
            NewSchedule::cron("a", "0 0 0 1 1 * 2020", "q", "k"),
            "no tick after now",
        ),
        (
            NewSchedule::cron("a", "0 2 * * *", "q", "k").timezone("Mars/Olympus"),
            "\"Mars/Olympus\" is not a known IANA timezone",
        ),
        (
            NewSchedule::cron("a", "0 2 * * *", "q", "k").timezone(""),
            "not a known IANA timezone",
        ),
        (
            NewSchedule::every("a", Duration::ZERO, "q", "k"),
            "shorter than the minimum",
        ),
        (
            NewSchedule::cron("a", "0 2 * * *", "bad queue", "k"),
            "invalid queue",
        ),
        (
            NewSchedule::cron("a", "0 2 * * *", "q", "k").payload_json("{nope"),
            "invalid payload",
        ),
        (
            NewSchedule::cron("a", "0 2 * * *", "q", "k").misfire_cap(0),
            "misfire_cap",
        ),
        (
            NewSchedule::cron("a b", "0 2 * * *", "q", "k"),
            "schedule name",
        ),
        (
            NewSchedule::new(
                "a",
                When::Cron("0 2 * * *".into()),
                NewJob::new("q", "k").unique_key("x"),
            ),
            "unique key",
        ),
        (
            NewSchedule::cron("existing", "0 3 * * *", "q", "k"),
            "already exists",
        ),
    ];
    for (schedule, wanted) in cases {
        let err = store.add_schedule(&schedule).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains(wanted), "{:?}: {msg}", schedule.name());
        assert!(
            matches!(
                err,
                Error::InvalidInput { .. } | Error::ScheduleExists { .. }
            ),
            "{err:?}"
        );
        assert_eq!(dump(&store), before, "{msg}: something was written");
    }
    // Replacing with a bad definition keeps the old one.
    let err = store
        .replace_schedule(&NewSchedule::cron("existing", "0 2 * * *", "q", "k").timezone("Nowhere"))
        .unwrap_err();
    assert!(err.to_string().contains("Nowhere"));
    assert_eq!(dump(&store), before);
    let name = "missing";
    assert!(matches!(
        store.remove_schedule(name),
        Err(Error::ScheduleNotFound { .. })
    ));
    assert!(matches!(
        store.pause_schedule(name),
        Err(Error::ScheduleNotFound { .. })
    ));
    assert!(matches!(
        store.run_schedule_now(name),
        Err(Error::ScheduleNotFound { .. })
    ));
    assert_eq!(dump(&store), before);
}

fn a_tick_already_fired_never_fires_again(place: &Place) {
    let clock = ManualClock::new(ms("2026-11-23T09:59:00Z"));
    let store = place.open(&clock);
    store
        .add_schedule(&NewSchedule::cron("s", "0 * * * *", "q", "k"))
        .unwrap();
    let scheduler = Scheduler::new(store.clone());
    clock.set(ms("2026-11-23T10:00:10Z"));
    assert_eq!(scheduler.tick().unwrap().fired.len(), 1);
    // Someone winds next_fire_at back by hand: the UNIQUE (schedule, fire_at)
    // row still refuses the tick.
    exec(
        &store,
        &format!(
            "UPDATE schedules SET next_fire_at = {}",
            ms("2026-11-23T10:00:00Z")
        ),
    );
    let report = scheduler.tick().unwrap();
    assert!(report.fired.is_empty());
    assert_eq!(report.next_fire_at, Some(ms("2026-11-23T11:00:00Z")));
    assert_eq!(job_count(&store), 1);

    // Replacing the definition (same ticks) does not re-fire 10:00 either.
    store
        .replace_schedule(&NewSchedule::cron("s", "0 * * * *", "q", "k2"))
        .unwrap();
    assert!(scheduler.tick().unwrap().fired.is_empty());
    let s = store.schedule("s").unwrap();
    assert_eq!(s.next_fire_at, Some(ms("2026-11-23T11:00:00Z")));
    assert_eq!((s.kind.as_str(), s.fires), ("k2", 1), "history kept");
}

fn pause_resume_run_now_remove(place: &Place) {
    let clock = ManualClock::new(ms("2026-11-23T09:59:00Z"));
    let store = place.open(&clock);
    store
        .add_schedule(
            &NewSchedule::every("s", Duration::from_secs(3600), "q", "k")
                .payload(&serde_json::json!({"n": 1}))
                .priority(-5)
                .tenant("acme"),
        )
        .unwrap();
    let scheduler = Scheduler::new(store.clone());
    store.pause_schedule("s").unwrap();
    assert_eq!(store.schedule("s").unwrap().next_fire_at, None);
    clock.set(ms("2026-11-23T12:30:00Z"));
    assert!(scheduler.tick().unwrap().fired.is_empty(), "paused");
    // Ticks passed while paused are not made up for.
    store.resume_schedule("s").unwrap();
    assert_eq!(
        store.schedule("s").unwrap().next_fire_at,
        Some(ms("2026-11-23T13:00:00Z"))
    );
    assert!(scheduler.tick().unwrap().fired.is_empty());

    // Run now: a job with the schedule's definition; the timetable is untouched.
    let id = store.run_schedule_now("s").unwrap();
    let job = store.get(id).unwrap();
    assert_eq!(
        (job.queue.as_str(), job.kind.as_str(), job.priority),
        ("q", "k", -5)
    );
    assert_eq!(job.payload, serde_json::json!({"n": 1}));
    assert_eq!(job.tenant.as_deref(), Some("acme"));
    assert_eq!(store.schedule("s").unwrap().fires, 0);

    clock.set(ms("2026-11-23T13:00:00Z"));
    let fired = scheduler.tick().unwrap().fired;
    assert_eq!(fired.len(), 1);
    assert_eq!(
        store.get(fired[0].job_id).unwrap().tenant.as_deref(),
        Some("acme")
    );

    store.remove_schedule("s").unwrap();
    assert!(store.schedules().unwrap().is_empty());
    assert_eq!(job_count(&store), 2, "its jobs stay");
    assert_eq!(store.next_schedule_tick().unwrap(), None);
}

fn shipped_schedules_install_once_and_stay_removed(place: &Place) {
    let store = Store::connect(&place.db, StoreOptions::default()).unwrap();
    let added = install_shipped(&store, false);
    assert_eq!(
        added,
        [
            "tenant-backup",
            "job-cleanup",
            "analytics-rollup",
            "health-check"
        ]
    );
    let backup = store.schedule("tenant-backup").unwrap();
    assert_eq!(backup.when, When::Cron("0 2 * * *".into()));
    let cleanup = store.schedule("job-cleanup").unwrap();
    assert_eq!(cleanup.when, When::Cron("0 3 * * 0".into()));
    assert_eq!(
        store.schedule("health-check").unwrap().when,
        When::Every(Duration::from_secs(1800))
    );
    // Editable and removable, and a removed default stays removed.
    store
        .replace_schedule(&NewSchedule::cron(
            "tenant-backup",
            "0 4 * * *",
            "maintenance",
            "backup_tenants",
        ))
        .unwrap();
    store.remove_schedule("job-cleanup").unwrap();
    assert!(install_shipped(&store, false).is_empty());
    assert_eq!(store.schedules().unwrap().len(), 3);
    assert_eq!(
        store.schedule("tenant-backup").unwrap().when,
        When::Cron("0 4 * * *".into())
    );
    // Unless asked: the missing one comes back, edits stay.
    assert_eq!(install_shipped(&store, true), ["job-cleanup"]);
    assert_eq!(
        store.schedule("tenant-backup").unwrap().when,
        When::Cron("0 4 * * *".into())
    );
}

fn a_row_edited_into_nonsense_is_disabled_with_the_reason(place: &Place) {
    let clock = ManualClock::new(ms("2026-11-23T09:59:00Z"));
    let store = place.open(&clock);
    for name in ["good", "bad"] {
        store
            .add_schedule(&NewSchedule::cron(name, "0 * * * *", "q", "k"))
            .unwrap();
    }
    exec(
        &store,
        "UPDATE schedules SET timezone = 'Atlantis/Capital' WHERE name = 'bad'",
    );
    clock.set(ms("2026-11-23T10:00:00Z"));
    let report = Scheduler::new(store.clone()).tick().unwrap();
    assert_eq!(report.fired.len(), 1, "the good schedule still fires");
    assert_eq!(report.disabled, ["bad"]);
    let bad = store.schedule("bad").unwrap();
    assert!(!bad.enabled);
    assert!(bad.last_error.unwrap().contains("Atlantis/Capital"));
}

#[test]
fn a_version_1_file_is_migrated() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("queue.db");
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(jobd::store::MIGRATIONS[0]).unwrap();
        conn.pragma_update(None, "application_id", jobd::store::APPLICATION_ID)
            .unwrap();
        conn.pragma_update(None, "user_version", 1).unwrap();
        conn.execute(
            "INSERT INTO jobs (queue, kind, state, run_at, max_attempts, attempt_limit,
                               backoff_base_ms, backoff_max_ms, created_at)
             VALUES ('q', 'k', 'ready', 0, 3, 3, 0, 0, 0)",
            [],
        )
        .unwrap();
    }
    let store = Store::open(&path).unwrap();
    let version: i64 = store
        .sqlite()
        .unwrap()
        .connection()
        .unwrap()
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, jobd::store::SCHEMA_VERSION);
    assert_eq!(job_count(&store), 1, "the jobs are kept");
    store
        .add_schedule(&NewSchedule::cron("s", "0 2 * * *", "q", "k").misfire_cap(3))
        .unwrap();
}

#[test]
fn a_schedule_spec_reads_back_what_it_writes_and_refuses_a_jobs_timing() {
    let text =
        r#"{"name":"n","every":"30m","queue":"q","kind":"k","payload":{"a":1},"max_attempts":2}"#;
    let spec: ScheduleSpec = serde_json::from_str(text).unwrap();
    let again: ScheduleSpec = serde_json::from_value(serde_json::to_value(&spec).unwrap()).unwrap();
    assert_eq!(
        serde_json::to_value(&again).unwrap(),
        serde_json::to_value(&spec).unwrap()
    );
    assert_eq!(again.into_new_schedule().unwrap().name(), "n");
    for field in [
        r#""run_at":1"#,
        r#""delay_ms":1"#,
        r#""unique_key":"u""#,
        r#""colour":1"#,
    ] {
        let text = format!(r#"{{"name":"n","every":"30m","queue":"q","kind":"k",{field}}}"#);
        let err = serde_json::from_str::<ScheduleSpec>(&text)
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field"), "{field}: {err}");
    }
}

conformance!(
    a_week_with_three_racing_schedulers_fires_every_tick_once,
    a_tick_already_fired_never_fires_again,
    pause_resume_run_now_remove,
    shipped_schedules_install_once_and_stay_removed,
    a_row_edited_into_nonsense_is_disabled_with_the_reason,
);
