// y[row0 + r] = mult · Σ_k W[r][k]·x[k] for one token: ops::matmul's decode path, with matmul.wgsl's
// fusions (NORM, GLU, RESIDUAL, a row range from w_row0), and SPLIT (ops::matmul_split): the
// outputs of a joined weight (q, k and v rows) written to up to three buffers.
//
// A workgroup is NG = WG / TPR row groups of TPR threads (WG and TPR, defines, are picked by the
// host: ops::gemv_kernel). A group computes four weight rows at once — four outputs, or under GLU two gate
// rows and their two up rows — its threads striding over the rows' units (UE consecutive stored
// elements of a type, one to a few u32 loads). Each unit's x values are loaded once, as vec4s, and
// used for the four rows; no value lives in a per-thread array (those spill to local memory).
// Types without a section of their own take dequant.wgsl's `dq` one group at a time (GENERIC4 for
// the plain types, whose rows may end inside a vec4: XSCALAR; GENERIC16 for the rest).
// Q8X (ternary rows and Q6_K LM heads: ops::gemv_quantizes_x): the workgroup first quantizes x to
// int8 in workgroup memory (quantize_x) and the units are int8 dot products (dot4I8Packed) against
// it, their words loaded by unit_words (the first two units' before quantize_x); XQ_SG (one
// known subgroup size): a subgroup quantizes a whole 256-value block, without barriers.
// T2R_ROW_SCALE (Q8X over a T2R weight of at most three runs of rows of one scale:
// GpuWeight::scale_runs): a row's scale, from the parameters, multiplies its sums once, instead
// of a scale loaded for each unit.
// SPLITK (S, ternary Q8X, natively: ops::gemv_splits): K cut into S slices of whole 256-value
// blocks, a workgroup per (slice, block of rows), so that every thread's code words are loaded
// before x is quantized; each writes its row groups' sums and its slice's Σ x² to `ks`, and the
// last of a row block's S workgroups to arrive adds them in slice order and writes the outputs
// (decode attention's MERGE_LAST pattern, with the same arrivals counters).

#include "common"

const WG: u32 = WGS;
const NG: u32 = WG / TPR;
#ifdef GLU
const RPG: u32 = 2u;  // outputs of a row group
#else
const RPG: u32 = 4u;
#endif

