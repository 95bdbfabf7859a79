//! The loaded application and the whole request path:
//! route -> concurrency permit -> bounded body -> fresh `Store` (memory cap, epoch deadline)
//! -> `InstancePre` -> `wasi:http/incoming-handler` -> streamed response.
//! A component that opted into instance reuse may instead get an idle instance, with its
//! store, kept from an earlier request (see `instance_reuse`).

use std::future::Future;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Instant;

use anyhow::{Context, Result};
use axum::body::Body;
use axum::http::{HeaderValue, Request, Response, StatusCode};
use futures::FutureExt;
use http_body_util::{BodyExt, Full, Limited};
use rag_core::relay::Settle;
use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tracing::Instrument;
use wasmtime::component::Linker;
use wasmtime::{Engine, Store, UpdateDeadline};
use wasmtime_wasi_http::p2::bindings::http::types::{ErrorCode, Scheme};
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::WasiHttpView;

use crate::config::RuntimeSettings;
use crate::engine::{self, EngineLimits, EpochTicker};
use crate::errors::{json_error, not_found};
use crate::instance_reuse::{self, IdleInstances, Instance};
use crate::manifest::App;
use crate::metrics;
use crate::outbound_address::AddressOverrides;
use crate::outbound_http::{AllowedHosts, OutboundClient, OutboundHttp};
use crate::postgres::{Postgres, PostgresSettings};
use crate::routes::{RoutePattern, RouteTable};
use crate::sqlite::Sqlite;
use crate::state::{ComponentConfig, RequestState, Services};
use crate::stream_relay::{self, Relay, SettleCall};
use crate::variables::{component_variables, AppVariables};

struct LoadedComponent {
    config: Arc<ComponentConfig>,
    pre: ProxyPre<RequestState>,
    /// Instances kept between requests, for a component that opted into reuse.
    idle: Option<Arc<IdleInstances>>,
    /// Whether its streamed answers may be handed to the runner's relay.
    relays: bool,
}

pub struct Runtime {
    engine: Engine,
    _ticker: EpochTicker,
    routes: RouteTable<usize>,
    components: Vec<LoadedComponent>,
    services: Services,
    settings: RuntimeSettings,
    permits: Arc<Semaphore>,
    /// The secret by which the relay's calls back are told from clients' requests; `None` when
    /// the relay is off.
    relay_token: Option<Arc<str>>,
    relays_open: Arc<std::sync::atomic::AtomicUsize>,
    /// One idle connection to each embedded database, open for the runner's life (see
    /// [`keep_databases_open`]).
    _database_keepers: std::sync::Mutex<Vec<rusqlite::Connection>>,
    pub app: App,
    pub variables: AppVariables,
}

/// The request as the runner received it, after `BASE_PATH` was taken off.
pub struct Incoming {
    pub request: Request<Body>,
    /// Path the components route on.
    pub path: String,
    pub client: SocketAddr,
    pub base_path: String,
}

