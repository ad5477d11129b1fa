// Causal attention of a few query rows (decode) over the KV cache (f16 pairs or f32, kv.wgsl)
// (attn::attention), with GQA and an optional sliding window. The CPU reference is
// backend::cpu::ops::attend; 16+ query rows go to attention_prefill.wgsl.
//
// One workgroup serves GQ query heads of one KV head (its GQA group, or a chunk of it) for one
// token, so every K/V row it reads serves all of them. Split-K: the visible keys [lo, pos] are cut
// into `n_splits` runs of `split_len` keys, one workgroup each, so a decode step over a long cache
// fills the GPU; with several splits each writes its partial (max m, Σ exp, unnormalized Σ p·v)
// and `attention_combine` merges them, or under MERGE_LAST the split that finishes last. A
// workgroup walks its run in chunks of CHUNK keys:
//   1. scores: C lanes per key, each taking every C-th 4-element chunk of the K row (adjacent
//      lanes read adjacent words), dot products with the GQ queries (workgroup memory), summed
//      over the C lanes by subgroup shuffles (SG_K) or through workgroup memory (4 heads a round);
//      all CHUNK·GQ scores stay in workgroup memory;
//   2. the chunk max per head (each subgroup's running max (SG_K) or each storing thread's, then
//      GQ threads), p = exp(s − m) in place, the running sums rescaled by exp(m_old − m_new)
//      (online softmax across chunks);
//   3. O += P·V: thread (column, key lane) takes 4 dims of V and every KL-th key, four keys per
//      step (independent loads in flight), GQ accumulators; the KL lanes are summed once at the
//      end, by shuffles (SG_V) or through workgroup memory.
// Barriers are per chunk, not per key block (per pass of BK keys only without SG_K). The first
// chunk's first K pass and first V step are loaded before the queries (KV_VEC), and a split
// merge (merge_row) loads every split's partial at once, so that few loads wait on others.
//
// ROPE_KV (attn::attention_rope_kv, decode): the chunk's q, k and v come straight from the q/k/v
// projection, before RoPE, and the cache holds rows < pos0 only. Each workgroup rotates its
// queries as it loads them (times q_scale), and reads a key ≥ pos0 (a row of this chunk) from
// kn/vn, rotating k, both rounded as the cache stores them, instead of from the cache; for each
// (token, KV head) exactly one workgroup (the first chunk of heads, the split ending at the
// token's own key) writes that head's part of the token's K and V rows into the cache. No
// workgroup reads a cache row that another writes, so the RoPE + KV write dispatch (rope.wgsl
// rope_kv) is not needed. With OWN (where workgroup memory allows) the workgroup's own token's
// K/V head rows are built once into workgroup memory first, by all threads.
// Defines: GQ, HEAD_DIM, HEAD_DIM_V, KL (a power of two, KL·VCH ≤ WG, KL ≤ BK), CHUNK (a multiple
// of BK), KV_VEC (head dims multiples of 4: K/V read 4 elements a load), SG_K / SG_V (subgroups of
// at least C / KL lanes, invocation ids following local_invocation_index), ROPE_KV, OWN,
// MERGE_LAST.

#include "common"

const WG: u32 = 256u;       // threads: 8 NVIDIA warps, enough lanes for 32 keys × 8 in flight
const CWG: u32 = 256u;      // attention_combine threads (merge_row)

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
    split_len: u32,   // keys per split (a multiple of BK)
    n_chunks: u32,    // workgroups per (token, KV head, split): ceil(group / GQ)
    n_rot: u32,       // ROPE_KV: rotated dims per head (0: none)
    neox: u32,        // … 0: Norm (adjacent pairs), 1: Neox (pairs i, i + n_rot/2)
    q_scale: f32,     // … multiplies the rotated queries (gemma3; else 1)
    pad1: u32,
    pad2: u32,
    pad3: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
