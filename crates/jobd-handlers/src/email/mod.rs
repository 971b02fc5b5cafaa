//! E-mail: `send_email` and `send_batch_email`, over SMTP (`lettre`'s
//! connections in a pool of ours, [`smtp`]) with Handlebars templates
//! ([`templates`]).
//!
//! * [`SmtpConfig`] — the server: host, port, STARTTLS / implicit TLS /
//!   plain (loopback only), credentials (the password from the
//!   environment, never the configuration file), timeout, pool size.
//! * [`Mailer`] — the transport, the sender, the templates and the data
//!   directory (attachments come from its `artifacts/`); its health (connect
//!   and EHLO, cached for a minute) for `/healthz`.
//! * [`SendEmailHandler`], [`BatchEmailHandler`] — the jobs.  A temporary
//!   SMTP failure (4xx, a refused connection, a timeout) is retried with the
//!   job's backoff; a permanent one (5xx, an address that is not one) ends
//!   the job with the server's answer.  What can be known at enqueue — an
//!   unknown template, a variable the data lacks, a malformed address, an
//!   attachment outside the artifacts — is refused then.

mod smtp;
pub mod templates;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jobd::worker::{Handler, JobContext, JobError, WorkerBuilder};
use lettre::message::header::ContentType;
use lettre::message::{Attachment, Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::Message;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::DataDir;
pub use templates::{Rendered, Templates};

/// The kind of one message.
pub const SEND_KIND: &str = "send_email";
/// The kind of many messages of one template.
pub const BATCH_KIND: &str = "send_batch_email";
/// The queue both run on.
pub const EMAIL_QUEUE: &str = "email";
/// Largest attachment, and all of a message's together.
pub const MAX_ATTACHMENT_BYTES: u64 = 10 << 20;
pub const MAX_ATTACHMENTS_BYTES: u64 = 25 << 20;
/// Most messages in one `send_batch_email`.
pub const MAX_BATCH: usize = 10_000;
/// How long a health answer is reused.
const HEALTH_FOR: Duration = Duration::from_secs(60);

/// How the connection to the server is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    /// Plain, then STARTTLS (required): port 587.
    Starttls,
    /// TLS from the first byte: port 465.
    Tls,
    /// No encryption: only for a server on loopback.
    None,
}

/// The SMTP server and the sender.
#[derive(Debug, Clone)]
pub struct SmtpConfig {
    pub host: String,
    /// Default: 587 (STARTTLS), 465 (TLS), 25 (none).
    pub port: Option<u16>,
    pub tls: TlsMode,
    pub username: Option<String>,
    /// Read from the environment by whoever builds this; never logged.
    pub password: Option<String>,
    /// `"QR Platform <noreply@example.com>"`.
    pub from: String,
    pub timeout: Duration,
    /// Connections kept open to the server.
    pub pool_size: u32,
    /// `send_batch_email`'s pacing: this many messages, then a pause.
    pub batch_size: usize,
    pub batch_pause: Duration,
    /// Certificates (PEM) trusted beside the Mozilla roots: a company CA,
    /// a test server's own.
    pub ca_file: Option<std::path::PathBuf>,
}

impl SmtpConfig {
    /// A plain server on loopback (tests, a local relay).
    pub fn loopback(port: u16, from: &str) -> SmtpConfig {
        SmtpConfig {
            host: "127.0.0.1".into(),
            port: Some(port),
            tls: TlsMode::None,
            username: None,
            password: None,
            from: from.into(),
            timeout: Duration::from_secs(10),
            pool_size: 4,
            batch_size: 10,
            batch_pause: Duration::from_secs(1),
            ca_file: None,
        }
    }
}

fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .trim_matches(['[', ']'])
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The transport, the sender and the templates.
pub struct Mailer {
    pool: smtp::Pool,
    from: Mailbox,
    templates: Templates,
    data: DataDir,
    server: String,
    batch_size: usize,
    batch_pause: Duration,
    health: Mutex<Option<(Instant, Result<(), String>)>>,
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailer")
            .field("server", &self.server)
            .finish()
    }
}

