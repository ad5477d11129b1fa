#!/usr/bin/env python3
"""Write the shape-exact synthetic benchmark models (issue #5): random weights with the exact
shapes and metadata of SmolLM2-135M, Llama-3.2-1B and BitNet-b1.58-2B-4T, written as F16 GGUFs
and quantized with llama.cpp's llama-quantize.

Usage:
    python scripts/make_bench_models.py OUTDIR --llama-quantize PATH [--only NAME[,NAME]]
                                        [--layers N] [--keep-f16]

Files written to OUTDIR (NAME for --only: the family or the file stem):
    smollm2-135m-q4_1.gguf      family smollm2-135m   (Q4_1, token_embd Q8_0 as the real file)
    llama-3.2-1b-q4_k_m.gguf    family llama-3.2-1b   (Q4_K_M)
    bitnet-2b-4t-tq2_0.gguf     family bitnet-2b-4t   (TQ2_0)
    bitnet-2b-4t-tq1_0.gguf     family bitnet-2b-4t   (TQ1_0)

Shapes (HF configs):
    smollm2-135m   llama, n_embd 576, 30 blocks, 9 / 3 heads (hd 64), n_ff 1536, V 49152, tied,
                   rope base 1e5, ctx 8192, eps 1e-5
    llama-3.2-1b   llama, n_embd 2048, 16 blocks, 32 / 8 heads (hd 64), n_ff 8192, V 128256,
                   tied, rope base 5e5, llama3 RoPE scaling baked into `rope_freqs.weight` as
                   convert_hf_to_gguf writes it (factor 32, low 1, high 4, original ctx 8192),
                   ctx 131072, eps 1e-5
    bitnet-2b-4t   arch `bitnet` (upstream llama.cpp: SiLU FFN; the shapes are 2B-4T's),
                   n_embd 2560, 30 blocks, 20 / 5 heads (hd 128), n_ff 6912, V 128256, tied
                   (no output.weight), attn_sub_norm / ffn_sub_norm, rope base 5e5, ctx 4096,
                   eps 1e-5, rope.scaling linear 1.0 (as conversion/bitnet.py writes)

Weights are deterministic (one numpy generator per tensor, seeded from the family seed and the
tensor name, as scripts/make_synthetic.py): 2-D weights Gaussian / sqrt(fan_in) in F16, norms
1 + 0.1 N in F32. The BitNet projections are ternary as the HF converter writes them: t * s with
t uniform in {-1, 0, +1} and one f16-exact scale s = sqrt(1.5 / fan_in) per tensor, so every
TQ1_0 / TQ2_0 block decodes to exactly t * s. token_embd stays Gaussian.

The vocabulary has exactly n_vocab tokens: make_synthetic.py's byte-level GPT-2 vocabulary
(256 byte tokens, 8 merges, `<|endoftext|>` = id 264 as BOS/EOS) followed by unreachable
NORMAL filler tokens "[265]", "[266]", ... Both llama.cpp and ternlm load it; the benchmarks
feed token ids, never text.

Memory stays bounded: tensor infos are declared first, then each tensor is generated and written
one at a time (the largest, BitNet's token_embd, is 657 MB in F16). The F16 intermediate
(<family>-f16.gguf, about 4.8 GB for BitNet) is deleted after quantizing unless --keep-f16.
An output whose block_count already matches is skipped; files are written under a `.tmp` name
and renamed when complete, so an interrupted run never leaves a truncated model behind.

--layers N overrides the block count (for testing the script on a small machine).

Needs numpy and the `gguf` package (0.19.0). PyYAML is not needed: if it is missing, a stub
module stands in for it (gguf imports yaml only to read model cards).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import types
import zlib
from pathlib import Path

import numpy as np

try:
    import yaml  # noqa: F401  (gguf.metadata imports it at module level)
except ImportError:
    sys.modules["yaml"] = types.ModuleType("yaml")

import gguf  # noqa: E402
from gguf import GGMLQuantizationType as QT  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_synthetic as syn  # noqa: E402  (vocabulary and llama3 rope factors)

# Elements generated per step: bounds the float32 scratch to 64 MiB whatever the tensor size.
CHUNK_ELEMS = 16 << 20


class Family:
    """One benchmark model: its shapes, metadata and the quantized files made from it."""

    def __init__(self, name, arch, n_embd, n_layer, n_head, n_head_kv, n_ff, n_vocab, ctx,
                 rope_base, seed, outputs, eps=1e-5, llama3=None, ternary=False,
                 key_length=False, linear_rope=False):
        self.name, self.arch, self.n_embd, self.n_layer = name, arch, n_embd, n_layer
        self.n_head, self.n_head_kv, self.n_ff, self.n_vocab = n_head, n_head_kv, n_ff, n_vocab
        self.ctx, self.rope_base, self.seed, self.eps = ctx, rope_base, seed, eps
        self.head_dim = n_embd // n_head
        self.llama3, self.ternary = llama3, ternary
        self.key_length, self.linear_rope = key_length, linear_rope
        # [(file stem, llama-quantize type, extra llama-quantize args)]
        self.outputs = outputs


FAMILIES = [
    # The real SmolLM2-135M-Instruct Q4_1 file (testing.md §2.1) keeps token_embd in Q8_0;
    # llama-quantize's default for a tied Q4_1 model would be Q6_K, which 576-wide rows cannot
    # hold (it falls back), so ask for Q8_0 explicitly.
    Family("smollm2-135m", "llama", 576, 30, 9, 3, 1536, 49152, 8192, 100000.0, seed=5001,
           outputs=[("smollm2-135m-q4_1", "Q4_1", ["--output-tensor-type", "q8_0"])]),
    Family("llama-3.2-1b", "llama", 2048, 16, 32, 8, 8192, 128256, 131072, 500000.0, seed=5002,
           llama3={"factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                   "original_context_length": 8192},
           key_length=True,
           outputs=[("llama-3.2-1b-q4_k_m", "Q4_K_M", [])]),
    Family("bitnet-2b-4t", "bitnet", 2560, 30, 20, 5, 6912, 128256, 4096, 500000.0, seed=5003,
           ternary=True, linear_rope=True,
           outputs=[("bitnet-2b-4t-tq2_0", "TQ2_0", []), ("bitnet-2b-4t-tq1_0", "TQ1_0", [])]),
]

TERNARY_ROLES = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")


# --------------------------------------------------------------------------
# Vocabulary
# --------------------------------------------------------------------------

def tokenizer_kv(w: gguf.GGUFWriter, n_vocab: int) -> None:
    """make_synthetic.tokenizer_kv, padded to n_vocab with NORMAL filler tokens."""
    base = len(syn.TOKENS)
    assert n_vocab >= base
    tokens = syn.TOKENS + [f"[{i}]" for i in range(base, n_vocab)]
    token_types = syn.TOKEN_TYPES + [int(gguf.TokenType.NORMAL)] * (n_vocab - base)
    assert len(set(tokens)) == n_vocab
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("gpt-2")
    w.add_token_list(tokens)
    w.add_token_types(token_types)
    w.add_token_merges(syn.MERGES)
    w.add_bos_token_id(syn.EOT_ID)
    w.add_eos_token_id(syn.EOT_ID)
    w.add_add_bos_token(False)


# --------------------------------------------------------------------------
# Tensors
# --------------------------------------------------------------------------

# kinds: "w" Gaussian F16, "t" ternary F16, "norm" F32, "freqs" F32 rope factors
Spec = tuple[str, tuple[int, ...], str]


def tensor_specs(f: Family) -> list[Spec]:
    """(name, ne in ggml order, kind) in file order; the tensor lists of llama.cpp's
    llama_model_llama / llama_model_bitnet::load_arch_tensors (tied: no output.weight)."""
    q = f.n_head * f.head_dim
    kv = f.n_head_kv * f.head_dim
    w = "t" if f.ternary else "w"
    out: list[Spec] = [("token_embd.weight", (f.n_embd, f.n_vocab), "w"),
                       ("output_norm.weight", (f.n_embd,), "norm")]
    if f.llama3 is not None:
        out.append(("rope_freqs.weight", (f.head_dim // 2,), "freqs"))
    for i in range(f.n_layer):
        p = f"blk.{i}."
        out += [(p + "attn_norm.weight", (f.n_embd,), "norm"),
                (p + "attn_q.weight", (f.n_embd, q), w),
                (p + "attn_k.weight", (f.n_embd, kv), w),
                (p + "attn_v.weight", (f.n_embd, kv), w),
                (p + "attn_output.weight", (q, f.n_embd), w)]
        if f.ternary:
            out.append((p + "attn_sub_norm.weight", (f.n_embd,), "norm"))
        out += [(p + "ffn_norm.weight", (f.n_embd,), "norm"),
                (p + "ffn_gate.weight", (f.n_embd, f.n_ff), w),
                (p + "ffn_up.weight", (f.n_embd, f.n_ff), w),
                (p + "ffn_down.weight", (f.n_ff, f.n_embd), w)]
        if f.ternary:
            out.append((p + "ffn_sub_norm.weight", (f.n_ff,), "norm"))
    return out


def rng_for(seed: int, name: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(name.encode())])


def make_tensor(f: Family, name: str, ne: tuple[int, ...], kind: str) -> np.ndarray:
    """The tensor in numpy order (reversed ne): F16 for 2-D weights, F32 otherwise."""
    rng = rng_for(f.seed, name)
    if kind == "norm":
        return (1.0 + 0.1 * rng.standard_normal(ne, dtype=np.float32)).astype(np.float32)
    if kind == "freqs":
        cfg = syn.Cfg("llama", f.n_embd, f.n_ff, 1, f.n_head, f.n_head_kv, tied=True, seed=0,
                      rope_base=f.rope_base, llama3=f.llama3)
        return syn.llama3_rope_factors(cfg)
    ne0, ne1 = ne
    out = np.empty((ne1, ne0), dtype=np.float16)
    step = max(1, CHUNK_ELEMS // ne0)
    if kind == "w":
        scale = np.float32(1.0 / np.sqrt(ne0))
        for r in range(0, ne1, step):
            x = rng.standard_normal((min(step, ne1 - r), ne0), dtype=np.float32)
            x *= scale
            out[r:r + x.shape[0]] = x
    else:
        assert kind == "t"
        s = np.float16(np.sqrt(1.5 / ne0))   # f16-exact, so the TQ block absmax is exactly s
        lut = np.array([-s, 0, s], dtype=np.float16)
        for r in range(0, ne1, step):
            t = rng.integers(0, 3, size=(min(step, ne1 - r), ne0), dtype=np.uint8)
            out[r:r + t.shape[0]] = lut[t]
    return out


def write_f16(f: Family, path: Path) -> None:
    """The F16 source, streamed: all tensor infos first, then one tensor at a time."""
    w = gguf.GGUFWriter(path, f.arch)
    w.add_type("model")
    w.add_name(f"{f.name}-synthetic")
    w.add_file_type(int(gguf.LlamaFileType.MOSTLY_F16))
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    w.add_context_length(f.ctx)
    w.add_embedding_length(f.n_embd)
    w.add_block_count(f.n_layer)
    w.add_feed_forward_length(f.n_ff)
    w.add_head_count(f.n_head)
    w.add_head_count_kv(f.n_head_kv)
    if f.key_length:
        w.add_key_length(f.head_dim)
        w.add_value_length(f.head_dim)
    w.add_layer_norm_rms_eps(f.eps)
    w.add_rope_freq_base(f.rope_base)
    w.add_rope_dimension_count(f.head_dim)
    if f.linear_rope:
        w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        w.add_rope_scaling_factor(1.0)
    w.add_vocab_size(f.n_vocab)
    tokenizer_kv(w, f.n_vocab)

    specs = tensor_specs(f)
    for name, ne, kind in specs:
        dtype = np.float16 if len(ne) == 2 else np.float32
        n = int(np.prod(ne))
        w.add_tensor_info(name, tuple(reversed(ne)), np.dtype(dtype), n * np.dtype(dtype).itemsize)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    for name, ne, kind in specs:
        w.write_tensor_data(make_tensor(f, name, ne, kind))
    w.close()


# --------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------

def read_header(path: Path) -> tuple[int | None, dict[str, int]]:
    """(block_count, tensor count by type name) of a complete GGUF, or (None, {}) when the file
    cannot be read (truncated, not GGUF)."""
    try:
        r = gguf.GGUFReader(path)
        arch = bytes(r.fields["general.architecture"].parts[-1]).decode()
        field = r.fields.get(f"{arch}.block_count")
        n_layer = int(field.parts[-1][0]) if field is not None else None
        census: dict[str, int] = {}
        for t in r.tensors:
            census[t.tensor_type.name] = census.get(t.tensor_type.name, 0) + 1
        return n_layer, census
    except Exception:
        return None, {}


def quantize(llama_quantize: Path, src: Path, dst: Path, qtype: str, extra: list[str]) -> None:
    tmp = dst.with_name(dst.name + ".tmp")
    cmd = [str(llama_quantize), *extra, str(src), str(tmp), qtype]
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if r.returncode != 0:
        sys.stderr.write(r.stdout[-8000:])
        tmp.unlink(missing_ok=True)
        raise SystemExit(f"error: llama-quantize failed for {dst.name}: {' '.join(cmd)}")
    os.replace(tmp, dst)


def selected(f: Family, only: set[str] | None) -> list[tuple[str, str, list[str]]]:
    if only is None or f.name in only:
        return f.outputs
    return [o for o in f.outputs if o[0] in only]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("outdir", type=Path)
    ap.add_argument("--llama-quantize", type=Path, required=True,
                    help="path to llama.cpp's llama-quantize")
    ap.add_argument("--only", default=None,
                    help="comma-separated families or file stems (default: all four files)")
    ap.add_argument("--layers", type=int, default=None, help="override the block count")
    ap.add_argument("--keep-f16", action="store_true", help="keep the F16 intermediates")
    args = ap.parse_args()

    only = None if not args.only else {s.strip() for s in args.only.split(",") if s.strip()}
    known = {f.name for f in FAMILIES} | {o[0] for f in FAMILIES for o in f.outputs}
    if only is not None and only - known:
        raise SystemExit(f"error: unknown --only {sorted(only - known)}; known: {sorted(known)}")
    if not os.access(args.llama_quantize, os.X_OK):
        raise SystemExit(f"error: llama-quantize not found or not executable: {args.llama_quantize}")
    out: Path = args.outdir
    out.mkdir(parents=True, exist_ok=True)

    for f in FAMILIES:
        if args.layers is not None:
            f.n_layer = args.layers
        todo = []
        for stem, qtype, extra in selected(f, only):
            dst = out / f"{stem}.gguf"
            n_layer, _ = read_header(dst) if dst.exists() else (None, {})
            if n_layer == f.n_layer:
                print(f"{dst.name}: present ({f.n_layer} blocks), skipped", flush=True)
            else:
                todo.append((dst, qtype, extra))
        if not todo:
            continue

        src = out / f"{f.name}-f16.gguf"
        if src.exists() and read_header(src)[0] == f.n_layer:
            print(f"{src.name}: present, reused", flush=True)
        else:
            t0 = time.time()
            tmp = src.with_name(src.name + ".tmp")
            write_f16(f, tmp)
            os.replace(tmp, src)
            print(f"{src.name}: {src.stat().st_size / 1e6:.1f} MB in {time.time() - t0:.1f} s",
                  flush=True)
        for dst, qtype, extra in todo:
            t0 = time.time()
            quantize(args.llama_quantize, src, dst, qtype, extra)
            _, census = read_header(dst)
            types_ = " ".join(f"{k}x{v}" for k, v in sorted(census.items(), key=lambda kv: -kv[1]))
            print(f"{dst.name}: {dst.stat().st_size} B ({dst.stat().st_size / 2**20:.1f} MiB), "
                  f"{f.n_layer} blocks, {types_}, quantized in {time.time() - t0:.1f} s",
                  flush=True)
        if not args.keep_f16:
            src.unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main())