#ifdef ATTENTION
const C: u32 = 8u;                       // lanes per key in the scores
const BK: u32 = WG / C;                  // keys per scores pass
const KCH: u32 = (HEAD_DIM + 3u) / 4u;   // 4-element chunks of a K head row
const KW: u32 = (KCH + C - 1u) / C;      // … per lane
const VCH: u32 = (HEAD_DIM_V + 3u) / 4u; // 4-element chunks of a V head row
const R4: u32 = (GQ + 3u) / 4u;          // rounds of 4 heads (workgroup reduction of the scores)
const NEG: f32 = -3.0e38;                // "no key yet": finite, so exp(NEG − m) = 0, never NaN
// OWN_QUADS: the prologue also builds the token's own K/V head rows, a quad a thread (for kown/vown
// under OWN, for the KV write under KV_VEC).
#ifdef ROPE_KV
#ifdef OWN
#define OWN_QUADS 1
#endif
#ifdef KV_VEC
#define OWN_QUADS 1
#endif
#endif
#ifdef OWN_QUADS
const PROLOGUE: u32 = GQ * KCH + KCH + VCH;  // quads of the queries and the own K/V rows
#else
const PROLOGUE: u32 = GQ * KCH;
#endif

#ifdef KV_VEC
#define KV_READ4 1
#else
#define KV_READ 1
#endif
#include "kv"
#ifdef ROPE_KV
#define KV_ACCESS read_write
#else
#define KV_ACCESS read
#endif
@group(0) @binding(1) var<storage, read> q: array<f32>;        // [tokens, n_head·head_dim]
// The KV cache (kv.wgsl: f16 pairs or f32), rows of kv_stride(k_row) / kv_stride(v_row) elements,
// read 4 elements a word (kv_quad) when the head dims are multiples of 4; rows < pos0 + tokens
// valid (ROPE_KV: rows < pos0, and this dispatch writes rows pos0 … pos0 + tokens − 1)
#ifdef KV_VEC
@group(0) @binding(2) var<storage, KV_ACCESS> kc: array<kv_quad>;   // [capacity, k_row / 4]
@group(0) @binding(3) var<storage, KV_ACCESS> vc: array<kv_quad>;   // [capacity, v_row / 4]
#else
@group(0) @binding(2) var<storage, KV_ACCESS> kc: array<kv_word>;   // [capacity, kv_stride(k_row)]
@group(0) @binding(3) var<storage, KV_ACCESS> vc: array<kv_word>;   // [capacity, kv_stride(v_row)]
#endif
@group(0) @binding(4) var<storage, read_write> o: array<f32>;  // [tokens, n_head·head_dim_v]
// [tokens·n_head, n_splits, 2 + head_dim_v]: m, l, Σ p·v of each split (n_splits > 1)
@group(0) @binding(5) var<storage, read_write> part: array<f32>;

var<workgroup> qs: array<vec4<f32>, GQ * KCH>;  // [GQ][KCH] the queries, 0 past head_dim
var<workgroup> sc: array<f32, GQ * CHUNK>;      // [GQ][CHUNK] scores, then exp(s − m)
var<workgroup> red: array<vec4<f32>, WG>;       // workgroup reductions
var<workgroup> mx: array<f32, GQ * BK>;         // [GQ][BK] maxima per key lane; [KL][GQ] sums l
var<workgroup> mg: array<f32, GQ>;              // the chunk's max per head

#ifdef ROPE_KV
#include "rope_pair"
// The chunk's k (before RoPE) and v rows, and the layer's RoPE table (attn::rope_table).
@group(0) @binding(6) var<storage, read> kn: array<f32>;  // [tokens, k_row]
@group(0) @binding(7) var<storage, read> vn: array<f32>;  // [tokens, v_row]
@group(0) @binding(8) var<storage, read> cs: array<f32>;  // [n_pos, n_rot/2, 2] (cos, sin)
#define ARRIVALS_BINDING 9
#else
#define ARRIVALS_BINDING 6
#endif
#ifdef MERGE_LAST
// MERGE_LAST (attn::MERGE_LAST, one query head a workgroup): per (token, KV head, chunk of
// heads), how many of its splits have written their partials (GpuContext::arrivals: 0 before
// the dispatch, set back to 0 by the split that merges); no attention_combine dispatch.
@group(0) @binding(ARRIVALS_BINDING) var<storage, read_write> arrivals: array<atomic<u32>>;
var<workgroup> merging: u32;
#endif
#ifdef ROPE_KV

// The element RoPE pairs with dim `d` of a head (`d` itself past n_rot).
fn rope_other(d: u32) -> u32 {
    let half = p.n_rot / 2u;
    if (d >= p.n_rot) {
        return d;
    }
    if (p.neox != 0u) {
        return select(d - half, d + half, d < half);
    }
    return d ^ 1u;
}

