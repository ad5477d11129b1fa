// Dequantization of weight rows on the GPU, one section per stored type (selected by a define
// `TYPE_<name>`, e.g. TYPE_Q4_K). Each section defines
//   const G: u32                      elements per group (groups never straddle a block)
//   fn dq(row: u32, g: u32) -> array<f32, G>   group `g` of row `row`
// reading the weight buffer `w` (array<u32>) and `p.row_words` (u32 words per row), `p.aux`
// (word offset of a second region, e.g. T2R scales). The GPU layout of each type is
// src/backend/gpu/layout.rs; the CPU reference decoders are src/quant/.

#ifdef TYPE_F32
const G: u32 = 4u;
fn dq(row: u32, g: u32) -> array<f32, 4> {
    let b = row * p.row_words + g * 4u;
    // Rows are zero-padded to whole groups at upload.
    return array<f32, 4>(bitcast<f32>(w[b]), bitcast<f32>(w[b + 1u]), bitcast<f32>(w[b + 2u]), bitcast<f32>(w[b + 3u]));
}
#endif

#ifdef TYPE_F16
const G: u32 = 4u;
fn dq(row: u32, g: u32) -> array<f32, 4> {
    let b = row * p.row_words + g * 2u;
    let lo = unpack2x16float(w[b]);
    let hi = unpack2x16float(w[b + 1u]);
    return array<f32, 4>(lo.x, lo.y, hi.x, hi.y);
}
#endif

#ifdef TYPE_BF16
const G: u32 = 4u;
fn dq(row: u32, g: u32) -> array<f32, 4> {
    let b = row * p.row_words + g * 2u;
    let lo = w[b];
    let hi = w[b + 1u];
    return array<f32, 4>(bf16_of(lo, false), bf16_of(lo, true), bf16_of(hi, false), bf16_of(hi, true));
}
#endif

// Block sections load each u32 word of a group once into a `let` and take bytes, nibbles and bits
// out of it by shifts (blocks start on a word, layout.rs). `w4` is the word of elements 4n..4n+3
// (byte k = element 4n + k); fields are masked on the whole word, bytes split out last.

// Byte k (0..3) of word x as a signed int8, sign-extended to i32.
fn dq_i8(x: u32, k: u32) -> i32 {
    return bitcast<i32>(x << (24u - 8u * k)) >> 24u;
}

// Legacy 32-element blocks: a group is half a block, g % 2 = 0 the low nibbles (elements
// 0..15), 1 the high nibbles (16..31) of qs[0..16]. Q4_0, Q5_0, Q8_0 have a 2-byte d first, so
// their quant words straddle two stored words: word n of the quants is
// (w[n] >> 16) | (w[n + 1] << 16), the high half carried over from the previous load.

#ifdef TYPE_Q4_0
const G: u32 = 16u;
const BW: u32 = 5u;  // 18-byte block padded to 20
fn dq(row: u32, g: u32) -> array<f32, 16> {
    let b = row * p.row_words + (g / 2u) * BW;
    let w0 = w[b];
    let d = half_of(w0, false);
    let sh = (g % 2u) * 4u;
    var carry = w0 >> 16u;  // qs bytes 0, 1
    var v: array<f32, 16>;
    for (var n = 0u; n < 4u; n++) {
        let nx = w[b + 1u + n];
        let w4 = ((carry | (nx << 16u)) >> sh) & 0x0f0f0f0fu;
        carry = nx >> 16u;
        for (var k = 0u; k < 4u; k++) {
            let q = (w4 >> (8u * k)) & 0xffu;
            v[4u * n + k] = f32(i32(q) - 8) * d;
        }
    }
    return v;
}
#endif

#ifdef TYPE_Q4_1
const G: u32 = 16u;
const BW: u32 = 5u;
fn dq(row: u32, g: u32) -> array<f32, 16> {
    let b = row * p.row_words + (g / 2u) * BW;
    let dm = unpack2x16float(w[b]);  // d, m; qs at word 1
    let sh = (g % 2u) * 4u;
    var v: array<f32, 16>;
    for (var n = 0u; n < 4u; n++) {
        let w4 = (w[b + 1u + n] >> sh) & 0x0f0f0f0fu;
        for (var k = 0u; k < 4u; k++) {
            let q = (w4 >> (8u * k)) & 0xffu;
            v[4u * n + k] = f32(q) * dm.x + dm.y;
        }
    }
    return v;
}
#endif