impl Runtime {
    pub fn load(settings: RuntimeSettings, variables: AppVariables, app: App) -> Result<Self> {
        // Idle instances hold pool slots, so the pool has room for every request in flight
        // plus every idle instance.
        let idle_capacity = instance_reuse::default_capacity();
        let reusing = app
            .manifest
            .component
            .values()
            .filter(|c| reuses_instances(c))
            .count();
        let engine = engine::build(&EngineLimits {
            max_instances: settings.engine.max_concurrent_requests
                + (reusing * idle_capacity) as u32,
            memory_limit_bytes: settings.memory_limit_bytes(),
        })?;
        let mut linker = Linker::<RequestState>::new(&engine);
        add_to_linker(&mut linker)?;

        let relay_token = settings
            .stream_relay
            .then(new_relay_token)
            .transpose()?
            .map(Arc::<str>::from);
        let cache_dir = settings.cache_dir();
        let mut components = Vec::new();
        let mut index_of = std::collections::HashMap::new();
        for (id, declared) in &app.manifest.component {
            let started = Instant::now();
            let component =
                engine::load_component(&engine, &app.source_path(declared), &cache_dir)?;
            let pre = linker
                .instantiate_pre(&component)
                .map_err(anyhow::Error::from)
                .with_context(|| {
                    format!("component {id:?} imports something this runner does not provide")
                })?;
            let pre = ProxyPre::new(pre)
                .map_err(anyhow::Error::from)
                .with_context(|| {
                    format!("component {id:?} does not export wasi:http/incoming-handler")
                })?;
            if declared.environment.contains_key(stream_relay::TOKEN_ENV) {
                anyhow::bail!(
                    "component {id:?}: {} is the runner's to set, not the manifest's",
                    stream_relay::TOKEN_ENV
                );
            }
            // A reused instance's call is polled by the request's own future, which would wait
            // on the hand-over without ever running the guest: never both.
            let relays = declared.tool.runner.relay_streams
                && relay_token.is_some()
                && !reuses_instances(declared);
            let mut environment: Vec<(String, String)> =
                declared.environment.clone().into_iter().collect();
            if let Some(token) = relay_token.as_ref().filter(|_| relays) {
                environment.push((stream_relay::TOKEN_ENV.to_owned(), token.to_string()));
            }
            let config = ComponentConfig {
                id: Arc::from(id.as_str()),
                variables: component_variables(&variables, &declared.variables)?,
                allowed_hosts: Arc::new(
                    AllowedHosts::resolve(&declared.allowed_outbound_hosts, &variables)
                        .with_context(|| format!("component {id:?}"))?,
                ),
                sqlite_databases: declared.sqlite_databases.clone(),
                environment,
            };
            tracing::info!(component = %id, elapsed_ms = started.elapsed().as_millis() as u64, "component ready");
            index_of.insert(id.clone(), components.len());
            let idle = declared
                .tool
                .runner
                .reuse_instances
                .filter(|_| reuses_instances(declared));
            components.push(LoadedComponent {
                config: Arc::new(config),
                pre,
                idle: idle.map(|max_uses| Arc::new(IdleInstances::new(max_uses, idle_capacity))),
                relays,
            });
        }
        let routes = app
            .manifest
            .trigger
            .http
            .iter()
            .map(|t| Ok((RoutePattern::parse(&t.route)?, index_of[&t.component])))
            .collect::<Result<Vec<_>>>()?;

        let services = Services {
            outbound: OutboundClient::with_overrides(
                settings.outbound.connect_timeout(),
                settings.outbound.first_byte_timeout(),
                AddressOverrides::parse(&settings.outbound_resolve)?,
            )?,
            postgres: Postgres::new(PostgresSettings {
                pool_size: settings.pg_pool_size,
                connect_timeout: settings.outbound.connect_timeout(),
                statement_timeout: std::time::Duration::from_secs(
                    settings.pg_statement_timeout_secs,
                ),
            }),
            sqlite: Sqlite::new(&settings.app.data_dir)?,
        };
        let keepers = keep_databases_open(&services.sqlite, &app);
        Ok(Self {
            _database_keepers: std::sync::Mutex::new(keepers),
            _ticker: EpochTicker::start(&engine),
            engine,
            routes: RouteTable::new(routes)?,
            components,
            services,
            permits: Arc::new(Semaphore::new(
                settings.engine.max_concurrent_requests as usize,
            )),
            settings,
            relay_token,
            relays_open: Arc::default(),
            app,
            variables,
        })
    }

    pub fn services(&self) -> &Services {
        &self.services
    }

    /// Instances kept idle for reuse by component `id` (0 when it did not opt in).
    pub fn idle_instances(&self, id: &str) -> usize {
        self.components
            .iter()
            .find(|c| &*c.config.id == id)
            .and_then(|c| c.idle.as_ref())
            .map_or(0, |idle| idle.idle_count())
    }

    /// Streamed answers the runner is relaying now, their instances ended.
    pub fn relays_open(&self) -> usize {
        self.relays_open.load(Ordering::Relaxed)
    }

    pub fn in_flight(&self) -> usize {
        self.settings.engine.max_concurrent_requests as usize - self.permits.available_permits()
    }