struct Params {
    rows: u32,       // outputs of this dispatch (GLU: gate rows)
    cols: u32,       // K
    tokens: u32,     // 1
    row_words: u32,  // u32 words per stored row
    groups_x: u32,
    row0: u32,       // output index of this part's first row
    y_cols: u32,
    aux: u32,        // word offset of a second region (T2R scales)
    mult: f32,       // tensor multiplier (T2R from I2_S), else 1
    eps: f32,        // NORM
    act: u32,        // GLU: common.wgsl activation kind
    w_row0: u32,     // first weight row used
    split1: u32,     // SPLIT: outputs [0, split1) go to y, [split1, split2) to y1, the rest to y2
    split2: u32,
    run1: u32,       // T2R_ROW_SCALE: the rows where the second and third runs of one scale start
    run2: u32,
    run_s: vec3<f32>,  // … and the runs' scales
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> w: array<u32>;
#ifdef XSCALAR
@group(0) @binding(2) var<storage, read> x: array<f32>;
#else
@group(0) @binding(2) var<storage, read> x: array<vec4<f32>>;
#endif
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
#ifdef SPLIT
@group(0) @binding(4) var<storage, read_write> y1: array<f32>;
@group(0) @binding(5) var<storage, read_write> y2: array<f32>;
#define NW_BINDING 6
#else
#define NW_BINDING 4
#endif
#ifdef NORM
#ifdef XSCALAR
@group(0) @binding(NW_BINDING) var<storage, read> nw: array<f32>;
#else
@group(0) @binding(NW_BINDING) var<storage, read> nw: array<vec4<f32>>;
#endif
#endif
#ifdef SPLITK
// The bindings after NW_BINDING's (and nw's under NORM).
#ifdef SPLIT
#ifdef NORM
#define KS_BINDING 7
#define KA_BINDING 8
#else
#define KS_BINDING 6
#define KA_BINDING 7
#endif
#else
#ifdef NORM
#define KS_BINDING 5
#define KA_BINDING 6
#else
#define KS_BINDING 4
#define KA_BINDING 5
#endif
#endif
// Per (row block, slice): NG row groups' vec4 sums, then the slice's Σ x² (in .x).
@group(0) @binding(KS_BINDING) var<storage, read_write> ks: array<vec4<f32>>;
@group(0) @binding(KA_BINDING) var<storage, read_write> arrivals: array<atomic<u32>>;
var<workgroup> merging: u32;
#endif
// This workgroup's slice of K (SPLITK): its first x vec4 and first unit (code word) of a row.
var<private> x_base: u32 = 0u;
var<private> u_base: u32 = 0u;

#include "dequant"

var<workgroup> part: array<vec4<f32>, WG>;

#ifdef Q8X
// Q8X (ops::gemv_kernel: K a multiple of 256, K / 4 ≤ XQ_N): x (normalized under NORM, up to the
// RMS factor, which is applied to the sums) quantized per 256 values as ggml's Q8_K and the CPU
// engine quantize it for ternary weights — d = max|x| / 127, q = round_half_even(x / d) — once
// per workgroup, then read from here as packed int8.
var<workgroup> xq: array<u32, XQ_N>;
var<workgroup> xd: array<f32, XQ_N / 64u>;
const ONES: u32 = 0x01010101u;  // dot4I8Packed(q, ONES) = Σ of q's four int8
// xq[c] = x vec4 c (v) quantized with its block's max |x| (amax).
fn store_q(c: u32, v: vec4<f32>, amax: f32) {
    let id = select(0.0, 127.0 / amax, amax > 0.0);
    xq[c] = pack4xI8(vec4<i32>(round(v * id)));
}

fn abs_max4(v: vec4<f32>) -> f32 {
    return max(max(abs(v.x), abs(v.y)), max(abs(v.z), abs(v.w)));
}

#ifdef XQ_SG
// The subgroup size is XQ_SG on this device (its smallest and largest:
// ops::gemv_subgroup_quantize) and divides 64: a subgroup quantizes a whole 256-value block at a
// time (PER vec4 a lane), its max by subgroupMax, with no barrier until the end, and the next
// block's loads are issued before this one is quantized, so that their latencies overlap.
const PER: u32 = 64u / XQ_SG;
const NSUB: u32 = WG / XQ_SG;
const NB: u32 = XQ_N / 64u;
#ifdef NORM
var<workgroup> xss: array<f32, NSUB>;  // each subgroup's Σ x² (the RMS factor's)
#endif

// A lane's PER (1 to 8) vec4s of a block, in variables: a private array indexed in a loop may
// live in local memory (NVIDIA). Those past PER stay 0.
struct XBlock {
    v0: vec4<f32>, v1: vec4<f32>, v2: vec4<f32>, v3: vec4<f32>,
    v4: vec4<f32>, v5: vec4<f32>, v6: vec4<f32>, v7: vec4<f32>,
}

// Lane sgi's vec4s of block b (zeros past the last block: nothing loaded, nothing added to ssq).
fn load_block(b: u32) -> XBlock {
    var v: XBlock;
    if (b < NB) {
        let c = 64u * b + sgi;
        v.v0 = xv(c);
        if (PER > 1u) {
            v.v1 = xv(c + XQ_SG);
        }
        if (PER > 2u) {
            v.v2 = xv(c + 2u * XQ_SG);
            v.v3 = xv(c + 3u * XQ_SG);
        }
        if (PER > 4u) {
            v.v4 = xv(c + 4u * XQ_SG);
            v.v5 = xv(c + 5u * XQ_SG);
            v.v6 = xv(c + 6u * XQ_SG);
            v.v7 = xv(c + 7u * XQ_SG);
        }
    }
    return v;
}

fn block_abs_max(v: XBlock) -> f32 {
    return max(max(max(abs_max4(v.v0), abs_max4(v.v1)), max(abs_max4(v.v2), abs_max4(v.v3))),
               max(max(abs_max4(v.v4), abs_max4(v.v5)), max(abs_max4(v.v6), abs_max4(v.v7))));
}

fn store_block(b: u32, v: XBlock, amax: f32) {
    let c = 64u * b + sgi;
    store_q(c, v.v0, amax);
    if (PER > 1u) {
        store_q(c + XQ_SG, v.v1, amax);
    }
    if (PER > 2u) {
        store_q(c + 2u * XQ_SG, v.v2, amax);
        store_q(c + 3u * XQ_SG, v.v3, amax);
    }
    if (PER > 4u) {
        store_q(c + 4u * XQ_SG, v.v4, amax);
        store_q(c + 5u * XQ_SG, v.v5, amax);
        store_q(c + 6u * XQ_SG, v.v6, amax);
        store_q(c + 7u * XQ_SG, v.v7, amax);
    }
}

fn quantize_x(lid: u32) {
    let sub = lid / XQ_SG;
    var cur = load_block(sub);
    // Every subgroup takes the same number of steps (subgroupMax in uniform control flow).
    for (var b0 = 0u; b0 < NB; b0 += NSUB) {
        let b = b0 + sub;
        let nxt = load_block(b + NSUB);
        let amax = subgroupMax(block_abs_max(cur));
        if (b < NB) {
            store_block(b, cur, amax);
            if (sgi == 0u) {
                xd[b] = amax / 127.0;
            }
        }
        cur = nxt;
    }
#ifdef NORM
    // Each subgroup's Σ x² is in place with x itself: the RMS factor needs no barrier of its own.
    let ss = subgroupAdd(ssq);
    if (sgi == 0u) {
        xss[sub] = ss;
    }
#endif
    workgroupBarrier();
}
#else
var<workgroup> red: array<f32, WG>;

// The largest m over the 64 consecutive threads of lid's block, by a tree in workgroup memory.
fn block_max_tree(m: f32, lid: u32) -> f32 {
    red[lid] = m;
    workgroupBarrier();
    for (var s = 32u; s > 0u; s /= 2u) {
        if (lid % 64u < s) {
            red[lid] = max(red[lid], red[lid + s]);
        }
        workgroupBarrier();
    }
    let r = red[lid - lid % 64u];
    workgroupBarrier();
    return r;
}

// Fills xq and xd from x (x vec4 c → xq[c]); under NORM ssq gets this thread's Σ x². The 64
// vec4 of a 256-value block are 64 consecutive threads' (WG is a multiple of 64).
fn quantize_x(lid: u32) {
    let n4 = XQ_N;
    for (var base = 0u; base < n4; base += WG) {
        let c = base + lid;
        var v = vec4<f32>(0.0);
        if (c < n4) {
            v = xv(c);
        }
        let m = abs_max4(v);
        var amax: f32;
#ifdef HAS_SUBGROUPS
        if (sgs > 1u && 64u % sgs == 0u) {
            // Subgroup maxima, then the block's 64 / sgs of them.
            let sm = subgroupMax(m);
            if (sgi == 0u) {
                red[lid / sgs] = sm;
            }
            workgroupBarrier();
            let first = (lid - lid % 64u) / sgs;
            amax = red[first];
            for (var i = 1u; i < 64u / sgs; i++) {
                amax = max(amax, red[first + i]);
            }
            workgroupBarrier();
        } else {
            amax = block_max_tree(m, lid);
        }
#else
        amax = block_max_tree(m, lid);
#endif
        if (c < n4) {
            store_q(c, v, amax);
            if (lid % 64u == 0u) {
                xd[c / 64u] = amax / 127.0;
            }
        }
    }
    workgroupBarrier();
}
#endif
#endif
// The subgroup size and this thread's index in its subgroup (1 and 0 without subgroups).
var<private> sgs: u32 = 1u;
var<private> sgi: u32 = 0u;

// Under NORM, Σ x² of the x values this thread loaded: a row group's threads load every x
// value exactly once (its units partition the row), so their sum is the RMS norm's.
var<private> ssq: f32 = 0.0;

#ifdef XSCALAR
// x[c] (times the norm weight), 0 past K: the stored row is zero-padded, x may hold anything.
fn xs(c: u32) -> f32 {
    if (c >= p.cols) {
        return 0.0;
    }
#ifdef NORM
    let v = x[c];
    ssq += v * v;
    return v * nw[c];
#else
    return x[c];
#endif
}

// x[4i .. 4i + 3] (times the norm weight under NORM; the RMS factor is applied to the sums).
fn xv(i: u32) -> vec4<f32> {
    let c = 4u * i;
    return vec4<f32>(xs(c), xs(c + 1u), xs(c + 2u), xs(c + 3u));
}
#else
fn xv(i: u32) -> vec4<f32> {
#ifdef NORM
    let v = x[x_base + i];
    ssq += dot(v, v);
    return v * nw[x_base + i];
#else
    return x[x_base + i];
#endif
}
#endif

fn hsum(v: vec4<f32>) -> f32 {
    return (v.x + v.y) + (v.z + v.w);
}

// The four values of a packed byte vector, as f32.
fn bytes4(v: u32) -> vec4<f32> {
    return vec4<f32>(unpack4xU8(v));
}

// Σ over a group of n consecutive threads (n a power of two dividing WG, the same for the whole
// workgroup), returned to every thread of the group. Called in uniform control flow. With
// subgroups (subgroup i being threads i·sgs …, as on every GPU we know of) a group within one
// subgroup adds by a shuffle butterfly and a group of whole subgroups by subgroupAdd; otherwise by
// a tree in workgroup memory.
fn group_sum(v: vec4<f32>, lid: u32, n: u32) -> vec4<f32> {
#ifdef HAS_SUBGROUPS
    if (sgs > 1u && n <= sgs) {
        // The group lies within one subgroup: a butterfly, no barrier.
        var r = v;
        for (var m = n / 2u; m > 0u; m /= 2u) {
            r += subgroupShuffleXor(r, m);
        }
        return r;
    }
    if (sgs > 1u && n % sgs == 0u) {
        let s = subgroupAdd(v);
        if (sgi == 0u) {
            part[lid / sgs] = s;
        }
        workgroupBarrier();
        let first = (lid - lid % n) / sgs;
        var r = part[first];
        for (var i = 1u; i < n / sgs; i++) {
            r += part[first + i];
        }
        workgroupBarrier();
        return r;
    }
#endif
    part[lid] = v;
    workgroupBarrier();
    for (var s = n / 2u; s > 0u; s /= 2u) {
        if (lid % n < s) {
            part[lid] += part[lid + s];
        }
        workgroupBarrier();
    }
    let r = part[lid - lid % n];
    workgroupBarrier();
    return r;
}

#ifdef GENERIC4
const UE: u32 = 4u;
fn g4(row: u32, u: u32, a: vec4<f32>) -> f32 {
    let v = dq(row, u);
    return dot(vec4<f32>(v[0], v[1], v[2], v[3]), a);
}
fn unit_dot4(rows: vec4<u32>, u: u32) -> vec4<f32> {
    let a = xv(u);
    return vec4<f32>(g4(rows.x, u, a), g4(rows.y, u, a), g4(rows.z, u, a), g4(rows.w, u, a));
}
#endif

#ifdef GENERIC16
const UE: u32 = 16u;
fn g16(row: u32, u: u32, a: vec4<f32>, b: vec4<f32>, c: vec4<f32>, d: vec4<f32>) -> f32 {
    let v = dq(row, u);
    return (dot(vec4<f32>(v[0], v[1], v[2], v[3]), a) + dot(vec4<f32>(v[4], v[5], v[6], v[7]), b))
        + (dot(vec4<f32>(v[8], v[9], v[10], v[11]), c) + dot(vec4<f32>(v[12], v[13], v[14], v[15]), d));
}
fn unit_dot4(rows: vec4<u32>, u: u32) -> vec4<f32> {
    let i = 4u * u;
    let a = xv(i);
    let b = xv(i + 1u);
    let c = xv(i + 2u);
    let d = xv(i + 3u);
    return vec4<f32>(g16(rows.x, u, a, b, c, d), g16(rows.y, u, a, b, c, d),
                     g16(rows.z, u, a, b, c, d), g16(rows.w, u, a, b, c, d));
}
#endif

// Legacy 32-element blocks: a unit is a block; qs word j holds elements 4j..4j+3 in its low
// nibbles (x vec4 j of the block) and 16+4j.. in its high ones (x vec4 4 + j).
#ifdef LEGACY4
const UE: u32 = 32u;
struct X8 {
    a0: vec4<f32>, a1: vec4<f32>, a2: vec4<f32>, a3: vec4<f32>,
    a4: vec4<f32>, a5: vec4<f32>, a6: vec4<f32>, a7: vec4<f32>,
    s: f32,  // Σ x over the block
}
fn nib_dot(q: u32, lo: vec4<f32>, hi: vec4<f32>) -> f32 {
    return dot(bytes4(q & 0x0f0f0f0fu), lo) + dot(bytes4((q >> 4u) & 0x0f0f0f0fu), hi);
}
fn block_dot(row: u32, u: u32, xb: X8) -> f32 {
    let b = row * p.row_words + u * BW;
#ifdef TYPE_Q4_1
    // d, m, then qs at byte 4: word-aligned. Σ (d·q + m)·x = d·Σ q·x + m·Σ x.
    let dm = unpack2x16float(w[b]);
    let t = (nib_dot(w[b + 1u], xb.a0, xb.a4) + nib_dot(w[b + 2u], xb.a1, xb.a5))
          + (nib_dot(w[b + 3u], xb.a2, xb.a6) + nib_dot(w[b + 4u], xb.a3, xb.a7));
    return dm.x * t + dm.y * xb.s;
#else
    // Q4_0: d, then qs at byte 2 (each qs word straddles two words). Σ d·(q - 8)·x.
    let w0 = w[b];
    let w1 = w[b + 1u];
    let w2 = w[b + 2u];
    let w3 = w[b + 3u];
    let w4 = w[b + 4u];
    let t = (nib_dot((w0 >> 16u) | (w1 << 16u), xb.a0, xb.a4) + nib_dot((w1 >> 16u) | (w2 << 16u), xb.a1, xb.a5))
          + (nib_dot((w2 >> 16u) | (w3 << 16u), xb.a2, xb.a6) + nib_dot((w3 >> 16u) | (w4 << 16u), xb.a3, xb.a7));
    return half_of(w0, false) * (t - 8.0 * xb.s);
#endif
}
fn unit_dot4(rows: vec4<u32>, u: u32) -> vec4<f32> {
    let i = 8u * u;
    var xb: X8;
    xb.a0 = xv(i);
    xb.a1 = xv(i + 1u);
    xb.a2 = xv(i + 2u);
    xb.a3 = xv(i + 3u);
    xb.a4 = xv(i + 4u);
    xb.a5 = xv(i + 5u);
    xb.a6 = xv(i + 6u);
    xb.a7 = xv(i + 7u);
    xb.s = hsum(((xb.a0 + xb.a1) + (xb.a2 + xb.a3)) + ((xb.a4 + xb.a5) + (xb.a6 + xb.a7)));
    return vec4<f32>(block_dot(rows.x, u, xb), block_dot(rows.y, u, xb),
                     block_dot(rows.z, u, xb), block_dot(rows.w, u, xb));
}
#endif

// Q8_0: a unit is a block; d, then 32 int8 at byte 2 (qs word j straddles words j and j + 1).
#ifdef TYPE_Q8_0
const UE: u32 = 32u;
fn q8_dot(row: u32, u: u32, x0: vec4<f32>, x1: vec4<f32>, x2: vec4<f32>, x3: vec4<f32>,
          x4: vec4<f32>, x5: vec4<f32>, x6: vec4<f32>, x7: vec4<f32>) -> f32 {
    let b = row * p.row_words + u * BW;
    let w0 = w[b];
    let w1 = w[b + 1u];
    let w2 = w[b + 2u];
    let w3 = w[b + 3u];
    let w4 = w[b + 4u];
    let w5 = w[b + 5u];
    let w6 = w[b + 6u];
    let w7 = w[b + 7u];
    let w8 = w[b + 8u];
    let t = ((dot(i8s((w0 >> 16u) | (w1 << 16u)), x0) + dot(i8s((w1 >> 16u) | (w2 << 16u)), x1))
           + (dot(i8s((w2 >> 16u) | (w3 << 16u)), x2) + dot(i8s((w3 >> 16u) | (w4 << 16u)), x3)))
          + ((dot(i8s((w4 >> 16u) | (w5 << 16u)), x4) + dot(i8s((w5 >> 16u) | (w6 << 16u)), x5))
           + (dot(i8s((w6 >> 16u) | (w7 << 16u)), x6) + dot(i8s((w7 >> 16u) | (w8 << 16u)), x7)));
    return half_of(w0, false) * t;
}
fn i8s(v: u32) -> vec4<f32> {
    return vec4<f32>(unpack4xI8(v));
}
fn unit_dot4(rows: vec4<u32>, u: u32) -> vec4<f32> {
    let i = 8u * u;
    let x0 = xv(i);
    let x1 = xv(i + 1u);
    let x2 = xv(i + 2u);
    let x3 = xv(i + 3u);
    let x4 = xv(i + 4u);
    let x5 = xv(i + 5u);
    let x6 = xv(i + 6u);
    let x7 = xv(i + 7u);
    return vec4<f32>(q8_dot(rows.x, u, x0, x1, x2, x3, x4, x5, x6, x7), q8_dot(rows.y, u, x0, x1, x2, x3, x4, x5, x6, x7),
                     q8_dot(rows.z, u, x0, x1, x2, x3, x4, x5, x6, x7), q8_dot(rows.w, u, x0, x1, x2, x3, x4, x5, x6, x7));
}
#endif

// Q4_K: a unit is 32 elements, half h of 64-element chunk c of a super-block (unit u: block u / 8,
// c = (u % 8) / 2, h = u % 2): qs words 4 + 8c + 4h + i hold elements 64c + 16h + 4i + k in their
// low nibbles (sub-block 2c) and 64c + 32 + 16h + 4i + k in their high ones (sub-block 2c + 1).
#ifdef TYPE_Q4_K
const UE: u32 = 32u;
#ifdef Q8X
// x quantized in workgroup memory (quantize_x): the unit's low nibbles meet x words i .. i + 3
// and its high ones i + 8 .. i + 11 as int8 (4-bit codes are non-negative bytes), one x block
// (xd) per super-block. Σ (d·sc·q − dmin·m)·xd·xq = xd·(d·sc·Σ q·xq − dmin·m·Σ xq), as
// ggml's vec_dot_q4_K_q8_K and the CPU engine compute it.
struct UnitWords {
    x: vec4<u32>, y: vec4<u32>, z: vec4<u32>, w: vec4<u32>,  // each row's four qs words
}
fn k4_words(row: u32, u: u32) -> vec4<u32> {
    let q = row * p.row_words + (u / 8u) * BW + 4u + 8u * ((u % 8u) / 2u) + 4u * (u % 2u);
    return vec4<u32>(w[q], w[q + 1u], w[q + 2u], w[q + 3u]);
}
fn unit_words(rows: vec4<u32>, u: u32) -> UnitWords {
    return UnitWords(k4_words(rows.x, u), k4_words(rows.y, u), k4_words(rows.z, u), k4_words(rows.w, u));
}
fn k4_q8(row: u32, u: u32, q: vec4<u32>, xl: vec4<u32>, xh: vec4<u32>, sx: vec2<f32>) -> f32 {
    let b = row * p.row_words + (u / 8u) * BW;
    let c = (u % 8u) / 2u;
    let dm = unpack2x16float(w[b]);
    let s = vec3<u32>(w[b + 1u], w[b + 2u], w[b + 3u]);
    let sm0 = dq_k4_sm(s.x, s.y, s.z, 2u * c);
    let sm1 = dq_k4_sm(s.x, s.y, s.z, 2u * c + 1u);
    let m = 0x0f0f0f0fu;
    let tl = (dot4I8Packed(q.x & m, xl.x) + dot4I8Packed(q.y & m, xl.y))
           + (dot4I8Packed(q.z & m, xl.z) + dot4I8Packed(q.w & m, xl.w));
    let th = (dot4I8Packed((q.x >> 4u) & m, xh.x) + dot4I8Packed((q.y >> 4u) & m, xh.y))
           + (dot4I8Packed((q.z >> 4u) & m, xh.z) + dot4I8Packed((q.w >> 4u) & m, xh.w));
    return dm.x * (sm0.x * f32(tl) + sm1.x * f32(th)) - dm.y * (sm0.y * sx.x + sm1.y * sx.y);
}
fn unit_dot4w(rows: vec4<u32>, u: u32, q: UnitWords) -> vec4<f32> {
    let i = 64u * (u / 8u) + 16u * ((u % 8u) / 2u) + 4u * (u % 2u);
    let xl = vec4<u32>(xq[i], xq[i + 1u], xq[i + 2u], xq[i + 3u]);
    let xh = vec4<u32>(xq[i + 8u], xq[i + 9u], xq[i + 10u], xq[i + 11u]);
    let sx = vec2<f32>(f32((dot4I8Packed(xl.x, ONES) + dot4I8Packed(xl.y, ONES)) + (dot4I8Packed(xl.z, ONES) + dot4I8Packed(xl.w, ONES))),
                       f32((dot4I8Packed(xh.x, ONES) + dot4I8Packed(xh.y, ONES)) + (dot4I8Packed(xh.z, ONES) + dot4I8Packed(xh.w, ONES))));
    return xd[u / 8u] * vec4<f32>(k4_q8(rows.x, u, q.x, xl, xh, sx), k4_q8(rows.y, u, q.y, xl, xh, sx),
                                  k4_q8(rows.z, u, q.z, xl, xh, sx), k4_q8(rows.w, u, q.w, xl, xh, sx));
}
fn unit_dot4(rows: vec4<u32>, u: u32) -> vec4<f32> {
    return unit_dot4w(rows, u, unit_words(rows, u));
}
#else
struct XK {
    l0: vec4<f32>, l1: vec4<f32>, l2: vec4<f32>, l3: vec4<f32>,
    h0: vec4<f32>, h1: vec4<f32>, h2: vec4<f32>, h3: vec4<f32>,
    sl: f32,  // Σ x over the low-nibble elements
    sh: f32,  // and the high ones
}
fn k4_dot(row: u32, u: u32, xk: XK) -> f32 {
    let b = row * p.row_words + (u / 8u) * BW;
    let c = (u % 8u) / 2u;
    let q = b + 4u + 8u * c + 4u * (u % 2u);
    let dm = unpack2x16float(w[b]);
    // Scales and mins of sub-blocks 2c and 2c + 1 (dequant.wgsl).
    let s = vec3<u32>(w[b + 1u], w[b + 2u], w[b + 3u]);
    let sm0 = dq_k4_sm(s.x, s.y, s.z, 2u * c);
    let sm1 = dq_k4_sm(s.x, s.y, s.z, 2u * c + 1u);
    let q0 = w[q];
    let q1 = w[q + 1u];
    let q2 = w[q + 2u];
    let q3 = w[q + 3u];
    let m = 0x0f0f0f0fu;
    let tl = (dot(bytes4(q0 & m), xk.l0) + dot(bytes4(q1 & m), xk.l1))
           + (dot(bytes4(q2 & m), xk.l2) + dot(bytes4(q3 & m), xk.l3));
    let th = (dot(bytes4((q0 >> 4u) & m), xk.h0) + dot(bytes4((q1 >> 4u) & m), xk.h1))
           + (dot(bytes4((q2 >> 4u) & m), xk.h2) + dot(bytes4((q3 >> 4u) & m), xk.h3));
    return dm.x * (sm0.x * tl + sm1.x * th) - dm.y * (sm0.y * xk.sl + sm1.y * xk.sh);
}
fn unit_dot4(rows: vec4<u32>, u: u32) -> vec4<f32> {
    let i = 64u * (u / 8u) + 16u * ((u % 8u) / 2u) + 4u * (u % 2u);
    var xk: XK;
    xk.l0 = xv(i);
    xk.l1 = xv(i + 1u);
    xk.l2 = xv(i + 2u);
    xk.l3 = xv(i + 3u);
    xk.h0 = xv(i + 8u);
    xk.h1 = xv(i + 9u);
    xk.h2 = xv(i + 10u);
    xk.h3 = xv(i + 11u);
    xk.sl = hsum((xk.l0 + xk.l1) + (xk.l2 + xk.l3));
    xk.sh = hsum((xk.h0 + xk.h1) + (xk.h2 + xk.h3));
    return vec4<f32>(k4_dot(rows.x, u, xk), k4_dot(rows.y, u, xk), k4_dot(rows.z, u, xk), k4_dot(rows.w, u, xk));
}
#endif
#endif

// Q6_K: a unit is 16 elements, 128h + 4g + 32s + k (s, k = 0..3) of a super-block (unit u: block
// u / 16, h = (u % 16) / 8, g = u % 8): ql words 16h + g (s = 0, 2: low, high nibbles) and
// 16h + 8 + g (s = 1, 3), qh word 32 + 8h + g (bits 2s), scale bytes 8h + g / 4 + 2s.
#ifdef TYPE_Q6_K
const UE: u32 = 16u;
fn q6(lo: u32, hi: u32) -> vec4<f32> {
    return bytes4((lo & 0x0f0f0f0fu) | ((hi & 0x03030303u) << 4u));
}
fn i8_int(v: u32, k: u32) -> i32 {
    return bitcast<i32>(v << (24u - 8u * k)) >> 24u;
}
fn i8_of(v: u32, k: u32) -> f32 {
    return f32(i8_int(v, k));
}
fn k6_dot(row: u32, u: u32, x0: vec4<f32>, x1: vec4<f32>, x2: vec4<f32>, x3: vec4<f32>, sx: vec4<f32>) -> f32 {
    let b = k6_block(row, u / 16u);
    let h = (u % 16u) / 8u;
    let g = u % 8u;
    let a = w[b + 16u * h + g];
    let c = w[b + 16u * h + 8u + g];
    let qh = w[b + 32u + 8u * h + g];
    let s01 = w[b + 48u + 2u * h];   // scale bytes 8h .. 8h + 3 (s = 0, 1 at g / 4, g / 4 + 2)
    let s23 = w[b + 49u + 2u * h];   // 8h + 4 .. (s = 2, 3)
    let k = g / 4u;
    let sc = vec4<f32>(i8_of(s01, k), i8_of(s01, k + 2u), i8_of(s23, k), i8_of(s23, k + 2u));
    let t = vec4<f32>(dot(q6(a, qh), x0), dot(q6(c, qh >> 2u), x1),
                      dot(q6(a >> 4u, qh >> 4u), x2), dot(q6(c >> 4u, qh >> 6u), x3));
    return half_of(w[b + 52u], false) * dot(sc, t - 32.0 * sx);
}
#ifdef Q8X
// x quantized in workgroup memory (quantize_x): sub-block s of the unit meets x word i + 8s as
// int8 (6-bit codes are non-negative bytes). Σ sc·(q - 32)·d·xd·xq = d·xd·Σ sc·(Σ q·xq - 32·Σ xq),
// the sum over s in integers (one conversion a row instead of eight; as llama.cpp's
// vec_dot_q6_K_q8_K).
struct UnitWords {
    a: vec4<u32>,
    c: vec4<u32>,
    qh: vec4<u32>,
}
// The code words only: the scales and d (words the row group's threads share, cached) are loaded
// where they are used, which keeps the prefetched units' registers few.
fn unit_words(rows: vec4<u32>, u: u32) -> UnitWords {
    let h = (u % 16u) / 8u;
    let j = u / 16u;
    let b = vec4<u32>(k6_block(rows.x, j), k6_block(rows.y, j), k6_block(rows.z, j), k6_block(rows.w, j));
    let ia = 16u * h + u % 8u;
    let ic = ia + 8u;
    let iq = 32u + 8u * h + u % 8u;
    var r: UnitWords;
    r.a = vec4<u32>(w[b.x + ia], w[b.y + ia], w[b.z + ia], w[b.w + ia]);
    r.c = vec4<u32>(w[b.x + ic], w[b.y + ic], w[b.z + ic], w[b.w + ic]);
    r.qh = vec4<u32>(w[b.x + iq], w[b.y + iq], w[b.z + iq], w[b.w + iq]);
    return r;
}
fn q6b(lo: u32, hi: u32) -> u32 {
    return (lo & 0x0f0f0f0fu) | ((hi & 0x03030303u) << 4u);
}
fn k6_q8(row: u32, u: u32, a: u32, c: u32, qh: u32, x: vec4<u32>, sx: vec4<i32>) -> f32 {
    let b = k6_block(row, u / 16u);
    let is = b + 48u + 2u * ((u % 16u) / 8u);
    let s01 = w[is];
    let s23 = w[is + 1u];
    let k = (u % 8u) / 4u;
    let sc = vec4<i32>(i8_int(s01, k), i8_int(s01, k + 2u), i8_int(s23, k), i8_int(s23, k + 2u));
    let t = vec4<i32>(dot4I8Packed(q6b(a, qh), x.x), dot4I8Packed(q6b(c, qh >> 2u), x.y),
                      dot4I8Packed(q6b(a >> 4u, qh >> 4u), x.z), dot4I8Packed(q6b(c >> 4u, qh >> 6u), x.w)) - sx;
    return half_of(w[b + 52u], false) * f32(dot(sc, t));
}
fn unit_dot4w(rows: vec4<u32>, u: u32, q: UnitWords) -> vec4<f32> {
    let i = 64u * (u / 16u) + 32u * ((u % 16u) / 8u) + u % 8u;
    let x = vec4<u32>(xq[i], xq[i + 8u], xq[i + 16u], xq[i + 24u]);
    let sx = 32 * vec4<i32>(dot4I8Packed(x.x, ONES), dot4I8Packed(x.y, ONES), dot4I8Packed(x.z, ONES), dot4I8Packed(x.w, ONES));
    return xd[u / 16u] * vec4<f32>(k6_q8(rows.x, u, q.a.x, q.c.x, q.qh.x, x, sx), k6_q8(rows.y, u, q.a.y, q.c.y, q.qh.y, x, sx),
                                   k6_q8(rows.z, u, q.a.z, q.c.z, q.qh.z, x, sx), k6_q8(rows.w, u, q.a.w, q.c.w, q.qh.w, x, sx));
}
fn unit_dot4(rows: vec4<u32>, u: u32) -> vec4<f32> {
    return unit_dot4w(rows, u, unit_words(rows, u));
}
#else
fn unit_dot4(rows: vec4<u32>, u: u32) -> vec4<f32> {
    let i = 64u * (u / 16u) + 32u * ((u % 16u) / 8u) + u % 8u;
    let x0 = xv(i);
    let x1 = xv(i + 8u);
    let x2 = xv(i + 16u);
    let x3 = xv(i + 24u);
    let sx = vec4<f32>(hsum(x0), hsum(x1), hsum(x2), hsum(x3));
    return vec4<f32>(k6_dot(rows.x, u, x0, x1, x2, x3, sx), k6_dot(rows.y, u, x0, x1, x2, x3, sx),
                     k6_dot(rows.z, u, x0, x1, x2, x3, sx), k6_dot(rows.w, u, x0, x1, x2, x3, sx));
}
#endif
#endif

// T2R: a unit is one code word; word u holds columns 128q + 32l + 4j + k (q = u / 8, j = u % 8)
// in field l of byte k. Σ (code - 1)·s·x = s·(Σ code·x - Σ x).
#ifdef TYPE_T2R
// The f16 scale of the 256 columns of `row` that unit u lies in (the scales region at p.aux).
fn t2r_scale(row: u32, u: u32) -> f32 {
    let si = row * (p.row_words / 16u) + (u_base + u) / 16u;
    return half_of(w[p.aux + si / 2u], (si % 2u) != 0u);
}
#ifdef Q8X
// x quantized in workgroup memory (quantize_x): the field-l codes of word u, as four bytes, meet
// x word 32q + 8l + j in an int8 dot product. Σ (code - 1)·s·d·q = s·d·(Σ code·q - Σ q).
const UE: u32 = 16u;
fn t2r_q8(row: u32, u: u32, q: u32, x0: u32, x1: u32, x2: u32, x3: u32, sq: i32) -> f32 {
    let m = 0x03030303u;
    let t = (dot4I8Packed(q & m, x0) + dot4I8Packed((q >> 2u) & m, x1))
          + (dot4I8Packed((q >> 4u) & m, x2) + dot4I8Packed((q >> 6u) & m, x3));
#ifdef T2R_ROW_SCALE
    return f32(t - sq);
#else
    return t2r_scale(row, u) * f32(t - sq);
#endif
}
#ifdef T2R_ROW_SCALE
// The scale of every block of weight row r (its run's).
fn run_scale(r: u32) -> f32 {
    return select(select(p.run_s.z, p.run_s.y, r < p.run2), p.run_s.x, r < p.run1);
}
#endif
// The code words of unit u of the four rows.
alias UnitWords = vec4<u32>;
fn unit_words(rows: vec4<u32>, u: u32) -> UnitWords {
    let rw = p.row_words;
    let c = u_base + u;
    return vec4<u32>(w[rows.x * rw + c], w[rows.y * rw + c], w[rows.z * rw + c], w[rows.w * rw + c]);
}
// Unit u of the four rows, given their code words q.
fn unit_dot4w(rows: vec4<u32>, u: u32, q: UnitWords) -> vec4<f32> {
    let i = 32u * (u / 8u) + u % 8u;
    let x0 = xq[i];
    let x1 = xq[i + 8u];
    let x2 = xq[i + 16u];
    let x3 = xq[i + 24u];
    let sq = (dot4I8Packed(x0, ONES) + dot4I8Packed(x1, ONES)) + (dot4I8Packed(x2, ONES) + dot4I8Packed(x3, ONES));
    return xd[u / 16u] * vec4<f32>(t2r_q8(rows.x, u, q.x, x0, x1, x2, x3, sq), t2r_q8(rows.y, u, q.y, x0, x1, x2, x3, sq),
                                   t2r_q8(rows.z, u, q.z, x0, x1, x2, x3, sq), t2r_q8(rows.w, u, q.w, x0, x1, x2, x3, sq));
}
fn unit_dot4(rows: vec4<u32>, u: u32) -> vec4<f32> {
    return unit_dot4w(rows, u, unit_words(rows, u));
}
#else
const UE: u32 = 16u;
fn t2r_dot(row: u32, u: u32, x0: vec4<f32>, x1: vec4<f32>, x2: vec4<f32>, x3: vec4<f32>, sx: f32) -> f32 {
    let q = w[row * p.row_words + u];
    let s = t2r_scale(row, u);
    let m = 0x03030303u;
    let t = (dot(bytes4(q & m), x0) + dot(bytes4((q >> 2u) & m), x1))
          + (dot(bytes4((q >> 4u) & m), x2) + dot(bytes4((q >> 6u) & m), x3));
    return s * (t - sx);
}
fn unit_dot4(rows: vec4<u32>, u: u32) -> vec4<f32> {
    let i = 32u * (u / 8u) + u % 8u;
    let x0 = xv(i);
    let x1 = xv(i + 8u);
    let x2 = xv(i + 16u);
    let x3 = xv(i + 24u);
    let sx = hsum((x0 + x1) + (x2 + x3));
    return vec4<f32>(t2r_dot(rows.x, u, x0, x1, x2, x3, sx), t2r_dot(rows.y, u, x0, x1, x2, x3, sx),
                     t2r_dot(rows.z, u, x0, x1, x2, x3, sx), t2r_dot(rows.w, u, x0, x1, x2, x3, sx));
}
#endif
#endif

@compute @workgroup_size(WG)
fn gemv(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
#ifdef HAS_SUBGROUPS
    @builtin(subgroup_size) sg_size: u32,
    @builtin(subgroup_invocation_id) sg_id: u32,
#endif
) {
#ifdef HAS_SUBGROUPS
    sgs = sg_size;
    sgi = sg_id;
#endif
    let t = lid % TPR;
    var blk = flat_group(wg, p.groups_x);
#ifdef SPLITK
    // The workgroup's slice of K and block of rows (NG row groups of 4 rows, or 2 under GLU).
    let n_blk = (p.rows + RPG * NG - 1u) / (RPG * NG);
    let slice = blk / n_blk;
    if (slice >= SPLITK) {
        return;
    }
    blk %= n_blk;
    x_base = slice * XQ_N;
    u_base = slice * (4u * XQ_N / UE);
#endif
    let rg = blk * NG + lid / TPR;
#ifdef GLU
    const NOUT: u32 = 2u;
    let o = 2u * rg;
    let g0 = min(o, p.rows - 1u);
    let g1 = min(o + 1u, p.rows - 1u);
    let rows = vec4<u32>(g0, g1, g0 + p.rows, g1 + p.rows) + p.w_row0;
#else
    const NOUT: u32 = 4u;
    let o = 4u * rg;
    let rows = min(vec4<u32>(o, o + 1u, o + 2u, o + 3u), vec4<u32>(p.rows - 1u)) + p.w_row0;
#endif
#ifdef SPLITK
    let n_units = 4u * XQ_N / UE;
#else
    let n_units = (p.cols + UE - 1u) / UE;
#endif
    var u = t;
    var acc = vec4<f32>(0.0);
#ifdef T2R_ROW_SCALE
    let rs = vec4<f32>(run_scale(rows.x), run_scale(rows.y), run_scale(rows.z), run_scale(rows.w));
#endif
#ifdef Q8X
    // The code words of this thread's first two units (three under PRE3, where those are all of
    // its units) are loaded before x is quantized, so that their memory latency overlaps that
    // work (clamped loads stay inside the row; unused past it).
    let pre0 = unit_words(rows, min(u, n_units - 1u));
    let pre1 = unit_words(rows, min(u + TPR, n_units - 1u));
#ifdef PRE3
    let pre2 = unit_words(rows, min(u + 2u * TPR, n_units - 1u));
#endif
    quantize_x(lid);
    const NORM_N: u32 = WG;
    if (o < p.rows) {
        if (u < n_units) {
            acc += unit_dot4w(rows, u, pre0);
        }
        if (u + TPR < n_units) {
            acc += unit_dot4w(rows, u + TPR, pre1);
        }
#ifdef PRE3
        if (u + 2u * TPR < n_units) {
            acc += unit_dot4w(rows, u + 2u * TPR, pre2);
        }
#endif
    }
#ifdef PRE3
    u += 3u * TPR;
#else
    u += 2u * TPR;
#endif
#else
    const NORM_N: u32 = TPR;
#endif
    // Two units per step, so that each thread has their loads in flight together, then one.
    // (Four a step was slower: H200, Llama-1B's Q6_K down, decode 677 -> 737 tok/s without.)
    if (o < p.rows) {
        for (; u + TPR < n_units; u += 2u * TPR) {
            acc += unit_dot4(rows, u) + unit_dot4(rows, u + TPR);
        }
        if (u < n_units) {
            acc += unit_dot4(rows, u);
        }
    }
#ifdef T2R_ROW_SCALE
    acc *= rs;
#endif
#ifdef NORM
#ifdef XQ_SG
    var ss = 0.0;
    for (var i = 0u; i < NSUB; i++) {
        ss += xss[i];
    }
#else
    var ss = group_sum(vec4<f32>(ssq, 0.0, 0.0, 0.0), lid, NORM_N).x;
#endif
#endif
#ifdef SPLITK
    // This slice's sums and Σ x² out; the row block's last workgroup adds every slice's. The
    // barrier before the arrival releases them at device scope, the one after it acquires the
    // others' (naga: OpControlBarrier with Device memory scope, as attention.wgsl MERGE_LAST).
    var a = group_sum(acc, lid, TPR);
    let g = lid / TPR;
    if (t == 0u) {
        ks[(blk * SPLITK + slice) * (NG + 1u) + g] = a;
    }
#ifdef NORM
    if (lid == 0u) {
        ks[(blk * SPLITK + slice) * (NG + 1u) + NG] = vec4<f32>(ss, 0.0, 0.0, 0.0);
    }
#endif
    storageBarrier();
    if (lid == 0u) {
        merging = u32(atomicAdd(&arrivals[blk], 1u) == SPLITK - 1u);
    }
    if (workgroupUniformLoad(&merging) == 0u) {
        return;
    }
    storageBarrier();
    a = vec4<f32>(0.0);
#ifdef NORM
    ss = 0.0;
#endif
    for (var k = 0u; k < SPLITK; k++) {
        let b = (blk * SPLITK + k) * (NG + 1u);
        a += ks[b + g];
#ifdef NORM
        ss += ks[b + NG].x;
#endif
    }
    if (lid == 0u) {
        atomicStore(&arrivals[blk], 0u);
    }
#else
    let a = group_sum(acc, lid, TPR);
#endif
#ifdef NORM
    let inv = 1.0 / sqrt(ss / f32(p.cols) + p.eps);
#else
    let inv = 1.0;
#endif
    let s = a * (p.mult * inv);
    if (t < NOUT && o + t < p.rows) {
        var v = s[t];
#ifdef GLU
        v = activation(p.act, v) * s[t + 2u];
#endif
        let r = o + t;
#ifdef SPLIT
        if (r < p.split1) {
            y[r] = v;
        } else if (r < p.split2) {
            y1[r - p.split1] = v;
        } else {
            y2[r - p.split2] = v;
        }
#else
        let i = p.row0 + r;
#ifdef RESIDUAL
        y[i] += v;
#else
        y[i] = v;
#endif
#endif
    }
}
