//! The wasmtime engine: configuration (pooling allocator, copy-on-write memory images, epoch
//! interruption), the epoch ticker, and compilation with an on-disk cache of compiled
//! components keyed by the engine's compatibility hash and the `.wasm` file's hash, so a
//! restart skips Cranelift entirely.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};
use wasmtime::component::Component;
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// How often the epoch advances. At every tick a running guest yields to the scheduler and its
/// deadline is checked, so a guest that never awaits holds a worker for at most one tick and
/// overruns its deadline by at most one tick.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// How much of a pooled memory or table slot is reset in place rather than returned to the
/// kernel; more than the components touch per request (a chat touches a few hundred KiB).
const KEEP_RESIDENT: usize = 1 << 20;

pub struct EngineLimits {
    /// Instances that may be alive at once (the pool's size): one per request in flight plus
    /// every idle instance kept for reuse (`instance_reuse`).
    pub max_instances: u32,
    /// Largest linear memory one instance may grow to.
    pub memory_limit_bytes: usize,
}

pub fn build(limits: &EngineLimits) -> Result<Engine> {
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(limits.max_instances)
        // spin-sdk components carry a few core instances (the adapter, the main module, shims).
        .total_core_instances(limits.max_instances * 8)
        .total_memories(limits.max_instances * 2)
        .total_tables(limits.max_instances * 4)
        .total_stacks(limits.max_instances)
        .max_memories_per_component(4)
        .max_component_instance_size(1 << 20)
        .max_memory_size(limits.memory_limit_bytes)
        // Keep recently used slots warm: their memory is reused without new page faults.
        .max_unused_warm_slots(limits.max_instances.min(64));
    // A slot's memory and tables are reset for the next instance by zeroing, in place, the
    // pages the last one touched (found with the PAGEMAP_SCAN ioctl, Linux 6.7+), instead of
    // `madvise(MADV_DONTNEED)`: the pages stay mapped, so the next request takes no page faults
    // and the kernel sends no TLB-shootdown interrupts to the other cores. Measured with
    // bench/health.sh: about 9 page faults per /health request before, none after. Without the
    // ioctl (older kernels) wasmtime falls back to zeroing the first `KEEP_RESIDENT` bytes and
    // `madvise` for the rest.
    pool.linear_memory_keep_resident(KEEP_RESIDENT)
        .table_keep_resident(KEEP_RESIDENT)
        .pagemap_scan(wasmtime::Enabled::Auto);

    let mut config = Config::new();
    config
        .epoch_interruption(true)
        .memory_init_cow(true)
        .parallel_compilation(true)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    Engine::new(&config)
        .map_err(anyhow::Error::from)
        .context("cannot create the wasmtime engine")
}

/// Advances the engine's epoch every [`EPOCH_TICK`] until the returned guard is dropped.
pub struct EpochTicker {
    stop: Arc<AtomicBool>,
}

impl EpochTicker {
    pub fn start(engine: &Engine) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let engine = engine.weak();
        let flag = stop.clone();
        std::thread::Builder::new()
            .name("epoch-ticker".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    match engine.upgrade() {
                        Some(engine) => engine.increment_epoch(),
                        None => break,
                    }
                }
            })
            .expect("spawning the epoch thread");
        Self { stop }
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Loads a component, from the compile cache when it holds this exact build.
pub fn load_component(engine: &Engine, wasm_path: &Path, cache_dir: &Path) -> Result<Component> {
    let wasm = std::fs::read(wasm_path).with_context(|| {
        format!(
            "cannot read component {} (build the components first: see README)",
            wasm_path.display()
        )
    })?;
    let cached = cache_path(engine, &wasm, cache_dir);
    if cached.exists() {
        // SAFETY: the file was written by `Component::serialize` of an engine with the same
        // compatibility hash (it is part of the file name), in a directory only we write.
        match unsafe { Component::deserialize_file(engine, &cached) } {
            Ok(component) => return Ok(component),
            Err(err) => {
                tracing::warn!(path = %cached.display(), "ignoring unusable compile cache entry: {err:#}")
            }
        }
    }
    let component = Component::new(engine, &wasm)
        .map_err(anyhow::Error::from)
        .with_context(|| format!("cannot compile component {}", wasm_path.display()))?;
    if let Err(err) = store_in_cache(&component, &cached) {
        tracing::warn!(path = %cached.display(), "cannot write compile cache: {err:#}");
    }
    Ok(component)
}

fn cache_path(engine: &Engine, wasm: &[u8], cache_dir: &Path) -> PathBuf {
    let mut engine_hash = std::collections::hash_map::DefaultHasher::new();
    engine
        .precompile_compatibility_hash()
        .hash(&mut engine_hash);
    let digest = Sha256::new()
        .chain_update(wasmtime_version().as_bytes())
        .chain_update(engine_hash.finish().to_le_bytes())
        .chain_update(wasm)
        .finalize();
    cache_dir.join(format!("{}.cwasm", hex::encode(&digest[..16])))
}

fn store_in_cache(component: &Component, path: &Path) -> Result<()> {
    let dir = path.parent().context("cache path has no folder")?;
    std::fs::create_dir_all(dir)?;
    let bytes = component.serialize()?;
    // Write then rename, so a concurrent start never reads half a file.
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

fn wasmtime_version() -> &'static str {
    // Bumped with the dependency; also covered by the compatibility hash.
    "wasmtime-48.0.8"
}

/// Compiles every given component into the cache (the container build runs this, so the
/// image starts without compiling).
pub fn precompile(engine: &Engine, wasm_paths: &[PathBuf], cache_dir: &Path) -> Result<()> {
    for path in wasm_paths {
        load_component(engine, path, cache_dir)?;
    }
    Ok(())
}