    pub async fn handle(&self, incoming: Incoming) -> Response<Body> {
        let started = Instant::now();
        let Some(matched) = self.routes.find(&incoming.path) else {
            metrics::request_done("unmatched", StatusCode::NOT_FOUND, started);
            return not_found();
        };
        let route = matched.pattern.raw().to_string();
        let component = &self.components[*matched.target];
        let Ok(permit) = self.permits.clone().try_acquire_owned() else {
            metrics::request_done(&route, StatusCode::SERVICE_UNAVAILABLE, started);
            return json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "server_busy",
                "too many requests in flight; retry shortly",
            );
        };
        let spin_headers = SpinHeaders {
            path_info: matched.path_info.clone(),
            matched_route: route.clone(),
            component_route: matched.pattern.base(),
            base_path: if incoming.base_path.is_empty() {
                "/".into()
            } else {
                incoming.base_path.clone()
            },
            client: incoming.client,
        };
        let response = match self
            .run(component, incoming.request, spin_headers, permit)
            .await
        {
            Ok(response) => response,
            Err(failure) => failure.into_response(&component.config.id),
        };
        metrics::request_done(&route, response.status(), started);
        response
    }

    async fn run(
        &self,
        component: &LoadedComponent,
        request: Request<Body>,
        spin: SpinHeaders,
        permit: OwnedSemaphorePermit,
    ) -> Result<Response<Body>, Failure> {
        let request = self.prepare_request(request, &spin).await?;
        // Held by the call and, for a stream handed to the relay, by the relay too.
        let permit = Arc::new(permit);
        let relay_permit = component.relays.then(|| permit.clone());

        // An idle instance if the component opted into reuse and one is free; else a fresh
        // store, in which the call below instantiates the component.
        let mut guest = match component.idle.as_ref().and_then(|idle| idle.take()) {
            Some(instance) => Guest::Idle(instance),
            None => Guest::New(self.new_store(component)),
        };
        let store = guest.store();
        // Per request, also in a reused store: a new deadline, and `responded` for this request.
        let responded = Arc::new(AtomicBool::new(false));
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(guest_deadline(
            self.settings.request_timeout(),
            self.settings.stream_timeout(),
            responded.clone(),
        ));

        let (sender, mut receiver) = oneshot::channel();
        let flag = responded.clone();
        let state = store.data_mut();
        let req = state
            .http()
            .new_incoming_request(Scheme::Http, request)
            .map_err(Failure::Host)?;
        let out = state
            .http()
            .new_response_outparam_from_callback(move |result| {
                flag.store(true, Ordering::Release);
                let _ = sender.send(result);
            })
            .map_err(Failure::Host)?;

        let pre = component.pre.clone();
        let idle = component.idle.clone();
        let id = component.config.id.clone();
        let stream_timeout = self.settings.stream_timeout();
        let call = async move {
            let mut instance = match guest {
                Guest::Idle(instance) => {
                    metrics::reused(&id);
                    instance
                }
                Guest::New(mut store) => {
                    let instantiating = Instant::now();
                    let proxy = pre.instantiate_async(&mut store).await?;
                    metrics::instantiated(&id, instantiating.elapsed());
                    Instance::new(store, proxy)
                }
            };
            let Instance { store, proxy, .. } = &mut instance;
            let call = proxy
                .wasi_http_incoming_handler()
                .call_handle(&mut *store, req, out);
            let result = match tokio::time::timeout(stream_timeout, call).await {
                Ok(result) => result,
                Err(_) => Err(wasmtime::Trap::Interrupt.into()),
            };
            let responded = responded.load(Ordering::Acquire);
            if let (Err(err), true) = (&result, responded) {
                // Once the head was sent an error can only end the stream; log it here (the
                // request path no longer waits for the call).
                tracing::warn!(component = %id, "guest failed while streaming: {err:#}");
            }
            // Kept for a later request only after a clean end (the checks are in
            // `give_back`); otherwise dropped here, freeing its pool slot before the permit.
            match (idle, &result) {
                (Some(idle), Ok(())) => {
                    idle.give_back(instance, responded);
                }
                _ => drop(instance),
            }
            drop(permit);
            result
        };
        // The call of a component that opted into instance reuse (so stateless) runs in this
        // request's own future: an answer complete when the call returns (/health, openapi)
        // then costs no task and no wake-up of another worker, and a client that goes away
        // drops the call with the request. Every other component's call gets its own task,
        // which a client that goes away does not cut short (a chat still stores its turn).
        let mut call = if component.idle.is_some() {
            Call::Inline(Box::pin(AssertUnwindSafe(call).catch_unwind()))
        } else {
            Call::Task(tokio::spawn(call))
        };
        let request_deadline = tokio::time::Instant::now() + self.settings.request_timeout();
        let deadline = tokio::time::sleep_until(request_deadline);
        tokio::select! {
            // The head first: a call that has sent it and is still running goes on streaming.
            biased;
            head = &mut receiver => match (head, relay_permit) {
                (Ok(Ok(head)), Some(permit)) if stream_relay::is_hand_over(&head) => {
                    let relay = Relay {
                        component: component.config.id.clone(),
                        outbound: OutboundHttp {
                            component: component.config.id.clone(),
                            allowed: component.config.allowed_hosts.clone(),
                            client: self.services.outbound.clone(),
                        },
                        settle: self.settle_call(component),
                        guest_ended: Box::pin(call.map(|_| ())),
                        stream_timeout: self.settings.stream_timeout(),
                        permit,
                        open: self.relays_open.clone(),
                    };
                    // In a task of its own, as a guest's call is, so that a client that leaves
                    // before the stream starts does not cut short what the relay stores; and
                    // within the request's deadline, as a guest that has not answered yet.
                    let relaying =
                        tokio::spawn(stream_relay::relay(head, relay).in_current_span());
                    match tokio::time::timeout_at(request_deadline, relaying).await {
                        Ok(Ok(response)) => Ok(response),
                        Ok(Err(failed)) => Err(Failure::Host(failed.into())),
                        Err(_) => Err(Failure::Timeout),
                    }
                }
                (Ok(Ok(head)), None) if stream_relay::is_hand_over(&head) => {
                    // A hand-over the runner did not offer: its body is the model request, with
                    // the component's credentials, and never goes to the client.
                    drop(head);
                    call.detach();
                    Err(Failure::UnofferedRelay)
                }
                (Ok(head), _) => {
                    call.detach();
                    answer(head)
                }
                // The guest dropped the outparam without answering; the epoch deadline still
                // bounds the call.
                (Err(_), _) => no_answer(call.await),
            },
            ended = &mut call => match receiver.try_recv() {
                Ok(head) => answer(head),
                Err(_) => no_answer(ended),
            },
            _ = deadline => {
                call.cancel();
                Err(Failure::Timeout)
            }
        }
    }

    /// A store for one instance of `component`, with the memory cap.
    fn new_store(&self, component: &LoadedComponent) -> Store<RequestState> {
        new_store(
            &self.engine,
            &component.config,
            &self.services,
            self.settings.memory_limit_bytes(),
        )
    }

    /// How the relay stores a relayed answer's ending: a call of the component, in an instance
    /// of its own, with the token that only this runner knows.
    fn settle_call(&self, component: &LoadedComponent) -> SettleCall {
        let engine = self.engine.clone();
        let pre = component.pre.clone();
        let config = component.config.clone();
        let services = self.services.clone();
        let memory_limit = self.settings.memory_limit_bytes();
        let timeout = self.settings.request_timeout();
        let token = self.relay_token.clone().unwrap_or_else(|| Arc::from(""));
        Arc::new(move |settle: Settle| {
            let message_id = settle.ready.message_id;
            let mut store = new_store(&engine, &config, &services, memory_limit);
            let pre = pre.clone();
            let token = token.clone();
            let id = config.id.clone();
            Box::pin(async move {
                let settled = async {
                    store.set_epoch_deadline(1);
                    store.epoch_deadline_callback(guest_deadline(
                        timeout,
                        timeout,
                        Arc::new(AtomicBool::new(false)),
                    ));
                    let body = serde_json::to_vec(&settle)?;
                    let request = Request::post("http://localhost/")
                        .header(stream_relay::TOKEN_HEADER, &*token)
                        .header(axum::http::header::CONTENT_TYPE, "application/json")
                        .body(Full::new(bytes::Bytes::from(body)))?;
                    let (sender, mut receiver) = oneshot::channel();
                    let state = store.data_mut();
                    let req = state.http().new_incoming_request(Scheme::Http, request)?;
                    let out = state
                        .http()
                        .new_response_outparam_from_callback(move |result| {
                            let _ = sender.send(result.map(|response| response.status()));
                        })?;
                    let proxy = pre.instantiate_async(&mut store).await?;
                    let call = proxy
                        .wasi_http_incoming_handler()
                        .call_handle(&mut store, req, out);
                    tokio::time::timeout(timeout, call).await??;
                    // The answer is set before the call returns, or never.
                    match receiver.try_recv() {
                        Ok(Ok(status)) if status.is_success() => Ok(()),
                        Ok(Ok(status)) => Err(anyhow::anyhow!("answered {status}")),
                        _ => Err(anyhow::anyhow!("no answer")),
                    }
                };
                if let Err(error) = settled.await {
                    tracing::error!(component = %id, "could not settle message {message_id}: {error:#}");
                }
            })
        })
    }

    /// Buffers the body within the limit (so an oversize body is refused before any guest
    /// runs and nothing is written), and adds the headers Spin sets.
    async fn prepare_request(
        &self,
        request: Request<Body>,
        spin: &SpinHeaders,
    ) -> Result<Request<Full<bytes::Bytes>>, Failure> {
        let limit = self.settings.max_body_bytes;
        let too_large = request
            .headers()
            .get(axum::http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
            .is_some_and(|len| len > limit as u64);
        if too_large {
            return Err(Failure::BodyTooLarge(limit));
        }
        let (mut parts, body) = request.into_parts();
        // Only the runner's own calls back carry the relay's token.
        parts.headers.remove(stream_relay::TOKEN_HEADER);
        let bytes = match Limited::new(body, limit).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(err)
                if err
                    .downcast_ref::<http_body_util::LengthLimitError>()
                    .is_some() =>
            {
                return Err(Failure::BodyTooLarge(limit))
            }
            Err(_) => return Err(Failure::BadBody),
        };
        let host = parts
            .headers
            .get(axum::http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("localhost")
            .to_string();
        let path_and_query = parts
            .uri
            .path_and_query()
            .map(|pq| pq.as_str().to_string())
            .unwrap_or_else(|| "/".into());
        let full_url = format!("http://{host}{path_and_query}");
        parts.uri = spin
            .rewrite_uri(&host, &parts.uri)
            .map_err(|_| Failure::BadBody)?;
        let headers = &mut parts.headers;
        let mut set = |name: &'static str, value: &str| {
            if let Ok(value) = HeaderValue::from_str(value) {
                headers.insert(name, value);
            }
        };
        set("spin-full-url", &full_url);
        set("spin-path-info", &spin.path_info);
        set("spin-matched-route", &spin.matched_route);
        set("spin-raw-component-route", &spin.matched_route);
        set("spin-component-route", &spin.component_route);
        set("spin-base-path", &spin.base_path);
        set("spin-client-addr", &spin.client.to_string());
        Ok(Request::from_parts(parts, Full::new(bytes)))
    }
}

