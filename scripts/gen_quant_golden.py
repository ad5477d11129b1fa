#!/usr/bin/env python3
"""Generate the golden vectors of tests/quant_golden.rs.

Usage: python3 scripts/gen_quant_golden.py OUTDIR      (normally OUTDIR = tests/data/quant)

Needs numpy and the `gguf` package (gguf-py, llama.cpp's Python reader/writer; 0.19.0 was used).

For every supported weight type this writes, with a fixed seed:
  <type>.q / <type>.f32                 random blocks (valid structure, random quant bytes, f16
                                        scales that include normal values, subnormals, +0 and -0)
                                        and their decoded values (little-endian f32);
  <type>.special.q / <type>.special.f32 a small set whose scales include inf and NaN;
and for the ternary types that ternlm can also write:
  <type>.quantize.in.f32 / <type>.quantize.q   float input and the reference quantizer's bytes.
manifest.json lists every file with its type and shape (ne[0] innermost), so the Rust test needs
no other knowledge of the layout.

Expected values come from gguf.quants.dequantize (a port of llama.cpp's dequantize_row_*), except:
  - I2_S, which gguf-py does not know: decoded here with numpy from spec/formats.md section 4.3;
  - TQ2_0 blocks use codes 0..2 only: code 3 never occurs in valid data, ternlm decodes it to 0
    (formats.md section 4) while llama.cpp and gguf-py decode it to +2.
"""

import hashlib
import json
import sys
from pathlib import Path

import numpy as np

import gguf
from gguf import GGMLQuantizationType as T
from gguf.quants import dequantize, quantize

SEED = 20250114
QK = 32
QK_K = 256

# Blocks per set: (normal rows, special rows) for each block size; shapes chosen as ne = [cols, rows].
SHAPES = {
    1: ([64, 16], [64, 1]),
    QK: ([256, 32], [256, 4]),
    QK_K: ([1024, 16], [512, 4]),
}

# (name as ternlm/ggml spells it, gguf type, byte offsets of f16 scale fields in a block)
FORMATS = [
    ("f32", T.F32, []),
    ("f16", T.F16, []),
    ("bf16", T.BF16, []),
    ("q4_0", T.Q4_0, [0]),
    ("q4_1", T.Q4_1, [0, 2]),
    ("q5_0", T.Q5_0, [0]),
    ("q5_1", T.Q5_1, [0, 2]),
    ("q8_0", T.Q8_0, [0]),
    ("q2_K", T.Q2_K, [80, 82]),
    ("q3_K", T.Q3_K, [108]),
    ("q4_K", T.Q4_K, [0, 2]),
    ("q5_K", T.Q5_K, [0, 2]),
    ("q6_K", T.Q6_K, [208]),
    ("tq1_0", T.TQ1_0, [52]),
    ("tq2_0", T.TQ2_0, [64]),
]

F16_SPECIAL_FINITE = [0x0001, 0x8001, 0x03FF, 0x8000, 0x0000, 0x7BFF, 0x0400]
F16_NONFINITE = [0x7C00, 0xFC00, 0x7E00, 0xFE00, 0x7C01]


def normal_f16(rng, n):
    """Finite f16 bit patterns: mostly normal values of mixed sign and magnitude, ~15% edge cases."""
    mag = 10.0 ** rng.uniform(-5.0, 1.0, n)
    vals = (mag * rng.choice([-1.0, 1.0], n)).astype(np.float16).view(np.uint16)
    edge = rng.random(n) < 0.15
    vals[edge] = rng.choice(F16_SPECIAL_FINITE, edge.sum())
    # random subnormals too
    sub = rng.random(n) < 0.03
    vals[sub] = rng.integers(1, 0x400, sub.sum()) | (rng.integers(0, 2, sub.sum()) << 15)
    return vals.astype(np.uint16)


def special_f16(rng, n):
    vals = normal_f16(rng, n)
    bad = rng.random(n) < 0.5
    vals[bad] = rng.choice(F16_NONFINITE, bad.sum())
    return vals


