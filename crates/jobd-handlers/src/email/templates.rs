//! E-mail templates: Handlebars, three files a template in
//! `<data dir>/templates/email/` — `NAME.subject.hbs`, `NAME.txt.hbs` (the
//! plain-text part) and `NAME.html.hbs` (the HTML part, where every `{{x}}`
//! is HTML-escaped).  The built-in ones (below) are used where the
//! directory has none of that name; `jobd init` writes them there to edit.
//! Rendering is strict: a variable the data lacks is an error, never a
//! blank in a sent mail.

use std::collections::BTreeMap;
use std::path::Path;

use handlebars::Handlebars;
use serde_json::Value;

macro_rules! builtin {
    ($name:literal) => {
        (
            $name,
            include_str!(concat!("../../templates/email/", $name, ".subject.hbs")),
            include_str!(concat!("../../templates/email/", $name, ".txt.hbs")),
            include_str!(concat!("../../templates/email/", $name, ".html.hbs")),
        )
    };
}

/// The built-in templates: (name, subject, text, html).
pub const BUILTIN: &[(&str, &str, &str, &str)] = &[
    builtin!("welcome"),
    builtin!("form-submission"),
    builtin!("password-reset"),
    builtin!("export-ready"),
    builtin!("batch-complete"),
    builtin!("backup-report"),
    builtin!("job-failed"),
    builtin!("job-finished"),
    builtin!("jobs-dead"),
];

/// A rendered message's text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub subject: String,
    pub text: String,
    pub html: String,
}

/// Every template, parsed.
pub struct Templates {
    /// Subjects and plain text: nothing escaped.
    plain: Handlebars<'static>,
    /// HTML parts: `{{x}}` HTML-escaped.
    html: Handlebars<'static>,
    names: Vec<String>,
}

impl std::fmt::Debug for Templates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Templates")
            .field("names", &self.names)
            .finish()
    }
}

const PARTS: [&str; 3] = ["subject", "txt", "html"];

impl Templates {
    /// The built-in templates, with those of `dir` (if it exists) over
    /// them.  A template with a syntax error, or with some of its three
    /// files missing, is refused, naming the file.
    pub fn load(dir: Option<&Path>) -> Result<Templates, String> {
        let mut sources: BTreeMap<String, [String; 3]> = BUILTIN
            .iter()
            .map(|(n, s, t, h)| (n.to_string(), [s.to_string(), t.to_string(), h.to_string()]))
            .collect();
        if let Some(dir) = dir.filter(|d| d.is_dir()) {
            let mut found: BTreeMap<String, [Option<String>; 3]> = BTreeMap::new();
            let entries =
                std::fs::read_dir(dir).map_err(|e| format!("reading {}: {e}", dir.display()))?;
            for entry in entries {
                let entry = entry.map_err(|e| format!("reading {}: {e}", dir.display()))?;
                let file = entry.file_name().to_string_lossy().into_owned();
                let Some(stem) = file.strip_suffix(".hbs") else {
                    continue;
                };
                let Some((name, part)) = stem.rsplit_once('.') else {
                    continue;
                };
                let Some(i) = PARTS.iter().position(|p| *p == part) else {
                    continue;
                };
                check_name(name)?;
                let text = std::fs::read_to_string(entry.path())
                    .map_err(|e| format!("reading {}: {e}", entry.path().display()))?;
                found.entry(name.to_string()).or_default()[i] = Some(text);
            }
            for (name, parts) in found {
                let [Some(s), Some(t), Some(h)] = parts else {
                    let missing: Vec<String> = PARTS
                        .iter()
                        .zip(&parts)
                        .filter(|(_, p)| p.is_none())
                        .map(|(part, _)| format!("{name}.{part}.hbs"))
                        .collect();
                    return Err(format!(
                        "e-mail template {name:?} in {} lacks {}",
                        dir.display(),
                        missing.join(", ")
                    ));
                };
                sources.insert(name, [s, t, h]);
            }
        }
        let mut plain = Handlebars::new();
        plain.set_strict_mode(true);
        plain.register_escape_fn(handlebars::no_escape);
        let mut html = Handlebars::new();
        html.set_strict_mode(true);
        for (name, [s, t, h]) in &sources {
            let at = |part: &str| match dir {
                Some(d) if d.join(format!("{name}.{part}.hbs")).exists() => {
                    d.join(format!("{name}.{part}.hbs")).display().to_string()
                }
                _ => format!("built-in {name}.{part}.hbs"),
            };
            plain
                .register_template_string(&format!("{name}.subject"), s)
                .map_err(|e| format!("e-mail template {}: {e}", at("subject")))?;
            plain
                .register_template_string(&format!("{name}.txt"), t)
                .map_err(|e| format!("e-mail template {}: {e}", at("txt")))?;
            html.register_template_string(&format!("{name}.html"), h)
                .map_err(|e| format!("e-mail template {}: {e}", at("html")))?;
        }
        Ok(Templates {
            plain,
            html,
            names: sources.into_keys().collect(),
        })
    }

    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// `name` rendered with `data`; a missing variable or an unknown
    /// template is an error that says which.
    pub fn render(&self, name: &str, data: &Value) -> Result<Rendered, String> {
        if !self.names.iter().any(|n| n == name) {
            return Err(format!(
                "unknown e-mail template {name:?} (there are {})",
                self.names.join(", ")
            ));
        }
        let part = |hb: &Handlebars, part: &str| {
            hb.render(&format!("{name}.{part}"), data)
                .map_err(|e| format!("e-mail template {name:?} ({part}): {}", e.reason()))
        };
        Ok(Rendered {
            subject: part(&self.plain, "subject")?
                .trim()
                .replace(['\r', '\n'], " "),
            text: part(&self.plain, "txt")?,
            html: part(&self.html, "html")?,
        })
    }
}

fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "e-mail template name {name:?}: use letters, digits, '-' and '_'"
        ))
    }
}

/// Write the built-in templates into `dir` for editing, keeping any file
/// already there; the files written.
pub fn write_builtin(dir: &Path) -> std::io::Result<Vec<std::path::PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut written = Vec::new();
    for (name, s, t, h) in BUILTIN {
        for (part, text) in PARTS.iter().zip([s, t, h]) {
            let path = dir.join(format!("{name}.{part}.hbs"));
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(mut f) => {
                    std::io::Write::write_all(&mut f, text.as_bytes())?;
                    written.push(path);
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(written)
}
