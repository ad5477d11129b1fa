//! The GPU backend (wgpu: Vulkan/Metal/DX12 natively, WebGPU in the browser) — spec/platform.md,
//! formats.md §5.
//!
//! - [`context`]: adapter, device, limits, features, pipeline cache, dispatch and readback;
//! - [`wgsl`]: the shader sources in `shaders/` and their preprocessor;
//! - [`layout`]: weight layouts on the GPU and their upload, split by rows;
//! - [`ops`], [`gemm`], [`attn`], [`attn_prefill`]: one launcher per op, paired with the CPU
//!   reference in `backend::cpu`;
//! - [`backend`]: the [`crate::backend::Backend`] the generic decoder runs on.

pub mod attn;
pub mod attn_prefill;
pub mod backend;
pub mod context;
pub mod gemm;
pub mod layout;
pub mod ops;
pub mod wgsl;

pub use backend::{GpuBackend, GpuModel, GpuTensor, Uploads};
pub use context::{block_on, GpuContext, GpuOptions, Kernel, Recorder};
pub use layout::{upload, GpuWeight};
