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

// Byte `i` of the block starting at word `base` (blocks start on a word, layout.rs).
fn bbyte(base: u32, i: u32) -> u32 {
    return byte_of(w[base + i / 4u], i % 4u);
}

// The f16 at byte `i` (even) of the block at word `base`, as f32.
fn bhalf(base: u32, i: u32) -> f32 {
    return half_of(w[base + i / 4u], (i % 4u) != 0u);
}

// Legacy 32-element blocks: a group is half a block, g % 2 = 0 the low nibbles (elements
// 0..15), 1 the high nibbles (16..31) of qs[0..16].

#ifdef TYPE_Q4_0
const G: u32 = 16u;
const BW: u32 = 5u;  // 18-byte block padded to 20
fn dq(row: u32, g: u32) -> array<f32, 16> {
    let b = row * p.row_words + (g / 2u) * BW;
    let d = bhalf(b, 0u);
    let sh = (g % 2u) * 4u;
    var v: array<f32, 16>;
    for (var i = 0u; i < 16u; i++) {
        let q = (bbyte(b, 2u + i) >> sh) & 15u;
        v[i] = f32(i32(q) - 8) * d;
    }
    return v;
}
#endif

#ifdef TYPE_Q4_1
const G: u32 = 16u;
const BW: u32 = 5u;
fn dq(row: u32, g: u32) -> array<f32, 16> {
    let b = row * p.row_words + (g / 2u) * BW;
    let d = bhalf(b, 0u);
    let m = bhalf(b, 2u);
    let sh = (g % 2u) * 4u;
    var v: array<f32, 16>;
    for (var i = 0u; i < 16u; i++) {
        let q = (bbyte(b, 4u + i) >> sh) & 15u;
        v[i] = f32(q) * d + m;
    }
    return v;
}
#endif

#ifdef TYPE_Q5_0
const G: u32 = 16u;
const BW: u32 = 6u;  // 22-byte block padded to 24
fn dq(row: u32, g: u32) -> array<f32, 16> {
    let b = row * p.row_words + (g / 2u) * BW;
    let d = bhalf(b, 0u);
    // qh (bytes 2..5) straddles words 0 and 1; bit e is element e's fifth bit.
    let hb = ((w[b] >> 16u) | (w[b + 1u] << 16u)) >> ((g % 2u) * 16u);
    let sh = (g % 2u) * 4u;
    var v: array<f32, 16>;
    for (var i = 0u; i < 16u; i++) {
        let q = ((bbyte(b, 6u + i) >> sh) & 15u) | (((hb >> i) & 1u) << 4u);
        v[i] = f32(i32(q) - 16) * d;
    }
    return v;
}
#endif

#ifdef TYPE_Q5_1
const G: u32 = 16u;
const BW: u32 = 6u;
fn dq(row: u32, g: u32) -> array<f32, 16> {
    let b = row * p.row_words + (g / 2u) * BW;
    let d = bhalf(b, 0u);
    let m = bhalf(b, 2u);
    let hb = w[b + 1u] >> ((g % 2u) * 16u);
    let sh = (g % 2u) * 4u;
    var v: array<f32, 16>;
    for (var i = 0u; i < 16u; i++) {
        let q = ((bbyte(b, 8u + i) >> sh) & 15u) | (((hb >> i) & 1u) << 4u);
        v[i] = f32(q) * d + m;
    }
    return v;
}
#endif

#ifdef TYPE_Q8_0
const G: u32 = 16u;
const BW: u32 = 9u;  // 34-byte block padded to 36
fn dq(row: u32, g: u32) -> array<f32, 16> {
    let b = row * p.row_words + (g / 2u) * BW;
    let d = bhalf(b, 0u);
    let o = 2u + (g % 2u) * 16u;
    var v: array<f32, 16>;
    for (var i = 0u; i < 16u; i++) {
        let q = bitcast<i32>(bbyte(b, o + i) << 24u) >> 24u;  // sign-extend the int8
        v[i] = f32(q) * d;
    }
    return v;
}
#endif

// K-quants: 256-element super-blocks, a group is 16 elements, j = g % 16 its index in the block.

#ifdef TYPE_Q2_K
const G: u32 = 16u;
const BW: u32 = 21u;
fn dq(row: u32, g: u32) -> array<f32, 16> {
    let b = row * p.row_words + (g / 16u) * BW;
    // Element 16j = 128h + 32s + 16k, and j is also the sub-block (8h + 2s + k).
    let j = g % 16u;
    let h = j / 8u;
    let s = (j / 2u) % 4u;
    let k = j % 2u;
    let sc = bbyte(b, j);
    let dl = bhalf(b, 80u) * f32(sc & 15u);
    let ml = bhalf(b, 82u) * f32(sc >> 4u);
    let o = 16u + 32u * h + 16u * k;
    var v: array<f32, 16>;
    for (var l = 0u; l < 16u; l++) {
        let q = (bbyte(b, o + l) >> (2u * s)) & 3u;
        v[l] = dl * f32(q) - ml;
    }
    return v;
}
#endif