/// A store for one instance of a component, with the memory cap.
fn new_store(
    engine: &Engine,
    config: &Arc<ComponentConfig>,
    services: &Services,
    memory_limit: usize,
) -> Store<RequestState> {
    let mut store = Store::new(
        engine,
        RequestState::new(config.clone(), services.clone(), memory_limit),
    );
    store.limiter(|state| &mut state.limits);
    store
}

/// 32 random bytes from the kernel, hex-encoded.
fn new_relay_token() -> Result<String> {
    use std::io::Read;
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut random| random.read_exact(&mut bytes))
        .context("reading /dev/urandom for the stream relay's token")?;
    Ok(hex::encode(bytes))
}

/// Whether a component opted into instance reuse; serving one request per instance
/// (`reuse_instances = 1`) is no reuse.
fn reuses_instances(component: &crate::manifest::Component) -> bool {
    component.tool.runner.reuse_instances.is_some_and(|n| n > 1)
}

/// Where a request runs: an instance kept from an earlier request, or a new store.
enum Guest {
    Idle(Instance),
    New(Store<RequestState>),
}

impl Guest {
    fn store(&mut self) -> &mut Store<RequestState> {
        match self {
            Guest::Idle(instance) => &mut instance.store,
            Guest::New(store) => store,
        }
    }
}

