//! Per-client rate limits (GCRA, from `governor`), each with its own budget: every request
//! spends from the general one, `POST /chat` and session writes also from their own. So a
//! reader who used up the chat budget can still load pages, and probes and static assets never
//! spend the chat budget. Clients are told apart by [`TrustedProxies`].

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderValue, Method, Response, StatusCode};
use axum::middleware::Next;
use governor::clock::Clock;
use governor::{DefaultKeyedRateLimiter, Quota};

use crate::client_address::{budget_key, TrustedProxies};
use crate::config::ServerSettings;
use crate::errors::json_error;

struct Budget {
    name: &'static str,
    limiter: DefaultKeyedRateLimiter<IpAddr>,
}

impl Budget {
    fn new(name: &'static str, per_minute: u32, burst: u32) -> Option<Self> {
        let per_minute = NonZeroU32::new(per_minute)?;
        let period = Duration::from_secs(60) / per_minute.get();
        let quota = Quota::with_period(period.max(Duration::from_millis(1)))?
            .allow_burst(NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN));
        Some(Self {
            name,
            limiter: DefaultKeyedRateLimiter::keyed(quota),
        })
    }

    /// Spends one request of `key`'s budget, or says how long until there is one.
    fn spend(&self, key: &IpAddr) -> Result<(), Duration> {
        self.limiter
            .check_key(key)
            .map_err(|not_until| not_until.wait_time_from(self.limiter.clock().now()))
    }
}

pub struct RateLimits {
    proxies: TrustedProxies,
    base_path: String,
    general: Budget,
    chat: Option<Budget>,
    session_writes: Option<Budget>,
}

impl RateLimits {
    /// `None` when `RATE_LIMIT_PER_MINUTE` is 0 (no per-client limits at all).
    pub fn from_settings(settings: &ServerSettings) -> Result<Option<Arc<Self>>> {
        let proxies = TrustedProxies::parse(&settings.trusted_proxies)?;
        let Some(general) = Budget::new(
            "general",
            settings.rate_limit_per_minute,
            settings.rate_limit_burst,
        ) else {
            return Ok(None);
        };
        let limits = Arc::new(Self {
            proxies,
            base_path: settings.base_path(),
            general,
            chat: Budget::new(
                "chat",
                settings.chat_rate_limit_per_minute,
                settings.chat_rate_limit_burst,
            ),
            session_writes: Budget::new(
                "session_write",
                settings.session_write_rate_limit_per_minute,
                settings.session_write_rate_limit_burst,
            ),
        });
        // Forget clients that have been quiet, so the tables do not grow without bound.
        let weak = Arc::downgrade(&limits);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(60)).await;
                let Some(limits) = weak.upgrade() else { break };
                for budget in limits.budgets() {
                    budget.limiter.retain_recent();
                }
            }
        });
        Ok(Some(limits))
    }

    fn budgets(&self) -> impl Iterator<Item = &Budget> {
        [
            Some(&self.general),
            self.chat.as_ref(),
            self.session_writes.as_ref(),
        ]
        .into_iter()
        .flatten()
    }

    /// The budgets a request spends from, most specific first.
    fn budgets_for(&self, method: &Method, path: &str) -> Vec<&Budget> {
        let path = path
            .strip_prefix(self.base_path.as_str())
            .unwrap_or(path)
            .trim_end_matches('/');
        let writes = !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
        let mut budgets = Vec::with_capacity(2);
        if *method == Method::POST && path == "/chat" {
            budgets.extend(self.chat.as_ref());
        }
        if writes && (path == "/session" || path.starts_with("/session/")) {
            budgets.extend(self.session_writes.as_ref());
        }
        budgets.push(&self.general);
        budgets
    }
}

/// Axum middleware: a JSON 429 with `Retry-After` when a budget is spent.
pub async fn enforce(
    State(limits): State<Arc<RateLimits>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
    next: Next,
) -> Response<Body> {
    let client = limits.proxies.client(peer.ip(), request.headers());
    let key = budget_key(client);
    for budget in limits.budgets_for(request.method(), request.uri().path()) {
        if let Err(wait) = budget.spend(&key) {
            return too_many(budget.name, wait);
        }
    }
    next.run(request).await
}

fn too_many(budget: &str, wait: Duration) -> Response<Body> {
    let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    let mut response = json_error(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        &format!("too many requests ({budget} budget); retry in {seconds} s"),
    );
    if let Ok(value) = HeaderValue::from_str(&seconds.to_string()) {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(base_path: &str) -> RateLimits {
        RateLimits {
            proxies: TrustedProxies::None,
            base_path: base_path.to_owned(),
            general: Budget::new("general", 120, 30).unwrap(),
            chat: Budget::new("chat", 2, 2),
            session_writes: Budget::new("session_write", 2, 1),
        }
    }

    fn names(limits: &RateLimits, method: Method, path: &str) -> Vec<&'static str> {
        limits
            .budgets_for(&method, path)
            .iter()
            .map(|b| b.name)
            .collect()
    }

    #[test]
    fn chat_and_session_writes_spend_their_own_budgets_and_reads_do_not() {
        let limits = limits("/api");
        assert_eq!(
            names(&limits, Method::POST, "/api/chat"),
            ["chat", "general"]
        );
        assert_eq!(
            names(&limits, Method::DELETE, "/api/session/abc"),
            ["session_write", "general"]
        );
        assert_eq!(
            names(&limits, Method::POST, "/api/session"),
            ["session_write", "general"]
        );
        for (method, path) in [
            (Method::GET, "/api/session/abc"),
            (Method::GET, "/api/health"),
            (Method::GET, "/api/health/ready"),
            (Method::OPTIONS, "/api/chat"),
            (Method::GET, "/api/assets/app.js"),
        ] {
            assert_eq!(names(&limits, method, path), ["general"], "{path}");
        }
    }

    #[test]
    fn a_spent_budget_says_how_long_to_wait() {
        let limits = limits("");
        let key: IpAddr = "198.51.100.7".parse().unwrap();
        let session = limits.session_writes.as_ref().unwrap();
        assert!(session.spend(&key).is_ok());
        let wait = session.spend(&key).unwrap_err();
        assert!(
            wait > Duration::from_secs(25) && wait <= Duration::from_secs(30),
            "{wait:?}"
        );
        assert!(
            limits.general.spend(&key).is_ok(),
            "other budgets are untouched"
        );
    }
}
