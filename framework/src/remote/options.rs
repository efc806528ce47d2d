//! How to reach NATS: servers, credentials, TLS, the subject prefix and
//! the timing of heartbeats; and connecting with them.

use crate::error::ExitCode;
use async_nats::connection::State;
use async_nats::{ConnectErrorKind, ConnectOptions, ServerAddr};
use parking_lot::Mutex;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Default subject prefix.
pub const DEFAULT_PREFIX: &str = "daemonic";

#[derive(Clone)]
enum Credentials {
    None,
    UserPassword(String, String),
    Token(String),
    Nkey(String),
    File(PathBuf),
}

/// Where NATS is and how to talk to it.
///
/// ```
/// use daemonic::remote::NatsOptions;
/// use std::time::Duration;
///
/// let options = NatsOptions::new("nats://127.0.0.1:4222")
///     .prefix("transcoding")
///     .user_password("app", "s3cret")
///     .heartbeat(Duration::from_millis(200));
/// ```
///
/// A `nats://user:password@host:port` address gives the credentials too.
#[derive(Clone)]
pub struct NatsOptions {
    servers: Vec<String>,
    credentials: Credentials,
    tls_required: bool,
    root_certificates: Vec<PathBuf>,
    client_certificate: Option<(PathBuf, PathBuf)>,
    pub(crate) prefix: String,
    pub(crate) host_name: Option<String>,
    pub(crate) heartbeat: Duration,
    connection_timeout: Duration,
}

impl std::fmt::Debug for NatsOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the credentials.
        f.debug_struct("NatsOptions")
            .field("servers", &self.display_servers())
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl NatsOptions {
    /// One server (`nats://host:port`, `tls://host:port` or `host:port`).
    /// More can be added with [`server`](Self::server): the client picks
    /// one and moves to another when it is lost.
    pub fn new(server: impl Into<String>) -> Self {
        Self {
            servers: vec![server.into()],
            credentials: Credentials::None,
            tls_required: false,
            root_certificates: Vec::new(),
            client_certificate: None,
            prefix: DEFAULT_PREFIX.into(),
            host_name: None,
            heartbeat: Duration::from_millis(200),
            connection_timeout: Duration::from_secs(5),
        }
    }

    /// Another server of the same cluster.
    pub fn server(mut self, server: impl Into<String>) -> Self {
        self.servers.push(server.into());
        self
    }

    /// The first token(s) of every subject (default `daemonic`): services
    /// sharing one NATS system keep apart by prefix.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// This process's name as a host, in answers, heartbeats and `status`
    /// (default `<hostname>-<pid>`; characters a subject cannot hold become
    /// `_`). Every host serving a subject needs its own.
    pub fn host_name(mut self, name: impl Into<String>) -> Self {
        self.host_name = Some(name.into());
        self
    }

    /// How often a host tells each caller which of its calls it still holds
    /// (default 200 ms). Callers give up on a host after
    /// [`host_timeout`](crate::remote::RemotePoolBuilder::host_timeout) of
    /// silence, at least three intervals.
    pub fn heartbeat(mut self, interval: Duration) -> Self {
        self.heartbeat = interval;
        self
    }

    /// Authenticate with a user and a password.
    pub fn user_password(mut self, user: impl Into<String>, password: impl Into<String>) -> Self {
        self.credentials = Credentials::UserPassword(user.into(), password.into());
        self
    }

    /// Authenticate with a token.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.credentials = Credentials::Token(token.into());
        self
    }

    /// Authenticate with an nkey seed (`SU...`).
    pub fn nkey(mut self, seed: impl Into<String>) -> Self {
        self.credentials = Credentials::Nkey(seed.into());
        self
    }

    /// Authenticate with a `.creds` file (a JWT and an nkey seed), read when
    /// the connection is made (after a privilege drop: the dropped user must
    /// be able to read it).
    pub fn credentials_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.credentials = Credentials::File(path.into());
        self
    }

    /// Refuse a connection without TLS.
    pub fn require_tls(mut self, required: bool) -> Self {
        self.tls_required = required;
        self
    }

    /// Trust the certificate authorities in this PEM file.
    pub fn root_certificates(mut self, path: impl Into<PathBuf>) -> Self {
        self.root_certificates.push(path.into());
        self
    }

    /// Present this client certificate and key (PEM files) for mutual TLS.
    pub fn client_certificate(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.client_certificate = Some((cert.into(), key.into()));
        self
    }

    /// How long connecting to a server may take (default 5 s).
    pub fn connection_timeout(mut self, timeout: Duration) -> Self {
        self.connection_timeout = timeout;
        self
    }

    /// The servers as given, without credentials.
    pub(crate) fn display_servers(&self) -> String {
        let shown: Vec<String> = self
            .servers
            .iter()
            .map(|s| match s.parse::<ServerAddr>() {
                Ok(addr) => format!("{}:{}", addr.host(), addr.port()),
                Err(_) => s.clone(),
            })
            .collect();
        shown.join(",")
    }

    /// The host name to use: the configured one or `<hostname>-<pid>`.
    pub(crate) fn host(&self) -> String {
        let name = self.host_name.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_else(|_| "host".into());
            format!("{host}-{}", std::process::id())
        });
        super::wire::host_token(&name)
    }

    fn check(&self) -> Result<Vec<ServerAddr>, ConnectError> {
        let fail = |reason: String| ConnectError {
            servers: self.display_servers(),
            reason,
            code: ExitCode::Config,
        };
        if !super::wire::valid_prefix(&self.prefix) {
            return Err(fail(format!(
                "invalid subject prefix {:?} (tokens separated by dots, no spaces, `*` or `>`)",
                self.prefix
            )));
        }
        if self.heartbeat.is_zero() {
            return Err(fail("the heartbeat interval must be more than zero".into()));
        }
        if self.servers.is_empty() {
            return Err(fail("no server given".into()));
        }
        self.servers
            .iter()
            .map(|s| {
                s.parse::<ServerAddr>()
                    .map_err(|e| fail(format!("bad server address {s:?}: {e}")))
            })
            .collect()
    }

    async fn client_options(
        &self,
        events: Arc<ConnectionEvents>,
    ) -> Result<ConnectOptions, String> {
        let mut options = ConnectOptions::new();
        let addr_credentials = self.servers.iter().find_map(|s| {
            let addr = s.parse::<ServerAddr>().ok()?;
            let user = addr.username()?.to_string();
            Some((user, addr.password().map(str::to_string)))
        });
        options = match (&self.credentials, addr_credentials) {
            (Credentials::UserPassword(u, p), _) => options.user_and_password(u.clone(), p.clone()),
            (Credentials::Token(t), _) => options.token(t.clone()),
            (Credentials::Nkey(seed), _) => options.nkey(seed.clone()),
            (Credentials::File(path), _) => options
                .credentials_file(path)
                .await
                .map_err(|e| format!("cannot read credentials file {}: {e}", path.display()))?,
            (Credentials::None, Some((user, Some(password)))) => {
                options.user_and_password(user, password)
            }
            (Credentials::None, Some((token, None))) => options.token(token),
            (Credentials::None, None) => options,
        };
        for path in &self.root_certificates {
            options = options.add_root_certificates(path.clone());
        }
        if let Some((cert, key)) = &self.client_certificate {
            options = options.add_client_certificate(cert.clone(), key.clone());
        }
        let callback_events = events.clone();
        Ok(options
            .require_tls(self.tls_required)
            .connection_timeout(self.connection_timeout)
            .name(format!("daemonic {}", self.host()))
            // Reconnect for ever, backing off (the client's default delays,
            // at most 4 s between tries).
            .max_reconnects(None)
            .event_callback(move |event| {
                let events = callback_events.clone();
                async move { events.record(event) }
            }))
    }

    /// Connects; the client reconnects by itself afterwards.
    pub(crate) async fn connect(
        &self,
    ) -> Result<(async_nats::Client, Arc<ConnectionEvents>), ConnectError> {
        let addrs = self.check()?;
        let events = Arc::new(ConnectionEvents::default());
        let options = self
            .client_options(events.clone())
            .await
            .map_err(|reason| ConnectError {
                servers: self.display_servers(),
                reason,
                code: ExitCode::Config,
            })?;
        let client = options
            .connect(addrs)
            .await
            .map_err(|e| ConnectError::from_client(self.display_servers(), &e))?;
        Ok((client, events))
    }
}

