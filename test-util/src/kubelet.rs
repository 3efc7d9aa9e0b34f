//! The kubelet's streaming port-forward endpoint, for the API server of [`crate::kube`], which
//! has no kubelet: a Pod's `portforward` subresource (what `kubectl port-forward` and kube-rs's
//! `Api::portforward` call) is proxied by the real API server to the kubelet of the Pod's
//! Node, at the Node's `InternalIP` and `daemonEndpoints.kubeletEndpoint.Port`
//! (`/portForward/NS/POD?port=P`, a WebSocket upgrade). This one speaks the kubelet's
//! WebSocket protocol (`v4.channel.k8s.io`: per forwarded port a data channel `2i` and an
//! error channel `2i+1`, each opened by a frame carrying the port number, little-endian; every
//! message is one channel byte then data) and connects each forwarded port where the test says
//! the Pod's port is, as the kubelet connects inside the Pod's network namespace.
//!
//! Only the kubelet's side is a stand-in: the client and the API server in between are real.
//! It serves HTTPS with a self-signed certificate, which an API server started without
//! `--kubelet-certificate-authority` accepts, as it does a kubelet's own.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use futures::{SinkExt as _, StreamExt as _};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::HeaderValue;

const PROTOCOL: &str = "v4.channel.k8s.io";

/// `(namespace, pod, port)` -> where that port listens.
type Targets = Arc<Mutex<HashMap<(String, String, u16), SocketAddr>>>;

/// A kubelet's port-forward endpoint on 127.0.0.1; stops when dropped.
pub struct Kubelet {
    port: u16,
    targets: Targets,
    accept: JoinHandle<()>,
}

/// A TLS acceptor with a self-signed certificate for 127.0.0.1, as a kubelet makes its own.
fn tls() -> tokio_rustls::TlsAcceptor {
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
    let config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![cert.cert.der().clone()], key)
    .unwrap();
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

impl Kubelet {
    pub async fn start() -> Kubelet {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let targets = Targets::default();
        let t = targets.clone();
        let tls = tls();
        let accept = tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                let (tls, targets) = (tls.clone(), t.clone());
                tokio::spawn(async move {
                    match tls.accept(conn).await {
                        Ok(conn) => serve(conn, targets).await,
                        Err(e) => eprintln!("kubelet: TLS: {e}"),
                    }
                });
            }
        });
        Kubelet {
            port,
            targets,
            accept,
        }
    }

    /// Port `port` of Pod `namespace/pod` is `at` (what the kubelet would reach in the Pod).
    pub fn forward(&self, namespace: &str, pod: &str, port: u16, at: SocketAddr) {
        self.targets
            .lock()
            .unwrap()
            .insert((namespace.to_string(), pod.to_string(), port), at);
    }

    /// The Node this kubelet runs, to create through the API (a Node's status may be set on
    /// create): its Pods are those whose `spec.nodeName` is `name`.
    pub fn node(&self, name: &str) -> serde_json::Value {
        serde_json::json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name},
            "status": {
                "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
                "daemonEndpoints": {"kubeletEndpoint": {"Port": self.port}},
                "conditions": [{"type": "Ready", "status": "True"}]
            }
        })
    }
}

/// `/portForward/NS/POD?port=P&port=Q` -> `(NS, POD, [P, Q])`.
fn parse(uri: &str) -> Option<(String, String, Vec<u16>)> {
    let (path, query) = uri.split_once('?').unwrap_or((uri, ""));
    let mut parts = path.strip_prefix("/portForward/")?.split('/');
    let (ns, pod) = (parts.next()?.to_string(), parts.next()?.to_string());
    let ports = query
        .split('&')
        .filter_map(|kv| kv.strip_prefix("port="))
        .map(|p| p.parse().ok())
        .collect::<Option<Vec<u16>>>()?;
    Some((ns, pod, ports))
}

async fn serve(conn: tokio_rustls::server::TlsStream<TcpStream>, targets: Targets) {
    let mut asked = None;
    // The signature is tungstenite's.
    #[expect(clippy::result_large_err)]
    let callback = |req: &Request, mut resp: Response| -> Result<Response, ErrorResponse> {
        asked = parse(&req.uri().to_string());
        let offered = req
            .headers()
            .get("sec-websocket-protocol")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if offered.split(',').any(|p| p.trim() == PROTOCOL) {
            resp.headers_mut()
                .insert("sec-websocket-protocol", HeaderValue::from_static(PROTOCOL));
        }
        Ok(resp)
    };
    let ws = match tokio_tungstenite::accept_hdr_async(conn, callback).await {
        Ok(ws) => ws,
        Err(e) => {
            eprintln!("kubelet: not a port-forward: {e}");
            return;
        }
    };
    let Some((namespace, pod, ports)) = asked else {
        return;
    };
    let (mut sink, mut from_client) = ws.split();
    let (to_client, mut outgoing) = tokio::sync::mpsc::channel::<Vec<u8>>(16);
    let mut writers = Vec::new();
    for (i, port) in ports.iter().enumerate() {
        let data = u8::try_from(2 * i).unwrap();
        for channel in [data, data + 1] {
            let mut first = vec![channel];
            first.extend_from_slice(&port.to_le_bytes());
            to_client.send(first).await.unwrap();
        }
        let target = targets
            .lock()
            .unwrap()
            .get(&(namespace.clone(), pod.clone(), *port))
            .copied();
        let stream = match target {
            Some(at) => TcpStream::connect(at).await.ok(),
            None => None,
        };
        let Some(stream) = stream else {
            let mut error = vec![data + 1];
            error.extend_from_slice(
                format!("error forwarding port {port} to pod {namespace}/{pod}: nothing listens")
                    .as_bytes(),
            );
            to_client.send(error).await.unwrap();
            writers.push(None);
            continue;
        };
        let (mut read, write) = stream.into_split();
        writers.push(Some(write));
        let tx = to_client.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                match read.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        let mut frame = Vec::with_capacity(n + 1);
                        frame.push(data);
                        frame.extend_from_slice(&buf[..n]);
                        if tx.send(frame).await.is_err() {
                            break;
                        }
                    }
                }
            }
        });
    }
    // Every port's reader holds a sender: the channel closes when every pod side has ended.
    drop(to_client);
    let forward = async {
        while let Some(frame) = outgoing.recv().await {
            if sink.send(Message::Binary(frame.into())).await.is_err() {
                return;
            }
        }
        let _ = sink.close().await;
    };
    let receive = async {
        while let Some(Ok(message)) = from_client.next().await {
            let Message::Binary(bytes) = message else {
                continue;
            };
            let Some((&channel, data)) = bytes.split_first() else {
                continue;
            };
            if let Some(Some(w)) = writers.get_mut(usize::from(channel / 2))
                && channel % 2 == 0
                && w.write_all(data).await.is_err()
            {
                return;
            }
        }
    };
    // The pod side's end (the admin answered and closed) ends the stream.
    tokio::select! {
        () = forward => {}
        () = receive => {}
    }
}
