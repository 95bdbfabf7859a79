//! What one request's `Store` holds: the WASI contexts, the resource table, the memory limiter
//! and handles to the shared host capabilities.

use std::sync::Arc;

use wasmtime::component::ResourceTable;
use wasmtime::StoreLimitsBuilder;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::instance_reuse::GuestLimits;
use crate::outbound_http::{AllowedHosts, OutboundClient, OutboundHttp};
use crate::postgres::Postgres;
use crate::sqlite::Sqlite;
use crate::stdio::GuestLog;
use crate::variables::ComponentVariables;

/// Resources (fields, requests, streams, pollables, connections...) one request's guest may
/// hold at once. They live in host memory, outside the guest's memory limit, so a guest that
/// leaks them would otherwise grow the runner without bound; the guest that asks for one more
/// traps, which fails its request only. Our components hold a few dozen.
pub const MAX_GUEST_RESOURCES: usize = 1024;

/// Everything about a component that is fixed at start-up.
#[derive(Debug)]
pub struct ComponentConfig {
    pub id: Arc<str>,
    pub variables: ComponentVariables,
    pub allowed_hosts: Arc<AllowedHosts>,
    pub sqlite_databases: Vec<String>,
    pub environment: Vec<(String, String)>,
}

/// Process-wide services shared by every request.
#[derive(Clone)]
pub struct Services {
    pub outbound: OutboundClient,
    pub postgres: Postgres,
    pub sqlite: Sqlite,
}

pub struct RequestState {
    pub component: Arc<ComponentConfig>,
    pub services: Services,
    pub limits: GuestLimits,
    pub table: ResourceTable,
    /// SQLite connections the guest holds open (see [`crate::sqlite::Turn`]).
    pub sqlite_connections_held: usize,
    wasi: WasiCtx,
    http: WasiHttpCtx,
    hooks: OutboundHttp,
}

impl RequestState {
    pub fn new(component: Arc<ComponentConfig>, services: Services, memory_limit: usize) -> Self {
        let mut wasi = WasiCtx::builder();
        wasi.stdout(GuestLog::stdout(component.id.clone()))
            .stderr(GuestLog::stderr(component.id.clone()));
        for (key, value) in &component.environment {
            wasi.env(key, value);
        }
        let hooks = OutboundHttp {
            component: component.id.clone(),
            allowed: component.allowed_hosts.clone(),
            client: services.outbound.clone(),
        };
        let mut table = ResourceTable::new();
        table.set_max_capacity(MAX_GUEST_RESOURCES);
        Self {
            limits: GuestLimits::new(
                StoreLimitsBuilder::new()
                    .memory_size(memory_limit)
                    .instances(32)
                    .trap_on_grow_failure(false)
                    .build(),
            ),
            table,
            sqlite_connections_held: 0,
            wasi: wasi.build(),
            http: WasiHttpCtx::new(),
            hooks,
            component,
            services,
        }
    }
}

impl WasiView for RequestState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for RequestState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}
