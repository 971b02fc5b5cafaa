//! Render one tenant template's QR PDF from the command line:
//!
//! ```text
//! cargo run --example qr_pdf -- <data dir> <tenant> <template id> [columns rows copies]
//! ```

use jobd_handlers::qr::{generate_pdf, PageSize, PdfOptions};
use jobd_handlers::{DataDir, Reporter};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 3 {
        return Err("usage: qr_pdf <data dir> <tenant> <template id> [columns rows copies]".into());
    }
    let n = |i: usize| args.get(i).map(|s| s.parse()).transpose();
    let opts = PdfOptions {
        template_id: args[2].parse()?,
        tenant: None,
        page_size: PageSize::A4,
        columns: n(3)?.unwrap_or(1),
        rows: n(4)?.unwrap_or(1),
        copies: n(5)?.unwrap_or(1),
        ecc: None,
    };
    let result = generate_pdf(
        &DataDir::new(&args[0]),
        &args[1],
        &opts,
        &Reporter::silent(),
    )?;
    println!("{}", serde_json::to_string_pretty(&result)?);
    Ok(())
}
