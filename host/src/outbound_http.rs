//! Outbound `wasi:http`: each component may reach only its `allowed_outbound_hosts`, and every
//! request goes through keep-alive clients (hyper-util pool, rustls), so a chat does not pay a
//! TCP and TLS handshake to each upstream every time. A destination allowed only by a wildcard
//! must resolve to a public address (see [`crate::outbound_address`]).
//!
//! Each thread has its own pools. A pooled connection is driven by a task on the runtime that
//! opened it; with one runtime per server worker (`crate::server`), a connection shared
//! between workers made an upstream call of a request on the other worker wake that worker to
//! send, and wake the request's worker again with the answer.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use http_body_util::BodyExt;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use thread_local::ThreadLocal;
use wasmtime_wasi_http::{Error as HttpError, RequestOptions, WasiBody, WasiHttpHooks};

use crate::outbound_address::{
    is_non_public_refusal, is_public, AddressOverrides, NonPublicAddress, VettingResolver,
};
use crate::variables::AppVariables;

/// Spin's `allowed_outbound_hosts` grammar: `scheme://host[:port]`, where scheme, host and
/// port may be `*`, host may be `*.domain`, and port may be a range `a..b`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedHost {
    scheme: Option<String>,
    host: HostRule,
    port: PortRule,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostRule {
    Any,
    Subdomain(String),
    Exact(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum PortRule {
    Any,
    Range(u16, u16),
}

impl AllowedHost {
    pub fn parse(entry: &str) -> Result<Self> {
        let entry = entry.trim();
        let (scheme, rest) = entry.split_once("://").with_context(|| {
            format!("{entry:?} does not contain a scheme (e.g. 'https://' or '*://')")
        })?;
        let scheme = match scheme {
            "*" => None,
            s if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphabetic()) => Some(s.to_string()),
            s => bail!("{entry:?}: scheme {s:?} is not valid"),
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains('/') {
            bail!("{entry:?} has a path but is not allowed to");
        }
        let (host, port) = match rest.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (rest, None),
        };
        let host = match host {
            "*" => HostRule::Any,
            h if h.starts_with("*.") && !h[2..].contains('*') && h.len() > 2 => {
                HostRule::Subdomain(h[1..].to_ascii_lowercase())
            }
            h if !h.is_empty() && !h.contains('*') => HostRule::Exact(h.to_ascii_lowercase()),
            h => bail!("{entry:?}: host {h:?} is not valid (wildcards only as '*' or '*.domain')"),
        };
        let port = match port {
            Some("*") => PortRule::Any,
            Some(p) => match p.split_once("..") {
                Some((a, b)) => PortRule::Range(
                    a.parse()
                        .with_context(|| format!("{entry:?}: bad port range"))?,
                    b.parse::<u16>()
                        .with_context(|| format!("{entry:?}: bad port range"))?
                        .saturating_sub(1),
                ),
                None => {
                    let p: u16 = p
                        .parse()
                        .with_context(|| format!("{entry:?}: port {p:?} is not a number"))?;
                    PortRule::Range(p, p)
                }
            },
            None => {
                let scheme = scheme.as_deref().unwrap_or("");
                let p = well_known_port(scheme).with_context(|| {
                    format!("{entry:?}: no port given and scheme {scheme:?} has no default port")
                })?;
                PortRule::Range(p, p)
            }
        };
        Ok(Self { scheme, host, port })
    }

    pub fn allows(&self, scheme: &str, host: &str, port: Option<u16>) -> bool {
        let scheme_ok = self.scheme.as_deref().is_none_or(|s| s == scheme);
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        let host_ok = match &self.host {
            HostRule::Any => true,
            HostRule::Subdomain(suffix) => host.ends_with(suffix.as_str()),
            HostRule::Exact(h) => *h == host,
        };
        let port_ok = match (&self.port, port.or_else(|| well_known_port(scheme))) {
            (PortRule::Any, _) => true,
            (PortRule::Range(a, b), Some(p)) => *a <= p && p <= *b,
            (PortRule::Range(..), None) => false,
        };
        scheme_ok && host_ok && port_ok
    }
}

impl AllowedHost {
    /// Whether this entry allows the destination by naming its host outright (no wildcard):
    /// such a host may resolve to a private or loopback address.
    fn names(&self, scheme: &str, host: &str, port: Option<u16>) -> bool {
        matches!(self.host, HostRule::Exact(_)) && self.allows(scheme, host, port)
    }
}

fn well_known_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" => Some(80),
        "https" => Some(443),
        "postgres" => Some(5432),
        "mysql" => Some(3306),
        "redis" => Some(6379),
        "mqtt" => Some(1883),
        _ => None,
    }
}