// Dim `d` of a head after RoPE at `pos`, from its value `x` and its pair's other value `xo`
// (dim rope_other(d)); as rope.wgsl rotates.
fn roped(d: u32, x: f32, xo: f32, pos: u32) -> f32 {
    if (d >= p.n_rot) {
        return x;
    }
    let half = p.n_rot / 2u;
    let neox = p.neox != 0u;
    let first = select(d % 2u == 0u, d < half, neox);
    let pair = select(d / 2u, select(d - half, d, first), neox);
    let at = (pos * half + pair) * 2u;
    let c = vec2<f32>(cs[at], cs[at + 1u]);
    if (first) {
        return rotate(x, xo, c).x;
    }
    return rotate(xo, x, c).y;
}

// This workgroup's token's own K and V head rows (key pos0 + t), rotated and rounded as the cache
// stores them: built once, in parallel, before the scores, rather than by the lanes that read
// them (a long serial path for one subgroup of every scores pass and P·V step).
#ifdef OWN
var<workgroup> kown: array<vec4<f32>, KCH>;
var<workgroup> vown: array<vec4<f32>, VCH>;
var<private> own: u32 = 0xffffffffu;  // that key, once kown/vown hold it
#endif

// Element c of the chunk's K row t, rotated, as the cache stores it; 0 past the row (the pad).
fn k_new(t: u32, c: u32) -> f32 {
    if (c >= p.k_row) {
        return 0.0;
    }
    let d = c % HEAD_DIM;
    let b = t * p.k_row + c - d;
    return kv_round(roped(d, kn[b + d], kn[b + rope_other(d)], p.pos0 + t));
}

// Element c of the chunk's V row t as the cache stores it; 0 past the row.
fn v_new(t: u32, c: u32) -> f32 {
    if (c >= p.v_row) {
        return 0.0;
    }
    return kv_round(vn[t * p.v_row + c]);
}
#endif

// Elements 4·ch … 4·ch + 3 of the K head row starting at element `e0` (0 past head_dim).
fn k4(e0: u32, ch: u32) -> vec4<f32> {
#ifdef KV_VEC
    return kv_quad_f32(kc[(e0 >> 2u) + ch]);
#else
    var r = vec4<f32>(0.0);
    for (var e = 0u; e < 4u; e++) {
        let d = 4u * ch + e;
        if (d < HEAD_DIM) {
            r[e] = kv_k(e0 + d);
        }
    }
    return r;
#endif
}

// The same of V (0 past head_dim_v).
fn v4(e0: u32, ch: u32) -> vec4<f32> {
#ifdef KV_VEC
    return kv_quad_f32(vc[(e0 >> 2u) + ch]);
#else
    var r = vec4<f32>(0.0);
    for (var e = 0u; e < 4u; e++) {
        let d = 4u * ch + e;
        if (d < HEAD_DIM_V) {
            r[e] = kv_v(e0 + d);
        }
    }
    return r;
#endif
}

// Whether key `key`'s K/V rows are read from the cache (under ROPE_KV a key of this chunk, ≥ pos0,
// comes from kn/vn).
fn cached(key: u32) -> bool {
#ifdef ROPE_KV
    return key < p.pos0;
#else
    return true;
#endif
}

// Elements 4·ch … 4·ch + 3 of key `key`'s K head row (offset `kb` in the row; `kr`: its first
// element in the cache): under ROPE_KV a key of this chunk (≥ pos0) comes from kn, not the cache.
fn key4(key: u32, kr: u32, kb: u32, ch: u32) -> vec4<f32> {
#ifdef ROPE_KV
#ifdef OWN
    if (key == own) {
        return kown[ch];
    }
#endif
    if (key >= p.pos0) {
        var r = vec4<f32>(0.0);
        for (var e = 0u; e < 4u; e++) {
            let d = 4u * ch + e;
            if (d < HEAD_DIM) {
                r[e] = k_new(key - p.pos0, kb + d);
            }
        }
        return r;
    }
#endif
    return k4(kr, ch);
}

// The same of V (`vb`, `vr`).
fn val4(key: u32, vr: u32, vb: u32, ch: u32) -> vec4<f32> {
#ifdef ROPE_KV
#ifdef OWN
    if (key == own) {
        return vown[ch];
    }
#endif
    if (key >= p.pos0) {
        var r = vec4<f32>(0.0);
        for (var e = 0u; e < 4u; e++) {
            let d = 4u * ch + e;
            if (d < HEAD_DIM_V) {
                r[e] = v_new(key - p.pos0, vb + d);
            }
        }
        return r;
    }
#endif
    return v4(vr, ch);
}