/// A guest call in progress: polled by the request's own future, or running in its own task.
/// It yields the handler's result, or a host failure (the call panicked). An inline call
/// catches its panic, so that it is a 500 as in a task, not a dropped connection.
enum Call {
    Inline(Pin<Box<dyn Future<Output = std::thread::Result<wasmtime::Result<()>>> + Send>>),
    Task(JoinHandle<wasmtime::Result<()>>),
}

impl Call {
    /// Lets the call run on after the request path returned the head: it streams the body,
    /// then gives back its instance and its permit.
    fn detach(self) {
        match self {
            Call::Inline(call) => drop(tokio::spawn(call)),
            Call::Task(_) => {}
        }
    }

    /// Ends the call now; its instance and permit are dropped with it.
    fn cancel(self) {
        match self {
            Call::Inline(call) => drop(call),
            Call::Task(task) => task.abort(),
        }
    }
}

impl Future for Call {
    type Output = Result<wasmtime::Result<()>, wasmtime::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            Call::Inline(call) => call
                .as_mut()
                .poll(cx)
                .map(|ended| ended.map_err(|_| wasmtime::Error::msg("the guest call panicked"))),
            Call::Task(task) => Pin::new(task)
                .poll(cx)
                .map(|ended| ended.map_err(Into::into)),
        }
    }
}