#ifdef TYPE_Q5_0
const G: u32 = 16u;
const BW: u32 = 6u;  // 22-byte block padded to 24
fn dq(row: u32, g: u32) -> array<f32, 16> {
    let b = row * p.row_words + (g / 2u) * BW;
    let w0 = w[b];
    let w1 = w[b + 1u];
    let d = half_of(w0, false);
    // qh (bytes 2..5) straddles words 0 and 1; bit e is element e's fifth bit.
    let hb = ((w0 >> 16u) | (w1 << 16u)) >> ((g % 2u) * 16u);
    let sh = (g % 2u) * 4u;
    var carry = w1 >> 16u;  // qs bytes 0, 1 (byte 6 of the block)
    var v: array<f32, 16>;
    for (var n = 0u; n < 4u; n++) {
        let nx = w[b + 2u + n];
        let w4 = ((carry | (nx << 16u)) >> sh) & 0x0f0f0f0fu;
        carry = nx >> 16u;
        for (var k = 0u; k < 4u; k++) {
            let e = 4u * n + k;
            let q = ((w4 >> (8u * k)) & 0xffu) | (((hb >> e) & 1u) << 4u);
            v[e] = f32(i32(q) - 16) * d;
        }
    }
    return v;
}
#endif

#ifdef TYPE_Q5_1
const G: u32 = 16u;
const BW: u32 = 6u;
fn dq(row: u32, g: u32) -> array<f32, 16> {
    let b = row * p.row_words + (g / 2u) * BW;
    let dm = unpack2x16float(w[b]);  // d, m; qh word 1, qs from word 2
    let hb = w[b + 1u] >> ((g % 2u) * 16u);
    let sh = (g % 2u) * 4u;
    var v: array<f32, 16>;
    for (var n = 0u; n < 4u; n++) {
        let w4 = (w[b + 2u + n] >> sh) & 0x0f0f0f0fu;
        for (var k = 0u; k < 4u; k++) {
            let e = 4u * n + k;
            let q = ((w4 >> (8u * k)) & 0xffu) | (((hb >> e) & 1u) << 4u);
            v[e] = f32(q) * dm.x + dm.y;
        }
    }
    return v;
}
#endif

#ifdef TYPE_Q8_0
const G: u32 = 16u;
const BW: u32 = 9u;  // 34-byte block padded to 36
fn dq(row: u32, g: u32) -> array<f32, 16> {
    let b = row * p.row_words + (g / 2u) * BW;
    // Group h = g % 2 is block bytes 2 + 16h .. 17 + 16h: words 4h .. 4h + 4.
    let h = g % 2u;
    let w0 = w[b];
    let d = half_of(w0, false);
    var carry = w0 >> 16u;
    if (h != 0u) {
        carry = w[b + 4u] >> 16u;
    }
    var v: array<f32, 16>;
    for (var n = 0u; n < 4u; n++) {
        let nx = w[b + 4u * h + 1u + n];
        let w4 = carry | (nx << 16u);
        carry = nx >> 16u;
        for (var k = 0u; k < 4u; k++) {
            v[4u * n + k] = f32(dq_i8(w4, k)) * d;
        }
    }
    return v;
}
#endif

// K-quants: 256-element super-blocks, a group is 16 elements, j = g % 16 its index in the block.
// Every field of these blocks starts on a word, and a group's quants are 16 bytes (4 words).

#ifdef TYPE_Q2_K
const G: u32 = 16u;
const BW: u32 = 21u;
fn dq(row: u32, g: u32) -> array<f32, 16> {
    let b = row * p.row_words + (g / 16u) * BW;
    // Element 16j = 128h + 32s + 16k, and j is also the sub-block (8h + 2s + k).
    // scales[16] @0 (words 0..3), qs[64] @16 (words 4..19), d, dmin @80 (word 20).
    let j = g % 16u;
    let h = j / 8u;
    let s = (j / 2u) % 4u;
    let k = j % 2u;
    let sc = (w[b + j / 4u] >> (8u * (j % 4u))) & 0xffu;
    let dm = unpack2x16float(w[b + 20u]);
    let dl = dm.x * f32(sc & 15u);
    let ml = dm.y * f32(sc >> 4u);
    let o = b + 4u + 8u * h + 4u * k;
    var v: array<f32, 16>;
    for (var n = 0u; n < 4u; n++) {
        let w4 = (w[o + n] >> (2u * s)) & 0x03030303u;
        for (var l = 0u; l < 4u; l++) {
            let q = (w4 >> (8u * l)) & 0xffu;
            v[4u * n + l] = dl * f32(q) - ml;
        }
    }
    return v;
}
#endif