#ifdef KV_VEC
// Lane lid's K quad i of the first scores pass (row quad offset kq), if inside the head row.
fn kpre_load(kq: u32, i: u32, lid: u32) -> kv_quad {
    let ch = lid % C + i * C;
    if (i < KW && ch < KCH) {
        return kc[kq + ch];
    }
    return kv_quad();
}

// Lane lid's V quad of key u of the first P·V step, if that key is in the cache.
fn vpre_load(lo: u32, nc0: u32, vs: u32, vb: u32, u: u32, lid: u32) -> kv_quad {
    let j = lid % KL + u * KL;
    let key = lo + select(0u, j, j < nc0);
    if (cached(key)) {
        return vc[((key * vs + vb) >> 2u) + lid / KL];
    }
    return kv_quad();
}

fn pick4(a: kv_quad, b: kv_quad, c: kv_quad, d: kv_quad, i: u32) -> kv_quad {
    return select(select(a, b, i == 1u), select(c, d, i == 3u), i >= 2u);
}

// pv_val, or on the first step `pre` (loaded ahead) where the key is in the cache.
fn pv_load(base: u32, j: u32, nc: u32, first: bool, pre: kv_quad, vs: u32, vb: u32, col: u32) -> vec4<f32> {
    if (first && cached(base + select(0u, j, j < nc))) {
        return kv_quad_f32(pre);
    }
    return pv_val(base, j, nc, vs, vb, col);
}
#endif

// P·V: the V quad `col` of the chunk's key j (past nc: its first key, finite).
fn pv_val(base: u32, j: u32, nc: u32, vs: u32, vb: u32, col: u32) -> vec4<f32> {
    let key = base + select(0u, j, j < nc);
    return val4(key, key * vs + vb, vb, col);
}

// The weight exp(s − m) of head g's key j of the chunk (0 past nc).
fn pv_weight(g: u32, j: u32, nc: u32) -> f32 {
    return select(0.0, sc[g * CHUNK + min(j, CHUNK - 1u)], j < nc);
}

// Dim d of the query row at b (rotated and scaled under ROPE_KV; 0 past the head or when not live).
fn q_dim(b: u32, d: u32, live: bool, pos: u32) -> f32 {
    if (!live || d >= HEAD_DIM) {
        return 0.0;
    }
#ifdef ROPE_KV
    return roped(d, q[b + d], q[b + rope_other(d)], pos) * p.q_scale;
#else
    return q[b + d];
#endif
}

// Writes dims 4·col … of query row `row` (token · n_head + head): the output, or this split's partial.
fn emit(row: u32, split: u32, col: u32, a: vec4<f32>, l: f32, m: f32) {
    if (p.n_splits == 1u) {
        let ob = row * HEAD_DIM_V;
        for (var e = 0u; e < 4u; e++) {
            let d = 4u * col + e;
            if (d < HEAD_DIM_V) {
                o[ob + d] = a[e] / l;
            }
        }
        return;
    }
    let pb = (row * p.n_splits + split) * (2u + HEAD_DIM_V);
    if (col == 0u) {
        part[pb] = m;
        part[pb + 1u] = l;
    }
    for (var e = 0u; e < 4u; e++) {
        let d = 4u * col + e;
        if (d < HEAD_DIM_V) {
            part[pb + 2u + d] = a[e];
        }
    }
}