/// What the guest set as its response: the head (the body streams from the call), or an
/// error code.
fn answer(head: Result<Response<HyperOutgoingBody>, ErrorCode>) -> Result<Response<Body>, Failure> {
    match head {
        Ok(response) => Ok(response.map(|body| {
            Body::new(body.map_err(|code| std::io::Error::other(format!("{code:?}"))))
        })),
        Err(code) => Err(Failure::GuestErrorCode(code)),
    }
}

/// The failure of a call that ended without setting a response.
fn no_answer(
    ended: Result<wasmtime::Result<()>, wasmtime::Error>,
) -> Result<Response<Body>, Failure> {
    match ended {
        Ok(Ok(())) => Err(Failure::NoResponse),
        Ok(Err(err)) => Err(Failure::Trap(err)),
        Err(err) => Err(Failure::Host(err)),
    }
}

/// Opens every embedded database the components declare and keeps the connections idle for the
/// runner's life. Components open a connection per request; when the last connection to a
/// database closes, SQLite checkpoints the WAL into the database and removes it, with an fsync
/// of the log, the database and the folder, so without another connection open every request
/// that wrote paid for a full checkpoint (about 20 ms here) and the next one recreated the
/// log. An idle connection holds no snapshot, so the WAL bound (`sqlite::bound_wal`) still
/// truncates the log. A database that cannot be opened now is left to fail per request, as
/// before.
fn keep_databases_open(sqlite: &Sqlite, app: &App) -> Vec<rusqlite::Connection> {
    let mut names: Vec<&String> = app
        .manifest
        .component
        .values()
        .flat_map(|c| &c.sqlite_databases)
        .collect();
    names.sort();
    names.dedup();
    let mut keepers = Vec::new();
    for name in names {
        // A connection takes its share of the WAL (the lock that makes it count as open) at
        // its first read, not when it opens.
        let opened = sqlite.open(name).and_then(|conn| {
            conn.query_row("SELECT count(*) FROM sqlite_schema", [], |_| Ok(()))?;
            Ok(conn)
        });
        match opened {
            Ok(conn) => keepers.push(conn),
            Err(err) => {
                tracing::warn!(database = %name, "cannot open the embedded database: {err}")
            }
        }
    }
    keepers
}

/// Runs at every epoch tick of a guest. A guest that computes without awaiting anything
/// would otherwise keep its tokio worker until its deadline, and with as many spinning guests
/// as workers nothing else (`/health` included) would be served; so at every tick it yields
/// to the scheduler, and only its own request waits. Before the response starts the guest
/// may run until the request timeout; once it is streaming, until the stream timeout.
fn guest_deadline(
    request_timeout: std::time::Duration,
    stream_timeout: std::time::Duration,
    responded: Arc<AtomicBool>,
) -> impl FnMut(wasmtime::StoreContextMut<'_, RequestState>) -> wasmtime::Result<UpdateDeadline>
       + Send
       + Sync
       + 'static {
    let started = Instant::now();
    move |_| {
        let budget = if responded.load(Ordering::Acquire) {
            stream_timeout
        } else {
            request_timeout
        };
        if started.elapsed() >= budget {
            return Err(wasmtime::Trap::Interrupt.into());
        }
        Ok(UpdateDeadline::YieldCustom(
            1,
            Box::pin(tokio::task::yield_now()),
        ))
    }
}

