//! Binding a listening socket (socket2, so that `reusePort` and the backlog are ours to set).

use crate::error::{Result, ServeError};
use socket2::{Domain, Protocol as SockProtocol, Socket, Type};
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use tokio::net::TcpListener;

const BACKLOG: i32 = 1024;

/// Binds `hostname:port`. No hostname means all interfaces: `::` dual-stack, or `0.0.0.0` where
/// IPv6 is unavailable (as node does).
pub async fn bind(hostname: Option<&str>, port: u16, reuse_port: bool) -> Result<TcpListener> {
    let display = format!("{}:{port}", hostname.unwrap_or("::"));
    let addrs: Vec<SocketAddr> = match hostname {
        None => vec![
            SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port),
            SocketAddr::from(([0, 0, 0, 0], port)),
        ],
        Some(host) => {
            let host = host.trim_start_matches('[').trim_end_matches(']');
            match host.parse::<IpAddr>() {
                Ok(ip) => vec![SocketAddr::new(ip, port)],
                Err(_) => tokio::net::lookup_host((host, port))
                    .await
                    .map_err(|e| ServeError::Bind {
                        code: "ENOTFOUND",
                        message: format!("getaddrinfo ENOTFOUND {host} ({e})"),
                    })?
                    .collect(),
            }
        }
    };
    let mut last_err = None;
    for addr in &addrs {
        match bind_one(*addr, reuse_port) {
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

fn bind_one(addr: SocketAddr, reuse_port: bool) -> std::io::Result<TcpListener> {
    let socket = Socket::new(
        Domain::for_address(addr),
        Type::STREAM,
        Some(SockProtocol::TCP),
    )?;
    if addr.is_ipv6() {
        // `::` accepts IPv4 too, like node's default.
        let _ = socket.set_only_v6(false);
    }
    // SO_REUSEADDR lets a restarted server bind a port whose old connections are in TIME_WAIT. On
    // Windows it means something else (a second socket may bind a port in use, so EADDRINUSE would
    // never come): std and mio leave it off there, and so does this.
    #[cfg(unix)]
    socket.set_reuse_address(true)?;
    #[cfg(unix)]
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    #[cfg(not(unix))]
    let _ = reuse_port; // no SO_REUSEPORT on Windows: `reusePort` is ignored there
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    TcpListener::from_std(socket.into())
}
