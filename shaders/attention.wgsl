// Causal attention of query rows over the KV cache (f16 pairs or f32, kv.wgsl) (attn::attention), with GQA and an
// optional sliding window. The CPU reference is backend::cpu::ops::attend.
//
// Split-K: the visible keys [lo, pos] of a (token, query head) are cut into `n_splits` runs of
// `split_len` keys (a multiple of WG), one workgroup each, so a decode step of a few heads still
// fills the GPU. With one split the workgroup writes the output; with several it writes its
// partial (running max m, Σ exp, unnormalized Σ p·v) and `attention_combine` merges them.
// Within a run, the workgroup walks its keys in blocks of WG:
// each thread scores one key of the block (q·k over head_dim, q held in workgroup memory), every
// thread then takes the block max itself (broadcast reads, no reduction tree), and the running
// sums are rescaled by exp(m_old − m_new) (online softmax) while each thread accumulates its
// dims of Σ_j p_j·v_j (dims lid, lid + WG, …: coalesced V reads). Two barriers per block;
// memory is O(WG + head_dim), so any context length works.

#include "common"

const WG: u32 = 64u;       // keys per block = threads: 2 NVIDIA warps; head_dim_v 128 is 2 dims each
const MAX_D: u32 = 256u;   // largest head_dim / head_dim_v (attn::attention checks)
const DPT: u32 = 4u;       // MAX_D / WG: V dims per thread

