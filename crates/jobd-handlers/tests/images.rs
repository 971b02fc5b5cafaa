//! `process_image`: the outputs decoded back (the image crate, and Debian's
//! `webpinfo`/`dwebp` and ImageMagick's `identify` where installed), a
//! 20,000×20,000 PNG bomb refused from its header (at enqueue and on a
//! try), and every bad source — not an image, outside the data directory, a symlink out of it,
//! outside uploads/ and artifacts/ — refused at enqueue and on a try, with
//! nothing written.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use jobd::store::{JobState, NewJob};
use jobd::worker::{Reporter, Worker};
use jobd::Store;
use jobd_handlers::images::{self, ImageSpec, Processed};
use jobd_handlers::DataDir;
use serde_json::json;

fn data_dir() -> (tempfile::TempDir, DataDir) {
    let dir = tempfile::tempdir().unwrap();
    let data = DataDir::new(dir.path().join("data"));
    std::fs::create_dir_all(data.uploads().join("tenant-001")).unwrap();
    (dir, data)
}

/// A `w`×`h` photo-like JPEG (gradients) at `rel` under the data directory.
fn photo(data: &DataDir, rel: &str, w: u32, h: u32) {
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([
            (x * 255 / w) as u8,
            (y * 255 / h) as u8,
            ((x + y) % 256) as u8,
        ])
    });
    img.save(data.root().join(rel)).unwrap();
}

fn spec(source: &str) -> ImageSpec {
    serde_json::from_value(json!({ "source": source })).unwrap()
}

/// Debian's `/usr/bin/<name>` (webp, imagemagick), which CI installs;
/// elsewhere its checks are skipped when it is missing.
fn tool(name: &str) -> Option<String> {
    let path = format!("/usr/bin/{name}");
    if Path::new(&path).exists() {
        return Some(path);
    }
    assert!(std::env::var_os("CI").is_none(), "CI must install {path}");
    eprintln!("SKIPPED: the checks by {path}");
    None
}

#[test]
fn thumbnails_an_original_and_a_webp_decode_back_at_their_sizes() {
    let (_d, data) = data_dir();
    photo(&data, "uploads/tenant-001/shop.jpg", 1200, 800);
    let out = images::out_dir(&data, Some("tenant-001"), "uploads/tenant-001/shop.jpg");
    let mut s = spec("uploads/tenant-001/shop.jpg");
    s.sizes = serde_json::from_value(json!([150, 300, [200, 400]])).unwrap();
    let done: Processed = images::process(&data, &s, &out, &Reporter::silent()).unwrap();
    assert_eq!(
        (done.width, done.height, done.format.as_str()),
        (1200, 800, "jpeg")
    );
    let got: Vec<(String, u32, u32, String)> = done
        .outputs
        .iter()
        .map(|o| (o.path.clone(), o.width, o.height, o.format.clone()))
        .collect();
    let base = "artifacts/images/tenant-001/shop";
    assert_eq!(
        got,
        vec![
            (format!("{base}/thumb-150x150.jpg"), 150, 100, "jpeg".into()),
            (format!("{base}/thumb-300x300.jpg"), 300, 200, "jpeg".into()),
            (format!("{base}/thumb-200x400.jpg"), 200, 133, "jpeg".into()),
            (format!("{base}/original.jpg"), 1200, 800, "jpeg".into()),
            (format!("{base}/original.webp"), 1200, 800, "webp".into()),
        ]
    );
    for o in &done.outputs {
        let path = data.root().join(&o.path);
        let img = image::open(&path).unwrap();
        assert_eq!(
            (img.width(), img.height()),
            (o.width, o.height),
            "{}",
            o.path
        );
        assert_eq!(std::fs::metadata(&path).unwrap().len(), o.bytes);
        if let Some(identify) = tool("identify") {
            let said = Command::new(identify)
                .args(["-format", "%m %w %h"])
                .arg(&path)
                .output()
                .unwrap();
            let said = String::from_utf8_lossy(&said.stdout).to_string();
            let want = format!("{} {} {}", o.format.to_uppercase(), o.width, o.height);
            assert_eq!(said, want, "ImageMagick on {}", o.path);
        }
    }
    let webp = data.root().join(format!("{base}/original.webp"));
    if let Some(webpinfo) = tool("webpinfo") {
        let info = Command::new(webpinfo).arg(&webp).output().unwrap();
        let info = String::from_utf8_lossy(&info.stdout).to_string();
        assert!(
            info.contains("VP8 ") && !info.contains("VP8L"),
            "lossy, not lossless: {info}"
        );
        assert!(
            info.contains("Width: 1200") && info.contains("Height: 800"),
            "{info}"
        );
    }
    // Lossy at 80: far smaller than the pixels.
    assert!(std::fs::metadata(&webp).unwrap().len() < 1200 * 800 * 3 / 10);
    // No temporary file left behind.
    let names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| !n.ends_with(".tmp")), "{names:?}");
}

