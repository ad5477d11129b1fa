// The k largest values of each row with their indices, sorted descending (ops::top_k): ties go
// to the lower index, NaN is never chosen, -0 and +0 are equal (the order of the CPU's argmax and
// `backend::cpu::ops::top_k`). Two passes, as argmax.wgsl: `topk_part` gives each chunk of CHUNK
// values of a row a workgroup, which writes the chunk's k best (value bits, index) into scratch;
// `topk_final` takes one workgroup per row over the chunks' lists (chunks·k items).
//
// Both passes run `select_top`: values become order-preserving u32 keys (0 = NaN or an empty
// slot: never chosen); an 8-bit radix select (four rounds of a 256-bin histogram in workgroup
// atomics and a suffix scan) finds the k-th largest key τ exactly; items with key > τ and the
// first (k − #>τ) items with key τ in item order are compacted into workgroup memory (each
// thread owns a contiguous run of items, so a prefix sum over threads orders the ties), then a
// bitonic sort of P = next_pow2(k) slots orders them. Item order is index order in both passes
// (a chunk's list holds its ties lowest index first and chunks are in column order), so ties go
// to the lower index. Workgroup memory only (no subgroups: the browser's path); ~7 KiB.

#include "common"

const WG: u32 = 256u;
const CHUNK: u32 = 4096u;  // ops::TOPK_CHUNK: 16 values a thread in the first pass
const NONE: u32 = 0xffffffffu;
const NAN_BITS: u32 = 0x7fc00000u;

struct Params {
    rows: u32,
    cols: u32,
    groups_x: u32,
    chunks: u32,  // per row: ceil(cols / CHUNK)
    k: u32,       // 1..=K_MAX (ops::TOPK_MAX = WG)
    p2: u32,      // next_pow2(k): the slots the final sort orders
}

@group(0) @binding(0) var<uniform> p: Params;
#ifdef PART
@group(0) @binding(1) var<storage, read> x: array<f32>;               // [rows, cols]
@group(0) @binding(2) var<storage, read_write> dst: array<u32>;       // [rows, chunks, k, 2]: value bits, index
#else
@group(0) @binding(1) var<storage, read> cand: array<u32>;            // [rows, chunks, k, 2]
@group(0) @binding(2) var<storage, read_write> dst: array<u32>;       // [rows, k, 2]: value bits, index
#endif

var<workgroup> hist: array<atomic<u32>, WG>;
var<workgroup> scan: array<vec2<u32>, WG>;
var<workgroup> st: array<u32, 3>;  // the key prefix found so far, ties still wanted, target
var<workgroup> sk: array<u32, WG>;  // sort slots: key
var<workgroup> si: array<u32, WG>;  //   index
var<workgroup> sb: array<u32, WG>;  //   value bits

// An order-preserving key of value bits: larger value, larger key; -0 → +0; NaN → 0 (never
// chosen; every other value's key is ≥ 0x007fffff, -inf's).
fn key_of(bits: u32) -> u32 {
    if ((bits & 0x7fffffffu) > 0x7f800000u) {
        return 0u;
    }
    let b = select(bits, 0u, bits == 0x80000000u);
    return select(b | 0x80000000u, ~b, (b & 0x80000000u) != 0u);
}

// Item j of this workgroup: (value bits, index).
#ifdef PART
fn item(base: u32, c0: u32, j: u32) -> vec2<u32> {
    return vec2<u32>(bitcast<u32>(x[base + c0 + j]), c0 + j);
}
#else
fn item(base: u32, c0: u32, j: u32) -> vec2<u32> {
    return vec2<u32>(cand[2u * (base + j)], cand[2u * (base + j) + 1u]);
}
#endif

// Slot a ranks before slot b: larger key, or the same key at a lower index.
fn before(a: u32, b: u32) -> bool {
    return sk[a] > sk[b] || (sk[a] == sk[b] && si[a] < si[b]);
}

// Inclusive prefix sums of scan[0..WG) in place (Hillis-Steele; every thread calls it).
fn scan_inclusive(lid: u32) {
    for (var off = 1u; off < WG; off <<= 1u) {
        var v = vec2<u32>(0u);
        if (lid >= off) {
            v = scan[lid - off];
        }
        workgroupBarrier();
        scan[lid] += v;
        workgroupBarrier();
    }
}