#ifdef TYPE_Q3_K
const G: u32 = 16u;
const BW: u32 = 28u;  // 110-byte block padded to 112
fn dq(row: u32, g: u32) -> array<f32, 16> {
    let b = row * p.row_words + (g / 16u) * BW;
    // Same decomposition as Q2_K: j = 8h + 2s + k. hmask[32] @0 (words 0..7), qs[64] @32
    // (words 8..23), scales[12] @96 (words 24..26), d @108 (word 27).
    let j = g % 16u;
    let h = j / 8u;
    let s = (j / 2u) % 4u;
    let k = j % 2u;
    // 6-bit scale: low 4 bits from S[j % 8] (nibble j / 8), high 2 from S[8 + j % 4] at 2·(j / 4).
    let lo4 = (w[b + 24u + (j % 8u) / 4u] >> (8u * (j % 4u) + 4u * (j / 8u))) & 15u;
    let hi2 = (w[b + 26u] >> (8u * (j % 4u) + 2u * (j / 4u))) & 3u;
    let dl = half_of(w[b + 27u], false) * f32(i32(lo4 | (hi2 << 4u)) - 32);
    let o = b + 8u + 8u * h + 4u * k;
    let hs = 4u * h + s;
    var v: array<f32, 16>;
    for (var n = 0u; n < 4u; n++) {
        let w4 = (w[o + n] >> (2u * s)) & 0x03030303u;
        let m4 = (w[b + 4u * k + n] >> hs) & 0x01010101u;
        for (var l = 0u; l < 4u; l++) {
            let lo2 = i32((w4 >> (8u * l)) & 0xffu);
            let hb = (m4 >> (8u * l)) & 0xffu;
            v[4u * n + l] = dl * f32(lo2 - select(4, 0, hb != 0u));
        }
    }
    return v;
}
#endif

#ifdef TYPE_Q4_K
#define K4 1
#endif
#ifdef TYPE_Q5_K
#define K4 1
#endif

#ifdef K4
// Scale and min of sub-block `j` (0..7) from the 12 bytes at byte 4, words s0, s1, s2 (llama.cpp
// get_scale_min_k4: S[j] & 63, S[j + 4] & 63 for j < 4, else from S[j + 4] and the top bits of
// S[j - 4], S[j]).
fn dq_k4_sm(s0: u32, s1: u32, s2: u32, j: u32) -> vec2<f32> {
    let n = 8u * (j % 4u);
    let a = (s0 >> n) & 0xffu;   // S[j % 4]
    let bb = (s1 >> n) & 0xffu;  // S[4 + j % 4]
    let c = (s2 >> n) & 0xffu;   // S[8 + j % 4]
    let hi = j >= 4u;
    let sc = select(a & 63u, (c & 15u) | ((a >> 6u) << 4u), hi);
    let mn = select(bb & 63u, (c >> 4u) | ((bb >> 6u) << 4u), hi);
    return vec2<f32>(f32(sc), f32(mn));
}
#endif

#ifdef TYPE_Q4_K
const G: u32 = 16u;
const BW: u32 = 36u;
fn dq(row: u32, g: u32) -> array<f32, 16> {
    let b = row * p.row_words + (g / 16u) * BW;
    // Element 16i = 64c + 32t + 16m; sub-block j = 2c + t = i / 2; bytes qs[32c + 16m ..], qs
    // at byte 16: words 4 + 8c + 4m ... Nibble t of each byte.
    let i = g % 16u;
    let c = i / 4u;
    let t = (i / 2u) % 2u;
    let dm = unpack2x16float(w[b]);  // d, dmin
    let sm = dq_k4_sm(w[b + 1u], w[b + 2u], w[b + 3u], i / 2u);
    let dl = dm.x * sm.x;
    let ml = dm.y * sm.y;
    let o = b + 4u + 8u * c + 4u * (i % 2u);
    var v: array<f32, 16>;
    for (var n = 0u; n < 4u; n++) {
        let w4 = (w[o + n] >> (4u * t)) & 0x0f0f0f0fu;
        for (var l = 0u; l < 4u; l++) {
            let q = (w4 >> (8u * l)) & 0xffu;
            v[4u * n + l] = dl * f32(q) - ml;
        }
    }
    return v;
}
#endif