struct Params {
    tokens: u32,
    pos0: u32,        // position of query row 0
    n_head: u32,
    group: u32,       // n_head / n_head_kv: query heads per KV head
    head_dim: u32,
    head_dim_v: u32,
    k_row: u32,       // n_head_kv · head_dim
    v_row: u32,       // n_head_kv · head_dim_v
    scale: f32,       // multiplies q·k
    window: u32,      // a query at i sees keys i − window < j ≤ i; 0: no window
    groups_x: u32,
    n_splits: u32,
    split_len: u32,   // keys per split (a multiple of WG)
    pad0: u32,
    pad1: u32,
    pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
#ifdef ATTENTION
#define KV_READ 1
#include "kv"
@group(0) @binding(1) var<storage, read> q: array<f32>;        // [tokens, n_head·head_dim]
// The KV cache (kv.wgsl: f16 pairs or f32), rows of kv_stride(k_row) / kv_stride(v_row) elements
@group(0) @binding(2) var<storage, read> kc: array<kv_word>;   // [capacity, k_row], rows < pos0 + tokens valid
@group(0) @binding(3) var<storage, read> vc: array<kv_word>;   // [capacity, v_row]
@group(0) @binding(4) var<storage, read_write> o: array<f32>;  // [tokens, n_head·head_dim_v]
// [tokens·n_head, n_splits, 2 + head_dim_v]: m, l, Σ p·v of each split (n_splits > 1)
@group(0) @binding(5) var<storage, read_write> part: array<f32>;

var<workgroup> qs: array<f32, MAX_D>;  // this head's query
var<workgroup> sc: array<f32, WG>;     // the block's scores
var<workgroup> pw: array<f32, WG>;     // the block's exp(score − max)

@compute @workgroup_size(WG)
fn attention(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let wi = flat_group(wg, p.groups_x);
    if (wi >= p.tokens * p.n_head * p.n_splits) {
        return;
    }
    let i = wi / p.n_splits;  // token · n_head + head
    let split = wi % p.n_splits;
    let t = i / p.n_head;
    let h = i % p.n_head;
    let kb = (h / p.group) * p.head_dim;    // this KV head's offset in a K row
    let vb = (h / p.group) * p.head_dim_v;  // … and in a V row
    let pos = p.pos0 + t;
    var lo = 0u;
    if (p.window != 0u && pos + 1u > p.window) {
        lo = pos + 1u - p.window;
    }
    // This split's keys: [lo + split·split_len, …) ∩ [lo, pos]; possibly none.
    let first = split * p.split_len;
    let n_all = pos + 1u - lo;
    let n = select(0u, min(p.split_len, n_all - first), first < n_all);
    lo += first;

    let qb = i * p.head_dim;  // row t, head h
    for (var d = lid; d < p.head_dim; d += WG) {
        qs[d] = q[qb + d];
    }
    workgroupBarrier();

    let hd4 = p.head_dim & ~3u;
    let ks = kv_stride(p.k_row);
    let vs = kv_stride(p.v_row);
    var m = -3.0e38;  // running max (finite, so the first rescale is exp(−huge) = 0, never NaN)
    var l = 0.0;      // running Σ exp(s − m)
    var acc: array<f32, DPT>;
    for (var j0 = 0u; j0 < n; j0 += WG) {
        let nb = min(WG, n - j0);
        if (lid < nb) {
            let kr = (lo + j0 + lid) * ks + kb;
            // Four partial sums: independent FMA chains.
            var s0 = 0.0;
            var s1 = 0.0;
            var s2 = 0.0;
            var s3 = 0.0;
            for (var d = 0u; d < hd4; d += 4u) {
                s0 = fma(qs[d], kv_k(kr + d), s0);
                s1 = fma(qs[d + 1u], kv_k(kr + d + 1u), s1);
                s2 = fma(qs[d + 2u], kv_k(kr + d + 2u), s2);
                s3 = fma(qs[d + 3u], kv_k(kr + d + 3u), s3);
            }
            for (var d = hd4; d < p.head_dim; d++) {
                s0 = fma(qs[d], kv_k(kr + d), s0);
            }
            sc[lid] = ((s0 + s1) + (s2 + s3)) * p.scale;
        }
        workgroupBarrier();
        // Every thread computes the same max (the same reads in the same order).
        var mb = m;
        for (var j = 0u; j < nb; j++) {
            mb = max(mb, sc[j]);
        }
        if (lid < nb) {
            pw[lid] = exp(sc[lid] - mb);
        }
        workgroupBarrier();
        // sc was read only before that barrier; pw is read below and rewritten after the next
        // block's first barrier, which every thread reaches only once it is done with this block.
        let alpha = exp(m - mb);
        m = mb;
        l *= alpha;
        for (var e = 0u; e < DPT; e++) {
            acc[e] *= alpha;
        }
        for (var j = 0u; j < nb; j++) {
            let w = pw[j];
            l += w;
            let vr = (lo + j0 + j) * vs + vb;
            for (var e = 0u; e < DPT; e++) {
                let d = lid + e * WG;
                if (d < p.head_dim_v) {
                    acc[e] = fma(w, kv_v(vr + d), acc[e]);
                }
            }
        }
    }
    if (p.n_splits == 1u) {
        let ob = i * p.head_dim_v;
        let inv = 1.0 / l;
        for (var e = 0u; e < DPT; e++) {
            let d = lid + e * WG;
            if (d < p.head_dim_v) {
                o[ob + d] = acc[e] * inv;
            }
        }
        return;
    }
    let pb = wi * (2u + p.head_dim_v);
    if (lid == 0u) {
        part[pb] = m;
        part[pb + 1u] = l;
    }
    for (var e = 0u; e < DPT; e++) {
        let d = lid + e * WG;
        if (d < p.head_dim_v) {
            part[pb + 2u + d] = acc[e];
        }
    }
}
#endif

#ifdef COMBINE
@group(0) @binding(1) var<storage, read> part: array<f32>;
@group(0) @binding(2) var<storage, read_write> o: array<f32>;

// o = Σ_s exp(m_s − M)·acc_s / Σ_s exp(m_s − M)·l_s over the splits of one (token, head);
// empty splits have l = 0, acc = 0 and m = −3e38, so they weigh nothing.
@compute @workgroup_size(WG)
fn attention_combine(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = flat_group(wg, p.groups_x);
    if (i >= p.tokens * p.n_head) {
        return;
    }
    let stride = 2u + p.head_dim_v;
    let pb = i * p.n_splits * stride;
    var mx = -3.0e38;
    for (var s = 0u; s < p.n_splits; s++) {
        mx = max(mx, part[pb + s * stride]);
    }
    var l = 0.0;
    for (var s = 0u; s < p.n_splits; s++) {
        l += part[pb + s * stride + 1u] * exp(part[pb + s * stride] - mx);
    }
    let inv = 1.0 / l;
    for (var d = lid; d < p.head_dim_v; d += WG) {
        var a = 0.0;
        for (var s = 0u; s < p.n_splits; s++) {
            a += part[pb + s * stride + 2u + d] * exp(part[pb + s * stride] - mx);
        }
        o[i * p.head_dim_v + d] = a * inv;
    }
}
#endif
