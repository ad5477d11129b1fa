//! The GPU context: adapter, device, limits, optional features, the pipeline cache, and the
//! few primitives every op is built from (buffers, one dispatch, readback) — spec/platform.md
//! §1–§2.
//!
//! - Limits: the adapter's values are requested for the ones that size weights and workgroups,
//!   and every split is then planned from `device.limits()` (a browser may grant less than its
//!   adapter advertises). [`GpuOptions::max_binding_size`] lowers the binding limit further so
//!   tests exercise row splitting on tiny models.
//! - Features: `shader-f16` and subgroups are used when present and never required; every kernel
//!   has an f32, workgroup-reduction form (SwiftShader and wgpu's web backend have neither).
//! - Errors: wgpu reports validation, out-of-memory and device loss asynchronously. They are
//!   captured (never the default panic) and surfaced as [`GpuError`] by
//!   [`GpuContext::check`], which every readback calls.

use super::wgsl::{self, Defines};
use crate::error::{GpuError, Result};
use rustc_hash::FxHashMap;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// How to create a [`GpuContext`].
#[derive(Debug, Clone, Default)]
pub struct GpuOptions {
    /// Caps `maxStorageBufferBindingSize` below the device's (tests of the split path).
    pub max_binding_size: Option<u64>,
    /// Never use `shader-f16`, even where the adapter has it (the SwiftShader configuration).
    pub no_f16: bool,
    /// Never use subgroup operations (the browser configuration).
    pub no_subgroups: bool,
    /// Ask for a software adapter (lavapipe, SwiftShader).
    pub force_fallback: bool,
    /// Time every dispatch with GPU timestamps (native, where the adapter has timestamp
    /// queries inside passes); [`GpuContext::profile`] reports the totals per kernel.
    pub profile: bool,
    /// Keep the KV cache in f32 on the GPU (exactness tests). The default stores it as f16
    /// pairs (`shaders/kv.wgsl`), as llama.cpp's default `type_k`/`type_v` do.
    pub kv_f32: bool,
    /// Compile the shaders with every runtime check wgpu can add, as the browser always does
    /// (natively; also the environment variable `TERNLM_GPU_CHECKED=1`). Natively they are
    /// compiled as trusted code by default: [`GpuContext::shader_checks`].
    pub checked_shaders: bool,
    /// Multiply every matrix by x in f32, as the CPU's `Kernel::Reference` (exactness tests).
    /// By default a one-token product of ternary or Q4_K rows, or of a Q6_K LM head, takes x
    /// as int8 per 256 values, as llama.cpp's CPU backend and the CPU engine do
    /// ([`crate::backend::gpu::ops::gemv_quantizes_x`]).
    pub f32_activations: bool,
}

