//! Binding a listening socket (socket2, so that `reusePort` and the backlog are ours to set).

use crate::error::{Result, ServeError};
use socket2::{Domain, Protocol as SockProtocol, Socket, Type};
use std::net::{IpAddr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use tokio::net::TcpListener;

const BACKLOG: i32 = 1024;

/// How a socket is bound beyond its address: node's `listen` options.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BindOptions {
    /// `SO_REUSEPORT` (Unix): several listeners share the port.
    pub reuse_port: bool,
    /// Pending connections the kernel queues (`None`: 1024).
    pub backlog: Option<u32>,
    /// `::` accepts IPv6 only (node's `ipv6Only`); otherwise dual-stack.
    pub ipv6_only: bool,
}

/// Binds `hostname:port`. No hostname means all interfaces: `::` dual-stack, or `0.0.0.0` where
/// IPv6 is unavailable (as node does).
pub async fn bind(hostname: Option<&str>, port: u16, reuse_port: bool) -> Result<TcpListener> {
    let addrs = match literal_addresses(hostname, port) {
        Some(addrs) => addrs,
        None => {
            let host = bare(hostname.unwrap_or_default());
            tokio::net::lookup_host((host, port))
                .await
                .map_err(|e| not_found(host, &e))?
                .collect()
        }
    };
    let options = BindOptions {
        reuse_port,
        ..BindOptions::default()
    };
    let listener = bind_first(hostname, port, &addrs, &options)?;
    Ok(TcpListener::from_std(listener)?)
}

/// As [`bind`], at once: a host name is resolved by the system resolver on the calling thread
/// (node's `listen` binds before it returns, so that `address()` is right at once).
pub fn bind_now(
    hostname: Option<&str>,
    port: u16,
    options: &BindOptions,
) -> Result<std::net::TcpListener> {
    let addrs = match literal_addresses(hostname, port) {
        Some(addrs) => addrs,
        None => {
            let host = bare(hostname.unwrap_or_default());
            (host, port)
                .to_socket_addrs()
                .map_err(|e| not_found(host, &e))?
                .collect()
        }
    };
    bind_first(hostname, port, &addrs, options)
}

fn bare(host: &str) -> &str {
    host.trim_start_matches('[').trim_end_matches(']')
}

fn not_found(host: &str, e: &std::io::Error) -> ServeError {
    ServeError::Bind {
        code: "ENOTFOUND",
        message: format!("getaddrinfo ENOTFOUND {host} ({e})"),
    }
}

/// The addresses to try without a lookup: all interfaces, or an IP literal; `None` for a name.
fn literal_addresses(hostname: Option<&str>, port: u16) -> Option<Vec<SocketAddr>> {
    match hostname {
        None => Some(vec![
            SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port),
            SocketAddr::from(([0, 0, 0, 0], port)),
        ]),
        Some(host) => bare(host)
            .parse::<IpAddr>()
            .ok()
            .map(|ip| vec![SocketAddr::new(ip, port)]),
    }
}

/// Binds the first of `addrs` that can be bound.
fn bind_first(
    hostname: Option<&str>,
    port: u16,
    addrs: &[SocketAddr],
    options: &BindOptions,
) -> Result<std::net::TcpListener> {
    let display = format!("{}:{port}", hostname.unwrap_or("::"));
    let mut last_err = None;
    for addr in addrs {
        match bind_one(*addr, options) {
            Ok(l) => return Ok(l),
            // Fall through to the next address only when this family is unsupported here.
            Err(e)
                if hostname.is_none() && e.raw_os_error() == Some(97 /* EAFNOSUPPORT */) =>
            {
                last_err = Some(e)
            }
            Err(e) => return Err(ServeError::bind(&e, &display)),
        }
    }
    let e = last_err
        .unwrap_or_else(|| std::io::Error::new(std::io::ErrorKind::AddrNotAvailable, "no address"));
    Err(ServeError::bind(&e, &display))
}

fn bind_one(addr: SocketAddr, options: &BindOptions) -> std::io::Result<std::net::TcpListener> {
    let socket = Socket::new(
        Domain::for_address(addr),
        Type::STREAM,
        Some(SockProtocol::TCP),
    )?;
    if addr.is_ipv6() {
        // `::` accepts IPv4 too, like node's default.
        let _ = socket.set_only_v6(options.ipv6_only);
    }
    // SO_REUSEADDR lets a restarted server bind a port whose old connections are in TIME_WAIT. On
    // Windows it means something else (a second socket may bind a port in use, so EADDRINUSE would
    // never come): std and mio leave it off there, and so does this.
    #[cfg(unix)]
    socket.set_reuse_address(true)?;
    #[cfg(unix)]
    if options.reuse_port {
        socket.set_reuse_port(true)?;
    }
    #[cfg(not(unix))]
    let _ = reuse_port; // no SO_REUSEPORT on Windows: `reusePort` is ignored there
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    let backlog = options
        .backlog
        .map_or(BACKLOG, |b| b.min(i32::MAX as u32) as i32);
    socket.listen(backlog)?;
    Ok(socket.into())
}
