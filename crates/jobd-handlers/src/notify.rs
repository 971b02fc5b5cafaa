//! `notify`: delivers the notifications a job asked for when it ended (the
//! jobs the store enqueues in the transaction that ends a job; see
//! [`jobd::store::notify`]).  One notification job per entry, retried with
//! backoff like any job.  An entry's target is one of:
//!
//! * `"webhook": "https://hooks.example.com/jobd"` — a `POST` of
//!   `{"event": "job.<state>", "job": {id, queue, kind, state, attempts,
//!   tenant, result, error, finished_at}}`, signed: `X-Jobd-Timestamp` (Unix
//!   seconds) and `X-Jobd-Signature: sha256=<hex HMAC-SHA256 of
//!   "<timestamp>.<body>">` with the secret in `$JOBD_WEBHOOK_SECRET`, and
//!   `X-Jobd-Delivery` (the notification job's id, the same on every retry,
//!   for the receiver to drop duplicates).  Only to hosts
//!   [`NotifyConfig::webhook_hosts`] allows, checked at enqueue and again at
//!   each try; no redirects followed.  A 2xx delivers it; 408, 429, 5xx, a
//!   refused connection or a timeout is retried; any other answer ends it.
//! * `"email": {"to", "cc"?, "template"?, "subject"?, "data"?}` — a mail
//!   with a template (default `job-finished`), its data the entry's `data`
//!   with `job_id`, `queue`, `kind`, `state`, `attempts`, `error` and `job`
//!   (the whole end) over it; checked (template, variables, addresses) at
//!   enqueue.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hmac::{Hmac, KeyInit, Mac};
use http_body_util::{BodyExt, Full};
use hyper::Uri;
use jobd::store::notify::{NOTIFY_KIND, NOTIFY_QUEUE};
use jobd::worker::{Handler, JobContext, JobError, WorkerBuilder};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::Sha256;

use crate::email::{Email, Mailer, Recipients};

pub const KIND: &str = NOTIFY_KIND;
pub const QUEUE: &str = NOTIFY_QUEUE;
/// Where the webhook secret comes from (never from a file).
pub const SECRET_ENV: &str = "JOBD_WEBHOOK_SECRET";
/// The template of a notification mail that names none.
pub const DEFAULT_TEMPLATE: &str = "job-finished";
pub const SIGNATURE_HEADER: &str = "x-jobd-signature";
pub const TIMESTAMP_HEADER: &str = "x-jobd-timestamp";
pub const DELIVERY_HEADER: &str = "x-jobd-delivery";

/// `[notify]` of `jobd.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyConfig {
    /// Hosts webhooks may go to: `hooks.example.com` (that host, any port),
    /// `*.example.com` (its subdomains), `127.0.0.1:8080` (host and port).
    #[serde(default)]
    pub webhook_hosts: Vec<String>,
    /// Connect + answer, per try.
    #[serde(default = "default_timeout", with = "humantime_serde_secs")]
    pub timeout: Duration,
    /// The signing secret: from [`SECRET_ENV`], never the file.
    #[serde(skip)]
    pub secret: Option<String>,
    /// Certificates (PEM) trusted beside the Mozilla roots for `https`
    /// webhooks (relative to jobd.toml's folder).
    #[serde(default)]
    pub ca_file: Option<std::path::PathBuf>,
    /// A `secret` key in the file, refused by [`NotifyConfig::with_secret_from_env`].
    #[serde(default, rename = "secret", skip_serializing)]
    secret_in_file: Option<String>,
}

fn default_timeout() -> Duration {
    Duration::from_secs(10)
}

/// `timeout = "10s"` in the file.
mod humantime_serde_secs {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s).map_err(serde::de::Error::custom)
    }
}

impl Default for NotifyConfig {
    fn default() -> NotifyConfig {
        NotifyConfig {
            webhook_hosts: Vec::new(),
            timeout: default_timeout(),
            secret: None,
            ca_file: None,
            secret_in_file: None,
        }
    }
}