#ifdef TYPE_Q3_K
const G: u32 = 16u;
const BW: u32 = 28u;  // 110-byte block padded to 112
fn dq(row: u32, g: u32) -> array<f32, 16> {
    let b = row * p.row_words + (g / 16u) * BW;
    // Same decomposition as Q2_K: j = 8h + 2s + k.
    let j = g % 16u;
    let h = j / 8u;
    let s = (j / 2u) % 4u;
    let k = j % 2u;
    // 6-bit scale: low 4 bits from S[j % 8] (nibble j / 8), high 2 from S[8 + j % 4] at 2·(j / 4).
    let lo4 = (bbyte(b, 96u + j % 8u) >> (4u * (j / 8u))) & 15u;
    let hi2 = (bbyte(b, 104u + j % 4u) >> (2u * (j / 4u))) & 3u;
    let dl = bhalf(b, 108u) * f32(i32(lo4 | (hi2 << 4u)) - 32);
    let o = 32u + 32u * h + 16u * k;
    let hs = 4u * h + s;
    var v: array<f32, 16>;
    for (var l = 0u; l < 16u; l++) {
        let lo2 = i32((bbyte(b, o + l) >> (2u * s)) & 3u);
        let hb = (bbyte(b, 16u * k + l) >> hs) & 1u;
        v[l] = dl * f32(lo2 - select(4, 0, hb != 0u));
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
// Scale and min of sub-block `j` (0..7) from the 12 bytes at byte 4 (llama.cpp get_scale_min_k4).
fn scale_min_k4(b: u32, j: u32) -> vec2<f32> {
    if (j < 4u) {
        return vec2<f32>(f32(bbyte(b, 4u + j) & 63u), f32(bbyte(b, 8u + j) & 63u));
    }
    let sc = (bbyte(b, 8u + j) & 15u) | ((bbyte(b, j) >> 6u) << 4u);
    let mn = (bbyte(b, 8u + j) >> 4u) | ((bbyte(b, 4u + j) >> 6u) << 4u);
    return vec2<f32>(f32(sc), f32(mn));
}
#endif

#ifdef TYPE_Q4_K
const G: u32 = 16u;
const BW: u32 = 36u;
fn dq(row: u32, g: u32) -> array<f32, 16> {
    let b = row * p.row_words + (g / 16u) * BW;
    // Element 16i = 64c + 32t + 16m; sub-block j = 2c + t = i / 2; bytes qs[32c + 16m ..].
    let i = g % 16u;
    let c = i / 4u;
    let t = (i / 2u) % 2u;
    let sm = scale_min_k4(b, i / 2u);
    let dl = bhalf(b, 0u) * sm.x;
    let ml = bhalf(b, 2u) * sm.y;
    let o = 16u + 32u * c + 16u * (i % 2u);
    var v: array<f32, 16>;
    for (var l = 0u; l < 16u; l++) {
        let q = (bbyte(b, o + l) >> (4u * t)) & 15u;
        v[l] = dl * f32(q) - ml;
    }
    return v;
}
#endif

#ifdef TYPE_Q5_K
const G: u32 = 16u;
const BW: u32 = 44u;
fn dq(row: u32, g: u32) -> array<f32, 16> {
    let b = row * p.row_words + (g / 16u) * BW;
    // As Q4_K; the fifth bit of element 32j + l is bit j of qh[l].
    let i = g % 16u;
    let c = i / 4u;
    let t = (i / 2u) % 2u;
    let j = i / 2u;
    let sm = scale_min_k4(b, j);
    let dl = bhalf(b, 0u) * sm.x;
    let ml = bhalf(b, 2u) * sm.y;
    let l0 = 16u * (i % 2u);
    var v: array<f32, 16>;
    for (var l = 0u; l < 16u; l++) {
        let lo = (bbyte(b, 48u + 32u * c + l0 + l) >> (4u * t)) & 15u;
        let hi = (bbyte(b, 16u + l0 + l) >> j) & 1u;
        v[l] = dl * f32(lo | (hi << 4u)) - ml;
    }
    return v;
}
#endif

#ifdef TYPE_Q6_K
const G: u32 = 16u;
const BW: u32 = 53u;  // 210-byte block padded to 212
fn dq(row: u32, g: u32) -> array<f32, 16> {
    let b = row * p.row_words + (g / 16u) * BW;
    // Element 16j = 128h + 32u + 16m; j is the scale index (8h + 2u + m).
    // Low 4 bits: nibble u / 2 of ql[64h + 32·(u % 2) + l]; high 2: bits 2u of qh[32h + l].
    let j = g % 16u;
    let h = j / 8u;
    let u = (j / 2u) % 4u;
    let l0 = 16u * (j % 2u);
    let sc = bitcast<i32>(bbyte(b, 192u + j) << 24u) >> 24u;
    let dl = bhalf(b, 208u) * f32(sc);
    let ol = 64u * h + 32u * (u % 2u) + l0;
    let oh = 128u + 32u * h + l0;
    var v: array<f32, 16>;
    for (var l = 0u; l < 16u; l++) {
        let lo = (bbyte(b, ol + l) >> (4u * (u / 2u))) & 15u;
        let hi = (bbyte(b, oh + l) >> (2u * u)) & 3u;
        v[l] = dl * f32(i32(lo | (hi << 4u)) - 32);
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
