//! `process_image`: thumbnails, a re-encoded original and a lossy WebP of
//! one image of the data directory.
//!
//! The source is a path relative to the data directory under `uploads/` or
//! `artifacts/` (symlinks resolved, checked to stay inside).  It is decoded
//! with limits — at most [`MAX_EDGE`] pixels a side and [`MAX_DECODE_BYTES`]
//! of pixel memory — so a decompression bomb (a small PNG claiming
//! 20,000×20,000) is refused before anything is allocated for it; the EXIF
//! orientation of a phone photo is applied.  Outputs go to
//! `artifacts/images/<tenant or "shared">/<name>/`, each written under a
//! temporary name and renamed:
//!
//! * `thumb-<W>x<H>.jpg` for each size (the image fitted inside, aspect
//!   kept; `.png` when the source has transparency),
//! * `original.jpg` re-encoded at `quality` (85),
//! * `original.webp`, lossy at `webp_quality` (80), with libwebp.
//!
//! Progress after each output; cancellable between them.

use std::io::{BufWriter, Cursor};
use std::path::{Path, PathBuf};

use image::codecs::jpeg::JpegEncoder;
use image::codecs::png::PngEncoder;
use image::imageops::FilterType;
use image::{DynamicImage, ImageDecoder, ImageEncoder, ImageReader, Limits};
use jobd::worker::{JobError, Reporter};
use serde::{Deserialize, Serialize};

use crate::blocking::{BlockingJob, Run};
use crate::DataDir;

pub const KIND: &str = "process_image";
pub const QUEUE: &str = "images";
/// The longest side decoded.
pub const MAX_EDGE: u32 = 16_384;
/// Pixel memory a decode may take.
pub const MAX_DECODE_BYTES: u64 = 512 << 20;
/// Source files larger than this are refused unread.
pub const MAX_FILE_BYTES: u64 = 100 << 20;
/// Folders of the data directory a source may be in.
pub const SOURCES: &[&str] = &["uploads", "artifacts"];

fn default_quality() -> u8 {
    85
}
fn default_webp_quality() -> f32 {
    80.0
}
fn default_sizes() -> Vec<Size> {
    vec![Size(150, 150), Size(300, 300), Size(600, 600)]
}
fn yes() -> bool {
    true
}

/// A bounding box: `300` (square) or `[400, 300]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Size(pub u32, pub u32);

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Size, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Either {
            Square(u32),
            Box([u32; 2]),
        }
        Ok(match Either::deserialize(d)? {
            Either::Square(n) => Size(n, n),
            Either::Box([w, h]) => Size(w, h),
        })
    }
}

/// `process_image`'s payload.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ImageSpec {
    /// Relative to the data directory: `uploads/tenant-001/photo.jpg`.
    pub source: String,
    /// Thumbnail boxes; default 150, 300 and 600 square.
    #[serde(default = "default_sizes")]
    pub sizes: Vec<Size>,
    /// JPEG quality of the thumbnails and the re-encoded original (1–100).
    #[serde(default = "default_quality")]
    pub quality: u8,
    /// Write `original.jpg`.
    #[serde(default = "yes")]
    pub original: bool,
    /// Lossy WebP quality (0–100); `null` for no WebP.
    #[serde(default = "default_webp")]
    pub webp_quality: Option<f32>,
}

fn default_webp() -> Option<f32> {
    Some(default_webp_quality())
}

impl ImageSpec {
    pub fn check(&self) -> Result<(), String> {
        if !(1..=100).contains(&self.quality) {
            return Err(format!("quality {} is not between 1 and 100", self.quality));
        }
        if let Some(q) = self.webp_quality {
            if !(0.0..=100.0).contains(&q) {
                return Err(format!("webp_quality {q} is not between 0 and 100"));
            }
        }
        if self.sizes.len() > 16 {
            return Err(format!("{} sizes: at most 16", self.sizes.len()));
        }
        for s in &self.sizes {
            if s.0 == 0 || s.1 == 0 || s.0 > 4096 || s.1 > 4096 {
                return Err(format!("size {}x{}: each side 1 to 4096", s.0, s.1));
            }
        }
        Ok(())
    }
}