@compute @workgroup_size(WG)
fn attention(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
#ifdef SG_K
    @builtin(subgroup_size) sg_size: u32,
    @builtin(subgroup_invocation_id) sg_id: u32,
#endif
) {
    // Uniform control flow to the end: a whole workgroup returns or none of it.
    let wi = flat_group(wg, p.groups_x);
    let n_head_kv = p.n_head / p.group;
    if (wi >= p.tokens * n_head_kv * p.n_chunks * p.n_splits) {
        return;
    }
    let split = wi % p.n_splits;
    let r = wi / p.n_splits;
    let g0 = (r % p.n_chunks) * GQ;       // first head of this chunk within the group
    let hk = (r / p.n_chunks) % n_head_kv;
    let t = r / (p.n_chunks * n_head_kv);
    let ng = min(GQ, p.group - g0);       // live heads (the last chunk may hold fewer)
    let row0 = t * p.n_head + hk * p.group + g0;  // query row (token · n_head + head) of head g0
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

    let ks = kv_stride(p.k_row);
    let vs = kv_stride(p.v_row);
    let kb = hk * HEAD_DIM;    // this KV head's offset in a K row
    let vb = hk * HEAD_DIM_V;  // … and in a V row
#ifdef KV_VEC
    // The K quads of the first scores pass and the V quads of the first P·V step (the first
    // chunk's keys as those loops pick them), loaded before the prologue so that their latency
    // overlaps its; raw, converted where used. Keys not in the cache are left to key4/val4.
    let nc0 = min(CHUNK, n);
    let key_k = lo + select(0u, lid / C, lid / C < nc0);
    // In variables, not arrays: a private array indexed in a loop may live in local memory.
    var kp0: kv_quad;
    var kp1: kv_quad;
    var kp2: kv_quad;
    var kp3: kv_quad;
    if (n > 0u && cached(key_k)) {
        let kq = (key_k * ks + kb) >> 2u;
        kp0 = kpre_load(kq, 0u, lid);
        kp1 = kpre_load(kq, 1u, lid);
        kp2 = kpre_load(kq, 2u, lid);
        kp3 = kpre_load(kq, 3u, lid);
    }
#ifdef KW_WIDE
    var kpre: array<kv_quad, KW>;
    if (n > 0u && cached(key_k)) {
        for (var i = 4u; i < KW; i++) {
            kpre[i] = kpre_load((key_k * ks + kb) >> 2u, i, lid);
        }
    }
#endif
    var vp0: kv_quad;
    var vp1: kv_quad;
    var vp2: kv_quad;
    var vp3: kv_quad;
    if (n > 0u && lid / KL < VCH) {
        vp0 = vpre_load(lo, nc0, vs, vb, 0u, lid);
        vp1 = vpre_load(lo, nc0, vs, vb, 1u, lid);
        vp2 = vpre_load(lo, nc0, vs, vb, 2u, lid);
        vp3 = vpre_load(lo, nc0, vs, vb, 3u, lid);
    }
#endif
#ifdef ROPE_KV
    // The token's K and V rows at `pos`, this head's part, are written by the first chunk of
    // heads in the split that ends at `pos` (one workgroup per token and KV head). Nothing in
    // this dispatch reads them from the cache (keys ≥ pos0 come from kn/vn).
    let writer = g0 == 0u && n > 0u && first + n == n_all;
#endif
    // The queries (rotated under ROPE_KV) and, under OWN, the token's own K and V head rows
    // (key4/val4 rotate and round them from kn/vn while `own` matches no key; the writer
    // stores them in the cache from here too): one quad a thread, all loads in flight at once.
    for (var i = lid; i < PROLOGUE; i += WG) {
        if (i < GQ * KCH) {
            let g = i / KCH;
            let b = (row0 + g) * HEAD_DIM;
            let d = 4u * (i % KCH);
            let live = g < ng;
            qs[i] = vec4<f32>(q_dim(b, d, live, pos), q_dim(b, d + 1u, live, pos),
                              q_dim(b, d + 2u, live, pos), q_dim(b, d + 3u, live, pos));
        }
#ifdef OWN_QUADS
        else if (i < GQ * KCH + KCH) {
            let ch = i - GQ * KCH;
            let kq = key4(pos, 0u, kb, ch);
#ifdef OWN
            kown[ch] = kq;
#endif
#ifdef KV_VEC
            if (writer) {
                kc[((pos * ks + kb) >> 2u) + ch] = kv_quad_pack(kq);
            }
#endif
        } else {
            let ch = i - GQ * KCH - KCH;
            let vq = val4(pos, 0u, vb, ch);
#ifdef OWN
            vown[ch] = vq;
#endif
#ifdef KV_VEC
            if (writer) {
                vc[((pos * vs + vb) >> 2u) + ch] = kv_quad_pack(vq);
            }
#endif
        }
#endif
    }
#ifdef ROPE_KV
#ifdef OWN
    own = pos;
#endif
#ifndef KV_VEC
    // Without KV_VEC the writer stores words (KV_VEC: whole quads, in the prologue).
    if (writer) {
        // The words whose first element lies in this head (an f16 word may end in the next
        // head, or in the pad of an odd row).
        for (var w = (kb + KV_PER_WORD - 1u) / KV_PER_WORD + lid;
             w < (kb + HEAD_DIM + KV_PER_WORD - 1u) / KV_PER_WORD; w += WG) {
            let c = w * KV_PER_WORD;
#ifdef KV_F16
            let e = vec2<f32>(k_new(t, c), k_new(t, c + 1u));
#else
            let e = vec2<f32>(k_new(t, c), 0.0);
#endif
            kc[pos * kv_words(p.k_row) + w] = kv_pack(e);
        }
        for (var w = (vb + KV_PER_WORD - 1u) / KV_PER_WORD + lid;
             w < (vb + HEAD_DIM_V + KV_PER_WORD - 1u) / KV_PER_WORD; w += WG) {
            let c = w * KV_PER_WORD;
#ifdef KV_F16
            let e = vec2<f32>(v_new(t, c), v_new(t, c + 1u));
#else
            let e = vec2<f32>(v_new(t, c), 0.0);
#endif
            vc[pos * kv_words(p.v_row) + w] = kv_pack(e);
        }
    }
#endif
#endif
    workgroupBarrier();
    let c = lid % C;           // scores: lane of a key
    let jj = lid / C;          // … key of the pass
    let kl = lid % KL;         // P·V: key lane
    let col = lid / KL;        // … 4-dim column

    var m_run: array<f32, GQ>;  // running max per head (the same in every thread)
    var acc: array<vec4<f32>, GQ>;
    var ls: array<f32, GQ>;     // this key lane's Σ p per head
    for (var g = 0u; g < GQ; g++) {
        m_run[g] = NEG;
    }
    for (var c0 = 0u; c0 < n; c0 += CHUNK) {
        let nc = min(CHUNK, n - c0);
        let base = lo + c0;
        // 1. Scores. mloc: the max of the scores this thread stored, per head.
        var mloc: array<f32, GQ>;
        for (var g = 0u; g < GQ; g++) {
            mloc[g] = NEG;
        }
        for (var j0 = 0u; j0 < nc; j0 += BK) {
            let j = j0 + jj;
            let live = j < nc;
            let key = base + select(0u, j, live);
            let kr = key * ks + kb;
            // Explicitly zeroed: Chromium's WebGPU (Tint, SwiftShader) zeroes a loop body's
            // `var` without initializer once, not per iteration, so a second scores pass added
            // onto the first pass's partial dot products.
            var s = array<f32, GQ>();
            for (var i = 0u; i < KW; i++) {
                let ch = c + i * C;
                if (ch < KCH) {
#ifdef KV_VEC
                    var kv: vec4<f32>;
                    if (c0 == 0u && j0 == 0u && cached(key)) {
#ifdef KW_WIDE
                        if (i >= 4u) {
                            kv = kv_quad_f32(kpre[i]);
                        } else {
                            kv = kv_quad_f32(pick4(kp0, kp1, kp2, kp3, i));
                        }
#else
                        kv = kv_quad_f32(pick4(kp0, kp1, kp2, kp3, i));
#endif
                    } else {
                        kv = key4(key, kr, kb, ch);
                    }
#else
                    let kv = key4(key, kr, kb, ch);
#endif
                    for (var g = 0u; g < GQ; g++) {
                        s[g] += dot(qs[g * KCH + ch], kv);
                    }
                }
            }
#ifdef SG_K
            // Butterfly over the C lanes of the key: each then holds the totals; lane c < GQ
            // stores head c.
            for (var g = 0u; g < GQ; g++) {
                var x = s[g];
                x += subgroupShuffleXor(x, 1u);
                x += subgroupShuffleXor(x, 2u);
                x += subgroupShuffleXor(x, 4u);
                s[g] = x;
            }
            if (live && c < GQ) {
                let x = s[c] * p.scale;
                sc[c * CHUNK + j] = x;
                mloc[c] = max(mloc[c], x);
            }
#else
            for (var rd = 0u; rd < R4; rd++) {
                var v = vec4<f32>(0.0);
                for (var e = 0u; e < 4u; e++) {
                    if (4u * rd + e < GQ) {
                        v[e] = s[4u * rd + e];
                    }
                }
                red[lid] = v;
                workgroupBarrier();
                let jr = j0 + lid;
                if (lid < BK && jr < nc) {
                    var tot = vec4<f32>(0.0);
                    for (var e = 0u; e < C; e++) {
                        tot += red[lid * C + e];
                    }
                    for (var e = 0u; e < 4u; e++) {
                        let g = 4u * rd + e;
                        if (g < GQ) {
                            let x = tot[e] * p.scale;
                            sc[g * CHUNK + jr] = x;
                            mloc[g] = max(mloc[g], x);
                        }
                    }
                }
                workgroupBarrier();
            }
#endif
        }
        // 2. The chunk max per head over the storing threads' maxima: each subgroup's (SG_K:
        // WG / sg_size of them), else the BK storing threads'.
#ifdef SG_K
        let nm = WG / sg_size;
        for (var g = 0u; g < GQ; g++) {
            let sm = subgroupMax(mloc[g]);
            if (sg_id == 0u) {
                mx[g * BK + lid / sg_size] = sm;
            }
        }
#else
        let nm = BK;
        if (lid < BK) {
            for (var g = 0u; g < GQ; g++) {
                mx[g * BK + lid] = mloc[g];
            }
        }
#endif
        workgroupBarrier();
        if (lid < GQ) {
            var mm = NEG;
            for (var e = 0u; e < nm; e++) {
                mm = max(mm, mx[lid * BK + e]);
            }
            mg[lid] = mm;
        }
        workgroupBarrier();
        for (var g = 0u; g < GQ; g++) {
            let mn = max(m_run[g], mg[g]);
            let alpha = exp(m_run[g] - mn);
            acc[g] *= alpha;
            ls[g] *= alpha;
            m_run[g] = mn;
        }
        for (var i = lid; i < GQ * CHUNK; i += WG) {
            if (i % CHUNK < nc) {
                sc[i] = exp(sc[i] - m_run[i / CHUNK]);
            }
        }
        workgroupBarrier();
        // 3. O += P·V, keys kl, kl + KL, …: four per step; keys past the chunk read its first
        // row (finite) with weight 0.
        if (col < VCH) {
            for (var j = kl; j < nc; j += 4u * KL) {
                // The step's four V quads in variables (their loads in flight together).
#ifdef KV_VEC
                let first = c0 == 0u && j == kl;
                let v0 = pv_load(base, j, nc, first, vp0, vs, vb, col);
                let v1 = pv_load(base, j + KL, nc, first, vp1, vs, vb, col);
                let v2 = pv_load(base, j + 2u * KL, nc, first, vp2, vs, vb, col);
                let v3 = pv_load(base, j + 3u * KL, nc, first, vp3, vs, vb, col);
#else
                let v0 = pv_val(base, j, nc, vs, vb, col);
                let v1 = pv_val(base, j + KL, nc, vs, vb, col);
                let v2 = pv_val(base, j + 2u * KL, nc, vs, vb, col);
                let v3 = pv_val(base, j + 3u * KL, nc, vs, vb, col);
#endif
                // Keys past the chunk weigh 0 (their V rows are finite): acc and ls unchanged.
                for (var g = 0u; g < GQ; g++) {
                    let w0 = pv_weight(g, j, nc);
                    let w1 = pv_weight(g, j + KL, nc);
                    let w2 = pv_weight(g, j + 2u * KL, nc);
                    let w3 = pv_weight(g, j + 3u * KL, nc);
                    acc[g] = fma(vec4<f32>(w0), v0, acc[g]);
                    ls[g] += w0;
                    acc[g] = fma(vec4<f32>(w1), v1, acc[g]);
                    ls[g] += w1;
                    acc[g] = fma(vec4<f32>(w2), v2, acc[g]);
                    ls[g] += w2;
                    acc[g] = fma(vec4<f32>(w3), v3, acc[g]);
                    ls[g] += w3;
                }
            }
        }
        // sc is rewritten by the next chunk's scores.
        workgroupBarrier();
    }
    // Sum the KL key lanes of each column.
#ifdef SG_V
    for (var g = 0u; g < GQ; g++) {
        var a = acc[g];
        var l = ls[g];
        for (var x = 1u; x < KL; x <<= 1u) {
            a += subgroupShuffleXor(a, x);
            l += subgroupShuffleXor(l, x);
        }
        if (kl == 0u && col < VCH && g < ng) {
            emit(row0 + g, split, col, a, l, m_run[g]);
        }
    }
#else
    // The lanes of column 0 publish Σ p (mx is free: its last reader passed a barrier).
    if (col == 0u) {
        for (var g = 0u; g < GQ; g++) {
            mx[kl * GQ + g] = ls[g];
        }
    }
    for (var g = 0u; g < GQ; g++) {
        red[lid] = acc[g];  // lid = col · KL + kl
        workgroupBarrier();
        if (lid < VCH && g < ng) {
            var a = vec4<f32>(0.0);
            var l = 0.0;
            for (var e = 0u; e < KL; e++) {
                a += red[lid * KL + e];
                l += mx[e * GQ + g];
            }
            emit(row0 + g, split, lid, a, l, m_run[g]);
        }
        workgroupBarrier();
    }
#endif
#ifdef MERGE_LAST
    // With several splits the last of the heads' splits to arrive merges them all. The barrier
    // before the arrival is a device-scope release of this workgroup's partials (naga:
    // OpControlBarrier, Device memory scope, AcquireRelease), the one after it the merger's
    // acquire of the others'.
    if (p.n_splits > 1u) {
        storageBarrier();
        if (lid == 0u) {
            merging = u32(atomicAdd(&arrivals[r], 1u) == p.n_splits - 1u);
        }
        if (workgroupUniformLoad(&merging) != 0u) {
            storageBarrier();
            for (var g = 0u; g < ng; g++) {
                merge_row(row0 + g, lid, WG);
            }
            if (lid == 0u) {
                atomicStore(&arrivals[r], 0u);
            }
        }
    }
#endif
}
#endif