def random_blocks(rng, name, qtype, offsets, nblocks, special):
    block_size, type_size = gguf.GGML_QUANT_SIZES[qtype]
    if qtype == T.F32:
        vals = rng.standard_normal(nblocks).astype(np.float32) * np.float32(10.0) ** rng.integers(-3, 4, nblocks).astype(np.float32)
        bits = vals.view(np.uint32)
        bits[rng.random(nblocks) < 0.05] = 0x80000000  # -0
        sub = rng.random(nblocks) < 0.05
        bits[sub] = rng.integers(1, 1 << 23, sub.sum(), dtype=np.uint32)  # subnormals
        if special:
            bad = rng.random(nblocks) < 0.5
            bits[bad] = rng.choice(np.array([0x7F800000, 0xFF800000, 0x7FC00000, 0x7F800001, 0xFFC12345], dtype=np.uint32), bad.sum())
        return bits.view(np.uint8)
    if qtype == T.F16:
        return (special_f16 if special else normal_f16)(rng, nblocks).view(np.uint8)
    if qtype == T.BF16:
        hi = rng.integers(0, 1 << 16, nblocks, dtype=np.uint32).astype(np.uint16)
        finite = (hi & 0x7F80) != 0x7F80
        if not special:
            hi = np.where(finite, hi, hi & 0xBFFF)  # clear the top exponent bit: finite
        else:
            bad = rng.random(nblocks) < 0.5
            hi[bad] = rng.choice(np.array([0x7F80, 0xFF80, 0x7FC0, 0x7F81], dtype=np.uint16), bad.sum())
        return hi.astype(np.uint16).view(np.uint8)

    blocks = rng.integers(0, 256, (nblocks, type_size), dtype=np.uint8)
    if qtype == T.TQ2_0:
        fields = rng.integers(0, 3, (nblocks, 64, 4), dtype=np.uint8)
        blocks[:, :64] = (fields << np.array([0, 2, 4, 6], dtype=np.uint8)).sum(axis=-1, dtype=np.uint8)
    draw = special_f16 if special else normal_f16
    for off in offsets:
        blocks[:, off:off + 2] = draw(rng, nblocks).view(np.uint8).reshape(nblocks, 2)
    return blocks.reshape(-1)


I2S_VALUES = np.array([-1.0, 0.0, 1.0, 0.0], dtype=np.float32)


