//! QR codes from tenant templates: a print-ready PDF (`generate_qr_pdf`) and
//! batches of PNG/SVG images (`batch_qr`).
//!
//! Codes in PDFs are vector shapes — one filled path per code, a rectangle
//! per run of dark modules — so they print sharp at any size.  The code is
//! drawn once, as a form XObject, and placed in every cell of every page
//! (`q cm /Do Q`): a sheet of 24 copies carries its few hundred rectangles
//! once, not 24 times, which is most of what writing the file cost.  Every file is
//! written to a temporary name and renamed into place under
//! `<data dir>/artifacts/<tenant>/`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use printpdf::{
    BuiltinFont, Color, DictItem, ExternalStream, ExternalXObject, Mm, Op, PdfDocument,
    PdfFontHandle, PdfPage, PdfSaveOptions, Point, Pt, Rgb, TextItem, XObjectTransform,
};
use qrcode::{EcLevel, QrCode};
use rusqlite::{Connection, OptionalExtension};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::blocking::{Checked, NO_DATA};
use crate::{hex, job_error, said, sync_fs, write_atomically, write_file, DataDir, Reporter, Run};
use jobd::error::{Error, Result};
use jobd::worker::JobError;

/// Job kind of the PDF handler.
pub const PDF_KIND: &str = "generate_qr_pdf";
/// Job kind of the batch handler.
pub const BATCH_KIND: &str = "batch_qr";

const GET_TEMPLATE: &str =
    "SELECT id, name, target_url, label, options FROM templates WHERE id = ?1";

/// The white border around every code, in modules (the QR standard's 4),
/// in PDFs and images alike.
const QUIET: usize = 4;

/// A QR template row.
#[derive(Debug, Clone, Serialize)]
pub struct Template {
    pub id: i64,
    pub name: String,
    pub target_url: String,
    pub label: String,
    pub options: serde_json::Value,
}

fn template(conn: &Connection, tenant: &str, id: i64) -> Result<Template> {
    conn.prepare_cached(GET_TEMPLATE)?
        .query_row([id], |r| {
            let options: String = r.get(4)?;
            Ok(Template {
                id: r.get(0)?,
                name: r.get(1)?,
                target_url: r.get(2)?,
                label: r.get(3)?,
                options: serde_json::from_str(&options).unwrap_or_default(),
            })
        })
        .optional()?
        .ok_or_else(|| Error::invalid("template", format!("tenant {tenant} has no template {id}")))
}

/// Error-correction level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Ecc {
    L,
    M,
    Q,
    H,
}

impl Ecc {
    fn level(self) -> EcLevel {
        match self {
            Ecc::L => EcLevel::L,
            Ecc::M => EcLevel::M,
            Ecc::Q => EcLevel::Q,
            Ecc::H => EcLevel::H,
        }
    }

    /// The level a template's options ask for (`{"ecc": "Q"}`), else M.
    fn for_template(t: &Template) -> Ecc {
        serde_json::from_value(t.options.get("ecc").cloned().unwrap_or_default()).unwrap_or(Ecc::M)
    }
}

/// The QR code of `url`.
pub fn encode(url: &str, ecc: Ecc) -> Result<QrCode> {
    QrCode::with_error_correction_level(url.as_bytes(), ecc.level())
        .map_err(|e| Error::invalid("template", format!("{url:?} does not fit a QR code: {e}")))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum PageSize {
    #[default]
    A4,
    Letter,
}

impl PageSize {
    fn mm(self) -> (f32, f32) {
        match self {
            PageSize::A4 => (210.0, 297.0),
            PageSize::Letter => (215.9, 279.4),
        }
    }
}

/// The `generate_qr_pdf` payload.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PdfOptions {
    pub template_id: i64,
    /// The tenant (default: the job's tenant).
    #[serde(default)]
    pub tenant: Option<String>,
    #[serde(default)]
    pub page_size: PageSize,
    /// Codes per row and per column on a page.  Default 1 × 1.
    #[serde(default = "one")]
    pub columns: u32,
    #[serde(default = "one")]
    pub rows: u32,
    /// How many codes in all.  Default 1.
    #[serde(default = "one")]
    pub copies: u32,
    /// Error correction (default: the template's, else M).
    #[serde(default)]
    pub ecc: Option<Ecc>,
}

fn one() -> u32 {
    1
}

