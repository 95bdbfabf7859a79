//! Opt-in instance reuse: a component that declares itself stateless
//! (`[component.<id>.tool.runner] reuse_instances = N` in spin.toml) may serve up to N requests,
//! one after another, with one instance, which saves instantiating it for each. Never the
//! default: an instance keeps its memory from one request to the next, so only components
//! that keep nothing of a request or a user may opt in (chat and session never do; a test in
//! `manifest.rs` holds spin.toml to that).
//!
//! An instance goes back to its component's idle set only if its request ended cleanly: the
//! handler returned without a trap or a deadline, a response was sent, the guest released every
//! resource of the request (the resource table is empty: request, bodies, streams and outgoing
//! calls all dropped or finished), it has served fewer than N requests, and its memory grew by
//! at most [`MAX_MEMORY_GROWTH`] since it was instantiated. Anything else drops it, and the next
//! request instantiates afresh. The idle set is small (a few instances per component) and its
//! capacity is added to the instance pool's size, so idle instances never take a slot that a
//! request in flight could need.

use std::sync::Mutex;

use wasmtime::{ResourceLimiter, Store, StoreLimits};
use wasmtime_wasi_http::p2::bindings::Proxy;

use crate::state::RequestState;

/// How much an instance's linear memories may grow, in total, over its life and still be
/// reused. A reused instance keeps what its requests allocated (nothing resets its memory as a
/// fresh pool slot would be), so a guest that leaks, or one request that needed a large heap,
/// gets a fresh instance next time instead of holding that memory while idle.
pub const MAX_MEMORY_GROWTH: usize = 4 << 20;

/// The store's resource limits, which also count the bytes of linear memory granted to the
/// store's instances (wasmtime asks the limiter for every memory's initial size and for every
/// growth), so the runner can tell how much a reused instance has grown.
pub struct GuestLimits {
    limits: StoreLimits,
    memory_bytes: usize,
}

impl GuestLimits {
    pub fn new(limits: StoreLimits) -> Self {
        Self {
            limits,
            memory_bytes: 0,
        }
    }

    /// Linear memory granted to this store's instances so far, in bytes.
    pub fn memory_bytes(&self) -> usize {
        self.memory_bytes
    }
}

impl ResourceLimiter for GuestLimits {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let allowed = self.limits.memory_growing(current, desired, maximum)?;
        if allowed {
            self.memory_bytes += desired.saturating_sub(current);
        }
        Ok(allowed)
    }

    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.limits.memory_grow_failed(error)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.limits.table_growing(current, desired, maximum)
    }

    fn table_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.limits.table_grow_failed(error)
    }

    fn instances(&self) -> usize {
        self.limits.instances()
    }

    fn tables(&self) -> usize {
        self.limits.tables()
    }

    fn memories(&self) -> usize {
        self.limits.memories()
    }
}

/// A store with the component instantiated in it, between two requests.
pub struct Instance {
    pub store: Store<RequestState>,
    pub proxy: Proxy,
    /// Requests it has served.
    served: u32,
    /// Linear memory right after instantiation.
    initial_memory: usize,
}

impl Instance {
    /// A store in which `proxy` was just instantiated for a request.
    pub fn new(store: Store<RequestState>, proxy: Proxy) -> Self {
        let initial_memory = store.data().limits.memory_bytes();
        Self {
            store,
            proxy,
            served: 1,
            initial_memory,
        }
    }

    /// How many requests it has served; 1 during its first request.
    pub fn served(&self) -> u32 {
        self.served
    }
}

/// A component's idle instances, for components that opted in.
pub struct IdleInstances {
    /// Requests one instance may serve (`reuse_instances`).
    max_uses: u32,
    capacity: usize,
    idle: Mutex<Vec<Instance>>,
}

impl IdleInstances {
    pub fn new(max_uses: u32, capacity: usize) -> Self {
        Self {
            max_uses,
            capacity,
            idle: Mutex::new(Vec::with_capacity(capacity)),
        }
    }

    /// How many instances the set may hold; the pool is sized with this on top.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Instances idle now.
    pub fn idle_count(&self) -> usize {
        self.lock().len()
    }

    /// An idle instance, counted as serving one more request; `None` if none is idle.
    pub fn take(&self) -> Option<Instance> {
        let mut instance = self.lock().pop()?;
        instance.served += 1;
        Some(instance)
    }

    /// Called when an instance's handler returned without error: keeps the instance for a
    /// later request if its request ended cleanly (`responded`: the response was sent) and it
    /// may serve more; otherwise drops it, which frees its pool slot. Returns whether it was
    /// kept.
    pub fn give_back(&self, instance: Instance, responded: bool) -> bool {
        let state = instance.store.data();
        let grown = state
            .limits
            .memory_bytes()
            .saturating_sub(instance.initial_memory);
        let reusable = responded
            && state.table.is_empty()
            && instance.served < self.max_uses
            && grown <= MAX_MEMORY_GROWTH;
        if !reusable {
            return false;
        }
        let mut idle = self.lock();
        if idle.len() >= self.capacity {
            return false;
        }
        idle.push(instance);
        true
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Instance>> {
        // Nothing in the set can be left half-changed by a panic, so a poisoned lock is fine.
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Idle instances each opted-in component may keep: as many as the runtime has worker
/// threads, since that many requests run guest code at once; more would mostly sit idle.
pub fn default_capacity() -> usize {
    tokio::runtime::Handle::try_current()
        .map(|handle| handle.metrics().num_workers())
        .unwrap_or_else(|_| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1)
}