def i2s_dequantize(data, ne0, nrows):
    """formats.md section 4.3: 128-element chunks of 32 bytes, byte g holding elements
    g, 32+g, 64+g, 96+g in bits 7:6, 5:4, 3:2, 1:0; then one f32 scale at byte n/4."""
    n = ne0 * nrows
    packed = data[: n // 4].reshape(-1, 1, 32)
    codes = (packed >> np.array([6, 4, 2, 0], dtype=np.uint8).reshape(1, 4, 1)) & 3
    scale = data[n // 4: n // 4 + 4].view(np.float32)[0]
    return I2S_VALUES[codes.reshape(-1)] * scale


def i2s_quantize(x):
    """formats.md section 4.3 writer: s = max|x|, code = round(x/s) + 1 (half away from zero)."""
    s = np.float32(np.abs(x).max())
    inv = np.float32(0.0) if s == 0 else np.float32(1.0) / s
    codes = (np.clip(gguf.quants.np_roundf(x * inv), -1, 1).astype(np.int8) + 1).astype(np.uint8)
    codes = codes.reshape(-1, 4, 32) << np.array([6, 4, 2, 0], dtype=np.uint8).reshape(1, 4, 1)
    packed = codes.sum(axis=1, dtype=np.uint8).reshape(-1)
    trailer = np.zeros(32, dtype=np.uint8)
    trailer[:4] = np.array([s], dtype=np.float32).view(np.uint8)
    return np.concatenate([packed, trailer])


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(SEED)
    files = []

    def emit(stem, type_name, ne, qbytes, expected, role, source):
        qbytes = np.ascontiguousarray(qbytes, dtype=np.uint8)
        expected = np.ascontiguousarray(expected, dtype="<f4").reshape(-1)
        (out / f"{stem}.q").write_bytes(qbytes.tobytes())
        (out / f"{stem}.f32").write_bytes(expected.tobytes())
        files.append({
            "stem": stem, "type": type_name, "ne": ne, "role": role, "source": source,
            "q_bytes": int(qbytes.size), "values": int(expected.size),
            "q_sha256": hashlib.sha256(qbytes.tobytes()).hexdigest(),
        })

    for name, qtype, offsets in FORMATS:
        block_size, _ = gguf.GGML_QUANT_SIZES[qtype]
        for special, ne in zip((False, True), SHAPES[block_size]):
            nblocks = ne[0] * ne[1] // block_size
            data = random_blocks(rng, name, qtype, offsets, nblocks, special)
            with np.errstate(invalid="ignore", over="ignore"):
                expected = dequantize(data, qtype).astype(np.float32)
            assert expected.size == ne[0] * ne[1]
            stem = f"{name}.special" if special else name
            emit(stem, name, ne, data, expected, "special" if special else "decode", "gguf.quants.dequantize")

    # I2_S: no gguf-py codec; random codes (3 included, which decodes to 0) and a scale trailer.
    for special, ne in ((False, [384, 24]), (True, [128, 2])):
        n = ne[0] * ne[1]
        packed = rng.integers(0, 256, n // 4, dtype=np.uint8)
        trailer = rng.integers(0, 256, 32, dtype=np.uint8)
        scale = np.float32(np.inf) if special else np.float32(rng.uniform(0.01, 2.0))
        trailer[:4] = np.array([scale], dtype=np.float32).view(np.uint8)
        data = np.concatenate([packed, trailer])
        with np.errstate(invalid="ignore"):
            expected = i2s_dequantize(data, ne[0], ne[1])
        emit("i2_s.special" if special else "i2_s", "i2_s", ne, data, expected,
             "special" if special else "decode", "numpy from formats.md 4.3 (gguf-py has no I2_S)")

    # Reference quantizers: float input -> bytes. Blocks of Gaussian values and exactly ternary ones.
    ne = [512, 4]
    x = rng.standard_normal(ne[0] * ne[1]).astype(np.float32)
    x[:512] = (rng.integers(-1, 2, 512) * np.float32(np.float16(0.37))).astype(np.float32)
    x[512:768] = 0.0  # an all-zero block: d = 0
    for name, qtype in (("tq1_0", T.TQ1_0), ("tq2_0", T.TQ2_0)):
        emit(f"{name}.quantize", name, ne, quantize(x.reshape(ne[::-1]), qtype).reshape(-1), x,
             "quantize", "gguf.quants.quantize")
    emit("i2_s.quantize", "i2_s", ne, i2s_quantize(x), x, "quantize", "numpy from formats.md 4.3")

    manifest = {
        "generator": "scripts/gen_quant_golden.py",
        "gguf_version": getattr(gguf, "__version__", None) or _dist_version("gguf"),
        "numpy_version": np.__version__,
        "seed": SEED,
        "layout": "<stem>.q raw tensor bytes; <stem>.f32 little-endian f32: decoded values "
                  "(role decode/special) or the quantizer input (role quantize); ne[0] innermost",
        "notes": [
            "tq2_0 decode sets use codes 0..2 only: ternlm decodes code 3 to 0, gguf-py to +2",
            "i2_s expected values are computed in this script with numpy from formats.md 4.3",
            "special sets contain inf/NaN scales; compare NaN as equal to NaN",
        ],
        "files": files,
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    total = sum(p.stat().st_size for p in out.iterdir())
    print(f"wrote {len(files)} sets, {total} bytes, to {out}")


def _dist_version(dist):
    try:
        from importlib.metadata import version
        return version(dist)
    except Exception:  # noqa: BLE001
        return None


if __name__ == "__main__":
    main()