impl NotifyConfig {
    /// The secret from the environment (an empty one is none); a secret
    /// written in the file is refused.
    pub fn with_secret_from_env(mut self) -> Result<NotifyConfig, String> {
        if self.secret_in_file.is_some() {
            return Err(format!(
                "[notify] secret: keep the webhook secret out of jobd.toml; put it in ${SECRET_ENV}"
            ));
        }
        self.secret = std::env::var(SECRET_ENV).ok().filter(|s| !s.is_empty());
        Ok(self)
    }

    /// `ca_file` relative to `base` (jobd.toml's folder).
    pub fn with_base(mut self, base: &std::path::Path) -> NotifyConfig {
        self.ca_file = self.ca_file.map(|f| base.join(f));
        self
    }

    /// Is `url` a webhook this configuration sends to?  Its scheme, host and
    /// port when it is.
    pub fn check_url(&self, url: &str) -> Result<Target, String> {
        let uri: Uri = url
            .parse()
            .map_err(|e| format!("webhook {url:?} is not a URL: {e}"))?;
        let tls = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(format!("webhook {url:?}: only http and https URLs")),
        };
        let host = uri
            .host()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| format!("webhook {url:?} has no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
            return Err(format!("webhook {url:?}: no user or password in the URL"));
        }
        let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
        if !self
            .webhook_hosts
            .iter()
            .any(|a| host_allowed(a, &host, port))
        {
            return Err(format!(
                "webhook host {host:?} (port {port}) is not allowed: [notify] webhook_hosts is {}",
                if self.webhook_hosts.is_empty() {
                    "empty".to_string()
                } else {
                    self.webhook_hosts.join(", ")
                }
            ));
        }
        let path = uri
            .path_and_query()
            .map_or("/".to_string(), |p| p.as_str().to_string());
        Ok(Target {
            tls,
            host,
            port,
            path,
        })
    }
}

/// `allowed` (`host`, `host:port`, `*.domain`) lets `host`:`port` through.
fn host_allowed(allowed: &str, host: &str, port: u16) -> bool {
    let allowed = allowed.trim().to_ascii_lowercase();
    let (name, want_port) = match allowed.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') || h.ends_with(']') => match p.parse::<u16>() {
            Ok(p) => (h.trim_start_matches('[').trim_end_matches(']'), Some(p)),
            Err(_) => (allowed.as_str(), None),
        },
        _ => (allowed.as_str(), None),
    };
    if want_port.is_some_and(|p| p != port) {
        return false;
    }
    match name.strip_prefix("*.") {
        Some(domain) => host.len() > domain.len() + 1 && host.ends_with(&format!(".{domain}")),
        None => name == host,
    }
}

/// Where a webhook goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    /// Path and query.
    pub path: String,
}

/// How the job ended: what the store wrote.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobEnd {
    pub id: i64,
    pub queue: String,
    pub kind: String,
    pub state: String,
    pub attempts: i64,
    pub tenant: Option<String>,
    pub result: Option<Value>,
    pub error: Option<String>,
    pub finished_at: Option<i64>,
}

/// One entry of a job's list, as the notification job carries it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// The store's (the states the entry fires on).
    #[serde(default)]
    pub on: Value,
    #[serde(default)]
    pub max_attempts: Option<i64>,
    #[serde(default)]
    pub backoff_ms: Option<i64>,
    #[serde(default)]
    pub webhook: Option<String>,
    #[serde(default)]
    pub email: Option<EmailTarget>,
}

/// A notification mail.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EmailTarget {
    pub to: Recipients,
    #[serde(default)]
    pub cc: Option<Recipients>,
    #[serde(default)]
    pub template: Option<String>,
    #[serde(default)]
    pub subject: Option<String>,
    #[serde(default)]
    pub data: Option<Value>,
}

/// A notification job's payload.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Notification {
    pub job: JobEnd,
    pub notify: Entry,
}

/// What a delivered notification stores.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Delivered {
    /// `webhook` or `email`.
    pub via: String,
    /// The URL, or the recipients.
    pub to: String,
    /// The HTTP status, or the SMTP server's answer.
    pub answer: String,
}

