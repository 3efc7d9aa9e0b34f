//! Forwarding a routed request upstream: cluster choice (weighted, by
//! header), request hash, host choice, request rewriting, the route
//! timeout, the connection pool, and the way back (including protocol
//! upgrades such as WebSocket).

use std::sync::Arc;
use std::time::Instant;

use http::{HeaderValue, Response, StatusCode, Uri, Version};
use http_body::Body as _;
use hyper_util::rt::TokioIo;

use super::conn_manager::ConnContext;
use super::headers;
use super::local_reply::{LocalReply, ResponseFlag};
use super::matcher::RequestHead;
use super::mirror;
use super::retry::{self, Template};
use super::router;
use super::timeout;
use crate::access_log::LogEntry;
use crate::body::{ProxyBody, boxed};
use crate::model::{
    Destination, ForwardAction, HeaderMutations, LbPolicy, Route, RouteTable, VirtualHost,
};
use crate::observed_body::ObservedBody;
use crate::server::Active;
use crate::upstream::hash;
use crate::upstream::pool::Protocol;

/// The downstream request as the connection manager hands it over.
pub struct Downstream<'a> {
    pub parts: http::request::Parts,
    pub body: ProxyBody,
    pub on_upgrade: Option<hyper::upgrade::OnUpgrade>,
    pub authority: &'a str,
    pub path: &'a str,
    pub protocol: Protocol,
}

