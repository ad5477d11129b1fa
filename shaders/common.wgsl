// Shared helpers, #included by the kernels.

// The flat workgroup index of a 2-D grid (GpuContext::grid): y·groups_x + x.
fn flat_group(wg: vec3<u32>, groups_x: u32) -> u32 {
    return wg.y * groups_x + wg.x;
}

// Byte `i` (0..3) of word `w`, little-endian.
fn byte_of(w: u32, i: u32) -> u32 {
    return (w >> (8u * i)) & 0xffu;
}

// The f16 in the low (`hi = false`) or high half of `w`, as f32 (subnormals, inf, NaN exact).
fn half_of(w: u32, hi: bool) -> f32 {
    return unpack2x16float(select(w, w >> 16u, hi)).x;
}

// The bf16 in the low or high half of `w`, as f32 (bf16 is the top half of an f32).
fn bf16_of(w: u32, hi: bool) -> f32 {
    return bitcast<f32>(select(w << 16u, w & 0xffff0000u, hi));
}

// act(g) as ggml computes it: 0 SiLU (ggml_silu_f32), 1 GELU (ggml_gelu_f32, tanh form), 2 ReLU².
fn activation(kind: u32, g: f32) -> f32 {
    if (kind == 0u) {
        return g / (1.0 + exp(-g));
    } else if (kind == 1u) {
        // tanh overflows to NaN in some implementations for large |z|: clamp (tanh(±10) = ±1 in f32).
        let z = clamp(0.7978846 * g * (1.0 + 0.044715 * g * g), -10.0, 10.0);
        return 0.5 * g * (1.0 + tanh(z));
    }
    let r = max(g, 0.0);
    return r * r;
}