struct SpinHeaders {
    path_info: String,
    matched_route: String,
    component_route: String,
    base_path: String,
    client: SocketAddr,
}

impl SpinHeaders {
    /// The guest sees the path without `BASE_PATH`, as if the app were mounted at `/`.
    fn rewrite_uri(
        &self,
        host: &str,
        uri: &axum::http::Uri,
    ) -> Result<axum::http::Uri, axum::http::Error> {
        let path_and_query = uri.path_and_query().map(|pq| pq.as_str()).unwrap_or("/");
        let stripped = path_and_query
            .strip_prefix(self.base_path.trim_end_matches('/'))
            .filter(|rest| rest.starts_with('/') || rest.starts_with('?') || rest.is_empty())
            .map(|rest| {
                if rest.is_empty() || rest.starts_with('?') {
                    format!("/{rest}")
                } else {
                    rest.to_string()
                }
            })
            .unwrap_or_else(|| path_and_query.to_string());
        axum::http::Uri::builder()
            .scheme("http")
            .authority(host)
            .path_and_query(stripped)
            .build()
    }
}

enum Failure {
    BodyTooLarge(usize),
    BadBody,
    Timeout,
    Trap(wasmtime::Error),
    GuestErrorCode(ErrorCode),
    NoResponse,
    /// The component handed its stream to a relay the runner does not offer it.
    UnofferedRelay,
    Host(wasmtime::Error),
}

impl Failure {
    fn into_response(self, component: &str) -> Response<Body> {
        match self {
            Failure::BodyTooLarge(limit) => json_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                &format!("request body exceeds the limit of {limit} bytes"),
            ),
            Failure::BadBody => json_error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "the request body could not be read",
            ),
            Failure::Timeout => {
                tracing::warn!(component, "request exceeded its deadline");
                json_error(
                    StatusCode::GATEWAY_TIMEOUT,
                    "deadline_exceeded",
                    "the request took too long",
                )
            }
            Failure::Trap(err) if is_interrupt(&err) => {
                tracing::warn!(component, "guest interrupted at its deadline");
                json_error(
                    StatusCode::GATEWAY_TIMEOUT,
                    "deadline_exceeded",
                    "the request took too long",
                )
            }
            Failure::Trap(err) => {
                tracing::error!(component, "guest trapped: {err:#}");
                json_error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "component_failed",
                    "the component failed while handling the request",
                )
            }
            Failure::GuestErrorCode(code) => {
                tracing::error!(component, "guest answered with an error: {code:?}");
                json_error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "component_failed",
                    "the component failed while handling the request",
                )
            }
            Failure::NoResponse => {
                tracing::error!(component, "guest returned without a response");
                json_error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "component_failed",
                    "the component returned no response",
                )
            }
            Failure::UnofferedRelay => {
                tracing::error!(
                    component,
                    "the component handed over a stream, but the runner does not relay its streams"
                );
                json_error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "component_failed",
                    "the component failed while handling the request",
                )
            }
            Failure::Host(err) => {
                tracing::error!(component, "host error: {err:#}");
                json_error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "internal error",
                )
            }
        }
    }
}

fn is_interrupt(err: &wasmtime::Error) -> bool {
    matches!(
        err.downcast_ref::<wasmtime::Trap>(),
        Some(wasmtime::Trap::Interrupt)
    )
}

fn add_to_linker(linker: &mut Linker<RequestState>) -> Result<()> {
    use wasmtime::component::HasSelf;
    wasmtime_wasi::p2::add_to_linker_async(linker)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(linker)?;
    crate::bindings::fermyon::spin::variables::add_to_linker::<_, HasSelf<_>>(linker, |s| s)?;
    crate::bindings::wasi::config::store::add_to_linker::<_, HasSelf<_>>(linker, |s| s)?;
    crate::bindings::spin::postgres::postgres::add_to_linker::<_, HasSelf<_>>(linker, |s| s)?;
    crate::bindings::spin::sqlite::sqlite::add_to_linker::<_, HasSelf<_>>(linker, |s| s)?;
    Ok(())
}