/// One component's allow-list, templates already expanded.
#[derive(Debug, Clone, Default)]
pub struct AllowedHosts(Vec<AllowedHost>);

impl AllowedHosts {
    pub fn resolve(entries: &[String], vars: &AppVariables) -> Result<Self> {
        entries
            .iter()
            .map(|entry| {
                let expanded = vars.expand(entry)?;
                AllowedHost::parse(&expanded)
                    .with_context(|| format!("allowed_outbound_hosts entry {entry:?}"))
            })
            .collect::<Result<Vec<_>>>()
            .map(Self)
    }

    pub fn allows(&self, scheme: &str, host: &str, port: Option<u16>) -> bool {
        self.0.iter().any(|rule| rule.allows(scheme, host, port))
    }

    pub fn allows_uri(&self, uri: &http::Uri) -> bool {
        match (uri.scheme_str(), uri.host()) {
            (Some(scheme), Some(host)) => self.allows(scheme, host, uri.port_u16()),
            _ => false,
        }
    }

    /// Whether an entry names the destination's host explicitly (see [`AllowedHost::names`]).
    pub fn names_uri(&self, uri: &http::Uri) -> bool {
        match (uri.scheme_str(), uri.host()) {
            (Some(scheme), Some(host)) => self
                .0
                .iter()
                .any(|rule| rule.names(scheme, host, uri.port_u16())),
            _ => false,
        }
    }
}

type Connector = hyper_rustls::HttpsConnector<HttpConnector<VettingResolver>>;

/// The process-wide outbound clients; cheap to clone (the pools are shared). Destinations that
/// may be private and those that must be public never share a pooled connection.
#[derive(Clone)]
pub struct OutboundClient {
    pools: Arc<ThreadLocal<Pools>>,
    overrides: Arc<AddressOverrides>,
    connect_timeout: Duration,
    first_byte_timeout: Duration,
}

/// One thread's clients.
struct Pools {
    /// For hosts named in the allow-list, and for requests the host itself builds.
    named: Client<Connector, WasiBody>,
    /// For hosts allowed only by a wildcard: public addresses only.
    public_only: Client<Connector, WasiBody>,
}

impl Pools {
    fn new(overrides: &Arc<AddressOverrides>, connect_timeout: Duration) -> Result<Self> {
        let client = |public_only| {
            build_client(
                VettingResolver::new(overrides.clone(), public_only),
                connect_timeout,
            )
        };
        Ok(Self {
            named: client(false)?,
            public_only: client(true)?,
        })
    }
}

impl OutboundClient {
    pub fn new(connect_timeout: Duration, first_byte_timeout: Duration) -> Result<Self> {
        Self::with_overrides(
            connect_timeout,
            first_byte_timeout,
            AddressOverrides::default(),
        )
    }

    pub fn with_overrides(
        connect_timeout: Duration,
        first_byte_timeout: Duration,
        overrides: AddressOverrides,
    ) -> Result<Self> {
        let overrides = Arc::new(overrides);
        // Built once here so that a configuration error shows at startup, not at a request.
        let pools = ThreadLocal::new();
        pools.get_or_try(|| Pools::new(&overrides, connect_timeout))?;
        Ok(Self {
            pools: Arc::new(pools),
            overrides,
            connect_timeout,
            first_byte_timeout,
        })
    }