impl PdfOptions {
    fn validate(&self) -> Result<()> {
        if !(1..=10).contains(&self.columns) || !(1..=10).contains(&self.rows) {
            return Err(Error::invalid("grid", "columns and rows must be 1 to 10"));
        }
        if !(1..=10_000).contains(&self.copies) {
            return Err(Error::invalid("copies", "must be 1 to 10000"));
        }
        Ok(())
    }
}

/// What a PDF job made.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PdfResult {
    pub path: PathBuf,
    pub pages: u32,
    pub codes: u32,
    pub bytes: u64,
    pub sha256: String,
}

/// The tenant database a QR job reads, once its options are known to be
/// valid (`valid`).
fn tenant_db(data: &DataDir, tenant: &str, valid: Result<()>) -> Result<Connection> {
    valid?;
    data.tenants().open_read_only(tenant)
}

/// Render the template's QR PDF for `tenant` and write it atomically.
pub fn generate_pdf(
    data: &DataDir,
    tenant: &str,
    opts: &PdfOptions,
    reporter: &Reporter,
) -> Result<PdfResult> {
    let conn = tenant_db(data, tenant, opts.validate())?;
    let t = template(&conn, tenant, opts.template_id)?;
    let domain: String = conn
        .query_row("SELECT value FROM tenant WHERE key = 'domain'", [], |r| {
            r.get(0)
        })
        .optional()?
        .unwrap_or_default();
    drop(conn);
    let ecc = opts.ecc.unwrap_or_else(|| Ecc::for_template(&t));
    let code = encode(&t.target_url, ecc)?;

    let (page_w, page_h) = opts.page_size.mm();
    let per_page = opts.columns * opts.rows;
    let pages = opts.copies.div_ceil(per_page);
    let margin = 15.0;
    let header = 22.0; // title band
    let cell_w = (page_w - 2.0 * margin) / opts.columns as f32;
    let cell_h = (page_h - 2.0 * margin - header) / opts.rows as f32;
    let text_band = 12.0;
    let qr_mm = (cell_w.min(cell_h - text_band) * 0.9).max(10.0);
    let label_pt = (qr_mm * 0.25).clamp(6.0, 14.0);
    let url_pt = (label_pt * 0.7).max(5.0);

    let mut doc = PdfDocument::new(&format!("{} — {}", t.name, domain));
    let (form, modules) = qr_form(&code);
    let form = doc.add_xobject(&form);
    // The form is drawn in modules; one module on the page, in points.
    let module_pt = qr_mm * PT_PER_MM / modules as f32;
    let mut pdf_pages = Vec::with_capacity(pages as usize);
    let mut drawn = 0;
    for p in 0..pages {
        if reporter.is_cancelled() {
            return Err(Error::Stopped {
                operation: "PDF generation",
            });
        }
        let mut ops = Vec::new();
        text(
            &mut ops,
            BuiltinFont::HelveticaBold,
            16.0,
            margin,
            page_h - margin - 8.0,
            &t.name,
        );
        text(
            &mut ops,
            BuiltinFont::Helvetica,
            9.0,
            margin,
            page_h - margin - 14.0,
            &format!("{domain} · page {} of {pages}", p + 1),
        );
        for slot in 0..per_page {
            if drawn == opts.copies {
                break;
            }
            let (col, row) = (slot % opts.columns, slot / opts.columns);
            let x = margin + col as f32 * cell_w + (cell_w - qr_mm) / 2.0;
            let top = page_h - margin - header - row as f32 * cell_h;
            let y = top - qr_mm;
            ops.push(Op::UseXobject {
                id: form.clone(),
                transform: XObjectTransform {
                    translate_x: Some(Pt(x * PT_PER_MM)),
                    translate_y: Some(Pt(y * PT_PER_MM)),
                    scale_x: Some(module_pt),
                    scale_y: Some(module_pt),
                    no_auto_scale: true,
                    ..Default::default()
                },
            });
            // Under the code, centred in the cell, shrunk to fit its width
            // (Helvetica averages ~0.5 em a character, Courier is 0.6 em).
            let centre = margin + col as f32 * cell_w + cell_w / 2.0;
            let chars = |s: &str| s.chars().count().max(1) as f32;
            let fit =
                |pt: f32, em: f32, s: &str| pt.min((cell_w - 4.0) * PT_PER_MM / (em * chars(s)));
            let width = |pt: f32, em: f32, s: &str| pt * em * chars(s) / PT_PER_MM;
            let label_size = fit(label_pt, 0.5, &t.label);
            let url_size = fit(url_pt, 0.6, &t.target_url);
            let label_y = y - label_pt * 0.45;
            let label_x = centre - width(label_size, 0.5, &t.label) / 2.0;
            text(
                &mut ops,
                BuiltinFont::Helvetica,
                label_size,
                label_x,
                label_y,
                &t.label,
            );
            let url_x = centre - width(url_size, 0.6, &t.target_url) / 2.0;
            let url_y = label_y - url_pt * 0.5;
            text(
                &mut ops,
                BuiltinFont::Courier,
                url_size,
                url_x,
                url_y,
                &t.target_url,
            );
            drawn += 1;
        }
        pdf_pages.push(PdfPage::new(Mm(page_w), Mm(page_h), ops));
        reporter.report(
            100.0 * (p + 1) as f64 / pages as f64,
            "rendering pages",
            Some(format!("page {}/{pages}", p + 1)),
        );
    }
    doc.with_pages(pdf_pages);
    let bytes = doc.save(&PdfSaveOptions::default(), &mut Vec::new());

    let options_hash = hex(&Sha256::digest(
        serde_json::to_vec(opts).unwrap_or_default(),
    ))[..12]
        .to_string();
    let path = data
        .artifacts()
        .join(tenant)
        .join(format!("template-{}-{options_hash}.pdf", t.id));
    write_atomically(&path, &bytes)?;
    Ok(PdfResult {
        path,
        pages,
        codes: drawn,
        bytes: bytes.len() as u64,
        sha256: hex(&Sha256::digest(&bytes)),
    })
}