impl Mailer {
    /// A mailer for `config`, with the templates of `<data>/templates/email/`
    /// over the built-in ones.  Refused: plain SMTP to a host that is not
    /// loopback, a sender that is not an address, a broken template.
    pub fn new(config: &SmtpConfig, data: DataDir) -> Result<Mailer, String> {
        let from: Mailbox = config
            .from
            .parse()
            .map_err(|e| format!("e-mail from = {:?} is not an address: {e}", config.from))?;
        let host = config.host.as_str();
        let port = config.port.unwrap_or(match config.tls {
            TlsMode::Starttls => 587,
            TlsMode::Tls => 465,
            TlsMode::None => 25,
        });
        if config.tls == TlsMode::None && !is_loopback(host) {
            return Err(format!(
                "e-mail tls = \"none\" to {host}: plain SMTP only to a server on loopback \
                 (use \"starttls\" or \"tls\")"
            ));
        }
        let security = smtp::Security::new(config.tls, host, config.ca_file.as_deref())?;
        let credentials = config.username.as_ref().map(|user| {
            let password = config.password.clone().unwrap_or_default();
            Credentials::new(user.clone(), password)
        });
        let pool = smtp::Pool::new(
            host,
            port,
            security,
            credentials,
            config.timeout,
            config.pool_size as usize,
        );
        let templates = Templates::load(Some(&templates_dir(&data)))?;
        Ok(Mailer {
            pool,
            from,
            templates,
            data,
            server: format!("{host}:{port}"),
            batch_size: config.batch_size.max(1),
            batch_pause: config.batch_pause,
            health: Mutex::new(None),
        })
    }

    pub fn templates(&self) -> &Templates {
        &self.templates
    }

    /// Whether the server answers (connect, EHLO, and TLS and AUTH as
    /// configured, within the timeout), asked at most once a minute.
    pub async fn health(&self) -> Result<(), String> {
        if let Some((at, answer)) = self
            .health
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            if at.elapsed() < HEALTH_FOR {
                return answer.clone();
            }
        }
        let answer = self
            .pool
            .probe()
            .await
            .map_err(|e| format!("{}: {}", self.server, e.message));
        *self.health.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((Instant::now(), answer.clone()));
        answer
    }

    /// Everything about `email` that can be known before it is sent.
    pub fn check(&self, email: &Email) -> Result<(), String> {
        self.compose(email).map(|_| ())
    }

    /// The message `email` asks for: addresses parsed, the template
    /// rendered, attachments read from the data directory's artifacts.
    pub fn compose(&self, email: &Email) -> Result<(Message, Vec<String>, String), String> {
        let rendered = self.templates.render(&email.template, &email.data)?;
        let subject = email.subject.clone().unwrap_or(rendered.subject);
        let mut b = Message::builder()
            .from(self.from.clone())
            .subject(subject.clone());
        if let Some(r) = &email.reply_to {
            b = b.reply_to(mailbox("reply_to", r)?);
        }
        let mut rcpt = Vec::new();
        for (field, list) in [
            ("to", Some(&email.to)),
            ("cc", email.cc.as_ref()),
            ("bcc", email.bcc.as_ref()),
        ] {
            for a in list.map(Recipients::list).unwrap_or_default() {
                let m = mailbox(field, a)?;
                rcpt.push(m.email.to_string());
                b = match field {
                    "to" => b.to(m),
                    "cc" => b.cc(m),
                    _ => b.bcc(m),
                };
            }
        }
        if email.to.list().is_empty() {
            return Err("to: at least one recipient".into());
        }
        let body = MultiPart::alternative_plain_html(rendered.text, rendered.html);
        let message = if email.attachments.is_empty() {
            b.multipart(body)
        } else {
            let mut mixed = MultiPart::mixed().multipart(body);
            let mut total = 0u64;
            for rel in &email.attachments {
                let (path, bytes) = self.attachment(rel)?;
                total += bytes.len() as u64;
                if total > MAX_ATTACHMENTS_BYTES {
                    return Err(format!(
                        "attachments: more than {} MiB together",
                        MAX_ATTACHMENTS_BYTES >> 20
                    ));
                }
                let name = path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_else(|| "attachment".into());
                mixed = mixed.singlepart(Attachment::new(name).body(bytes, content_type(&path)));
            }
            b.multipart(mixed)
        }
        .map_err(|e| format!("the message cannot be built: {e}"))?;
        Ok((message, rcpt, subject))
    }

    /// An attachment: a file under `<data>/artifacts`, by a path relative to
    /// the data directory (`artifacts/tenant-001/x.pdf`), symlinks resolved
    /// and checked to stay inside.
    fn attachment(&self, rel: &str) -> Result<(PathBuf, Vec<u8>), String> {
        let refuse = |why: &str| Err(format!("attachment {rel:?}: {why}"));
        if Path::new(rel).is_absolute() || rel.split(['/', '\\']).any(|c| c == "..") {
            return refuse("give a path inside the data directory's artifacts/, like artifacts/tenant-001/x.pdf");
        }
        let artifacts = self
            .data
            .artifacts()
            .canonicalize()
            .map_err(|e| format!("attachment {rel:?}: no artifacts directory: {e}"))?;
        let path = match self.data.root().join(rel).canonicalize() {
            Ok(p) => p,
            Err(e) => return refuse(&format!("not found: {e}")),
        };
        if !path.starts_with(&artifacts) {
            return refuse("outside the data directory's artifacts/");
        }
        let meta = std::fs::metadata(&path).map_err(|e| format!("attachment {rel:?}: {e}"))?;
        if !meta.is_file() {
            return refuse("not a file");
        }
        if meta.len() > MAX_ATTACHMENT_BYTES {
            return refuse(&format!("larger than {} MiB", MAX_ATTACHMENT_BYTES >> 20));
        }
        let bytes = std::fs::read(&path).map_err(|e| format!("attachment {rel:?}: {e}"))?;
        Ok((path, bytes))
    }

    /// Send one message; the server's answer, or why not (retryable or not).
    pub async fn send(&self, message: &Message) -> Result<String, JobError> {
        match self
            .pool
            .send(message.envelope(), &message.formatted())
            .await
        {
            Ok(answer) => Ok(answer),
            Err(e) if e.permanent => Err(JobError::permanent(format!(
                "SMTP {}: {}",
                self.server, e.message
            ))),
            Err(e) => Err(JobError::retryable(format!(
                "SMTP {}: {}",
                self.server, e.message
            ))),
        }
    }
}