#[expect(clippy::too_many_arguments)]
pub async fn forward(
    ctx: &ConnContext,
    active: &Arc<Active>,
    table: &RouteTable,
    vh: &VirtualHost,
    route: &Route,
    action: &ForwardAction,
    down: Downstream<'_>,
    log: &mut LogEntry,
) -> Result<Response<ProxyBody>, LocalReply> {
    let Downstream {
        mut parts,
        body,
        on_upgrade,
        authority,
        path,
        protocol,
    } = down;

    // Upgrades must be enabled on the connection manager or the route.
    let upgrade = parts
        .headers
        .get(http::header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_ascii_lowercase);
    if let Some(kind) = &upgrade {
        let allowed = ctx
            .hcm
            .upgrades
            .iter()
            .chain(action.upgrades.iter())
            .any(|u| u.eq_ignore_ascii_case(kind));
        if !allowed {
            return Err(LocalReply {
                status: StatusCode::FORBIDDEN,
                flag: None,
                reason: format!("upgrade to \"{kind}\" is not enabled on this route"),
            });
        }
    }

    // Destination cluster.
    let (cluster_name, weighted) = match &action.destination {
        Destination::Cluster(name) => (name.clone(), None),
        Destination::Weighted(clusters) => {
            let total = router::total_weight(clusters);
            let roll = if total == 0 {
                0
            } else {
                rand::random_range(0..total)
            };
            match router::pick_weighted(clusters, roll) {
                Some(c) => (c.name.clone(), Some(c)),
                None => return Err(LocalReply::no_cluster("(empty weighted_clusters)")),
            }
        }
        Destination::ClusterHeader(header) => {
            match parts
                .headers
                .get(header.as_str())
                .and_then(|v| v.to_str().ok())
            {
                Some(name) => (name.to_string(), None),
                None => {
                    return Err(LocalReply::no_cluster(&format!(
                        "(from missing header {header})"
                    )));
                }
            }
        }
    };
    log.upstream_cluster = Some(cluster_name.clone());
    let Some(cluster) = active.clusters.get(&cluster_name).cloned() else {
        ctx.stats.no_cluster.inc();
        return Err(LocalReply::no_cluster(&cluster_name));
    };

    // Request hash, only for balancers that use one (a cookie is only
    // generated when it will steer the request).
    let hash = if matches!(
        cluster.config.lb_policy,
        LbPolicy::RingHash { .. } | LbPolicy::Maglev { .. }
    ) {
        let head = RequestHead {
            method: parts.method.as_str(),
            authority,
            path,
            scheme: ctx.scheme,
            headers: &parts.headers,
        };
        hash::compute(&action.hash_policy, &head, ctx.peer.ip())
    } else {
        hash::RequestHash::default()
    };

    // Request rewriting.
    let upstream_path = router::rewrite_path(
        path,
        &route.matcher,
        action.prefix_rewrite.as_deref(),
        action.regex_rewrite.as_ref(),
    );
    let upstream_authority = weighted
        .and_then(|w| w.host_rewrite.clone())
        .or_else(|| action.host_rewrite.clone())
        .unwrap_or_else(|| authority.to_string());
    headers::strip_hop_by_hop(&mut parts.headers);
    if upstream_path != path
        && let Ok(v) = HeaderValue::from_str(path)
    {
        parts.headers.insert(headers::X_ENVOY_ORIGINAL_PATH, v);
    }
    if let Some(kind) = &upgrade
        && let Ok(v) = HeaderValue::from_str(kind)
    {
        parts.headers.insert(
            http::header::CONNECTION,
            HeaderValue::from_static("upgrade"),
        );
        parts.headers.insert(http::header::UPGRADE, v);
    }
    let empty = HeaderMutations::default();
    let wc_headers = weighted.map(|w| &w.headers).unwrap_or(&empty);
    headers::apply_request_mutations(
        &mut parts.headers,
        &[wc_headers, &route.headers, &vh.headers, &table.headers],
    );

    // A route's `idle_timeout` replaces the connection manager's
    // `stream_idle_timeout` for this stream.
    super::stream_timeout::StreamClock::apply_route_idle_timeout(action.idle_timeout);

    // Envoy tells the upstream how long the proxy will wait.
    if let Some(t) = action.timeout {
        parts.headers.insert(
            headers::X_ENVOY_EXPECTED_RQ_TIMEOUT_MS,
            HeaderValue::from(u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
        );
    }
    // The `x-envoy-*` retry headers count only on internal requests; Envoy
    // strips them from the others. The connection manager's
    // `internal_address_config` is not in the model yet, so, like Envoy
    // 1.40 without one, no request is internal.
    if !retry::request_is_internal(&parts.headers, &[]) {
        retry::strip_retry_headers(&mut parts.headers);
    }
    let effective_policy = retry::effective_policy(
        action.retry_policy.as_ref().or(vh.retry_policy.as_ref()),
        &parts.headers,
    );
    let wire = cluster.protocol(protocol);
    let template = shape(
        &parts.method,
        std::mem::take(&mut parts.headers),
        wire,
        &upstream_authority,
        &upstream_path,
    )?;

    // Bodies are buffered when a retry or a mirror may need them again.
    // A route's policy replaces its virtual host's.
    let policy = effective_policy.as_ref().filter(|p| p.num_retries > 0);
    let mirrors: Vec<_> = action
        .mirrors
        .iter()
        .filter(|m| m.fraction.is_none_or(|f| f.sample()))
        .collect();
    // A body of known, small size is read first (retries and mirrors can
    // resend it); one of unknown size streams to the first attempt while a
    // copy is kept for retries, so streaming requests are never held back.
    let limit = cluster.config.buffer_limit_bytes as usize;
    let known_small =
        body.is_end_stream() || body.size_hint().exact().is_some_and(|n| n <= limit as u64);
    let body = if upgrade.is_some() || (policy.is_none() && mirrors.is_empty()) {
        retry::RequestBody::Streaming(body)
    } else if known_small {
        match retry::buffer(body, limit).await {
            Ok(b) => b,
            Err(e) => {
                let client_gone = crate::body::DownstreamBodyError::find(e.as_ref())
                    .is_none_or(|d| d.client_gone());
                return Err(LocalReply::new(
                    StatusCode::BAD_REQUEST,
                    if client_gone {
                        ResponseFlag::DownstreamConnectionTermination
                    } else {
                        ResponseFlag::DownstreamProtocolError
                    },
                    format!("downstream request body failed: {e}"),
                ));
            }
        }
    } else if policy.is_some() {
        retry::RequestBody::tee(body, limit)
    } else {
        retry::RequestBody::Streaming(body)
    };
    for m in mirrors {
        let Some(shadow) = active.clusters.get(&m.cluster).cloned() else {
            tracing::debug!(cluster = %m.cluster, "mirror cluster is not configured");
            continue;
        };
        let Some(copy) = body.replayable() else {
            tracing::debug!(cluster = %m.cluster, "request body too big to mirror");
            continue;
        };
        let shadow_wire = shadow.protocol(protocol);
        let shadow_authority = mirror::shadow_host(&upstream_authority);
        if let Ok(t) = shape(
            &template.method,
            template.headers.clone(),
            shadow_wire,
            &shadow_authority,
            &upstream_path,
        ) {
            mirror::spawn(shadow, t, copy, shadow_wire, hash.hash, action.timeout);
        }
    }

    // Send: the route timeout bounds the whole wait for a response head,
    // retries included; inside it, the retry stage runs attempts.
    let started = Instant::now();
    let mut chosen = None;
    let sent = timeout::within(
        action.timeout,
        retry::run(
            &cluster,
            hash.hash,
            template,
            body,
            wire,
            policy,
            &mut chosen,
            log,
        ),
    )
    .await;
    let (mut upstream, host, guard) = match sent {
        Err(elapsed) => {
            cluster.stats.upstream_rq_timeout.inc();
            cluster.stats.record_status(504);
            if let Some(host) = chosen {
                host.state.stats.rq_timeout.inc();
                cluster.record_outcome(&host, crate::upstream::outlier::Outcome::LocalFailure);
                log.upstream_host = Some(host.state.address);
            }
            return Err(elapsed.into_reply(&cluster_name));
        }
        Ok(Err(reply)) => return Err(reply),
        Ok(Ok(sent)) => sent,
    };
    log.upstream_host = Some(host.state.address);
    let status = upstream.status();
    guard.responded(status.as_u16());

    // Tunnel an accepted upgrade.
    if status == StatusCode::SWITCHING_PROTOCOLS
        && let Some(downstream_upgrade) = on_upgrade
    {
        let upstream_upgrade = hyper::upgrade::on(&mut upstream);
        tokio::spawn(async move {
            let (Ok(down), Ok(up)) = tokio::join!(downstream_upgrade, upstream_upgrade) else {
                tracing::debug!("upgrade failed on one side");
                return;
            };
            let _ =
                tokio::io::copy_bidirectional(&mut TokioIo::new(down), &mut TokioIo::new(up)).await;
        });
    }

    let (mut resp_parts, resp_body) = upstream.into_parts();
    if status != StatusCode::SWITCHING_PROTOCOLS {
        headers::strip_hop_by_hop(&mut resp_parts.headers);
    }
    let service_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    resp_parts.headers.insert(
        headers::X_ENVOY_UPSTREAM_SERVICE_TIME,
        HeaderValue::from(service_ms),
    );
    if let Some(cookie) = hash.set_cookie {
        resp_parts.headers.append(http::header::SET_COOKIE, cookie);
    }
    if let Some(w) = weighted {
        headers::apply_response_mutations(&mut resp_parts.headers, &[&w.headers]);
    }
    // `per_try_idle_timeout` keeps bounding the gaps in the response body.
    let resp_body = match policy.and_then(|p| p.per_try_idle_timeout) {
        Some(t) => boxed(super::stream_timeout::IdleBody::new(
            boxed(resp_body),
            super::stream_timeout::StreamClock::new(Some(t)),
            cluster.stats.upstream_rq_per_try_idle_timeout.clone(),
        )),
        None => boxed(resp_body),
    };
    // The host counts as busy (for least request) until the body is done.
    let body = ObservedBody::new(resp_body, Default::default()).on_done(move |_| drop(guard));
    Ok(Response::from_parts(resp_parts, boxed(body)))
}

/// The upstream request head for `wire`: origin-form with `Host` for
/// HTTP/1.1, absolute URI (`:authority`) for HTTP/2.
fn shape(
    method: &http::Method,
    mut headers: http::HeaderMap,
    wire: Protocol,
    authority: &str,
    path: &str,
) -> Result<Template, LocalReply> {
    let uri = match wire {
        Protocol::Http1 => path.parse::<Uri>(),
        Protocol::Http2 => format!("http://{authority}{path}").parse::<Uri>(),
    };
    let Ok(uri) = uri else {
        return Err(LocalReply {
            status: StatusCode::BAD_REQUEST,
            flag: Some(ResponseFlag::DownstreamProtocolError),
            reason: format!(
                "cannot build upstream URI from authority \"{authority}\" and path \"{path}\""
            ),
        });
    };
    let version = match wire {
        Protocol::Http1 => {
            match HeaderValue::from_str(authority) {
                Ok(v) => {
                    headers.insert(http::header::HOST, v);
                }
                Err(_) => {
                    headers.remove(http::header::HOST);
                }
            }
            Version::HTTP_11
        }
        Protocol::Http2 => {
            headers.remove(http::header::HOST);
            Version::HTTP_2
        }
    };
    Ok(Template {
        method: method.clone(),
        uri,
        version,
        headers,
    })
}