/// One file written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Output {
    /// Relative to the data directory.
    pub path: String,
    pub width: u32,
    pub height: u32,
    pub format: String,
    pub bytes: u64,
}

/// What `process_image` stores.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Processed {
    pub source: String,
    pub width: u32,
    pub height: u32,
    /// The source's format, as decoded.
    pub format: String,
    pub outputs: Vec<Output>,
}

/// Decode `path` within the limits, its orientation applied.
pub fn decode(path: &Path, shown: &str) -> Result<(DynamicImage, String), String> {
    let (decoder, format) = open(path, shown)?;
    let mut decoder = decoder;
    let orientation = decoder
        .orientation()
        .map_err(|e| refusal(e, shown, format))?;
    let mut img = DynamicImage::from_decoder(decoder).map_err(|e| refusal(e, shown, format))?;
    img.apply_orientation(orientation);
    Ok((img, format!("{format:?}").to_ascii_lowercase()))
}

/// What a decoding error means for `shown`.
fn refusal(e: image::ImageError, shown: &str, format: image::ImageFormat) -> String {
    match e {
        image::ImageError::Limits(l) => format!(
            "image {shown:?} refused: {l} (at most {MAX_EDGE} pixels a side and {} MiB decoded: \
             a decompression bomb?)",
            MAX_DECODE_BYTES >> 20
        ),
        image::ImageError::IoError(e) => format!("image {shown:?}: {e}"),
        other => format!("image {shown:?} is not an image jobd can read as {format:?}: {other}"),
    }
}

/// The file's decoder, its header read and checked against the limits
/// (what the check at enqueue does: no pixel is decoded).
fn open(path: &Path, shown: &str) -> Result<(Box<dyn ImageDecoder>, image::ImageFormat), String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("image {shown:?}: {e}"))?;
    if !meta.is_file() {
        return Err(format!("image {shown:?}: not a file"));
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(format!(
            "image {shown:?}: {} bytes is over the limit of {} MiB",
            meta.len(),
            MAX_FILE_BYTES >> 20
        ));
    }
    let mut reader = ImageReader::open(path)
        .map_err(|e| format!("image {shown:?}: {e}"))?
        .with_guessed_format()
        .map_err(|e| format!("image {shown:?}: {e}"))?;
    let format = reader.format().ok_or_else(|| {
        format!("image {shown:?} is not an image jobd can read (JPEG, PNG, WebP, GIF)")
    })?;
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_EDGE);
    limits.max_image_height = Some(MAX_EDGE);
    limits.max_alloc = Some(MAX_DECODE_BYTES);
    reader.limits(limits);
    let decoder = reader
        .into_decoder()
        .map_err(|e| refusal(e, shown, format))?;
    Ok((Box::new(decoder), format))
}

fn encode_jpeg(img: &DynamicImage, quality: u8) -> Result<Vec<u8>, String> {
    let rgb = img.to_rgb8();
    let mut out = Vec::with_capacity(rgb.len() / 8);
    JpegEncoder::new_with_quality(&mut out, quality)
        .encode_image(&rgb)
        .map_err(|e| format!("JPEG encoding: {e}"))?;
    Ok(out)
}

fn encode_png(img: &DynamicImage) -> Result<Vec<u8>, String> {
    let rgba = img.to_rgba8();
    let mut out = Cursor::new(Vec::new());
    PngEncoder::new(BufWriter::new(&mut out))
        .write_image(
            &rgba,
            rgba.width(),
            rgba.height(),
            image::ExtendedColorType::Rgba8,
        )
        .map_err(|e| format!("PNG encoding: {e}"))?;
    Ok(out.into_inner())
}

fn encode_webp(img: &DynamicImage, quality: f32) -> Result<Vec<u8>, String> {
    let rgba = img.to_rgba8();
    let encoder = webp::Encoder::from_rgba(&rgba, rgba.width(), rgba.height());
    let encoded = encoder
        .encode_simple(false, quality)
        .map_err(|e| format!("WebP encoding: {e:?}"))?;
    Ok(encoded.to_vec())
}