/// [`GpuContext::kernel`]'s key: the builder's name and its own key.
type KernelKey = (&'static str, [u32; 4]);

/// What the adapter is, for logs and benchmark tables.
#[derive(Debug, Clone)]
pub struct AdapterSummary {
    pub name: String,
    pub backend: String,
    pub driver: String,
    pub device_type: String,
}

/// Errors wgpu reported since the last [`GpuContext::check`].
#[derive(Default)]
struct ErrorSink {
    first: Option<GpuError>,
    lost: Option<String>,
}

/// A device and everything created once per device.
pub struct GpuContext {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub adapter: AdapterSummary,
    /// The device's limits (what was granted).
    pub limits: wgpu::Limits,
    /// `shader-f16` is enabled and used.
    pub f16: bool,
    /// Subgroup operations are enabled and used.
    pub subgroups: bool,
    /// The adapter's smallest subgroup size when [`GpuContext::subgroups`] (kernels that shuffle
    /// within a fixed number of lanes check it), else 0.
    pub subgroup_min: u32,
    /// … and its largest (most GPUs have one size: a kernel may then rely on it), else 0.
    pub subgroup_max: u32,
    /// KV caches on this device store f16 pairs (else f32): [`GpuOptions::kv_f32`].
    pub kv_f16: bool,
    /// One-token products may take x as int8: not [`GpuOptions::f32_activations`].
    pub q8_activations: bool,
    /// How shaders are compiled: natively (the default) as trusted code: naga's loop bounding
    /// off, on Vulkan its index clamping off too, workgroup memory not zeroed; `None` with
    /// every check wgpu adds (the browser's only way, and [`GpuOptions::checked_shaders`]).
    /// naga gives every loop an iteration counter and exit test, which keeps the driver from
    /// unrolling constant-trip loops: on an H200 (README, "Trusted shaders") BitNet-2B TQ2_0
    /// decodes at 777–787 tok/s trusted against ~705–710 checked, and prefill doubles.
    pub shader_checks: Option<wgpu::ShaderRuntimeChecks>,
    /// The largest byte range one storage binding may cover (after [`GpuOptions`]), a multiple
    /// of 256.
    pub max_binding: u64,
    /// One pipeline per kernel, found by the kernel's hash without building a key per
    /// dispatch (kernels whose hashes collide share the bucket).
    pipelines: Mutex<FxHashMap<u64, Vec<(Kernel, wgpu::ComputePipeline)>>>,
    /// Kernels built once per (builder, key): [`GpuContext::kernel`].
    kernels: Mutex<FxHashMap<KernelKey, Arc<Kernel>>>,
    bind_groups: Mutex<FxHashMap<BindKey, wgpu::BindGroup>>,
    params: Mutex<ParamArena>,
    staging: Mutex<Vec<wgpu::Buffer>>,
    scratch: Mutex<Option<wgpu::Buffer>>,
    arrivals: Mutex<Option<wgpu::Buffer>>,
    errors: Arc<Mutex<ErrorSink>>,
    dispatches: AtomicU64,
    /// Nanoseconds spent waiting for submitted work in readbacks (native).
    waited_ns: AtomicU64,
    /// Bytes copied back to the host by [`GpuContext::map_staging`].
    bytes_read: AtomicU64,
    profiler: Option<Mutex<Profiler>>,
}

/// Timestamps around every dispatch ([`GpuOptions::profile`]): written into a query set while
/// recording, resolved and read back at each submit, summed per kernel label.
struct Profiler {
    set: wgpu::QuerySet,
    resolve: wgpu::Buffer,
    read: wgpu::Buffer,
    labels: Vec<String>,
    /// Kernel label → (GPU seconds, dispatches).
    totals: HashMap<String, (f64, u64)>,
    period_ns: f64,
}

/// Dispatches timed per submit at most (two queries each).
const PROFILE_MAX: u32 = 2048;

impl Profiler {
    fn new(device: &wgpu::Device, queue: &wgpu::Queue) -> Profiler {
        let bytes = PROFILE_MAX as u64 * 2 * 8;
        let buf = |usage| {
            device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("profile"),
                size: bytes,
                usage,
                mapped_at_creation: false,
            })
        };
        Profiler {
            set: device.create_query_set(&wgpu::QuerySetDescriptor {
                label: Some("profile"),
                ty: wgpu::QueryType::Timestamp,
                count: PROFILE_MAX * 2,
            }),
            resolve: buf(wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC),
            read: buf(wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST),
            labels: Vec::new(),
            totals: HashMap::new(),
            period_ns: queue.get_timestamp_period() as f64,
        }
    }
}

/// A bind group's identity: the pipeline and every (binding, buffer, offset, size). Recording the
/// same op on the same buffers again (the next token) finds its bind group here.
#[derive(PartialEq, Eq, Hash)]
struct BindKey {
    pipeline: wgpu::ComputePipeline,
    entries: Vec<(wgpu::Buffer, u64, Option<wgpu::BufferSize>)>,
}

/// Bind groups kept at most; past that the cache starts over (buffers of finished sessions
/// must not be kept alive by it).
const MAX_BIND_GROUPS: usize = 16384;

/// The uniform blocks of the dispatches recorded since the last [`GpuContext::submit`]: slot `i`
/// is `PARAM_SLOT` bytes at a fixed place in fixed-size blocks, so a dispatch recorded at the
/// same place of the next token binds the same range and reuses its bind group. The bytes are
/// written with one `write_buffer` per block at submit.
#[derive(Default)]
struct ParamArena {
    blocks: Vec<wgpu::Buffer>,
    bytes: Vec<u8>,
}

/// The runtime checks of trusted shaders (native, unless [`GpuOptions::checked_shaders`]): none but
/// integer division's (a zero divisor stays defined). Their conditions hold for every kernel
/// as the ops configure it (an audit of `shaders/`; the harness, `tests/gpu_ops*.rs`, runs them
/// both ways in CI): each loop ends (bounded counters, no step of 0), each
/// workgroup variable is written before it is read, each array index stays in range. Index
/// clamping goes only on Vulkan, where wgpu enables `robustBufferAccess` (a core Vulkan 1.0
/// feature), so a storage access outside its binding still cannot reach other memory; Metal
/// and DX12 keep naga's clamping, which one switch gives to buffers and arrays alike.
fn trusted_checks(opts: &GpuOptions, backend: wgpu::Backend) -> Option<wgpu::ShaderRuntimeChecks> {
    let env = || std::env::var("TERNLM_GPU_CHECKED").is_ok_and(|v| v == "1");
    if cfg!(target_arch = "wasm32") || opts.checked_shaders || env() {
        return None;
    }
    let mut c = wgpu::ShaderRuntimeChecks::checked();
    c.force_loop_bounding = false;
    c.bounds_checks = backend != wgpu::Backend::Vulkan;
    Some(c)
}