    /// The calling thread's clients.
    fn pools(&self) -> Result<&Pools, HttpError> {
        self.pools
            .get_or_try(|| Pools::new(&self.overrides, self.connect_timeout))
            .map_err(|err| HttpError::InternalError(Some(format!("{err:#}"))))
    }

    /// Sends a request built by the host itself (ingestion, readiness), not by a guest.
    pub async fn send(
        &self,
        request: http::Request<WasiBody>,
        timeout: Duration,
    ) -> Result<http::Response<WasiBody>, HttpError> {
        send_on(&self.pools()?.named, request, timeout).await
    }
}

fn build_client(
    resolver: VettingResolver,
    connect_timeout: Duration,
) -> Result<Client<Connector, WasiBody>> {
    let mut http = HttpConnector::new_with_resolver(resolver);
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(connect_timeout));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        })
        .with_no_client_auth();
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(32)
        .pool_timer(TokioTimer::new())
        .build(connector))
}

async fn send_on(
    client: &Client<Connector, WasiBody>,
    request: http::Request<WasiBody>,
    timeout: Duration,
) -> Result<http::Response<WasiBody>, HttpError> {
    let response = tokio::time::timeout(timeout, client.request(request))
        .await
        .map_err(|_| HttpError::ConnectionReadTimeout)?
        .map_err(classify)?;
    Ok(response.map(|body| body.map_err(HttpError::from).boxed_unsync()))
}

fn classify(err: hyper_util::client::legacy::Error) -> HttpError {
    if is_non_public_refusal(&err) {
        return HttpError::HttpRequestDenied;
    }
    if err.is_connect() {
        let text = format!("{err:?}");
        if text.contains("timed out") {
            HttpError::ConnectionTimeout
        } else if text.contains("ConnectionRefused") || text.contains("Connection refused") {
            HttpError::ConnectionRefused
        } else {
            HttpError::DestinationUnavailable
        }
    } else {
        HttpError::InternalError(Some(err.to_string()))
    }
}

/// The per-request `wasi:http` hooks: the allow-list check, then the shared client.
pub struct OutboundHttp {
    pub component: Arc<str>,
    pub allowed: Arc<AllowedHosts>,
    pub client: OutboundClient,
}

pub type SendFuture = Box<
    dyn Future<
            Output = Result<
                (
                    http::Response<WasiBody>,
                    Box<dyn Future<Output = Result<(), HttpError>> + Send>,
                ),
                HttpError,
            >,
        > + Send,
>;

impl WasiHttpHooks for OutboundHttp {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), HttpError>> + Send>,
    ) -> SendFuture {
        self.send(request, options)
    }
}

impl OutboundHttp {
    /// Sends a request on the component's behalf: its own requests, and those the runner makes
    /// for it (the stream relay's), under the same allow-list.
    pub fn send(
        &self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
    ) -> SendFuture {
        let uri = request.uri();
        if !self.allowed.allows_uri(uri) {
            tracing::warn!(
                component = %self.component,
                destination = %origin_of(uri),
                "outbound request refused: destination not in allowed_outbound_hosts"
            );
            return Box::new(async { Err(HttpError::HttpRequestDenied) });
        }
        let named = self.allowed.names_uri(uri);
        // An address written in the URL is not resolved, so it is vetted here.
        let literal = uri
            .host()
            .and_then(|h| h.trim_start_matches('[').trim_end_matches(']').parse().ok());
        if !named && literal.is_some_and(|ip| !is_public(ip)) {
            refuse_non_public(&self.component, uri);
            return Box::new(async { Err(HttpError::HttpRequestDenied) });
        }
        let pools = match self.client.pools() {
            Ok(pools) => pools,
            Err(err) => return Box::new(async { Err(err) }),
        };
        let client = if named {
            pools.named.clone()
        } else {
            pools.public_only.clone()
        };
        let timeout = options
            .and_then(|o| o.first_byte_timeout)
            .unwrap_or(self.client.first_byte_timeout);
        let component = self.component.clone();
        let destination = uri.clone();
        Box::new(async move {
            let response = send_on(&client, request, timeout).await;
            if matches!(response, Err(HttpError::HttpRequestDenied)) {
                refuse_non_public(&component, &destination);
            }
            let done: Box<dyn Future<Output = Result<(), HttpError>> + Send> =
                Box::new(async { Ok(()) });
            Ok((response?, done))
        })
    }
}