/// The `notify` handler.
pub struct NotifyHandler {
    config: NotifyConfig,
    mailer: Option<Arc<Mailer>>,
    tls: Arc<rustls::ClientConfig>,
}

impl NotifyHandler {
    /// Refused: a `ca_file` that holds no certificate.
    pub fn new(config: NotifyConfig, mailer: Option<Arc<Mailer>>) -> Result<NotifyHandler, String> {
        let tls = crate::tls::client_config(config.ca_file.as_deref())
            .map_err(|e| format!("[notify] {e}"))?;
        Ok(NotifyHandler {
            config,
            mailer,
            tls,
        })
    }

    fn mail(&self, end: &JobEnd, target: &EmailTarget) -> Result<(&Mailer, Email), String> {
        let mailer = self
            .mailer
            .as_deref()
            .ok_or("a notification e-mail needs an SMTP server, and [email] is not configured")?;
        let mut data = match &target.data {
            None => serde_json::Map::new(),
            Some(Value::Object(m)) => m.clone(),
            Some(_) => return Err("email.data must be a JSON object".into()),
        };
        let fields = [
            ("job_id", Value::from(end.id)),
            ("queue", end.queue.clone().into()),
            ("kind", end.kind.clone().into()),
            ("state", end.state.clone().into()),
            ("attempts", end.attempts.into()),
            ("error", end.error.clone().into()),
            ("job", serde_json::to_value(end).map_err(|e| e.to_string())?),
        ];
        for (k, v) in fields {
            data.insert(k.into(), v);
        }
        let email = Email {
            to: target.to.clone(),
            cc: target.cc.clone(),
            bcc: None,
            reply_to: None,
            template: target
                .template
                .clone()
                .unwrap_or_else(|| DEFAULT_TEMPLATE.into()),
            data: Value::Object(data),
            subject: target.subject.clone(),
            attachments: Vec::new(),
        };
        Ok((mailer, email))
    }

    fn one_target(entry: &Entry) -> Result<(), String> {
        match (&entry.webhook, &entry.email) {
            (Some(_), Some(_)) => Err("an entry has one target: give the webhook and the \
                                       e-mail as two entries"
                .into()),
            (None, None) => Err("no target: give \"webhook\" or \"email\"".into()),
            _ => Ok(()),
        }
    }

    async fn post(&self, delivery: i64, url: &str, end: &JobEnd) -> Result<Delivered, JobError> {
        let target = self.config.check_url(url).map_err(JobError::permanent)?;
        let secret = self.config.secret.as_deref().ok_or_else(|| {
            JobError::permanent(format!("webhooks are signed: set ${SECRET_ENV}"))
        })?;
        let body = serde_json::to_vec(&serde_json::json!({
            "event": format!("job.{}", end.state),
            "job": end,
        }))
        .map_err(|e| JobError::permanent(e.to_string()))?;
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
            .to_string();
        let signature = sign(secret, &stamp, &body);
        let request = hyper::Request::post(&target.path)
            .header(hyper::header::HOST, authority(&target))
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .header(
                hyper::header::USER_AGENT,
                concat!("jobd/", env!("CARGO_PKG_VERSION")),
            )
            .header(TIMESTAMP_HEADER, &stamp)
            .header(SIGNATURE_HEADER, format!("sha256={signature}"))
            .header(DELIVERY_HEADER, delivery.to_string())
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| JobError::permanent(format!("webhook request: {e}")))?;
        let status = tokio::time::timeout(self.config.timeout, self.send(&target, request))
            .await
            .map_err(|_| {
                JobError::retryable(format!(
                    "webhook {url}: no answer within {:?}",
                    self.config.timeout
                ))
            })??;
        let code = status.as_u16();
        if status.is_success() {
            return Ok(Delivered {
                via: "webhook".into(),
                to: url.into(),
                answer: status.to_string(),
            });
        }
        let message = format!("webhook {url} answered {status}");
        if code == 408 || code == 425 || code == 429 || status.is_server_error() {
            Err(JobError::retryable(message))
        } else if status.is_redirection() {
            Err(JobError::permanent(format!(
                "{message}: redirects are not followed"
            )))
        } else {
            Err(JobError::permanent(message))
        }
    }

    /// One request on a connection of its own; the answer's status.
    async fn send(
        &self,
        target: &Target,
        request: hyper::Request<Full<Bytes>>,
    ) -> Result<hyper::StatusCode, JobError> {
        let where_ = format!("{}:{}", target.host, target.port);
        let tcp = tokio::net::TcpStream::connect((target.host.as_str(), target.port))
            .await
            .map_err(|e| JobError::retryable(format!("webhook connect to {where_}: {e}")))?;
        let _ = tcp.set_nodelay(true);
        if target.tls {
            let name = rustls::pki_types::ServerName::try_from(target.host.clone())
                .map_err(|e| JobError::permanent(format!("webhook host {where_}: {e}")))?;
            let tls = tokio_rustls::TlsConnector::from(self.tls.clone())
                .connect(name, tcp)
                .await
                .map_err(|e| JobError::retryable(format!("webhook TLS to {where_}: {e}")))?;
            exchange(hyper_util::rt::TokioIo::new(tls), request, &where_).await
        } else {
            exchange(hyper_util::rt::TokioIo::new(tcp), request, &where_).await
        }
    }
}

