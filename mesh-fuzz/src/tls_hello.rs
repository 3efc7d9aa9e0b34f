//! The `tls_inspector`: the first bytes any client sends to a listener
//! with TLS filter chains.

use mesh_proxy::tls::hello::{Parse, parse};

/// The inspector peeks at most one record: a 16 KiB body and its header.
const MAX_PEEK: usize = 16 * 1024 + 5;

/// Reads `data` as the bytes peeked so far, then checks that a decision,
/// once made, is the one every longer read makes too: the inspector peeks
/// repeatedly, and a verdict that changed with more bytes would route one
/// connection by two different readings.
pub fn tls_hello(data: &[u8]) {
    let data = &data[..data.len().min(MAX_PEEK)];
    let verdict = parse(data);
    match &verdict {
        Parse::NeedMore => {}
        Parse::NotTls | Parse::Hello(_) => {
            let mut longer = data.to_vec();
            longer.extend_from_slice(&[0x16, 0x03, 0x01, 0x00]);
            assert_eq!(parse(&longer), verdict, "more bytes changed the verdict");
        }
    }
    // A few prefixes: each is undecided, or decides as the whole does.
    for cut in [
        1,
        2,
        5,
        6,
        9,
        43,
        data.len() / 2,
        data.len().saturating_sub(1),
    ] {
        if cut == 0 || cut >= data.len() {
            continue;
        }
        let early = parse(&data[..cut]);
        assert!(
            early == Parse::NeedMore || early == verdict,
            "prefix of {cut} bytes read as {early:?}, the whole as {verdict:?}"
        );
    }
}