/// Process `spec` from `data`; outputs under `out_dir` (relative paths in
/// the result are against `data`).
pub fn process(
    data: &DataDir,
    spec: &ImageSpec,
    out_dir: &Path,
    reporter: &Reporter,
) -> Result<Processed, JobError> {
    spec.check().map_err(JobError::permanent)?;
    let path = data
        .resolve("image", &spec.source, SOURCES, true)
        .map_err(JobError::permanent)?;
    let (img, format) = decode(&path, &spec.source).map_err(JobError::permanent)?;
    let steps =
        spec.sizes.len() + usize::from(spec.original) + usize::from(spec.webp_quality.is_some());
    let alpha = img.color().has_alpha();
    let root = data.root().canonicalize().map_err(JobError::retryable)?;
    let mut outputs = Vec::with_capacity(steps);
    let mut write = |name: String, bytes: Vec<u8>, w: u32, h: u32, format: &str| {
        let file = out_dir.join(&name);
        crate::write_file(&file, &bytes, false).map_err(crate::job_error)?;
        let rel = file
            .strip_prefix(&root)
            .unwrap_or(&file)
            .to_string_lossy()
            .into_owned();
        outputs.push(Output {
            path: rel,
            width: w,
            height: h,
            format: format.into(),
            bytes: bytes.len() as u64,
        });
        let done = outputs.len();
        reporter.report(
            done as f64 * 100.0 / steps as f64,
            "encoding",
            Some(name.clone()),
        );
        Ok::<_, JobError>(())
    };
    for &Size(w, h) in &spec.sizes {
        reporter.check_cancelled()?;
        let thumb = img.resize(w, h, FilterType::Triangle);
        let (bytes, ext) = if alpha {
            (encode_png(&thumb).map_err(JobError::permanent)?, "png")
        } else {
            (
                encode_jpeg(&thumb, spec.quality).map_err(JobError::permanent)?,
                "jpeg",
            )
        };
        let name = format!("thumb-{w}x{h}.{}", if ext == "jpeg" { "jpg" } else { ext });
        write(name, bytes, thumb.width(), thumb.height(), ext)?;
    }
    if spec.original {
        let bytes = encode_jpeg(&img, spec.quality).map_err(JobError::permanent)?;
        write(
            "original.jpg".into(),
            bytes,
            img.width(),
            img.height(),
            "jpeg",
        )?;
    }
    if let Some(q) = spec.webp_quality {
        let bytes = encode_webp(&img, q).map_err(JobError::permanent)?;
        write(
            "original.webp".into(),
            bytes,
            img.width(),
            img.height(),
            "webp",
        )?;
    }
    crate::sync_fs(out_dir).map_err(crate::job_error)?;
    Ok(Processed {
        source: spec.source.clone(),
        width: img.width(),
        height: img.height(),
        format,
        outputs,
    })
}

/// Where a job's outputs go: `artifacts/images/<tenant or shared>/<stem>/`.
pub fn out_dir(data: &DataDir, tenant: Option<&str>, source: &str) -> PathBuf {
    let stem = Path::new(source)
        .file_stem()
        .map_or("image".into(), |s| s.to_string_lossy().into_owned());
    data.artifacts()
        .join("images")
        .join(tenant.unwrap_or("shared"))
        .join(stem)
}

/// The `process_image` job.
pub struct ProcessImage;

impl BlockingJob for ProcessImage {
    const KIND: &'static str = KIND;
    type Payload = ImageSpec;
    type Output = Processed;

    fn check(
        data: Option<&DataDir>,
        spec: &ImageSpec,
        _tenant: Option<&str>,
    ) -> Result<(), String> {
        spec.check()?;
        if let Some(data) = data {
            let path = data.resolve("image", &spec.source, SOURCES, true)?;
            open(&path, &spec.source)?;
        }
        Ok(())
    }

    fn work(run: &Run, spec: ImageSpec, reporter: &Reporter) -> Result<Processed, JobError> {
        let data = run.data()?;
        let dir = out_dir(data, run.tenant.as_deref(), &spec.source);
        process(data, &spec, &dir, reporter)
    }
}

/// The handler of [`ProcessImage`].
pub type ImageHandler = crate::Blocking<ProcessImage>;
