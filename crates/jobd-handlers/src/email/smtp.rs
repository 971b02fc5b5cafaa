//! The SMTP connections: a small pool of `lettre` async connections over
//! sockets this module opens itself, with `TCP_NODELAY`.
//!
//! lettre writes a message's body and its closing `.` as two writes; on a
//! socket with Nagle's algorithm the second waits for the server's delayed
//! ACK (40 ms on Linux), which holds one connection to ~22 messages a
//! second.  Opening the socket here (plain, STARTTLS through lettre, or
//! implicit TLS through rustls) is what lets it be set.

use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use lettre::address::Envelope;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{AsyncSmtpConnection, AsyncTokioStream, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

use super::TlsMode;

/// An idle connection older than this is closed rather than reused
/// (servers drop idle clients after a minute or so).
const IDLE_MAX: Duration = Duration::from_secs(50);
/// An idle connection older than this is probed (`NOOP`) before reuse.
const PROBE_AFTER: Duration = Duration::from_secs(5);

/// Why a send or a probe failed, and whether trying later can help.
#[derive(Debug)]
pub(crate) struct SmtpFailure {
    pub permanent: bool,
    pub message: String,
}

impl SmtpFailure {
    fn transient(message: impl Into<String>) -> SmtpFailure {
        SmtpFailure {
            permanent: false,
            message: message.into(),
        }
    }
}

impl From<lettre::transport::smtp::Error> for SmtpFailure {
    fn from(e: lettre::transport::smtp::Error) -> SmtpFailure {
        SmtpFailure {
            permanent: e.is_permanent(),
            message: e.to_string(),
        }
    }
}

/// How connections are made.
pub(crate) enum Security {
    None,
    Starttls(TlsParameters),
    Tls(Arc<rustls::ClientConfig>),
}

impl Security {
    pub(crate) fn new(
        mode: TlsMode,
        host: &str,
        ca_file: Option<&Path>,
    ) -> Result<Security, String> {
        let tls = |e: String| format!("e-mail TLS for {host}: {e}");
        Ok(match mode {
            TlsMode::None => Security::None,
            TlsMode::Starttls => {
                let mut params = TlsParameters::builder(host.to_string());
                if let Some(path) = ca_file {
                    for cert in crate::tls::certificates(path).map_err(tls)? {
                        let cert =
                            lettre::transport::smtp::client::Certificate::from_der(cert.to_vec())
                                .map_err(|e| tls(e.to_string()))?;
                        params = params.add_root_certificate(cert);
                    }
                }
                Security::Starttls(params.build_rustls().map_err(|e| tls(e.to_string()))?)
            }
            TlsMode::Tls => Security::Tls(crate::tls::client_config(ca_file).map_err(tls)?),
        })
    }
}

/// Connections to one server, at most `size` at a time.
pub(crate) struct Pool {
    host: String,
    port: u16,
    security: Security,
    credentials: Option<Credentials>,
    timeout: Duration,
    hello: ClientId,
    idle: Mutex<Vec<(AsyncSmtpConnection, Instant)>>,
    slots: Semaphore,
}

impl Pool {
    pub(crate) fn new(
        host: &str,
        port: u16,
        security: Security,
        credentials: Option<Credentials>,
        timeout: Duration,
        size: usize,
    ) -> Pool {
        Pool {
            host: host.to_string(),
            port,
            security,
            credentials,
            timeout,
            // This host's name (lettre's `hostname` feature).
            hello: ClientId::default(),
            idle: Mutex::new(Vec::new()),
            slots: Semaphore::new(size.max(1)),
        }
    }

    /// `f` within the timeout, or a transient failure saying what timed out.
    async fn timed<T, E: Into<SmtpFailure>>(
        &self,
        what: &str,
        f: impl std::future::Future<Output = Result<T, E>>,
    ) -> Result<T, SmtpFailure> {
        match tokio::time::timeout(self.timeout, f).await {
            Ok(r) => r.map_err(Into::into),
            Err(_) => Err(SmtpFailure::transient(format!(
                "{what}: no answer within {:?}",
                self.timeout
            ))),
        }
    }

    /// A new connection: TCP (no Nagle), TLS as configured, EHLO, AUTH.
    async fn connect(&self) -> Result<AsyncSmtpConnection, SmtpFailure> {
        let addr = (self.host.as_str(), self.port);
        let tcp = self
            .timed("connect", async {
                TcpStream::connect(addr)
                    .await
                    .map_err(|e| SmtpFailure::transient(format!("connect: {e}")))
            })
            .await?;
        tcp.set_nodelay(true)
            .map_err(|e| SmtpFailure::transient(format!("connect: {e}")))?;
        let stream: Box<dyn AsyncTokioStream> = match &self.security {
            Security::Tls(config) => {
                let name =
                    rustls::pki_types::ServerName::try_from(self.host.clone()).map_err(|e| {
                        SmtpFailure {
                            permanent: true,
                            message: format!("TLS: {:?} is not a server name: {e}", self.host),
                        }
                    })?;
                let connector = tokio_rustls::TlsConnector::from(config.clone());
                let tls = self
                    .timed("TLS handshake", async {
                        connector
                            .connect(name, tcp)
                            .await
                            .map_err(|e| SmtpFailure::transient(format!("TLS handshake: {e}")))
                    })
                    .await?;
                Box::new(TlsTcp(tls))
            }
            _ => Box::new(tcp),
        };
        let mut conn = self
            .timed(
                "greeting",
                AsyncSmtpConnection::connect_with_transport(stream, &self.hello),
            )
            .await?;
        if let Security::Starttls(params) = &self.security {
            if !conn.can_starttls() {
                return Err(SmtpFailure::transient(
                    "the server does not offer STARTTLS (tls = \"starttls\" requires it)",
                ));
            }
            self.timed("STARTTLS", conn.starttls(params.clone(), &self.hello))
                .await?;
        }
        if let Some(credentials) = &self.credentials {
            self.timed(
                "AUTH",
                conn.auth(&[Mechanism::Plain, Mechanism::Login], credentials),
            )
            .await?;
        }
        Ok(conn)
    }

    /// An idle connection that still answers, or a new one.
    async fn checkout(&self) -> Result<AsyncSmtpConnection, SmtpFailure> {
        loop {
            let next = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
            let Some((mut conn, since)) = next else {
                return self.connect().await;
            };
            let age = since.elapsed();
            if age > IDLE_MAX {
                continue;
            }
            if age > PROBE_AFTER
                && !tokio::time::timeout(self.timeout, conn.test_connected())
                    .await
                    .unwrap_or(false)
            {
                continue;
            }
            return Ok(conn);
        }
    }

    fn checkin(&self, conn: AsyncSmtpConnection) {
        if !conn.has_broken() {
            let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
            idle.push((conn, Instant::now()));
        }
    }

    /// Send one message: the server's final answer.
    pub(crate) async fn send(
        &self,
        envelope: &Envelope,
        message: &[u8],
    ) -> Result<String, SmtpFailure> {
        let _slot = self
            .slots
            .acquire()
            .await
            .map_err(|_| SmtpFailure::transient("the mailer is closed"))?;
        let mut conn = self.checkout().await?;
        // A timeout drops the connection: its state is unknown.
        let answer = self.timed("sending", conn.send(envelope, message)).await?;
        self.checkin(conn);
        Ok(format!(
            "{} {}",
            answer.code(),
            answer.message().collect::<Vec<_>>().join(" ")
        ))
    }

    /// Connect, EHLO (and STARTTLS, AUTH as configured), QUIT.
    pub(crate) async fn probe(&self) -> Result<(), SmtpFailure> {
        let mut conn = self.connect().await?;
        let _ = self.timed("QUIT", conn.quit()).await;
        Ok(())
    }
}

/// An implicit-TLS socket, as lettre takes a stream.
struct TlsTcp(tokio_rustls::client::TlsStream<TcpStream>);

impl std::fmt::Debug for TlsTcp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("TlsTcp").field(&self.0.get_ref().0).finish()
    }
}

impl AsyncRead for TlsTcp {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsTcp {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }
}

impl AsyncTokioStream for TlsTcp {
    fn peer_addr(&self) -> std::io::Result<SocketAddr> {
        self.0.get_ref().0.peer_addr()
    }
}
