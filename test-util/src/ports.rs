use std::net::{Ipv4Addr, TcpListener};

/// A TCP port on 127.0.0.1 that was free when this returned.
///
/// Only for configuration that must name a port before the server starts (an Envoy
/// bootstrap, a child process's flags). There is a small race: another process may take the
/// port between this call and the real bind. Servers of our own bind port 0 and report the
/// real address instead.
pub fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("binding 127.0.0.1:0 must succeed on a test machine")
}