fn refuse_non_public(component: &str, uri: &http::Uri) {
    tracing::warn!(
        component,
        destination = %origin_of(uri),
        "outbound request refused: {NonPublicAddress}; name the host in allowed_outbound_hosts to allow it"
    );
}

/// `scheme://host:port` only: paths and queries may carry secrets (API keys in query strings).
fn origin_of(uri: &http::Uri) -> String {
    format!(
        "{}://{}{}",
        uri.scheme_str().unwrap_or("?"),
        uri.host().unwrap_or("?"),
        uri.port_u16().map(|p| format!(":{p}")).unwrap_or_default()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_thread_gets_its_own_pools_and_keeps_them() {
        let client = OutboundClient::new(Duration::from_secs(1), Duration::from_secs(1)).unwrap();
        let address = |pools: &Pools| pools as *const Pools as usize;
        let here = address(client.pools().unwrap());
        assert_eq!(address(client.pools().unwrap()), here);
        let elsewhere = std::thread::scope(|scope| {
            scope
                .spawn(|| address(client.pools().unwrap()))
                .join()
                .unwrap()
        });
        assert_ne!(elsewhere, here);
        // Clones (one per request) share the threads' pools.
        assert_eq!(address(client.clone().pools().unwrap()), here);
    }

    fn allows(entry: &str, url: &str) -> bool {
        let uri: http::Uri = url.parse().unwrap();
        AllowedHost::parse(entry).unwrap().allows(
            uri.scheme_str().unwrap(),
            uri.host().unwrap(),
            uri.port_u16(),
        )
    }

    #[test]
    fn grammar_follows_spin() {
        assert!(allows(
            "https://api.cohere.com",
            "https://api.cohere.com/v2/embed"
        ));
        assert!(!allows(
            "https://api.cohere.com",
            "http://api.cohere.com/v2/embed"
        ));
        assert!(!allows(
            "https://api.cohere.com",
            "https://api.cohere.com:8443/"
        ));
        assert!(allows(
            "https://*.qdrant.io",
            "https://abc.eu.qdrant.io/collections"
        ));
        assert!(!allows(
            "https://*.qdrant.io",
            "https://qdrant.io.evil.com/"
        ));
        assert!(allows("http://127.0.0.1:*", "http://127.0.0.1:41234/x"));
        assert!(allows("*://*:*", "http://anything:1/"));
        assert!(allows(
            "http://localhost:8000..8010",
            "http://localhost:8005/"
        ));
        assert!(!allows(
            "http://localhost:8000..8010",
            "http://localhost:8010/"
        ));
        assert!(allows(
            "postgres://db.example.com",
            "postgres://db.example.com/x"
        ));
    }

    #[test]
    fn rejects_what_spin_rejects() {
        for bad in [
            "api.cohere.com",
            "https://api.cohere.com/v2",
            "https://a*.com",
            "ftp://x",
            "https://x:port",
        ] {
            assert!(AllowedHost::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn only_entries_without_wildcards_name_a_host() {
        let hosts = AllowedHosts(
            [
                "https://*:443",
                "http://127.0.0.1:*",
                "https://*.qdrant.io:6333",
            ]
            .iter()
            .map(|e| AllowedHost::parse(e).unwrap())
            .collect(),
        );
        let names = |url: &str| hosts.names_uri(&url.parse().unwrap());
        assert!(names("http://127.0.0.1:6333/collections"));
        assert!(!names("https://169.254.169.254/latest"));
        assert!(!names("https://db.qdrant.io:6333/"));
        assert!(
            !names("https://127.0.0.1/"),
            "the named entry is for http only"
        );
    }

    #[test]
    fn log_lines_name_only_the_origin() {
        let uri: http::Uri = "https://api.example.com/v1?key=secret".parse().unwrap();
        assert_eq!(origin_of(&uri), "https://api.example.com");
    }
}