const PT_PER_MM: f32 = 72.0 / 25.4;

fn black() -> Color {
    Color::Rgb(Rgb {
        r: 0.0,
        g: 0.0,
        b: 0.0,
        icc_profile: None,
    })
}

/// One line of text at (x, y) mm.
fn text(ops: &mut Vec<Op>, font: BuiltinFont, size: f32, x: f32, y: f32, s: &str) {
    ops.push(Op::StartTextSection);
    ops.push(Op::SetFillColor { col: black() });
    ops.push(Op::SetTextCursor {
        pos: Point::new(Mm(x), Mm(y)),
    });
    ops.push(Op::SetFont {
        font: PdfFontHandle::Builtin(font),
        size: Pt(size),
    });
    ops.push(Op::ShowText {
        items: vec![TextItem::Text(s.to_string())],
    });
    ops.push(Op::EndTextSection);
}

/// The code as a form XObject in module units, quiet zone included: one
/// filled path, a rectangle per run of dark modules in a row.  Returns the
/// form and its width in modules.
fn qr_form(code: &QrCode) -> (ExternalXObject, usize) {
    use std::fmt::Write;
    let n = code.width();
    let side = n + 2 * QUIET;
    let colors = code.to_colors();
    // Black fill of its own: the form does not depend on the page's state.
    let mut content = String::from("0 g\n");
    for row in 0..n {
        // PDF's y grows upwards: the code's first row is the top one.
        let y = side - QUIET - row - 1;
        let mut col = 0;
        while col < n {
            if colors[row * n + col] != qrcode::Color::Dark {
                col += 1;
                continue;
            }
            let start = col;
            while col < n && colors[row * n + col] == qrcode::Color::Dark {
                col += 1;
            }
            let _ = writeln!(content, "{} {y} {} 1 re", QUIET + start, col - start);
        }
    }
    content.push_str("f\n");
    let name = |s: &str| DictItem::Name(s.as_bytes().to_vec());
    let dict = BTreeMap::from([
        ("Type".to_string(), name("XObject")),
        ("Subtype".to_string(), name("Form")),
        (
            "BBox".to_string(),
            DictItem::Array(vec![
                DictItem::Int(0),
                DictItem::Int(0),
                DictItem::Int(side as i64),
                DictItem::Int(side as i64),
            ]),
        ),
        (
            "Resources".to_string(),
            DictItem::Dict {
                map: BTreeMap::new(),
            },
        ),
    ]);
    let form = ExternalXObject {
        stream: ExternalStream {
            dict,
            content: content.into_bytes(),
            compress: true,
        },
        width: None,
        height: None,
        dpi: None,
    };
    (form, side)
}

/// Output formats of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ImageFormat {
    Png,
    Svg,
}

/// The `batch_qr` payload.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchOptions {
    pub template_ids: Vec<i64>,
    #[serde(default)]
    pub tenant: Option<String>,
    /// Default PNG only.
    #[serde(default = "png_only")]
    pub formats: Vec<ImageFormat>,
    /// Pixels per module in PNGs.  Default 8.
    #[serde(default = "default_scale")]
    pub scale: u32,
    #[serde(default)]
    pub ecc: Option<Ecc>,
    /// Who gets the batch-complete mail (a `send_email` job after the batch).
    #[serde(default)]
    pub email: Option<crate::email::Recipients>,
}