/// The wgpu instance. Natively it is created once and kept for the process: the Vulkan loader
/// unloads the driver when the last instance goes, and NVIDIA's driver (580) fails to load again
/// after about 30 such cycles in one process ("no suitable adapter"), so an app or test that
/// makes contexts one after another would lose its GPU. In the browser an instance is only a
/// handle on `navigator.gpu`.
fn instance() -> wgpu::Instance {
    let new =
        || wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
    #[cfg(not(target_arch = "wasm32"))]
    {
        static INSTANCE: std::sync::OnceLock<wgpu::Instance> = std::sync::OnceLock::new();
        INSTANCE.get_or_init(new).clone()
    }
    #[cfg(target_arch = "wasm32")]
    new()
}

/// Bytes per uniform slot (`minUniformBufferOffsetAlignment` is at most 256).
const PARAM_SLOT: u64 = 256;
/// Slots per arena block.
const PARAM_BLOCK_SLOTS: u64 = 256;

impl GpuContext {
    /// Picks the high-performance adapter and creates a device with its limits.
    pub async fn new(opts: &GpuOptions) -> Result<GpuContext> {
        let adapter = instance()
            .request_adapter(&wgpu::RequestAdapterOptions {
                power_preference: wgpu::PowerPreference::HighPerformance,
                force_fallback_adapter: opts.force_fallback,
                compatible_surface: None,
                apply_limit_buckets: false,
            })
            .await
            .map_err(|e| GpuError::NoAdapter(e.to_string()))?;
        let info = adapter.get_info();
        let have = adapter.features();
        let mut features = wgpu::Features::empty();
        let f16 = !opts.no_f16 && have.contains(wgpu::Features::SHADER_F16);
        if f16 {
            features |= wgpu::Features::SHADER_F16;
        }
        // wgpu's web backend never reports subgroups (platform.md §2); natively they are used
        // when present.
        let subgroups = !opts.no_subgroups && have.contains(wgpu::Features::SUBGROUP);
        if subgroups {
            features |= wgpu::Features::SUBGROUP;
        }
        let ts = wgpu::Features::TIMESTAMP_QUERY
            | wgpu::Features::TIMESTAMP_QUERY_INSIDE_ENCODERS
            | wgpu::Features::TIMESTAMP_QUERY_INSIDE_PASSES;
        let profile = opts.profile && have.contains(ts);
        if profile {
            features |= ts;
        }
        let a = adapter.limits();
        let required_limits = wgpu::Limits {
            max_buffer_size: a.max_buffer_size,
            max_storage_buffer_binding_size: a.max_storage_buffer_binding_size,
            max_compute_workgroup_storage_size: a.max_compute_workgroup_storage_size,
            max_storage_buffers_per_shader_stage: a.max_storage_buffers_per_shader_stage,
            max_compute_invocations_per_workgroup: a.max_compute_invocations_per_workgroup,
            max_compute_workgroup_size_x: a.max_compute_workgroup_size_x,
            ..wgpu::Limits::defaults()
        };
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("ternlm"),
                required_features: features,
                required_limits,
                ..Default::default()
            })
            .await
            .map_err(|e| GpuError::Device(e.to_string()))?;
        let errors = Arc::new(Mutex::new(ErrorSink::default()));
        {
            let sink = errors.clone();
            device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
                // The whole source chain: naga's shader diagnostics are in the sources.
                let mut msg = e.to_string();
                let mut src = std::error::Error::source(&e);
                while let Some(s) = src {
                    msg.push_str(&format!(": {s}"));
                    src = s.source();
                }
                let err = match &e {
                    wgpu::Error::OutOfMemory { .. } => GpuError::OutOfMemory(msg),
                    _ => GpuError::Validation(msg),
                };
                let mut s = sink.lock().unwrap_or_else(|p| p.into_inner());
                s.first.get_or_insert(err);
            }));
            let sink = errors.clone();
            device.set_device_lost_callback(move |reason, msg| {
                let mut s = sink.lock().unwrap_or_else(|p| p.into_inner());
                s.lost.get_or_insert(format!("{reason:?}: {msg}"));
            });
        }
        let limits = device.limits();
        let granted = limits
            .max_storage_buffer_binding_size
            .min(limits.max_buffer_size);
        let max_binding = opts.max_binding_size.map_or(granted, |m| m.min(granted)) / 256 * 256;
        let profiler = profile.then(|| Mutex::new(Profiler::new(&device, &queue)));
        Ok(GpuContext {
            device,
            queue,
            adapter: AdapterSummary {
                name: info.name,
                backend: format!("{:?}", info.backend),
                driver: format!("{} {}", info.driver, info.driver_info),
                device_type: format!("{:?}", info.device_type),
            },
            limits,
            f16,
            subgroups,
            subgroup_min: if subgroups { info.subgroup_min_size } else { 0 },
            subgroup_max: if subgroups { info.subgroup_max_size } else { 0 },
            kv_f16: !opts.kv_f32,
            q8_activations: !opts.f32_activations,
            shader_checks: trusted_checks(opts, info.backend),
            max_binding,
            pipelines: Mutex::new(FxHashMap::default()),
            kernels: Mutex::new(FxHashMap::default()),
            bind_groups: Mutex::new(FxHashMap::default()),
            params: Mutex::new(ParamArena::default()),
            staging: Mutex::new(Vec::new()),
            scratch: Mutex::new(None),
            arrivals: Mutex::new(None),
            errors,
            dispatches: AtomicU64::new(0),
            waited_ns: AtomicU64::new(0),
            bytes_read: AtomicU64::new(0),
            profiler,
        })
    }

    /// [`GpuContext::new`], blocking (native only).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn new_blocking(opts: &GpuOptions) -> Result<GpuContext> {
        block_on(Self::new(opts))
    }

    /// The first error wgpu reported since the last check (device loss first), if any.
    pub fn check(&self) -> Result<()> {
        let mut s = self.errors.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(m) = &s.lost {
            return Err(GpuError::DeviceLost(m.clone()).into());
        }
        match s.first.take() {
            Some(e) => Err(e.into()),
            None => Ok(()),
        }
    }

    /// Dispatches recorded since the context was made (for "dispatches per token").
    pub fn dispatch_count(&self) -> u64 {
        self.dispatches.load(Ordering::Relaxed)
    }

    /// Seconds spent waiting for the GPU in readbacks since the context was made (native): with
    /// the wall time of a decode, it splits the time into host work and GPU work.
    pub fn waited_s(&self) -> f64 {
        self.waited_ns.load(Ordering::Relaxed) as f64 * 1e-9
    }

    /// Bytes read back to the host since the context was made (every readback maps a staging
    /// buffer through [`GpuContext::map_staging`]; the profiler's timestamps are not counted).
    pub fn bytes_read(&self) -> u64 {
        self.bytes_read.load(Ordering::Relaxed)
    }

    /// A storage buffer of `bytes` (rounded up to 4), zero-filled.
    pub fn storage(&self, label: &str, bytes: u64) -> wgpu::Buffer {
        self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: bytes.max(4).next_multiple_of(4),
            usage: wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_SRC
                | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        })
    }

    /// A storage buffer of at least `bytes` for what one op passes between its own dispatches
    /// (the split-K GEMM's partial sums): one buffer per device, replaced by a larger one when
    /// too small. Every op that uses it writes it before reading it, and the GPU runs the ops
    /// in recording and submission order, so they never see each other's data.
    pub fn scratch(&self, bytes: u64) -> wgpu::Buffer {
        self.slot_buffer(&self.scratch, "scratch", bytes)
    }

    /// The buffer kept in `slot`, replaced by a new (zeroed) one of `bytes` when it is smaller.
    pub(super) fn slot_buffer(
        &self,
        slot: &Mutex<Option<wgpu::Buffer>>,
        label: &str,
        bytes: u64,
    ) -> wgpu::Buffer {
        let mut s = slot.lock().unwrap_or_else(|p| p.into_inner());
        match &*s {
            Some(b) if b.size() >= bytes => b.clone(),
            _ => s.insert(self.storage(label, bytes)).clone(),
        }
    }

    /// A buffer of at least `n` u32 counters, all 0 between dispatches: a kernel that counts in
    /// it (decode attention's arrivals of splits) sets each counter back to 0 before it ends.
    /// One per device; a larger one replaces it when too small (new buffers are zeroed).
    pub fn arrivals(&self, n: usize) -> wgpu::Buffer {
        self.slot_buffer(&self.arrivals, "arrivals", 4 * n as u64)
    }

    /// A storage buffer holding `data` (padded to 4 bytes).
    pub fn storage_init(&self, label: &str, data: &[u8]) -> wgpu::Buffer {
        let buf = self.storage(label, data.len() as u64);
        self.write(&buf, 0, data);
        buf
    }

    /// Writes `data` at `offset` (the tail padded with zeros to 4 bytes).
    pub fn write(&self, buf: &wgpu::Buffer, offset: u64, data: &[u8]) {
        if data.len().is_multiple_of(4) {
            self.queue.write_buffer(buf, offset, data);
        } else {
            let mut v = data.to_vec();
            v.resize(data.len().next_multiple_of(4), 0);
            self.queue.write_buffer(buf, offset, &v);
        }
    }

    /// Hands the writes so far to the GPU and lets wgpu reclaim the staging memory of those
    /// done (natively it holds every written byte until a submission carries it; a load
    /// calls this after each tensor so that the host never holds the whole model).
    pub fn flush_writes(&self) {
        self.queue.submit(std::iter::empty());
        #[cfg(not(target_arch = "wasm32"))]
        let _ = self.device.poll(wgpu::PollType::Poll);
    }

    /// The kernel `build` makes for `key`, built on first use, so that a dispatch only looks it
    /// up (`site` names the builder: keys of different builders never meet).
    pub fn kernel(
        &self,
        site: &'static str,
        key: [u32; 4],
        build: impl FnOnce() -> Kernel,
    ) -> Arc<Kernel> {
        let mut ks = self.kernels.lock().unwrap_or_else(|p| p.into_inner());
        ks.entry((site, key))
            .or_insert_with(|| Arc::new(build()))
            .clone()
    }

    /// The pipeline of kernel `k`, created on first use.
    fn pipeline(&self, k: &Kernel) -> Result<wgpu::ComputePipeline> {
        let h = {
            use std::hash::BuildHasher;
            std::hash::BuildHasherDefault::<rustc_hash::FxHasher>::default().hash_one(k)
        };
        let lock = || self.pipelines.lock().unwrap_or_else(|p| p.into_inner());
        let found = lock()
            .get(&h)
            .and_then(|v| v.iter().find(|(key, _)| key == k).map(|(_, p)| p.clone()));
        if let Some(p) = found {
            return Ok(p);
        }
        let src = wgsl::build(k.shader, &k.defines, self)?;
        let label = format!("{}:{}{}", k.shader, k.entry, k.defines.label());
        let desc = wgpu::ShaderModuleDescriptor {
            label: Some(&label),
            source: wgpu::ShaderSource::Wgsl(src.into()),
        };
        let module = match self.shader_checks {
            // SAFETY: trusted_checks' conditions: the kernels' loops end, their indices stay
            // in range, buffer accesses are bounded by the driver where naga's are off.
            Some(checks) => unsafe { self.device.create_shader_module_trusted(desc, checks) },
            None => self.device.create_shader_module(desc),
        };
        let p = self
            .device
            .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(&label),
                layout: None,
                module: &module,
                entry_point: Some(k.entry),
                compilation_options: wgpu::PipelineCompilationOptions {
                    zero_initialize_workgroup_memory: self.shader_checks.is_none(),
                    ..Default::default()
                },
                cache: None,
            });
        lock().entry(h).or_default().push((k.clone(), p.clone()));
        Ok(p)
    }

    /// Records one dispatch into `enc`: binding 0 is the uniform `params` (when not empty),
    /// then the `buffers` in order at bindings 1, 2, … (each whole or as a byte range).
    /// Workgroup counts above the per-dimension limit are folded into `y` by the caller
    /// ([`GpuContext::grid`]).
    pub fn dispatch(
        &self,
        enc: &mut Recorder,
        k: &Kernel,
        params: &[u8],
        buffers: &[wgpu::BindingResource],
        groups: [u32; 3],
    ) -> Result<()> {
        let pipeline = self.pipeline(k)?;
        let mut entries = Vec::with_capacity(buffers.len() + 1);
        if !params.is_empty() {
            entries.push(self.param_slot(params)?);
        }
        for b in buffers {
            match b {
                wgpu::BindingResource::Buffer(b) => {
                    entries.push((b.buffer.clone(), b.offset, b.size))
                }
                _ => return Err(GpuError::Validation("only buffers are bound".into()).into()),
            }
        }
        let first = if params.is_empty() { 1 } else { 0 };
        let key = BindKey { pipeline, entries };
        let bg = {
            let mut cache = self.bind_groups.lock().unwrap_or_else(|p| p.into_inner());
            if cache.len() >= MAX_BIND_GROUPS {
                cache.clear();
            }
            match cache.get(&key) {
                Some(bg) => bg.clone(),
                None => {
                    let entries: Vec<_> = key
                        .entries
                        .iter()
                        .enumerate()
                        .map(|(i, (buffer, offset, size))| wgpu::BindGroupEntry {
                            binding: i as u32 + first,
                            resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                                buffer,
                                offset: *offset,
                                size: *size,
                            }),
                        })
                        .collect();
                    let bg = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
                        label: Some(k.entry),
                        layout: &key.pipeline.get_bind_group_layout(0),
                        entries: &entries,
                    });
                    cache.insert(
                        BindKey {
                            pipeline: key.pipeline.clone(),
                            entries: key.entries.clone(),
                        },
                        bg.clone(),
                    );
                    bg
                }
            }
        };
        let mut prof = self
            .profiler
            .as_ref()
            .map(|p| p.lock().unwrap_or_else(|p| p.into_inner()));
        let slot = prof.as_mut().and_then(|p| {
            let i = p.labels.len() as u32;
            (i < PROFILE_MAX).then(|| {
                p.labels
                    .push(format!("{}:{}{}", k.shader, k.entry, k.defines.label()));
                i
            })
        });
        let pass = enc.pass();
        if let (Some(p), Some(i)) = (&prof, slot) {
            pass.write_timestamp(&p.set, 2 * i);
        }
        pass.set_pipeline(&key.pipeline);
        pass.set_bind_group(0, &bg, &[]);
        pass.dispatch_workgroups(groups[0], groups[1], groups[2]);
        if let (Some(p), Some(i)) = (&prof, slot) {
            pass.write_timestamp(&p.set, 2 * i + 1);
        }
        self.dispatches.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Places a dispatch's uniform block in the next [`ParamArena`] slot and returns its binding.
    fn param_slot(&self, params: &[u8]) -> Result<(wgpu::Buffer, u64, Option<wgpu::BufferSize>)> {
        if params.len() as u64 > PARAM_SLOT {
            return Err(GpuError::Validation("uniform block over 256 bytes".into()).into());
        }
        let mut a = self.params.lock().unwrap_or_else(|p| p.into_inner());
        let slot = a.bytes.len() as u64 / PARAM_SLOT;
        let block = (slot / PARAM_BLOCK_SLOTS) as usize;
        if block == a.blocks.len() {
            a.blocks
                .push(self.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("params"),
                    size: PARAM_SLOT * PARAM_BLOCK_SLOTS,
                    usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                }));
        }
        a.bytes.extend_from_slice(params);
        a.bytes.resize(((slot + 1) * PARAM_SLOT) as usize, 0);
        Ok((
            a.blocks[block].clone(),
            (slot % PARAM_BLOCK_SLOTS) * PARAM_SLOT,
            wgpu::BufferSize::new(params.len() as u64),
        ))
    }

    /// Submits `enc` after writing the uniform blocks its dispatches use. Every submission of
    /// recorded dispatches goes through here.
    pub fn submit(&self, mut enc: Recorder) -> wgpu::SubmissionIndex {
        let timed = self.profiler.as_ref().map_or(0, |p| {
            let p = p.lock().unwrap_or_else(|p| p.into_inner());
            let n = p.labels.len() as u64;
            if n > 0 {
                let e = enc.encoder();
                e.resolve_query_set(&p.set, 0..2 * n as u32, &p.resolve, 0);
                e.copy_buffer_to_buffer(&p.resolve, 0, &p.read, 0, n * 16);
            }
            n
        });
        let index = self.queue.submit([self.finish(enc)]);
        if timed > 0 {
            self.collect_profile(timed);
        }
        index
    }

    /// Ends `enc` for submission, writing the uniform blocks its dispatches use (queued before
    /// any later submission). [`GpuContext::submit`] does this; a benchmark that submits the
    /// buffer itself keeps the host's encoding out of its GPU timing.
    pub fn finish(&self, enc: Recorder) -> wgpu::CommandBuffer {
        let mut a = self.params.lock().unwrap_or_else(|p| p.into_inner());
        let block = (PARAM_SLOT * PARAM_BLOCK_SLOTS) as usize;
        for (buf, bytes) in a.blocks.iter().zip(a.bytes.chunks(block)) {
            self.queue.write_buffer(buf, 0, bytes);
        }
        a.bytes.clear();
        drop(a);
        enc.finish()
    }

    /// Reads the timestamps of the `n` dispatches just submitted into the per-kernel totals.
    fn collect_profile(&self, n: u64) {
        let Some(p) = &self.profiler else { return };
        let mut p = p.lock().unwrap_or_else(|p| p.into_inner());
        let slice = p.read.slice(..n * 16);
        slice.map_async(wgpu::MapMode::Read, |_| {});
        if self
            .device
            .poll(wgpu::PollType::wait_indefinitely())
            .is_ok()
        {
            let ts: Vec<u64> = match slice.get_mapped_range() {
                Ok(v) => bytemuck::pod_collect_to_vec(&v),
                Err(_) => Vec::new(),
            };
            p.read.unmap();
            let labels = std::mem::take(&mut p.labels);
            let period = p.period_ns;
            for (label, t) in labels.into_iter().zip(ts.chunks_exact(2)) {
                let e = p.totals.entry(label).or_default();
                e.0 += t[1].saturating_sub(t[0]) as f64 * period * 1e-9;
                e.1 += 1;
            }
        }
        p.labels.clear();
    }

    /// GPU seconds and dispatch counts per kernel since the last call (empty unless the
    /// context was made with [`GpuOptions::profile`] on an adapter with timestamps), largest
    /// first; the totals start over.
    pub fn profile(&self) -> Vec<(String, f64, u64)> {
        let Some(p) = &self.profiler else {
            return Vec::new();
        };
        let mut p = p.lock().unwrap_or_else(|p| p.into_inner());
        let mut v: Vec<_> = p.totals.drain().map(|(k, (s, n))| (k, s, n)).collect();
        v.sort_by(|a, b| b.1.total_cmp(&a.1));
        v
    }

    /// A new [`Recorder`].
    pub fn recorder(&self) -> Recorder {
        Recorder {
            enc: self.device.create_command_encoder(&Default::default()),
            pass: None,
        }
    }

    /// Workgroup counts `[x, y, 1]` covering `n` groups within the per-dimension limit
    /// (platform.md §1.1: a 128k-row LM head needs a 2-D dispatch). Kernels compute the flat
    /// index as `y·x_count + x` and skip indices ≥ n.
    pub fn grid(&self, n: u32) -> [u32; 3] {
        let max = self.limits.max_compute_workgroups_per_dimension.max(1);
        if n <= max {
            [n.max(1), 1, 1]
        } else {
            [max, n.div_ceil(max), 1]
        }
    }

    /// Copies `bytes` of `buf` from `offset` back to the host: submits `enc` (if any) first.
    pub async fn read_bytes(
        &self,
        enc: Option<Recorder>,
        buf: &wgpu::Buffer,
        offset: u64,
        bytes: u64,
    ) -> Result<Vec<u8>> {
        let size = bytes.next_multiple_of(4).max(4);
        let staging = self.staging(size);
        let mut enc = enc.unwrap_or_else(|| self.recorder());
        enc.copy(buf, offset, &staging, 0, size);
        self.submit(enc);
        self.map_staging(staging, bytes).await
    }

    /// A buffer of at least `size` bytes to copy into and map for reading, reused from earlier
    /// reads when one is big enough ([`GpuContext::map_staging`] gives it back).
    pub fn staging(&self, size: u64) -> wgpu::Buffer {
        let size = size.max(4).next_multiple_of(4);
        let mut pool = self.staging.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(i) = pool.iter().position(|b| b.size() >= size) {
            return pool.swap_remove(i);
        }
        drop(pool);
        self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("readback"),
            size,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        })
    }

    /// The first `bytes` of a [`GpuContext::staging`] buffer whose copy was submitted. Awaits
    /// the mapping; natively the wait is a blocking poll, in the browser the event loop
    /// resolves it.
    pub async fn map_staging(&self, staging: wgpu::Buffer, bytes: u64) -> Result<Vec<u8>> {
        self.map_staging_at(staging, bytes, None).await
    }

    /// [`GpuContext::map_staging`] of a copy made by submission `at`: natively waits for that
    /// submission only, not for later ones (pipelined decoding keeps the next step queued).
    pub async fn map_staging_at(
        &self,
        staging: wgpu::Buffer,
        bytes: u64,
        at: Option<wgpu::SubmissionIndex>,
    ) -> Result<Vec<u8>> {
        let (tx, rx) = oneshot::channel();
        staging
            .slice(..)
            .map_async(wgpu::MapMode::Read, move |r| tx.send(r));
        #[cfg(not(target_arch = "wasm32"))]
        {
            let t = std::time::Instant::now();
            let wait = wgpu::PollType::Wait {
                submission_index: at,
                timeout: None,
            };
            self.device
                .poll(wait)
                .map_err(|e| GpuError::Readback(e.to_string()))?;
            let ns = t.elapsed().as_nanos() as u64;
            self.waited_ns.fetch_add(ns, Ordering::Relaxed);
        }
        #[cfg(target_arch = "wasm32")]
        let _ = at;
        let mapped = rx.await;
        self.check()?;
        mapped
            .ok_or_else(|| GpuError::Readback("mapping was dropped".into()))?
            .map_err(|e| GpuError::Readback(e.to_string()))?;
        let out = {
            let view = staging
                .slice(..)
                .get_mapped_range()
                .map_err(|e| GpuError::Readback(e.to_string()))?;
            view[..bytes as usize].to_vec()
        };
        self.bytes_read.fetch_add(bytes, Ordering::Relaxed);
        staging.unmap();
        let mut pool = self.staging.lock().unwrap_or_else(|p| p.into_inner());
        if pool.len() < 4 {
            pool.push(staging);
        }
        Ok(out)
    }

    /// [`GpuContext::read_bytes`] as f32 (`n` values).
    pub async fn read_f32(
        &self,
        enc: Option<Recorder>,
        buf: &wgpu::Buffer,
        offset: u64,
        n: usize,
    ) -> Result<Vec<f32>> {
        let b = self.read_bytes(enc, buf, offset, n as u64 * 4).await?;
        Ok(bytemuck::pod_collect_to_vec(&b))
    }

    /// [`GpuContext::read_f32`], blocking (native only).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn read_f32_blocking(
        &self,
        enc: Option<Recorder>,
        buf: &wgpu::Buffer,
        offset: u64,
        n: usize,
    ) -> Result<Vec<f32>> {
        block_on(self.read_f32(enc, buf, offset, n))
    }
}