/// Where a data directory's own e-mail templates are.
pub fn templates_dir(data: &DataDir) -> PathBuf {
    data.root().join("templates").join("email")
}

fn mailbox(field: &str, text: &str) -> Result<Mailbox, String> {
    text.parse()
        .map_err(|e| format!("{field}: {text:?} is not an e-mail address: {e}"))
}

fn content_type(path: &Path) -> ContentType {
    let ext = path
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    let mime = match ext.as_str() {
        "pdf" => "application/pdf",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "svg" => "image/svg+xml",
        "webp" => "image/webp",
        "csv" => "text/csv",
        "json" | "jsonl" => "application/json",
        "txt" => "text/plain",
        "xlsx" => "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        "zip" => "application/zip",
        "zst" => "application/zstd",
        _ => "application/octet-stream",
    };
    ContentType::parse(mime).unwrap_or(ContentType::TEXT_PLAIN)
}

/// One address or several.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(untagged)]
pub enum Recipients {
    One(String),
    Many(Vec<String>),
}

impl Recipients {
    pub fn list(&self) -> Vec<&str> {
        match self {
            Recipients::One(a) => vec![a.as_str()],
            Recipients::Many(v) => v.iter().map(String::as_str).collect(),
        }
    }
}

/// `send_email`'s payload.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Email {
    pub to: Recipients,
    pub cc: Option<Recipients>,
    pub bcc: Option<Recipients>,
    pub reply_to: Option<String>,
    pub template: String,
    #[serde(default = "empty_object")]
    pub data: Value,
    /// Instead of the template's subject.
    pub subject: Option<String>,
    /// Files under the data directory's `artifacts/`, relative to it.
    #[serde(default)]
    pub attachments: Vec<String>,
}

fn empty_object() -> Value {
    Value::Object(Default::default())
}

/// What `send_email` stores.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Sent {
    pub recipients: Vec<String>,
    pub subject: String,
    /// The server's answer.
    pub smtp: String,
}

/// The `send_email` handler.
#[derive(Debug, Clone)]
pub struct SendEmailHandler(pub Arc<Mailer>);

impl Handler for SendEmailHandler {
    const KIND: &'static str = SEND_KIND;
    type Payload = Email;
    type Output = Sent;

    fn check(&self, email: &Email, _tenant: Option<&str>) -> Result<(), String> {
        self.0.check(email)
    }

    async fn run(&self, ctx: JobContext, email: Email) -> Result<Sent, JobError> {
        let mailer = self.0.clone();
        // Composing reads attachments: off the runtime's threads.
        let (message, recipients, subject) = ctx
            .blocking(move || mailer.compose(&email).map_err(JobError::permanent))
            .await?;
        let smtp = self.0.send(&message).await?;
        tracing::info!(recipients = recipients.len(), "e-mail sent");
        Ok(Sent {
            recipients,
            subject,
            smtp,
        })
    }
}

/// One message of a batch: its recipients and its own data (over the
/// batch's).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BatchMessage {
    pub to: Recipients,
    pub cc: Option<Recipients>,
    #[serde(default = "empty_object")]
    pub data: Value,
    pub subject: Option<String>,
}

/// `send_batch_email`'s payload: many messages of one template.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BatchEmail {
    pub template: String,
    /// Data every message has (each message's own data over it).
    #[serde(default = "empty_object")]
    pub data: Value,
    pub messages: Vec<BatchMessage>,
    /// Pacing: this many messages, then `pause_ms` (default: the
    /// configuration's, 10 and 1000).
    pub batch_size: Option<usize>,
    pub pause_ms: Option<u64>,
}

