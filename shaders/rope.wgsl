// RoPE in place over rows of n_heads·head_dim (attn::rope). One thread per rotated pair; the
// cos/sin come from a table computed on the CPU (attn::rope_table), so the angles are
// bit-identical to the CPU reference's (GPU sin/cos lose accuracy at large arguments); the
// pair indexing and the FMA form of the rotation are rope_pair.wgsl's.

#include "common"
#include "rope_pair"

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
// The KV write of a chunk: k (rotated when ROTATE) and v into the cache rows at pos0.., stored
// as kv.wgsl says (f16 pairs or f32); with ROTATE also q rotated in place, in one dispatch:
// threads [0, nq) rotate q pairs, then one thread per cache word of the chunk's K rows, then one
// per word of its V rows (a word holds KV_PER_WORD elements, so no two threads share one).
#include "kv"

struct KvParams {
    nq: u32,         // q pairs: tokens · n_head · half (0 without ROTATE)
    n_head: u32,
    head_dim: u32,
    half: u32,
    pos0: u32,
    neox: u32,
    groups_x: u32,
    k_cols: u32,     // n_head_kv · head_dim
    v_cols: u32,
    tokens: u32,
    n_rot: u32,      // rotated dims per head (2·half; `half` is 1 when none are)
    pad: u32,
}
@group(0) @binding(0) var<uniform> kp: KvParams;
#if ROTATE
@group(0) @binding(1) var<storage, read_write> q: array<f32>;  // [tokens, n_head·head_dim]
@group(0) @binding(2) var<storage, read> k: array<f32>;        // [tokens, k_cols]
@group(0) @binding(3) var<storage, read> v: array<f32>;        // [tokens, v_cols]
@group(0) @binding(4) var<storage, read> cs: array<f32>;
@group(0) @binding(5) var<storage, read_write> kc: array<kv_word>;  // [capacity, kv_words(k_cols)]
@group(0) @binding(6) var<storage, read_write> vc: array<kv_word>;  // [capacity, kv_words(v_cols)]

fn cos_sin(t: u32, pair: u32) -> vec2<f32> {
    let at = ((kp.pos0 + t) * kp.half + pair) * 2u;
    return vec2<f32>(cs[at], cs[at + 1u]);
}
#else
@group(0) @binding(1) var<storage, read> k: array<f32>;             // [tokens, k_cols]
@group(0) @binding(2) var<storage, read> v: array<f32>;             // [tokens, v_cols]
@group(0) @binding(3) var<storage, read_write> kc: array<kv_word>;  // [capacity, kv_words(k_cols)]
@group(0) @binding(4) var<storage, read_write> vc: array<kv_word>;  // [capacity, kv_words(v_cols)]
#endif

// Element c of token t's K row as the cache stores it (RoPE'd with ROTATE); 0 past the row.
fn k_value(t: u32, c: u32) -> f32 {
    if (c >= kp.k_cols) {
        return 0.0;
    }
    let i = t * kp.k_cols + c;
    var val = k[i];
#if ROTATE
    let d = c % kp.head_dim;
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
#endif
    return val;
}

fn v_value(t: u32, c: u32) -> f32 {
    if (c >= kp.v_cols) {
        return 0.0;
    }
    return v[t * kp.v_cols + c];
}

@compute @workgroup_size(WG)
fn rope_kv(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    var i = flat_group(wg, kp.groups_x) * WG + lid;
#if ROTATE
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
#endif
    let kw = kv_words(kp.k_cols);
    let nk = kp.tokens * kw;
    if (i < nk) {
        let t = i / kw;
        let c = (i % kw) * KV_PER_WORD;
#ifdef KV_F16
        let e = vec2<f32>(k_value(t, c), k_value(t, c + 1u));
#else
        let e = vec2<f32>(k_value(t, c), 0.0);
#endif
        kc[(kp.pos0 + t) * kw + i % kw] = kv_pack(e);
        return;
    }
    i -= nk;
    let vw = kv_words(kp.v_cols);
    if (i < kp.tokens * vw) {
        let t = i / vw;
        let c = (i % vw) * KV_PER_WORD;
#ifdef KV_F16
        let e = vec2<f32>(v_value(t, c), v_value(t, c + 1u));
#else
        let e = vec2<f32>(v_value(t, c), 0.0);
#endif
        vc[(kp.pos0 + t) * vw + i % vw] = kv_pack(e);
    }
}
#endif
