// The KV cache's storage on the GPU (model/kv.rs GpuKv), #included by the kernels that write
// (rope.wgsl rope_kv, attention.wgsl under ROPE_KV) and read (attention.wgsl) it, so its layout
// lives in one place.
//
// KV_F16: each row is packed f16 pairs in u32 words, element 2w in the low half of word w,
// rows padded to an even number of elements (a row of n elements is (n + 1) / 2 words, so every
// row starts on a word). Packed by f16_bits, read by unpack2x16float (core WGSL: no shader-f16).
// Otherwise rows are plain f32.
//
// Readers declare `kc` and `vc` as `array<kv_word>` (any access mode) and define KV_READ; they
// address element i of row r as r · kv_stride(row_len) + i. Readers of 4 elements at a time
// (rows and offsets multiples of 4 elements) declare them as `array<kv_quad>`, define KV_READ4,
// and read elements e … e + 3 (e a multiple of 4) as kv_quad_f32(kc[e / 4]) (written as
// kc[e / 4] = kv_quad_pack(…)).

#ifdef KV_F16
alias kv_word = u32;
const KV_PER_WORD: u32 = 2u;

// The f16 bits of x rounded to nearest, ties to even, as the CPU engine stores its cache (and
// llama.cpp its f16 tensors). Not pack2x16float: WGSL leaves its rounding to the implementation,
// and NVIDIA's compiler folded kv_round's unpack2x16float(pack2x16float(x)) into x, so the
// token's own K/V rows went unrounded (up to an ulp off the cache's). Overflow gives ±inf, NaN a
// quiet NaN.
fn f16_bits(x: f32) -> u32 {
    let b = bitcast<u32>(x);
    let sign = (b >> 16u) & 0x8000u;
    let a = b & 0x7fffffffu;
    if (a > 0x7f800000u) {
        return sign | 0x7e00u;
    }
    if (a >= 0x477ff000u) {
        // ≥ 65520 (the midpoint above 65504, the largest f16), infinity included.
        return sign | 0x7c00u;
    }
    if (a >= 0x38800000u) {
        // Normal (≥ 2^-14): the exponent rebiased (127 → 15), 13 mantissa bits rounded off.
        return sign | ((a + 0xfffu + ((a >> 13u) & 1u) - 0x38000000u) >> 13u);
    }
    let e = a >> 23u;
    if (e < 102u) {
        // Below 2^-25 (half the smallest subnormal): zero.
        return sign;
    }
    // Subnormal: x / 2^-24 = m · 2^(e − 126), rounded (a carry into 0x400 is the smallest normal).
    let m = (a & 0x7fffffu) | 0x800000u;
    let sh = 126u - e;
    return sign | ((m + (1u << (sh - 1u)) - 1u + ((m >> sh) & 1u)) >> sh);
}

// One word of a row from its elements (j, j + 1); the second is 0 past the row's end.
fn kv_pack(e: vec2<f32>) -> u32 {
    return f16_bits(e.x) | (f16_bits(e.y) << 16u);
}

// `x` as the cache stores it and a reader gets it back.
fn kv_round(x: f32) -> f32 {
    return unpack2x16float(f16_bits(x)).x;
}
#else
alias kv_word = f32;
const KV_PER_WORD: u32 = 1u;

fn kv_pack(e: vec2<f32>) -> f32 {
    return e.x;
}

fn kv_round(x: f32) -> f32 {
    return x;
}
#endif

// Words per row of n elements.
fn kv_words(n: u32) -> u32 {
    return (n + KV_PER_WORD - 1u) / KV_PER_WORD;
}

// Elements from one row's start to the next (n padded to whole words).
fn kv_stride(n: u32) -> u32 {
    return kv_words(n) * KV_PER_WORD;
}

#ifdef KV_READ
// Element `e` of the K cache (row r, element i at e = r · kv_stride(k_row) + i).
fn kv_k(e: u32) -> f32 {
#ifdef KV_F16
    return unpack2x16float(kc[e >> 1u])[e & 1u];
#else
    return kc[e];
#endif
}

// Element `e` of the V cache.
fn kv_v(e: u32) -> f32 {
#ifdef KV_F16
    return unpack2x16float(vc[e >> 1u])[e & 1u];
#else
    return vc[e];
#endif
}
#endif

#ifdef KV_READ4
#ifdef KV_F16
alias kv_quad = vec2<u32>;

fn kv_quad_f32(w: kv_quad) -> vec4<f32> {
    return vec4<f32>(unpack2x16float(w.x), unpack2x16float(w.y));
}

// Four elements as one stored quad (the writers of whole quads: no two share a word).
fn kv_quad_pack(e: vec4<f32>) -> kv_quad {
    return vec2<u32>(kv_pack(e.xy), kv_pack(e.zw));
}
#else
alias kv_quad = vec4<f32>;

fn kv_quad_f32(w: kv_quad) -> vec4<f32> {
    return w;
}

fn kv_quad_pack(e: vec4<f32>) -> kv_quad {
    return e;
}
#endif
#endif