#ifdef TYPE_Q5_K
const G: u32 = 16u;
const BW: u32 = 44u;
fn dq(row: u32, g: u32) -> array<f32, 16> {
    let b = row * p.row_words + (g / 16u) * BW;
    // As Q4_K; the fifth bit of element 32j + l is bit j of qh[l]. qh[32] @16 (words 4..11),
    // qs[128] @48 (words 12..43).
    let i = g % 16u;
    let c = i / 4u;
    let t = (i / 2u) % 2u;
    let j = i / 2u;
    let dm = unpack2x16float(w[b]);
    let sm = dq_k4_sm(w[b + 1u], w[b + 2u], w[b + 3u], j);
    let dl = dm.x * sm.x;
    let ml = dm.y * sm.y;
    let m4 = 4u * (i % 2u);
    var v: array<f32, 16>;
    for (var n = 0u; n < 4u; n++) {
        let lo = (w[b + 12u + 8u * c + m4 + n] >> (4u * t)) & 0x0f0f0f0fu;
        let hi = (w[b + 4u + m4 + n] >> j) & 0x01010101u;
        let w4 = lo | (hi << 4u);
        for (var l = 0u; l < 4u; l++) {
            let q = (w4 >> (8u * l)) & 0xffu;
            v[4u * n + l] = dl * f32(q) - ml;
        }
    }
    return v;
}
#endif

#ifdef TYPE_Q6_K
const G: u32 = 16u;
const BW: u32 = 53u;  // 210-byte block padded to 212
// Word 0 of block j of `row` (of this part): rows one after another, or under TILE128 (LM heads:
// GpuWeight::tiled) block by block in tiles of 128 rows: block j of the tile's rows, then j + 1.
fn k6_block(row: u32, j: u32) -> u32 {
#ifdef TILE128
    return (row & ~127u) * p.row_words + (j * 128u + (row & 127u)) * BW;
#else
    return row * p.row_words + j * BW;
#endif
}
fn dq(row: u32, g: u32) -> array<f32, 16> {
    let b = k6_block(row, g / 16u);
    // Element 16j = 128h + 32u + 16m; j is the scale index (8h + 2u + m).
    // Low 4 bits: nibble u / 2 of ql[64h + 32·(u % 2) + l]; high 2: bits 2u of qh[32h + l].
    // ql[128] @0 (words 0..31), qh[64] @128 (words 32..47), scales[16] @192 (words 48..51),
    // d @208 (word 52).
    let j = g % 16u;
    let h = j / 8u;
    let u = (j / 2u) % 4u;
    let m4 = 4u * (j % 2u);
    let sc = dq_i8(w[b + 48u + j / 4u], j % 4u);
    let dl = half_of(w[b + 52u], false) * f32(sc);
    let ol = b + 16u * h + 8u * (u % 2u) + m4;
    let oh = b + 32u + 8u * h + m4;
    var v: array<f32, 16>;
    for (var n = 0u; n < 4u; n++) {
        let lo = (w[ol + n] >> (4u * (u / 2u))) & 0x0f0f0f0fu;
        let hi = (w[oh + n] >> (2u * u)) & 0x03030303u;
        let w4 = lo | (hi << 4u);
        for (var l = 0u; l < 4u; l++) {
            let q = (w4 >> (8u * l)) & 0xffu;
            v[4u * n + l] = dl * f32(i32(q) - 32);
        }
    }
    return v;
}
#endif

#ifdef TYPE_T2R
// Codes: row_words words per row; scales: f16 per (row, 256 columns) from word p.aux, two per
// word. Columns 16g..16g+15 are 128q + 32l + 16m + (0..15): bytes 16m..16m+15 of chunk q (four
// words), field l of each byte; byte k of word i holds column 16g + 4i + k.
const G: u32 = 16u;
fn dq(row: u32, g: u32) -> array<f32, 16> {
    let q = g / 8u;
    let l = (g / 2u) % 4u;
    let base = row * p.row_words + q * 8u + (g % 2u) * 4u;
    let si = row * (p.row_words / 16u) + g / 16u;
    let s = half_of(w[p.aux + si / 2u], (si % 2u) != 0u);
    var v: array<f32, 16>;
    for (var i = 0u; i < 4u; i++) {
        let word = w[base + i];
        for (var k = 0u; k < 4u; k++) {
            let code = (word >> (8u * k + 2u * l)) & 3u;
            v[4u * i + k] = f32(i32(code) - 1) * s;
        }
    }
    return v;
}
#endif
