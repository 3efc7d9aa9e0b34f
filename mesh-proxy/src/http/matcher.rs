//! String, header and query parameter matching as Envoy's matchers define it.

use http::HeaderMap;

use crate::model::{
    HeaderMatchKind, HeaderMatcher, QueryParameterMatcher, StringMatch, StringMatcher,
};

/// `type.matcher.v3.StringMatcher` semantics; `ignore_case` does not apply to
/// regexes, as in Envoy.
pub fn string_matches(m: &StringMatcher, value: &str) -> bool {
    let fold = |s: &str| {
        if m.ignore_case {
            s.to_ascii_lowercase()
        } else {
            s.to_string()
        }
    };
    match &m.pattern {
        StringMatch::Regex(re) => whole_match(re, value),
        StringMatch::Exact(p) => fold(value) == fold(p),
        StringMatch::Prefix(p) => fold(value).starts_with(&fold(p)),
        StringMatch::Suffix(p) => fold(value).ends_with(&fold(p)),
        StringMatch::Contains(p) => fold(value).contains(&fold(p)),
    }
}

/// RE2 `safe_regex` matches the whole value. The model keeps the pattern as
/// written, so an anchored copy is compiled once and cached.
pub fn whole_match(re: &regex::Regex, value: &str) -> bool {
    use std::collections::HashMap;
    use std::sync::{OnceLock, RwLock};
    static ANCHORED: OnceLock<RwLock<HashMap<String, regex::Regex>>> = OnceLock::new();
    let cache = ANCHORED.get_or_init(Default::default);
    if let Some(anchored) = cache
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .get(re.as_str())
    {
        return anchored.is_match(value);
    }
    match regex::Regex::new(&format!("^(?:{})$", re.as_str())) {
        Ok(anchored) => {
            let hit = anchored.is_match(value);
            cache
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .insert(re.as_str().to_string(), anchored);
            hit
        }
        Err(_) => re
            .find(value)
            .is_some_and(|m| m.start() == 0 && m.end() == value.len()),
    }
}

/// The request facts header matchers may look at, including pseudo-headers.
#[derive(Debug, Clone, Copy)]
pub struct RequestHead<'a> {
    pub method: &'a str,
    pub authority: &'a str,
    /// Path with query, as in `:path`.
    pub path: &'a str,
    pub scheme: &'a str,
    pub headers: &'a HeaderMap,
}

impl<'a> RequestHead<'a> {
    /// All values of a header joined by `,`, as Envoy matches them.
    pub fn header(&self, name: &str) -> Option<String> {
        match name {
            ":method" => Some(self.method.to_string()),
            ":authority" | "host" => Some(self.authority.to_string()),
            ":path" => Some(self.path.to_string()),
            ":scheme" => Some(self.scheme.to_string()),
            _ => {
                let values: Vec<&str> = self
                    .headers
                    .get_all(name)
                    .iter()
                    .map(|v| v.to_str().unwrap_or(""))
                    .collect();
                if values.is_empty() {
                    None
                } else {
                    Some(values.join(","))
                }
            }
        }
    }

    pub fn path_only(&self) -> &'a str {
        self.path.split(['?', '#']).next().unwrap_or("")
    }

    pub fn query(&self) -> &'a str {
        match self.path.split_once('?') {
            Some((_, q)) => q.split('#').next().unwrap_or(""),
            None => "",
        }
    }
}

pub fn header_matches(m: &HeaderMatcher, req: &RequestHead<'_>) -> bool {
    let value = req.header(&m.name);
    let value = match value {
        None if m.treat_missing_as_empty => Some(String::new()),
        v => v,
    };
    let matched = match (&m.kind, value) {
        (HeaderMatchKind::Present(want), v) => v.is_some() == *want,
        // Envoy: a missing header fails every matcher but an absence
        // check, unless inverted.
        (_, None) => return m.invert,
        (HeaderMatchKind::String(s), Some(v)) => string_matches(s, &v),
        (HeaderMatchKind::Range { start, end }, Some(v)) => v
            .trim()
            .parse::<i64>()
            .is_ok_and(|n| n >= *start && n < *end),
    };
    matched != m.invert
}

/// Query parameters by name; the first occurrence's value is matched.
pub fn query_matches(m: &QueryParameterMatcher, query: &str) -> bool {
    let value = query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == m.name).then_some(v)
    });
    match (value, &m.matcher) {
        (None, _) => false,
        (Some(_), None) => true,
        (Some(v), Some(s)) => string_matches(s, v),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sm(p: StringMatch) -> StringMatcher {
        StringMatcher {
            pattern: p,
            ignore_case: false,
        }
    }

    #[test]
    fn string_matchers() {
        assert!(string_matches(&sm(StringMatch::Exact("a".into())), "a"));
        assert!(!string_matches(&sm(StringMatch::Exact("a".into())), "A"));
        assert!(string_matches(
            &StringMatcher {
                pattern: StringMatch::Exact("a".into()),
                ignore_case: true
            },
            "A"
        ));
        assert!(string_matches(
            &sm(StringMatch::Prefix("/ab".into())),
            "/abc"
        ));
        assert!(string_matches(
            &sm(StringMatch::Suffix("bc".into())),
            "/abc"
        ));
        let re = regex::Regex::new("v[0-9]").unwrap();
        assert!(string_matches(&sm(StringMatch::Regex(re.clone())), "v1"));
        assert!(!string_matches(&sm(StringMatch::Regex(re)), "xv1"));
    }

    #[test]
    fn headers_present_invert_and_missing() {
        let mut headers = HeaderMap::new();
        headers.insert("end-user", "jason".parse().unwrap());
        let req = RequestHead {
            method: "GET",
            authority: "h",
            path: "/p?x=1",
            scheme: "http",
            headers: &headers,
        };
        let exact = |invert| HeaderMatcher {
            name: "end-user".into(),
            kind: HeaderMatchKind::String(sm(StringMatch::Exact("jason".into()))),
            invert,
            treat_missing_as_empty: false,
        };
        assert!(header_matches(&exact(false), &req));
        assert!(!header_matches(&exact(true), &req));
        let missing = HeaderMatcher {
            name: "nope".into(),
            ..exact(false)
        };
        assert!(!header_matches(&missing, &req));
        let absent = HeaderMatcher {
            name: "nope".into(),
            kind: HeaderMatchKind::Present(false),
            invert: false,
            treat_missing_as_empty: false,
        };
        assert!(header_matches(&absent, &req));
        let m = QueryParameterMatcher {
            name: "x".into(),
            matcher: None,
        };
        assert!(query_matches(&m, req.query()));
    }
}