#ifdef COMBINE
@group(0) @binding(1) var<storage, read> part: array<f32>;
@group(0) @binding(2) var<storage, read_write> o: array<f32>;
var<workgroup> red: array<vec4<f32>, CWG>;

@compute @workgroup_size(CWG)
fn attention_combine(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = flat_group(wg, p.groups_x);
    if (i >= p.tokens * p.n_head) {
        return;
    }
    merge_row(i, lid, CWG);
}
#endif

// o row i (token · n_head + head) = Σ_s exp(m_s − M)·acc_s / Σ_s exp(m_s − M)·l_s over its
// splits' partials (empty splits have l = 0, acc = 0 and m = −3e38, so they weigh nothing), by
// nt threads (at least ⌈head_dim_v / 4⌉, at most red's length) in uniform control flow:
// thread (lane sl, quad qd) merges splits sl, sl + SL, … of 4 dims online, loading a split's m,
// l and dims in one go (so ⌈n_splits / SL⌉ dependent loads, not a chain over every split), and
// the SL lanes are merged through workgroup memory. For attention_combine and MERGE_LAST (both
// sections declare part, o and red).
const MERGE_SL: u32 = 8u;
var<workgroup> mlw: array<vec2<f32>, MERGE_SL>;  // each lane's (max, Σ p)

