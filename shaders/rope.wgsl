// RoPE in place over rows of n_heads·head_dim (attn::rope). One thread per rotated pair; the
// cos/sin come from a table computed on the CPU (attn::rope_table), so the angles are
// bit-identical to the CPU reference's (GPU sin/cos lose accuracy at large arguments).
// The rotation is written as fma(x0, c, −x1·s), fma(x0, s, x1·c), as backend::cpu::ops::rope_head
// (bit-identical where fma fuses; lavapipe splits it into mul + add: ~10% of values 1 ulp off).

#include "common"

const WG: u32 = 256u;  // one pair per thread: a 4096-wide Q row of 64 heads is 8 workgroups

struct Params {
    n: u32,          // pairs to rotate: tokens · n_heads · half
    n_heads: u32,
    head_dim: u32,
    half: u32,       // n_rot / 2
    pos0: u32,       // position of row 0
    neox: u32,       // 0: Norm (adjacent pairs), 1: Neox (pairs i, i + half)
    groups_x: u32,
    pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> x: array<f32>;  // [tokens, n_heads·head_dim]
@group(0) @binding(2) var<storage, read> cs: array<f32>;       // [n_pos, half, 2] (cos, sin)·attn_factor

@compute @workgroup_size(WG)
fn rope(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = flat_group(wg, p.groups_x) * WG + lid;
    if (i >= p.n) {
        return;
    }
    let pair = i % p.half;
    let th = i / p.half;  // t · n_heads + head
    let t = th / p.n_heads;
    let c = cs[((p.pos0 + t) * p.half + pair) * 2u];
    let s = cs[((p.pos0 + t) * p.half + pair) * 2u + 1u];
    let base = th * p.head_dim;
    var a = base + 2u * pair;
    var b = a + 1u;
    if (p.neox != 0u) {
        a = base + pair;
        b = a + p.half;
    }
    let x0 = x[a];
    let x1 = x[b];
    x[a] = fma(x0, c, -(x1 * s));
    x[b] = fma(x0, s, x1 * c);
}