/// Runs one of the GPU's futures to its end from synchronous code. Natively it blocks (a
/// readback's device poll waits for the GPU), so every synchronous API is `block_on` of its
/// async twin and the two share one implementation. The browser cannot block: there only a
/// future that ends without waiting (no GPU readback, e.g. the CPU backend's) completes, and one
/// that would wait is [`GpuError::Readback`] naming the async API to use instead.
pub fn block_on<T>(f: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    #[cfg(not(target_arch = "wasm32"))]
    {
        pollster::block_on(f)
    }
    #[cfg(target_arch = "wasm32")]
    {
        use std::task::{Context, Poll, Waker};
        let mut f = std::pin::pin!(f);
        match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(r) => r,
            Poll::Pending => Err(GpuError::Readback(
                "a GPU readback cannot block in the browser: use the async API".into(),
            )
            .into()),
        }
    }
}

/// GPU work being recorded: a command encoder with one compute pass kept open across
/// dispatches (a pass per dispatch costs host time; wgpu orders the dispatches of a pass like
/// separate passes). A copy ends the open pass.
pub struct Recorder {
    enc: wgpu::CommandEncoder,
    pass: Option<wgpu::ComputePass<'static>>,
}

impl Recorder {
    /// The open compute pass (begun if none is).
    pub fn pass(&mut self) -> &mut wgpu::ComputePass<'static> {
        let enc = &mut self.enc;
        self.pass.get_or_insert_with(|| {
            enc.begin_compute_pass(&Default::default())
                .forget_lifetime()
        })
    }

    /// Copies `size` bytes between buffers (after the dispatches recorded so far).
    pub fn copy(
        &mut self,
        src: &wgpu::Buffer,
        src_offset: u64,
        dst: &wgpu::Buffer,
        dst_offset: u64,
        size: u64,
    ) {
        self.pass = None;
        self.enc
            .copy_buffer_to_buffer(src, src_offset, dst, dst_offset, size);
    }

    /// The encoder itself (ends the open pass).
    pub fn encoder(&mut self) -> &mut wgpu::CommandEncoder {
        self.pass = None;
        &mut self.enc
    }

    pub fn finish(mut self) -> wgpu::CommandBuffer {
        self.pass = None;
        self.enc.finish()
    }
}