async fn exchange<IO>(
    io: IO,
    request: hyper::Request<Full<Bytes>>,
    where_: &str,
) -> Result<hyper::StatusCode, JobError>
where
    IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let failed = |e: hyper::Error| JobError::retryable(format!("webhook to {where_}: {e}"));
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(failed)?;
    let conn = tokio::spawn(conn);
    let response = sender.send_request(request).await.map_err(failed)?;
    let status = response.status();
    // Read (and drop) the answer's body so the exchange ends cleanly.
    let _ = response.into_body().collect().await;
    conn.abort();
    Ok(status)
}

fn authority(t: &Target) -> String {
    let host = if t.host.contains(':') {
        format!("[{}]", t.host)
    } else {
        t.host.clone()
    };
    match (t.tls, t.port) {
        (true, 443) | (false, 80) => host,
        (_, port) => format!("{host}:{port}"),
    }
}

/// The hex HMAC-SHA256 of `<stamp>.<body>` with `secret`.
pub fn sign(secret: &str, stamp: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(stamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

impl Handler for NotifyHandler {
    const KIND: &'static str = KIND;
    type Payload = Notification;
    type Output = Delivered;

    fn check(&self, n: &Notification, _tenant: Option<&str>) -> Result<(), String> {
        Self::one_target(&n.notify)?;
        if let Some(url) = &n.notify.webhook {
            self.config.check_url(url)?;
            if self.config.secret.is_none() {
                return Err(format!("webhooks are signed: set ${SECRET_ENV}"));
            }
        }
        if let Some(target) = &n.notify.email {
            let (mailer, email) = self.mail(&n.job, target)?;
            mailer.check(&email)?;
        }
        Ok(())
    }

    async fn run(&self, ctx: JobContext, n: Notification) -> Result<Delivered, JobError> {
        Self::one_target(&n.notify).map_err(JobError::permanent)?;
        let delivered = if let Some(url) = &n.notify.webhook {
            self.post(ctx.id(), url, &n.job).await?
        } else {
            let target = n.notify.email.as_ref().expect("one target");
            let (mailer, email) = self.mail(&n.job, target).map_err(JobError::permanent)?;
            let (message, recipients, _) = mailer.compose(&email).map_err(JobError::permanent)?;
            let answer = mailer.send(&message).await?;
            Delivered {
                via: "email".into(),
                to: recipients.join(", "),
                answer,
            }
        };
        tracing::info!(of_job = n.job.id, state = %n.job.state, via = %delivered.via,
                       "notification delivered");
        Ok(delivered)
    }
}

/// Register `notify` (its queue, `notify`, is in [`crate::schedules::BUILTIN_QUEUES`]).
pub fn register(
    builder: WorkerBuilder,
    config: NotifyConfig,
    mailer: Option<Arc<Mailer>>,
) -> Result<WorkerBuilder, String> {
    Ok(builder.register(NotifyHandler::new(config, mailer)?))
}