/// Connecting to NATS failed.
#[derive(Debug, Clone, thiserror::Error)]
#[error("cannot connect to NATS at {servers}: {reason}")]
pub struct ConnectError {
    servers: String,
    reason: String,
    code: ExitCode,
}

impl ConnectError {
    pub(crate) fn new(servers: String, reason: String, code: ExitCode) -> Self {
        Self {
            servers,
            reason,
            code,
        }
    }

    fn from_client(servers: String, e: &async_nats::ConnectError) -> Self {
        let (reason, code) = match e.kind() {
            ConnectErrorKind::AuthorizationViolation => (
                "the server refused the credentials (authorization violation)".to_string(),
                ExitCode::NoPermission,
            ),
            ConnectErrorKind::Authentication => (
                format!("authentication failed: {e}"),
                ExitCode::NoPermission,
            ),
            ConnectErrorKind::ServerParse | ConnectErrorKind::Tls => {
                (e.to_string(), ExitCode::Config)
            }
            ConnectErrorKind::TimedOut => ("timed out".to_string(), ExitCode::Unavailable),
            _ => (e.to_string(), ExitCode::Unavailable),
        };
        Self {
            servers,
            reason,
            code,
        }
    }

    /// The exit code a daemon that could not connect ends with: 77 when the
    /// server refused the credentials, 78 for a bad address, prefix or TLS
    /// setting, 69 when no server could be reached.
    pub fn exit_code(&self) -> ExitCode {
        self.code
    }
}

/// What the client reported about its connection.
#[derive(Debug, Default)]
pub(crate) struct ConnectionEvents {
    pub disconnects: AtomicU64,
    pub errors: AtomicU64,
    pub last_error: Mutex<Option<String>>,
}

impl ConnectionEvents {
    fn record(&self, event: async_nats::Event) {
        match event {
            async_nats::Event::Disconnected => {
                self.disconnects.fetch_add(1, Ordering::Relaxed);
            }
            async_nats::Event::ServerError(_)
            | async_nats::Event::ClientError(_)
            | async_nats::Event::SlowConsumer(_) => self.error(event.to_string()),
            _ => {}
        }
    }

    pub(crate) fn error(&self, message: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        *self.last_error.lock() = Some(message);
    }
}

/// The connection's state as `status` shows it.
pub(crate) fn state_name(state: &State) -> &'static str {
    match state {
        State::Connected => "connected",
        State::Disconnected => "disconnected",
        State::Pending => "pending",
    }
}