impl BatchOptions {
    fn validate(&self) -> Result<()> {
        if self.template_ids.is_empty() || self.template_ids.len() > MAX_BATCH {
            return Err(Error::invalid(
                "template_ids",
                format!(
                    "give 1 to {MAX_BATCH} template ids, not {}",
                    self.template_ids.len()
                ),
            ));
        }
        if self.formats.is_empty() {
            return Err(Error::invalid("formats", "give at least one of png, svg"));
        }
        if !(1..=64).contains(&self.scale) {
            return Err(Error::invalid("scale", "must be 1 to 64 pixels per module"));
        }
        Ok(())
    }
}

fn png_only() -> Vec<ImageFormat> {
    vec![ImageFormat::Png]
}

fn default_scale() -> u32 {
    8
}

/// The most template ids one batch takes.
pub const MAX_BATCH: usize = 50_000;

/// What a batch made (the seeds' result shape, plus where and what failed).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BatchResult {
    pub completed: u64,
    pub failed: u64,
    pub total_processed: u64,
    /// completed / total, 0–1.
    pub success_rate: f64,
    pub dir: PathBuf,
    /// The first 100 failures: template id and why.
    pub failures: Vec<(i64, String)>,
}

/// Render every template of the batch; a failing item is recorded and the
/// batch goes on.  Files land in `<artifacts>/<tenant>/batch-<batch>/`.
pub fn batch(
    data: &DataDir,
    tenant: &str,
    batch_name: &str,
    opts: &BatchOptions,
    reporter: &Reporter,
) -> Result<BatchResult> {
    let conn = tenant_db(data, tenant, opts.validate())?;
    let dir = data
        .artifacts()
        .join(tenant)
        .join(format!("batch-{batch_name}"));
    std::fs::create_dir_all(&dir).map_err(Error::io("creating", &dir))?;
    let total = opts.template_ids.len() as u64;
    let (mut completed, mut failed) = (0u64, 0u64);
    let mut failures = Vec::new();
    for (i, id) in opts.template_ids.iter().enumerate() {
        if reporter.is_cancelled() {
            return Err(Error::Stopped {
                operation: "batch QR",
            });
        }
        let item = || -> Result<()> {
            let t = template(&conn, tenant, *id)?;
            let code = encode(
                &t.target_url,
                opts.ecc.unwrap_or_else(|| Ecc::for_template(&t)),
            )?;
            for format in &opts.formats {
                match format {
                    ImageFormat::Png => write_file(
                        &dir.join(format!("template-{id}.png")),
                        &png(&code, opts.scale)?,
                        false,
                    )?,
                    ImageFormat::Svg => {
                        let svg = code
                            .render::<qrcode::render::svg::Color>()
                            .min_dimensions(200, 200)
                            .build();
                        write_file(
                            &dir.join(format!("template-{id}.svg")),
                            svg.as_bytes(),
                            false,
                        )?
                    }
                }
            }
            Ok(())
        };
        match item() {
            Ok(()) => completed += 1,
            // A full disk or an I/O error is the batch's problem, not the item's.
            Err(e @ (Error::DiskFull { .. } | Error::Io { .. })) => return Err(e),
            Err(e) => {
                failed += 1;
                if failures.len() < 100 {
                    failures.push((*id, e.to_string()));
                }
            }
        }
        reporter.report(
            100.0 * (i + 1) as f64 / total as f64,
            "rendering codes",
            Some(format!(
                "completed {completed}, failed {failed}, total {total}"
            )),
        );
    }
    // The files are on disk before the job says they are.
    sync_fs(&dir)?;
    Ok(BatchResult {
        completed,
        failed,
        total_processed: completed + failed,
        success_rate: completed as f64 / total as f64,
        dir,
        failures,
    })
}

