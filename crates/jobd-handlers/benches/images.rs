//! `process_image` of a 12-megapixel JPEG (4000×3000) to three thumbnails
//! (150, 300 and 600 px boxes, JPEG quality 85), beside the same work done
//! by ImageMagick's `convert` (one process writing the three sizes) in the
//! same run, rounds alternating, medians reported; and the whole job
//! (thumbnails, the original re-encoded at 85, a lossy WebP at 80).
//!
//! ```text
//! cargo bench -p jobd-handlers --bench images    # JOBD_BENCH_ROUNDS (7)
//! ```

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use jobd_handlers::images::{self, ImageSpec};
use jobd_handlers::{DataDir, Reporter};
use jobd_testkit::env_usize as env;
use serde_json::json;

/// A photo-like 4000×3000 JPEG at quality 90: gradients with noise, so the
/// encoder has detail to spend bits on.
fn photo(path: &Path) {
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let img = image::RgbImage::from_fn(4000, 3000, |x, y| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let n = (seed & 31) as u32;
        image::Rgb([
            ((x * 255 / 4000 + n) % 256) as u8,
            ((y * 255 / 3000 + n) % 256) as u8,
            (((x + y) / 16 + n) % 256) as u8,
        ])
    });
    let file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    image::codecs::jpeg::JpegEncoder::new_with_quality(file, 90)
        .encode_image(&img)
        .unwrap();
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() {
    let rounds = env("JOBD_BENCH_ROUNDS", 7);
    let dir = tempfile::tempdir().unwrap();
    let data = DataDir::new(dir.path().join("data"));
    std::fs::create_dir_all(data.uploads()).unwrap();
    let source = data.uploads().join("photo.jpg");
    photo(&source);
    let thumbs: ImageSpec = serde_json::from_value(json!({
        "source": "uploads/photo.jpg", "sizes": [150, 300, 600], "quality": 85,
        "original": false, "webp_quality": null,
    }))
    .unwrap();
    let whole: ImageSpec = serde_json::from_value(json!({"source": "uploads/photo.jpg"})).unwrap();
    // Debian's ImageMagick, not a wrapper earlier on the PATH.
    let convert = ["/usr/bin/convert", "/usr/bin/convert-im6.q16"]
        .into_iter()
        .find(|p| Path::new(p).exists());
    let im_out = dir.path().join("im");
    std::fs::create_dir_all(&im_out).unwrap();
    let (mut jobd_t, mut jobd_whole, mut im_t) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        let out = dir.path().join(format!("out-{round}"));
        let t = Instant::now();
        images::process(&data, &thumbs, &out, &Reporter::silent()).unwrap();
        jobd_t.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        images::process(&data, &whole, &out.join("whole"), &Reporter::silent()).unwrap();
        jobd_whole.push(t.elapsed().as_secs_f64());
        if let Some(convert) = convert {
            let t = Instant::now();
            let status = Command::new(convert)
                .arg(&source)
                .args(["-quality", "85"])
                .args(["(", "+clone", "-resize", "600x600", "-write"])
                .arg(im_out.join("600.jpg"))
                .args(["+delete", ")"])
                .args(["(", "+clone", "-resize", "300x300", "-write"])
                .arg(im_out.join("300.jpg"))
                .args(["+delete", ")"])
                .args(["-resize", "150x150"])
                .arg(im_out.join("150.jpg"))
                .status()
                .unwrap();
            assert!(status.success());
            im_t.push(t.elapsed().as_secs_f64());
        }
    }
    let jobd_rate = 1.0 / median(jobd_t);
    println!("12-megapixel JPEG (4000x3000) -> 150/300/600 px thumbnails, JPEG q85; medians of {rounds} rounds");
    println!();
    println!("| what | images/s | vs ImageMagick |");
    println!("|---|---:|---:|");
    match convert {
        Some(path) => {
            let im_rate = 1.0 / median(im_t);
            println!(
                "| ImageMagick `convert` ({path}), one process, three sizes | {im_rate:.2} | — |"
            );
            println!(
                "| jobd process_image, three thumbnails | {jobd_rate:.2} | {:.0}% |",
                100.0 * jobd_rate / im_rate
            );
        }
        None => {
            println!("| jobd process_image, three thumbnails | {jobd_rate:.2} | (ImageMagick not installed) |")
        }
    }
    println!(
        "| jobd process_image, thumbnails + original q85 + WebP q80 | {:.2} | |",
        1.0 / median(jobd_whole)
    );
}
