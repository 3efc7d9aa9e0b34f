//! A minimal blocking HTTP/1.1 client (one connection per request, `Connection: close`): what
//! `meshctl` needs to read the control plane's debug endpoints and to send test traffic the
//! way `curl` in a loop would, through a gateway or a sidecar's `http_proxy` listener.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// An answer: status and body.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub body: String,
}

/// Why a request got no answer.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("connect {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("{addr}: {source}")]
    Io {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("{addr}: malformed response: {reason}")]
    Malformed { addr: SocketAddr, reason: String },
}

/// Sends `GET target` to `addr` with `Host: host`. `target` is `/path` (origin form) or
/// `http://host/path` (absolute form, as clients send to an HTTP proxy).
pub fn get(
    addr: SocketAddr,
    host: &str,
    target: &str,
    timeout: Duration,
) -> Result<Answer, HttpError> {
    request(addr, "GET", host, target, &[], timeout)
}

/// [`get`] with extra request headers (`end-user: jason`, ...). Names and values must be
/// valid header text (see [`parse_header`]).
pub fn get_with_headers(
    addr: SocketAddr,
    host: &str,
    target: &str,
    headers: &[(String, String)],
    timeout: Duration,
) -> Result<Answer, HttpError> {
    request(addr, "GET", host, target, headers, timeout)
}

/// Why a `-H 'Name: value'` argument is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HeaderArgError {
    #[error("header {0:?}: expected `Name: value`")]
    NoColon(String),
    #[error("header {0:?}: the name must be a token (letters, digits, `-`, `_`, ...)")]
    BadName(String),
    #[error("header {0:?}: the value must not hold control characters (CR, LF, ...)")]
    BadValue(String),
}

/// `Name: value` as curl's `-H` takes it; the name must be an HTTP token and the value free of
/// control characters, so an argument can never inject another header line.
pub fn parse_header(arg: &str) -> Result<(String, String), HeaderArgError> {
    let (name, value) = arg
        .split_once(':')
        .ok_or_else(|| HeaderArgError::NoColon(arg.to_string()))?;
    let name = name.trim();
    let is_tchar = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    if name.is_empty() || !name.chars().all(is_tchar) {
        return Err(HeaderArgError::BadName(arg.to_string()));
    }
    let value = value.trim();
    if value.chars().any(|c| c.is_control() && c != '\t') {
        return Err(HeaderArgError::BadValue(arg.to_string()));
    }
    Ok((name.to_string(), value.to_string()))
}

/// Sends `POST target` with an empty body (admin endpoints such as `/logging?level=`).
pub fn post(
    addr: SocketAddr,
    host: &str,
    target: &str,
    timeout: Duration,
) -> Result<Answer, HttpError> {
    request(addr, "POST", host, target, &[], timeout)
}

fn request(
    addr: SocketAddr,
    method: &str,
    host: &str,
    target: &str,
    headers: &[(String, String)],
    timeout: Duration,
) -> Result<Answer, HttpError> {
    let io = |source| HttpError::Io { addr, source };
    let mut stream = TcpStream::connect_timeout(&addr, timeout)
        .map_err(|source| HttpError::Connect { addr, source })?;
    stream.set_read_timeout(Some(timeout)).map_err(io)?;
    stream.set_write_timeout(Some(timeout)).map_err(io)?;
    // An empty POST still says so, or some servers wait for a body.
    let length = if method == "GET" {
        ""
    } else {
        "Content-Length: 0\r\n"
    };
    let extra: String = headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    let request = format!(
        "{method} {target} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: meshctl\r\nAccept: */*\r\n{extra}{length}Connection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).map_err(io)?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).map_err(io)?;
    parse(addr, &raw)
}

fn parse(addr: SocketAddr, raw: &[u8]) -> Result<Answer, HttpError> {
    let malformed = |reason: &str| HttpError::Malformed {
        addr,
        reason: reason.to_string(),
    };
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| malformed("no end of headers"))?;
    let head = std::str::from_utf8(&raw[..split]).map_err(|_| malformed("headers not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| malformed(&format!("status line {status_line:?}")))?;
    let chunked = lines.any(|l| {
        l.split_once(':').is_some_and(|(k, v)| {
            k.trim().eq_ignore_ascii_case("transfer-encoding")
                && v.to_ascii_lowercase().contains("chunked")
        })
    });
    let body = &raw[split + 4..];
    let body = if chunked {
        dechunk(body).ok_or_else(|| malformed("bad chunked body"))?
    } else {
        body.to_vec()
    };
    Ok(Answer {
        status,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

fn dechunk(mut body: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = body.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&body[..eol]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        body = &body[eol + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(body.get(..size)?);
        body = body.get(size + 2..)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 1))
    }

    #[test]
    fn parses_length_and_chunked_bodies() {
        let a = parse(addr(), b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello").unwrap();
        assert_eq!((a.status, a.body.as_str()), (200, "hello"));
        let a = parse(
            addr(),
            b"HTTP/1.1 503 Service Unavailable\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!((a.status, a.body.as_str()), (503, "abcde"));
        assert!(parse(addr(), b"garbage").is_err());
    }

    #[test]
    fn header_arguments() {
        assert_eq!(
            parse_header("end-user: jason").unwrap(),
            ("end-user".to_string(), "jason".to_string())
        );
        assert_eq!(
            parse_header("x-a:b:c").unwrap(),
            ("x-a".to_string(), "b:c".to_string())
        );
        assert!(matches!(
            parse_header("no colon"),
            Err(HeaderArgError::NoColon(_))
        ));
        assert!(matches!(
            parse_header("bad name: x"),
            Err(HeaderArgError::BadName(_))
        ));
        assert!(matches!(
            parse_header("x: a\r\nevil: 1"),
            Err(HeaderArgError::BadValue(_))
        ));
    }
}
