//! Envoy's `tls_inspector`: reads (without consuming) the first bytes of a
//! connection to tell a TLS ClientHello from plaintext, and takes the SNI
//! and ALPN offer out of the hello for filter chain matching.

use std::time::Duration;

use tokio::net::TcpStream;

/// How long the inspector waits for enough bytes to decide.
pub const TLS_INSPECTOR_TIMEOUT: Duration = Duration::from_secs(5);
/// A ClientHello larger than one record is not inspected further.
const MAX_PEEK: usize = 16 * 1024 + 5;

/// What the first bytes said.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inspected {
    /// A TLS handshake record came first.
    pub is_tls: bool,
    pub server_name: Option<String>,
    /// ALPN protocols the client offers, in its order.
    pub alpn: Vec<String>,
}

/// Peeks until the hello is complete, the bytes are clearly not TLS, or
/// the timeout passes (then: not TLS, so server-first protocols work).
pub async fn inspect(stream: &TcpStream) -> Inspected {
    let mut buf = vec![0u8; MAX_PEEK];
    let deadline = tokio::time::Instant::now() + TLS_INSPECTOR_TIMEOUT;
    loop {
        let n = match tokio::time::timeout_at(deadline, stream.peek(&mut buf)).await {
            Ok(Ok(n)) => n,
            _ => return Inspected::default(),
        };
        if n == 0 {
            return Inspected::default();
        }
        match parse(&buf[..n]) {
            Parse::NotTls => return Inspected::default(),
            Parse::Hello(i) => return i,
            Parse::NeedMore if n == buf.len() => {
                return Inspected {
                    is_tls: true,
                    ..Default::default()
                };
            }
            Parse::NeedMore => {}
        }
        if tokio::time::Instant::now() >= deadline {
            return Inspected::default();
        }
        // More of the hello is on its way: peek again shortly.
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// What the bytes seen so far say.
#[derive(Debug, PartialEq, Eq)]
pub enum Parse {
    /// Not a TLS handshake record.
    NotTls,
    /// A prefix of a handshake record: peek again.
    NeedMore,
    /// A whole handshake record (a well-formed ClientHello or not).
    Hello(Inspected),
}

/// A bounds-checked reader over the hello; every read may fail.
struct Reader<'a> {
    data: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.data.len() < n {
            return None;
        }
        let (head, rest) = self.data.split_at(n);
        self.data = rest;
        Some(head)
    }
    fn u8(&mut self) -> Option<usize> {
        self.take(1).map(|b| usize::from(b[0]))
    }
    fn u16(&mut self) -> Option<usize> {
        self.take(2)
            .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
    }
    fn vec8(&mut self) -> Option<&'a [u8]> {
        let n = self.u8()?;
        self.take(n)
    }
    fn vec16(&mut self) -> Option<&'a [u8]> {
        let n = self.u16()?;
        self.take(n)
    }
}

/// Reads the bytes peeked so far: the pure part of [`inspect`], public so
/// that the fuzzer (`mesh-fuzz`) drives it with any bytes a client can send.
pub fn parse(seen: &[u8]) -> Parse {
    // Record header: handshake(22), version 3.x, length.
    if seen.is_empty() {
        return Parse::NeedMore;
    }
    if seen[0] != 0x16 {
        return Parse::NotTls;
    }
    if seen.len() >= 2 && seen[1] != 0x03 {
        return Parse::NotTls;
    }
    if seen.len() < 5 {
        return Parse::NeedMore;
    }
    let record_len = usize::from(u16::from_be_bytes([seen[3], seen[4]]));
    if seen.len() < 5 + record_len {
        return Parse::NeedMore;
    }
    let record = &seen[5..5 + record_len];
    match client_hello(record) {
        Some(i) => Parse::Hello(i),
        // A handshake record that is not a well-formed ClientHello: still
        // TLS; the handshake itself will fail with a reason.
        None => Parse::Hello(Inspected {
            is_tls: true,
            ..Default::default()
        }),
    }
}

fn client_hello(record: &[u8]) -> Option<Inspected> {
    let mut r = Reader { data: record };
    if r.u8()? != 1 {
        return None;
    }
    let len = r.take(3)?;
    let len = usize::from(len[0]) << 16 | usize::from(len[1]) << 8 | usize::from(len[2]);
    // The hello may continue in a next record; parse what is here.
    let body = r.data.get(..len).unwrap_or(r.data);
    let mut r = Reader { data: body };
    r.take(2)?; // legacy_version
    r.take(32)?; // random
    r.vec8()?; // session id
    r.vec16()?; // cipher suites
    r.vec8()?; // compression methods
    let mut out = Inspected {
        is_tls: true,
        ..Default::default()
    };
    let Some(extensions) = r.vec16() else {
        return Some(out);
    };
    let mut ext = Reader { data: extensions };
    while let (Some(kind), Some(data)) = (ext.u16(), ext.vec16()) {
        match kind {
            0x0000 => {
                let mut list = Reader { data };
                let mut names = Reader {
                    data: list.vec16().unwrap_or_default(),
                };
                while let (Some(name_type), Some(name)) = (names.u8(), names.vec16()) {
                    if name_type == 0 {
                        out.server_name = std::str::from_utf8(name)
                            .ok()
                            .map(|s| s.to_ascii_lowercase());
                        break;
                    }
                }
            }
            0x0010 => {
                let mut list = Reader { data };
                let mut protos = Reader {
                    data: list.vec16().unwrap_or_default(),
                };
                while let Some(p) = protos.vec8() {
                    if let Ok(p) = std::str::from_utf8(p) {
                        out.alpn.push(p.to_string());
                    }
                }
            }
            _ => {}
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ClientHello as rustls writes it, captured from a real client.
    fn rustls_hello(sni: &str, alpn: &[&str]) -> Vec<u8> {
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
        let name = rustls::pki_types::ServerName::try_from(sni.to_string()).unwrap();
        let mut conn = rustls::ClientConnection::new(std::sync::Arc::new(config), name).unwrap();
        let mut out = Vec::new();
        conn.write_tls(&mut out).unwrap();
        out
    }

    #[test]
    fn reads_sni_and_alpn_from_a_real_hello() {
        let hello = rustls_hello("outbound_.80_._.svc.example", &["istio", "h2"]);
        let Parse::Hello(i) = parse(&hello) else {
            panic!("not parsed");
        };
        assert!(i.is_tls);
        assert_eq!(
            i.server_name.as_deref(),
            Some("outbound_.80_._.svc.example")
        );
        assert_eq!(i.alpn, vec!["istio", "h2"]);
        // Any prefix asks for more bytes, never panics.
        for cut in 1..hello.len() {
            assert_eq!(parse(&hello[..cut]), Parse::NeedMore, "cut at {cut}");
        }
    }

    #[test]
    fn plaintext_and_garbage() {
        assert_eq!(parse(b"GET / HTTP/1.1\r\n"), Parse::NotTls);
        assert_eq!(parse(b"PRI * HTTP/2.0"), Parse::NotTls);
        assert_eq!(parse(&[0x16, 0x01]), Parse::NotTls);
        // A handshake record with a nonsense body is still TLS.
        let Parse::Hello(i) = parse(&[0x16, 0x03, 0x01, 0x00, 0x02, 0x01, 0x00]) else {
            panic!("expected TLS");
        };
        assert!(i.is_tls && i.server_name.is_none());
    }
}