impl BatchEmail {
    fn email(&self, m: &BatchMessage) -> Email {
        let mut data = self.data.clone();
        if let (Value::Object(base), Value::Object(own)) = (&mut data, &m.data) {
            for (k, v) in own {
                base.insert(k.clone(), v.clone());
            }
        }
        Email {
            to: m.to.clone(),
            cc: m.cc.clone(),
            bcc: None,
            reply_to: None,
            template: self.template.clone(),
            data,
            subject: m.subject.clone(),
            attachments: Vec::new(),
        }
    }
}

/// One recipient's outcome in a batch.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct BatchResult {
    pub to: Vec<String>,
    /// `sent` or `failed`.
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What `send_batch_email` stores.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BatchReport {
    pub sent: usize,
    pub failed: usize,
    pub total: usize,
    pub results: Vec<BatchResult>,
}

/// The `send_batch_email` handler.
#[derive(Debug, Clone)]
pub struct BatchEmailHandler(pub Arc<Mailer>);

/// Tries of one message of a batch that meets a temporary failure.
const BATCH_TRIES: u32 = 3;

impl Handler for BatchEmailHandler {
    const KIND: &'static str = BATCH_KIND;
    type Payload = BatchEmail;
    type Output = BatchReport;

    fn check(&self, batch: &BatchEmail, _tenant: Option<&str>) -> Result<(), String> {
        if batch.messages.is_empty() || batch.messages.len() > MAX_BATCH {
            return Err(format!(
                "messages: 1 to {MAX_BATCH}, not {}",
                batch.messages.len()
            ));
        }
        for (i, m) in batch.messages.iter().enumerate() {
            self.0
                .check(&batch.email(m))
                .map_err(|e| format!("message #{i}: {e}"))?;
        }
        Ok(())
    }

    async fn run(&self, ctx: JobContext, batch: BatchEmail) -> Result<BatchReport, JobError> {
        let mailer = self.0.clone();
        let size = batch.batch_size.unwrap_or(mailer.batch_size).max(1);
        let pause = batch
            .pause_ms
            .map_or(mailer.batch_pause, Duration::from_millis);
        let total = batch.messages.len();
        let mut report = BatchReport {
            sent: 0,
            failed: 0,
            total,
            results: Vec::with_capacity(total),
        };
        let mut transient = None;
        for (i, m) in batch.messages.iter().enumerate() {
            if i > 0 && i % size == 0 && !pause.is_zero() {
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = ctx.cancelled() => return Err(JobError::retryable("stopped while pacing the batch")),
                }
            }
            let email = batch.email(m);
            let to: Vec<String> = email.to.list().iter().map(|s| s.to_string()).collect();
            let mut tries = 0;
            let outcome = loop {
                tries += 1;
                // A batch has no attachments: composing does no I/O.
                let sent = match mailer.compose(&email) {
                    Ok((message, _, _)) => mailer.send(&message).await,
                    Err(e) => Err(JobError::permanent(e)),
                };
                match sent {
                    Err(e) if e.retryable && tries < BATCH_TRIES && !ctx.is_cancelled() => {
                        tokio::time::sleep(Duration::from_millis(500 * u64::from(tries))).await;
                    }
                    other => break other,
                }
            };
            match outcome {
                Ok(_) => {
                    report.sent += 1;
                    report.results.push(BatchResult {
                        to,
                        status: "sent".into(),
                        error: None,
                    });
                }
                Err(e) => {
                    if e.retryable {
                        transient = Some(e.message.clone());
                    }
                    report.failed += 1;
                    report.results.push(BatchResult {
                        to,
                        status: "failed".into(),
                        error: Some(e.message),
                    });
                }
            }
            let details = serde_json::json!({"completed": report.sent, "failed": report.failed, "total": total});
            let percent = 100.0 * (i + 1) as f64 / total as f64;
            ctx.progress(percent, "sending", Some(&details.to_string()))
                .await?;
        }
        // Nothing went out and the server was the trouble: try the whole
        // batch again later (nobody got a copy yet).
        if report.sent == 0 {
            if let Some(e) = transient {
                return Err(JobError::retryable(format!(
                    "no message of the batch went out: {e}"
                )));
            }
        }
        Ok(report)
    }
}

/// Register `send_email` and `send_batch_email` with `mailer` (their queue,
/// `email`, is the builder's business: [`crate::builtin`] has it).
pub fn register(builder: WorkerBuilder, mailer: Arc<Mailer>) -> WorkerBuilder {
    builder
        .register(SendEmailHandler(mailer.clone()))
        .register(BatchEmailHandler(mailer))
}
