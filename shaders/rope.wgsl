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

// The two indices of pair `pair` of the head starting at `base`: adjacent (Norm) or `half`
// apart (Neox).
fn pair_of(base: u32, pair: u32, half: u32, neox: bool) -> vec2<u32> {
    if (neox) {
        return vec2<u32>(base + pair, base + pair + half);
    }
    return vec2<u32>(base + 2u * pair, base + 2u * pair + 1u);
}

// (x0, x1) rotated by (cos, sin) = cs, in the FMA form of the CPU reference.
fn rotate(x0: f32, x1: f32, cs: vec2<f32>) -> vec2<f32> {
    return vec2<f32>(fma(x0, cs.x, -(x1 * cs.y)), fma(x0, cs.y, x1 * cs.x));
}

#ifdef ROPE
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
    let at = ((p.pos0 + t) * p.half + pair) * 2u;
    let ab = pair_of(th * p.head_dim, pair, p.half, p.neox != 0u);
    let r = rotate(x[ab.x], x[ab.y], vec2<f32>(cs[at], cs[at + 1u]));
    x[ab.x] = r.x;
    x[ab.y] = r.y;
}
#endif

#ifdef ROPE_KV
// RoPE of q in place and of k into the KV cache, v copied into the cache, both also into the
// chunk's K/V rows (backend.rs KvOut), in one dispatch: threads [0, nq) rotate q pairs, then
// one thread per K element, then one per V element.
struct KvParams {
    nq: u32,         // q pairs: tokens · n_head · half
    n_head: u32,
    head_dim: u32,
    half: u32,
    pos0: u32,
    neox: u32,
    groups_x: u32,
    k_cols: u32,     // n_head_kv · head_dim
    v_cols: u32,
    tokens: u32,
    out_k: u32,      // word offset of this layer's K rows in `out` (V rows follow)
    n_rot: u32,      // rotated dims per head (2·half; `half` is 1 when none are)
}
@group(0) @binding(0) var<uniform> kp: KvParams;
@group(0) @binding(1) var<storage, read_write> q: array<f32>;   // [tokens, n_head·head_dim]
@group(0) @binding(2) var<storage, read> k: array<f32>;         // [tokens, k_cols]
@group(0) @binding(3) var<storage, read> v: array<f32>;         // [tokens, v_cols]
@group(0) @binding(4) var<storage, read> cs: array<f32>;
@group(0) @binding(5) var<storage, read_write> kc: array<f32>;  // [capacity, k_cols]
@group(0) @binding(6) var<storage, read_write> vc: array<f32>;  // [capacity, v_cols]
@group(0) @binding(7) var<storage, read_write> out: array<f32>;

fn cos_sin(t: u32, pair: u32) -> vec2<f32> {
    let at = ((kp.pos0 + t) * kp.half + pair) * 2u;
    return vec2<f32>(cs[at], cs[at + 1u]);
}

@compute @workgroup_size(WG)
fn rope_kv(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    var i = flat_group(wg, kp.groups_x) * WG + lid;
    if (i < kp.nq) {
        let pair = i % kp.half;
        let th = i / kp.half;
        let ab = pair_of(th * kp.head_dim, pair, kp.half, kp.neox != 0u);
        let r = rotate(q[ab.x], q[ab.y], cos_sin(th / kp.n_head, pair));
        q[ab.x] = r.x;
        q[ab.y] = r.y;
        return;
    }
    i -= kp.nq;
    let nk = kp.tokens * kp.k_cols;
    if (i < nk) {
        let t = i / kp.k_cols;
        let d = i % kp.head_dim;
        var val = k[i];
        if (d < kp.n_rot) {
            // This element's pair: (first, second) and which of the two it is.
            var pair: u32;
            var first: bool;
            var other: u32;
            if (kp.neox != 0u) {
                first = d < kp.half;
                pair = select(d - kp.half, d, first);
                other = select(i - kp.half, i + kp.half, first);
            } else {
                first = d % 2u == 0u;
                pair = d / 2u;
                other = select(i - 1u, i + 1u, first);
            }
            if (first) {
                val = rotate(val, k[other], cos_sin(t, pair)).x;
            } else {
                val = rotate(k[other], val, cos_sin(t, pair)).y;
            }
        }
        kc[(kp.pos0 + t) * kp.k_cols + i % kp.k_cols] = val;
        out[kp.out_k + i] = val;
        return;
    }
    i -= nk;
    if (i < kp.tokens * kp.v_cols) {
        let t = i / kp.v_cols;
        let val = v[i];
        vc[(kp.pos0 + t) * kp.v_cols + i % kp.v_cols] = val;
        out[kp.out_k + nk + i] = val;
    }
}
#endif
