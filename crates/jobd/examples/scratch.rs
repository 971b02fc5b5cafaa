use jobd::store::NewJob;
use jobd::Store;
use std::time::{Duration, Instant};
fn pct(mut v: Vec<u128>) -> String {
    v.sort();
    format!(
        "p50 {} p90 {} p99 {}",
        v[v.len() / 2],
        v[v.len() * 9 / 10],
        v[v.len() * 99 / 100]
    )
}
fn main() {
    let dir = tempfile::tempdir_in("/work/main/target").unwrap();
    let store = Store::open(dir.path().join("a.db")).unwrap();
    let mut v = vec![];
    for _ in 0..200 {
        std::thread::sleep(Duration::from_millis(20));
        let t = Instant::now();
        store.enqueue(&NewJob::new("bench", "stamp")).unwrap();
        v.push(t.elapsed().as_micros());
    }
    println!("jobd enqueue after 20ms idle: {}", pct(v));
    let mut v = vec![];
    for _ in 0..200 {
        std::thread::sleep(Duration::from_micros(200));
        let t = Instant::now();
        store.enqueue(&NewJob::new("bench", "stamp")).unwrap();
        v.push(t.elapsed().as_micros());
    }
    println!("jobd enqueue after 0.2ms idle: {}", pct(v));
    let c = rusqlite::Connection::open(dir.path().join("raw.db")).unwrap();
    c.execute_batch("PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; CREATE TABLE t(id INTEGER PRIMARY KEY, p TEXT)").unwrap();
    let mut v = vec![];
    for _ in 0..200 {
        std::thread::sleep(Duration::from_millis(20));
        let t = Instant::now();
        c.execute("INSERT INTO t(p) VALUES ('{}')", []).unwrap();
        v.push(t.elapsed().as_micros());
    }
    println!("raw insert after 20ms idle: {}", pct(v));
    let mut v = vec![];
    for _ in 0..200 {
        std::thread::sleep(Duration::from_millis(20));
        let t = Instant::now();
        let mut x = 0u64;
        for i in 0..1000 {
            x = x.wrapping_add(i * i);
        }
        std::hint::black_box(x);
        v.push(t.elapsed().as_micros());
    }
    println!("1000 multiplies after 20ms idle: {}", pct(v));
}