/// A QR code as a 1-bit grayscale PNG with a 4-module quiet zone: two
/// colours need one bit a pixel, which is 8× less to compress than 8-bit.
pub fn png(code: &QrCode, scale: u32) -> Result<Vec<u8>> {
    let n = code.width();
    let scale = scale as usize;
    let side = (n + 2 * QUIET) * scale;
    let stride = side.div_ceil(8);
    let colors = code.to_colors();
    // 1 is white; rows are padded to whole bytes.
    let mut bits = vec![0xFFu8; stride * side];
    for row in 0..n {
        for col in 0..n {
            if colors[row * n + col] != qrcode::Color::Dark {
                continue;
            }
            for dy in 0..scale {
                let y = (QUIET + row) * scale + dy;
                for dx in 0..scale {
                    let x = (QUIET + col) * scale + dx;
                    bits[y * stride + x / 8] &= !(0x80 >> (x % 8));
                }
            }
        }
    }
    let mut out = Vec::new();
    let mut enc = png::Encoder::new(&mut out, side as u32, side as u32);
    enc.set_color(png::ColorType::Grayscale);
    enc.set_depth(png::BitDepth::One);
    enc.set_compression(png::Compression::Fast);
    let encode_err = |e: png::EncodingError| Error::invalid("png", e.to_string());
    let mut writer = enc.write_header().map_err(encode_err)?;
    writer.write_image_data(&bits).map_err(encode_err)?;
    writer.finish().map_err(encode_err)?;
    Ok(out)
}

const NO_TENANT: &str = "no tenant: set the job's tenant or \"tenant\" in the payload";

fn tenant_of(run: &Run, payload: &Option<String>) -> Result<String, JobError> {
    payload
        .clone()
        .or_else(|| run.tenant.clone())
        .ok_or_else(|| JobError::permanent(NO_TENANT))
}

/// Before a QR job is enqueued: the tenant it names (the payload's, else the
/// job's), which must exist.
fn check_tenant<'a, 'd>(
    data: Option<&'d DataDir>,
    payload: &'a Option<String>,
    job: Option<&'a str>,
) -> std::result::Result<(&'d DataDir, &'a str), String> {
    let data = data.ok_or(NO_DATA)?;
    let tenant = payload.as_deref().or(job).ok_or(NO_TENANT)?;
    data.tenants().path(tenant).map_err(said)?;
    Ok((data, tenant))
}

blocking_job! {
    /// The `generate_qr_pdf` job.
    GenerateQrPdf = PdfHandler: PDF_KIND, PdfOptions => PdfResult, check_pdf, run_pdf
}

/// The options are in range, the tenant exists and has the template.
fn check_pdf(data: Option<&DataDir>, opts: &PdfOptions, job: Option<&str>) -> Checked {
    opts.validate().map_err(said)?;
    let (data, tenant) = check_tenant(data, &opts.tenant, job)?;
    let conn = data.tenants().open_read_only(tenant).map_err(said)?;
    template(&conn, tenant, opts.template_id)
        .map(drop)
        .map_err(said)
}

fn run_pdf(run: &Run, opts: PdfOptions, r: &Reporter) -> Result<PdfResult, JobError> {
    generate_pdf(run.data()?, &tenant_of(run, &opts.tenant)?, &opts, r).map_err(job_error)
}

blocking_job! {
    /// The `batch_qr` job.
    BatchQr = BatchHandler: BATCH_KIND, BatchOptions => BatchResult, check_batch, run_batch
}

/// The options are in range and the tenant exists (a template it does not
/// have is one failed item of the batch, not a failed job).
fn check_batch(data: Option<&DataDir>, opts: &BatchOptions, job: Option<&str>) -> Checked {
    opts.validate().map_err(said)?;
    for a in opts.email.iter().flat_map(|r| r.list()) {
        a.parse::<lettre::Address>()
            .map_err(|e| format!("email: {a:?} is not an address: {e}"))?;
    }
    check_tenant(data, &opts.tenant, job).map(drop)
}

fn run_batch(run: &Run, opts: BatchOptions, r: &Reporter) -> Result<BatchResult, JobError> {
    let (tenant, name) = (tenant_of(run, &opts.tenant)?, format!("job-{}", run.job_id));
    let result = batch(run.data()?, &tenant, &name, &opts, r).map_err(job_error)?;
    if let Some(to) = &opts.email {
        let failures: Vec<String> = result
            .failures
            .iter()
            .map(|(id, why)| format!("template {id}: {why}"))
            .collect();
        let mail = serde_json::json!({
            "to": to,
            "template": "batch-complete",
            "data": {
                "batch": name, "completed": result.completed, "failed": result.failed,
                "total": result.total_processed, "failures": failures, "tenant": tenant,
            },
        });
        let job = jobd::NewJob::new(crate::email::EMAIL_QUEUE, crate::email::SEND_KIND)
            .payload(&mail)
            .tenant(&tenant)
            .unique_key(format!("batch-complete:{}", run.job_id));
        let id = run.store.enqueue(&job).map_err(job_error)?;
        tracing::info!(email_job = id, "batch-complete mail enqueued");
    }
    Ok(result)
}
