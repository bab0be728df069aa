//! One error type for the core. Every variant maps to a stable `code` string that the napi layer
//! copies onto the JavaScript `Error` (see `ServeError::code`).

use std::io;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("{message}")]
    Bind { code: &'static str, message: String },
    #[error("ERR_INVALID_CONFIG: {0}")]
    InvalidConfig(#[from] crate::config::ConfigError),
    #[error("{0}")]
    Tls(#[from] crate::tls::TlsError),
    #[error("ERR_RESTART_REQUIRED: {0}")]
    RestartRequired(String),
    #[error("ERR_SERVER_STATE: {0}")]
    State(String),
    #[error("ERR_IO: {0}")]
    Io(#[from] io::Error),
}

impl ServeError {
    /// The stable code JavaScript sees as `err.code`.
    pub fn code(&self) -> &'static str {
        match self {
            ServeError::Bind { code, .. } => code,
            ServeError::InvalidConfig(_) => "ERR_INVALID_CONFIG",
            ServeError::Tls(_) => "ERR_TLS_CONFIG",
            ServeError::RestartRequired(_) => "ERR_RESTART_REQUIRED",
            ServeError::State(_) => "ERR_SERVER_STATE",
            ServeError::Io(_) => "ERR_IO",
        }
    }

    /// A bind failure named the way node names it (`listen EADDRINUSE: address already in use 127.0.0.1:3000`),
    /// because Koatty checks `message.includes('EADDRINUSE')`.
    pub fn bind(err: &io::Error, addr: &str) -> Self {
        let (code, text) = match err.kind() {
            io::ErrorKind::AddrInUse => ("EADDRINUSE", "address already in use"),
            io::ErrorKind::PermissionDenied => ("EACCES", "permission denied"),
            io::ErrorKind::AddrNotAvailable => ("EADDRNOTAVAIL", "address not available"),
            _ => ("ERR_LISTEN", "listen failed"),
        };
        let detail = if code == "ERR_LISTEN" {
            format!("{text} ({err})")
        } else {
            text.to_string()
        };
        ServeError::Bind {
            code,
            message: format!("listen {code}: {detail} {addr}"),
        }
    }
}

pub type Result<T, E = ServeError> = std::result::Result<T, E>;