/// A kernel: an entry point of a shader file with its defines.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Kernel {
    pub shader: &'static str,
    pub entry: &'static str,
    pub defines: Defines,
}

impl Kernel {
    pub fn new(shader: &'static str, entry: &'static str) -> Kernel {
        Kernel {
            shader,
            entry,
            defines: Defines::default(),
        }
    }

    /// With `name` defined as `value`.
    pub fn def(mut self, name: &'static str, value: impl ToString) -> Kernel {
        self.defines.set(name, value.to_string());
        self
    }
}

/// A single-value channel whose receiver is a future (wgpu's map callback → `await`), so the
/// same readback code runs natively and in the browser.
mod oneshot {
    use std::future::Future;
    use std::pin::Pin;
    use std::sync::{Arc, Mutex};
    use std::task::{Context, Poll, Waker};

    struct Slot<T> {
        value: Option<T>,
        sent: bool,
        waker: Option<Waker>,
    }

    pub struct Sender<T>(Arc<Mutex<Slot<T>>>);
    pub struct Receiver<T>(Arc<Mutex<Slot<T>>>);

    pub fn channel<T>() -> (Sender<T>, Receiver<T>) {
        let s = Arc::new(Mutex::new(Slot {
            value: None,
            sent: false,
            waker: None,
        }));
        (Sender(s.clone()), Receiver(s))
    }

    impl<T> Sender<T> {
        pub fn send(self, v: T) {
            let mut s = self.0.lock().unwrap_or_else(|p| p.into_inner());
            s.value = Some(v);
        }
    }

    impl<T> Drop for Sender<T> {
        fn drop(&mut self) {
            let mut s = self.0.lock().unwrap_or_else(|p| p.into_inner());
            s.sent = true;
            if let Some(w) = s.waker.take() {
                w.wake();
            }
        }
    }

    /// Resolves to `None` when the sender was dropped without sending.
    impl<T> Future for Receiver<T> {
        type Output = Option<T>;
        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
            let mut s = self.0.lock().unwrap_or_else(|p| p.into_inner());
            if s.sent {
                Poll::Ready(s.value.take())
            } else {
                s.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}