// Dim d of the partial at b (0 past dv). Built into a vec4 from values, not by writing its
// components in a loop (a vector indexed so may live in local memory).
fn part_dim(b: u32, d: u32, dv: u32) -> f32 {
    return select(0.0, part[b + 2u + min(d, dv - 1u)], d < dv);
}

fn merge_row(i: u32, lid: u32, nt: u32) {
    let dv = p.head_dim_v;
    let stride = 2u + dv;
    let pb = i * p.n_splits * stride;
    let nq = (dv + 3u) / 4u;
    let sl_n = min(MERGE_SL, nt / nq);
    let sl = lid / nq;
    let qd = lid % nq;
    var m = -3.0e38;
    var l = 0.0;
    var a = vec4<f32>(0.0);
    if (sl < sl_n) {
        for (var s = sl; s < p.n_splits; s += sl_n) {
            let b = pb + s * stride;
            let ms = part[b];
            let ls = part[b + 1u];
            let d = 4u * qd;
            let v = vec4<f32>(part_dim(b, d, dv), part_dim(b, d + 1u, dv), part_dim(b, d + 2u, dv),
                              part_dim(b, d + 3u, dv));
            let mn = max(m, ms);
            let c_old = exp(m - mn);
            let c_new = exp(ms - mn);
            a = a * c_old + v * c_new;
            l = l * c_old + ls * c_new;
            m = mn;
        }
        red[lid] = a;
        if (qd == 0u) {
            mlw[sl] = vec2<f32>(m, l);
        }
    }
    workgroupBarrier();
    if (lid < nq) {
        var mm = -3.0e38;
        for (var j = 0u; j < sl_n; j++) {
            mm = max(mm, mlw[j].x);
        }
        var ll = 0.0;
        var aa = vec4<f32>(0.0);
        for (var j = 0u; j < sl_n; j++) {
            let wj = exp(mlw[j].x - mm);
            ll += mlw[j].y * wj;
            aa += red[j * nq + lid] * wj;
        }
        for (var e = 0u; e < 4u; e++) {
            let d = 4u * lid + e;
            if (d < dv) {
                o[i * dv + d] = aa[e] / ll;
            }
        }
    }
    workgroupBarrier();
}
