//! Workload authentication on Kubernetes, as istiod does it: the CSR service hands the
//! caller's bearer token (its pod's projected service-account token) to the API server's
//! TokenReview API with the audience `istio-ca`, and the identity the caller may obtain is the
//! service account the API server names. mesh-control's own service account needs the
//! `system:auth-delegator` ClusterRole (or `create` on `tokenreviews`).

use std::fmt;

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use kube::Client;
use kube::api::{Api, PostParams};
use mesh_ca::auth::AuthFuture;
use mesh_ca::{AuthError, Authenticator, CallerContext, SpiffeId};

/// The audience Istio's workloads request their CA tokens for.
pub const CA_AUDIENCE: &str = "istio-ca";

/// Checks bearer tokens with the API server's TokenReview.
#[derive(Clone)]
pub struct TokenReviewAuthenticator {
    client: Client,
    trust_domain: String,
}

impl fmt::Debug for TokenReviewAuthenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenReviewAuthenticator")
            .field("trust_domain", &self.trust_domain)
            .finish_non_exhaustive()
    }
}

impl TokenReviewAuthenticator {
    pub fn new(client: Client, trust_domain: impl Into<String>) -> Self {
        TokenReviewAuthenticator {
            client,
            trust_domain: trust_domain.into(),
        }
    }

    async fn review(&self, token: &str) -> Result<SpiffeId, AuthError> {
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: token.to_string(),
                audiences: Some(vec![CA_AUDIENCE.to_string()]),
            },
            ..TokenReview::default()
        };
        let reviews: Api<TokenReview> = Api::all(self.client.clone());
        let answer = reviews
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| AuthError::Other(format!("the Kubernetes TokenReview failed: {e}")))?;
        let status = answer.status.unwrap_or_default();
        if status.authenticated != Some(true) {
            let why = status
                .error
                .unwrap_or_else(|| "no reason given".to_string());
            return Err(AuthError::Other(format!(
                "the Kubernetes API server did not accept the token for audience {CA_AUDIENCE}: {why}"
            )));
        }
        // An API server that ignores audiences answers without them: refuse rather than
        // accept a token minted for something else.
        if !status
            .audiences
            .as_ref()
            .is_some_and(|a| a.iter().any(|x| x == CA_AUDIENCE))
        {
            return Err(AuthError::Other(format!(
                "the token is not for audience {CA_AUDIENCE} (the API server answered {:?})",
                status.audiences.unwrap_or_default()
            )));
        }
        let username = status.user.and_then(|u| u.username).unwrap_or_default();
        let (namespace, account) = service_account_of(&username).ok_or_else(|| {
            AuthError::Other(format!(
                "the token belongs to {username:?}, not to a service account"
            ))
        })?;
        SpiffeId::new(&self.trust_domain, namespace, account)
            .map_err(|e| AuthError::Other(format!("service account {username}: {e}")))
    }
}

/// `system:serviceaccount:NAMESPACE:NAME` -> `(NAMESPACE, NAME)`.
fn service_account_of(username: &str) -> Option<(&str, &str)> {
    let rest = username.strip_prefix("system:serviceaccount:")?;
    let (namespace, name) = rest.split_once(':')?;
    (!namespace.is_empty() && !name.is_empty() && !name.contains(':')).then_some((namespace, name))
}

/// A JWT has three base64url parts; anything else (the local mesh's hex tokens) is left to
/// the next authenticator of the chain instead of costing an API call.
fn looks_like_jwt(token: &str) -> bool {
    let parts: Vec<&str> = token.split('.').collect();
    parts.len() == 3
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

impl Authenticator for TokenReviewAuthenticator {
    fn name(&self) -> &'static str {
        "kubernetes"
    }

    fn authenticate<'a>(&'a self, caller: &'a CallerContext) -> AuthFuture<'a> {
        Box::pin(async move {
            let token = caller
                .bearer_token
                .as_deref()
                .filter(|t| looks_like_jwt(t))
                .ok_or(AuthError::NoCredentials)?;
            self.review(token).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_account_usernames() {
        assert_eq!(
            service_account_of("system:serviceaccount:shop:reviews"),
            Some(("shop", "reviews"))
        );
        assert_eq!(service_account_of("system:serviceaccount:shop:"), None);
        assert_eq!(service_account_of("system:serviceaccount:a:b:c"), None);
        assert_eq!(service_account_of("admin"), None);
        assert_eq!(service_account_of("system:node:n1"), None);
    }

    #[test]
    fn jwt_shape() {
        assert!(looks_like_jwt("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln"));
        assert!(!looks_like_jwt("0f3a9c"));
        assert!(!looks_like_jwt("a.b"));
        assert!(!looks_like_jwt("a..c"));
        assert!(!looks_like_jwt("a.b c.d"));
    }
}