// The k best of items [0, n) (see the top of the file) into dst at word `out`: k (bits, index)
// pairs, empty slots (fewer than k non-NaN items) as (NaN, NONE). `live` false: no write (the
// workgroup still reaches every barrier).
fn select_top(base: u32, c0: u32, n: u32, out: u32, live: bool, lid: u32) {
    let per = (n + WG - 1u) / WG;
    let j0 = min(lid * per, n);
    let j1 = min(j0 + per, n);
    if (lid == 0u) {
        st[0] = 0u;
        st[1] = p.k;
        st[2] = 0u;
    }
    // Four radix rounds, the most significant byte first.
    for (var r = 0u; r < 4u; r++) {
        let shift = 24u - 8u * r;
        atomicStore(&hist[lid], 0u);
        workgroupBarrier();
        let prefix = st[0];
        let want0 = st[1];
        let hmask = select(0xffffffffu << (32u - 8u * r), 0u, r == 0u);
        for (var j = j0; j < j1; j++) {
            let key = key_of(item(base, c0, j).x);
            if (key != 0u && (key & hmask) == prefix) {
                atomicAdd(&hist[(key >> shift) & 0xffu], 1u);
            }
        }
        workgroupBarrier();
        // Suffix sums: scan[WG-1-d].x = Σ_{e ≥ d} hist[e].
        let h = atomicLoad(&hist[lid]);
        scan[WG - 1u - lid] = vec2<u32>(h, 0u);
        workgroupBarrier();
        scan_inclusive(lid);
        let incl = scan[WG - 1u - lid].x;
        let excl = incl - h;
        var want = want0;
        if (r == 0u) {
            // Fewer non-NaN items than k: take them all.
            want = min(want0, scan[WG - 1u].x);
            if (lid == 0u) {
                st[2] = want;
            }
        }
        // The digit where the count of larger keys crosses `want` (at most one thread).
        if (excl < want && want <= incl) {
            st[0] = prefix | (lid << shift);
            st[1] = want - excl;
        }
        workgroupBarrier();
    }
    let tau = st[0];
    let tgt = st[2];
    let ties = select(st[1], 0u, tgt == 0u);
    let ngt = tgt - ties;

    // Empty slots, then counts per thread of keys > τ and = τ.
    if (lid < p.p2) {
        sk[lid] = 0u;
        si[lid] = NONE;
        sb[lid] = NAN_BITS;
    }
    var gt = 0u;
    var eq = 0u;
    for (var j = j0; j < j1; j++) {
        let key = key_of(item(base, c0, j).x);
        if (key != 0u && tgt != 0u) {
            if (key > tau) {
                gt++;
            } else if (key == tau) {
                eq++;
            }
        }
    }
    workgroupBarrier();
    scan[lid] = vec2<u32>(gt, eq);
    workgroupBarrier();
    scan_inclusive(lid);
    var og = scan[lid].x - gt;
    var oe = scan[lid].y - eq;
    for (var j = j0; j < j1; j++) {
        let it = item(base, c0, j);
        let key = key_of(it.x);
        if (key == 0u || tgt == 0u) {
            continue;
        }
        var slot = NONE;
        if (key > tau) {
            slot = og;
            og++;
        } else if (key == tau) {
            if (oe < ties) {
                slot = ngt + oe;
            }
            oe++;
        }
        if (slot != NONE) {
            sk[slot] = key;
            si[slot] = it.y;
            sb[slot] = it.x;
        }
    }
    workgroupBarrier();

    // Bitonic sort of the p2 slots, best first.
    for (var size = 2u; size <= p.p2; size <<= 1u) {
        for (var stride = size / 2u; stride > 0u; stride >>= 1u) {
            if (lid < p.p2 / 2u) {
                let a = 2u * stride * (lid / stride) + lid % stride;
                let b = a + stride;
                let first = (a & size) == 0u;
                if (select(before(a, b), before(b, a), first)) {
                    let tk = sk[a];
                    let ti = si[a];
                    let tb = sb[a];
                    sk[a] = sk[b];
                    si[a] = si[b];
                    sb[a] = sb[b];
                    sk[b] = tk;
                    si[b] = ti;
                    sb[b] = tb;
                }
            }
            workgroupBarrier();
        }
    }
    if (live && lid < p.k) {
        dst[out + 2u * lid] = sb[lid];
        dst[out + 2u * lid + 1u] = si[lid];
    }
}

#ifdef PART
@compute @workgroup_size(WG)
fn topk_part(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let wi = flat_group(wg, p.groups_x);
    let live = wi < p.rows * p.chunks;
    let r = wi / p.chunks;
    let c0 = (wi % p.chunks) * CHUNK;
    var n = 0u;
    if (live) {
        n = min(CHUNK, p.cols - c0);
    }
    select_top(r * p.cols, c0, n, 2u * wi * p.k, live, lid);
}
#else
@compute @workgroup_size(WG)
fn topk_final(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let r = flat_group(wg, p.groups_x);
    let live = r < p.rows;
    var n = 0u;
    if (live) {
        n = p.chunks * p.k;
    }
    select_top(r * n, 0u, n, 2u * r * p.k, live, lid);
}
#endif