#[test]
fn a_transparent_png_keeps_its_alpha_in_png_thumbnails() {
    let (_d, data) = data_dir();
    let img = image::RgbaImage::from_fn(400, 200, |x, _| image::Rgba([255, 0, 0, (x % 256) as u8]));
    img.save(data.root().join("uploads/logo.png")).unwrap();
    let out = images::out_dir(&data, None, "uploads/logo.png");
    let mut s = spec("uploads/logo.png");
    s.sizes = serde_json::from_value(json!([100])).unwrap();
    s.webp_quality = None;
    let done = images::process(&data, &s, &out, &Reporter::silent()).unwrap();
    assert_eq!(done.outputs.len(), 2);
    assert_eq!(
        done.outputs[0].path,
        "artifacts/images/shared/logo/thumb-100x100.png"
    );
    let thumb = image::open(data.root().join(&done.outputs[0].path)).unwrap();
    assert!(thumb.color().has_alpha());
    assert_eq!((thumb.width(), thumb.height()), (100, 50));
}

/// A 20,000×20,000 greyscale PNG of zeros: about 50 KB on disk, 400 MB of
/// pixels once decoded.
fn bomb(path: &Path) {
    let file = std::fs::File::create(path).unwrap();
    let mut enc = png::Encoder::new(std::io::BufWriter::new(file), 20_000, 20_000);
    enc.set_color(png::ColorType::Grayscale);
    enc.set_depth(png::BitDepth::One);
    enc.set_compression(png::Compression::Fast);
    let mut w = enc.write_header().unwrap().into_stream_writer().unwrap();
    let row = vec![0u8; 20_000 / 8];
    for _ in 0..20_000 {
        std::io::Write::write_all(&mut w, &row).unwrap();
    }
    w.finish().unwrap();
}

#[test]
fn bad_sources_are_refused_and_nothing_is_written() {
    let (d, data) = data_dir();
    bomb(&data.root().join("uploads/bomb.png"));
    assert!(
        std::fs::metadata(data.root().join("uploads/bomb.png"))
            .unwrap()
            .len()
            < 1 << 20
    );
    std::fs::write(data.root().join("uploads/notes.jpg"), "not a picture").unwrap();
    std::fs::write(d.path().join("outside.jpg"), "x").unwrap();
    photo(&data, "uploads/tenant-001/ok.jpg", 64, 64);
    std::os::unix::fs::symlink(
        d.path().join("outside.jpg"),
        data.root().join("uploads/link.jpg"),
    )
    .unwrap();
    std::fs::create_dir_all(data.root().join("tenants")).unwrap();
    photo(&data, "tenants/t.jpg", 8, 8);

    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("queue.db")).unwrap();
    let catalog = jobd_handlers::builtin(Worker::builder(store.clone()), &data).catalog();
    let check = |source: &str| {
        catalog.checker(&store).check_job(
            &NewJob::new(images::QUEUE, images::KIND).payload(&json!({ "source": source })),
        )
    };
    check("uploads/tenant-001/ok.jpg").unwrap();
    for (source, why) in [
        ("../outside.jpg", "give a path inside the data directory"),
        ("/etc/passwd", "give a path inside the data directory"),
        ("uploads/link.jpg", "outside the data directory"),
        ("uploads/missing.jpg", "not found"),
        ("tenants/t.jpg", "not under uploads, artifacts"),
        // The header is read at enqueue: no pixel decoded.
        ("uploads/bomb.png", "decompression bomb"),
        ("uploads/notes.jpg", "not an image"),
    ] {
        let e = check(source).unwrap_err().to_string();
        assert!(e.contains(why), "{source}: {e}");
    }
    let e = catalog
        .checker(&store)
        .check_job(
            &NewJob::new(images::QUEUE, images::KIND)
                .payload(&json!({"source": "uploads/tenant-001/ok.jpg", "quality": 0})),
        )
        .unwrap_err();
    assert!(e.to_string().contains("quality"), "{e}");

    // And on a try (a file changed after the enqueue): refused for good.
    for (source, why) in [
        ("uploads/bomb.png", "decompression bomb"),
        ("uploads/notes.jpg", "not an image"),
    ] {
        let out = images::out_dir(&data, None, source);
        let t0 = Instant::now();
        let e = images::process(&data, &spec(source), &out, &Reporter::silent()).unwrap_err();
        assert!(!e.retryable, "{source}");
        assert!(e.to_string().contains(why), "{source}: {e}");
        assert!(!out.exists(), "{source}: nothing written");
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "{source}: refused, not decoded"
        );
    }
}

#[tokio::test]
async fn a_worker_runs_it_with_progress_and_the_outputs_in_its_result() {
    let (_d, data) = data_dir();
    photo(&data, "uploads/tenant-001/cat.jpg", 640, 480);
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("queue.db")).unwrap();
    let id = store
        .enqueue(
            &NewJob::new(images::QUEUE, images::KIND)
                .payload(&json!({"source": "uploads/tenant-001/cat.jpg", "sizes": [120]}))
                .tenant("tenant-001"),
        )
        .unwrap();
    let builder = jobd_handlers::builtin(Worker::builder(store.clone()), &data);
    support::run_until_finished(builder, &store, &[id]).await;
    let job = store.get(id).unwrap();
    assert_eq!(job.state, JobState::Succeeded, "{:?}", job.last_error);
    assert_eq!(job.progress.percent, Some(100.0));
    let result: Processed = serde_json::from_value(job.result.unwrap()).unwrap();
    assert_eq!(result.outputs.len(), 3);
    assert_eq!(
        result.outputs[0].path,
        "artifacts/images/tenant-001/cat/thumb-120x120.jpg"
    );
    assert_eq!(
        (result.outputs[0].width, result.outputs[0].height),
        (120, 90)
    );
}
