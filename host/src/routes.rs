//! Spin's HTTP route semantics: exact routes, `:name` segments and trailing `/...` wildcards;
//! the most specific route wins.

use anyhow::{bail, Result};

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Param(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutePattern {
    /// As written in spin.toml, e.g. `/session/...`.
    raw: String,
    segments: Vec<Segment>,
    wildcard: bool,
}

impl RoutePattern {
    pub fn parse(route: &str) -> Result<Self> {
        if !route.starts_with('/') {
            bail!("route {route:?} must start with '/'");
        }
        if route.starts_with("/.well-known/spin/") || route == "/.well-known/spin/..." {
            bail!("route {route:?} is reserved by Spin");
        }
        let (body, wildcard) = match route.strip_suffix("/...") {
            Some(body) => (body, true),
            None if route == "/..." => ("", true),
            None => (route, false),
        };
        let mut segments = Vec::new();
        for part in body.split('/').filter(|s| !s.is_empty()) {
            if part.contains("...") {
                bail!("route {route:?}: '...' is only allowed as the last segment");
            }
            segments.push(match part.strip_prefix(':') {
                Some(name) if !name.is_empty() => Segment::Param(name.to_string()),
                Some(_) => bail!("route {route:?}: ':' must be followed by a name"),
                None => Segment::Literal(part.to_string()),
            });
        }
        Ok(Self {
            raw: route.to_string(),
            segments,
            wildcard,
        })
    }

    pub fn raw(&self) -> &str {
        &self.raw
    }

    /// The route without its wildcard, as Spin reports it in `spin-component-route`.
    pub fn base(&self) -> String {
        if self.wildcard {
            self.raw.strip_suffix("/...").unwrap_or("").to_string()
        } else {
            self.raw.clone()
        }
    }

    /// On a match, the part of the path after the route's fixed part (`spin-path-info`).
    fn matches(&self, path: &str) -> Option<String> {
        let parts: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        if parts.len() < self.segments.len()
            || (!self.wildcard && parts.len() != self.segments.len())
        {
            return None;
        }
        for (segment, part) in self.segments.iter().zip(&parts) {
            if let Segment::Literal(literal) = segment {
                if literal != part {
                    return None;
                }
            }
        }
        if !self.wildcard {
            return Some(String::new());
        }
        let rest = &parts[self.segments.len()..];
        let mut info = String::new();
        for part in rest {
            info.push('/');
            info.push_str(part);
        }
        if path.ends_with('/') && !rest.is_empty() {
            info.push('/');
        }
        Some(info)
    }

    /// Higher is more specific: exact beats wildcard, then more literal segments, then more segments.
    fn specificity(&self) -> (bool, usize, usize) {
        let literals = self
            .segments
            .iter()
            .filter(|s| matches!(s, Segment::Literal(_)))
            .count();
        (!self.wildcard, self.segments.len(), literals)
    }
}

#[derive(Debug, Clone)]
pub struct RouteMatch<'a, T> {
    pub target: &'a T,
    pub pattern: &'a RoutePattern,
    pub path_info: String,
}

/// Routes mapped to targets (component indices in the runner).
#[derive(Debug, Clone)]
pub struct RouteTable<T> {
    routes: Vec<(RoutePattern, T)>,
}

impl<T> RouteTable<T> {
    pub fn new(mut routes: Vec<(RoutePattern, T)>) -> Result<Self> {
        for (i, (a, _)) in routes.iter().enumerate() {
            if routes[..i].iter().any(|(b, _)| b == a) {
                bail!("route {:?} is declared twice", a.raw);
            }
        }
        routes.sort_by_key(|(pattern, _)| std::cmp::Reverse(pattern.specificity()));
        Ok(Self { routes })
    }

    pub fn find(&self, path: &str) -> Option<RouteMatch<'_, T>> {
        self.routes.iter().find_map(|(pattern, target)| {
            pattern.matches(path).map(|path_info| RouteMatch {
                target,
                pattern,
                path_info,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(routes: &[&str]) -> RouteTable<String> {
        RouteTable::new(
            routes
                .iter()
                .map(|r| (RoutePattern::parse(r).unwrap(), r.to_string()))
                .collect(),
        )
        .unwrap()
    }

    fn route_for(t: &RouteTable<String>, path: &str) -> Option<(String, String)> {
        t.find(path).map(|m| (m.target.clone(), m.path_info))
    }

    #[test]
    fn exact_routes_match_only_themselves() {
        let t = table(&["/health"]);
        assert_eq!(
            route_for(&t, "/health"),
            Some(("/health".into(), "".into()))
        );
        assert_eq!(route_for(&t, "/health/ready"), None);
        assert_eq!(route_for(&t, "/healthz"), None);
    }

    #[test]
    fn wildcards_match_their_base_and_below() {
        let t = table(&["/session/..."]);
        assert_eq!(
            route_for(&t, "/session"),
            Some(("/session/...".into(), "".into()))
        );
        assert_eq!(
            route_for(&t, "/session/abc/messages/3/feedback"),
            Some(("/session/...".into(), "/abc/messages/3/feedback".into()))
        );
        assert_eq!(route_for(&t, "/sessions"), None);
    }

    #[test]
    fn most_specific_wins() {
        let t = table(&["/...", "/health/...", "/health"]);
        assert_eq!(route_for(&t, "/health").unwrap().0, "/health");
        assert_eq!(route_for(&t, "/health/ready").unwrap().0, "/health/...");
        assert_eq!(route_for(&t, "/chat").unwrap().0, "/...");
        let t = table(&["/a/:id", "/a/b"]);
        assert_eq!(route_for(&t, "/a/b").unwrap().0, "/a/b");
        assert_eq!(route_for(&t, "/a/c").unwrap().0, "/a/:id");
    }

    #[test]
    fn rejects_bad_routes() {
        assert!(RoutePattern::parse("health").is_err());
        assert!(RoutePattern::parse("/.well-known/spin/info").is_err());
        assert!(RoutePattern::parse("/a/.../b").is_err());
        assert!(RouteTable::new(vec![
            (RoutePattern::parse("/a").unwrap(), 1),
            (RoutePattern::parse("/a").unwrap(), 2)
        ])
        .is_err());
    }

    #[test]
    fn base_drops_the_wildcard() {
        assert_eq!(
            RoutePattern::parse("/session/...").unwrap().base(),
            "/session"
        );
        assert_eq!(RoutePattern::parse("/...").unwrap().base(), "");
        assert_eq!(RoutePattern::parse("/chat").unwrap().base(), "/chat");
    }
}
