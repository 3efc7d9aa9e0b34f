//! The original destination of a redirected connection (`SO_ORIGINAL_DST`,
//! set by iptables REDIRECT/TPROXY capture), through `socket2`, so no
//! `unsafe` is needed here.

use std::net::SocketAddr;

use tokio::net::TcpStream;

/// The address the client meant to reach, when the kernel has one that
/// differs from the socket's own address; `None` elsewhere.
#[cfg(target_os = "linux")]
pub fn original_destination(stream: &TcpStream) -> Option<SocketAddr> {
    let sock = socket2::SockRef::from(stream);
    let local = stream.local_addr().ok()?;
    let addr = if local.is_ipv4() {
        sock.original_dst_v4()
    } else {
        sock.original_dst_v6()
    };
    addr.ok()?.as_socket()
}

#[cfg(not(target_os = "linux"))]
pub fn original_destination(_stream: &TcpStream) -> Option<SocketAddr> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn unredirected_connection_reports_its_own_address_or_none() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let _client = TcpStream::connect(addr).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        // Without NAT the kernel either has no entry or reports the socket's
        // own address; both mean "no hand-off".
        let dst = original_destination(&server);
        assert!(dst.is_none() || dst == Some(addr), "{dst:?}");
    }
}
