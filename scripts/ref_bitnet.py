#!/usr/bin/env python3
"""A numpy (f64) forward pass of the tiny BitNet models: the logit oracle of the `bitnet-25`
architecture (the BitNet fork's 2B-4T: ReLU²-gated FFN), which upstream llama.cpp cannot run.

Usage:
    python scripts/ref_bitnet.py OUT_DIR MODEL [--check LLAMA_GOLDEN_JSON CHECK_MODEL]

Writes OUT_DIR/<stem>.json, <stem>.s{0,1,2}.f32 and <stem>.greedy.f32 for MODEL in the format of
scripts/gen_logit_golden.py (the same token sequences and greedy prompt), so that
tests/model_golden.rs checks ternlm on MODEL like every llama.cpp golden, on the CPU and the GPU.

--check first runs this reference on CHECK_MODEL (an architecture llama.cpp does run, e.g. the
scratch tiny-bitnet-f32.gguf) and compares it with llama.cpp's golden manifest of that model:
every sequence must agree to NMSE 1e-9, so the reference implements what llama.cpp implements
(RoPE style, norms, sub-norms, GQA, tied head) before it is trusted where llama.cpp is absent.

The math (architectures.md, llama.cpp's build_bitnet): per layer, RMSNorm → q, k, v → NEOX RoPE
→ causal softmax attention (1/√head_dim, GQA) → attn_sub_norm → wo → residual; RMSNorm →
act(gate)·up (SiLU for `bitnet` unless `bitnet.hidden_activation` names another, ReLU² for
`bitnet-25`) → ffn_sub_norm → down → residual; final RMSNorm and the tied token embedding.
Per-tensor `.scale` tensors multiply their projection when present.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import gguf

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gen_logit_golden import GREEDY_PROMPT, GREEDY_STEPS, dumps, sequences  # noqa: E402

REFERENCE = "scripts/ref_bitnet.py (numpy f64 forward pass, checked against llama.cpp on tiny-bitnet-f32)"


class Model:
    def __init__(self, path: Path):
        r = gguf.GGUFReader(path)
        self.arch = self.field(r, "general.architecture")
        a = self.arch
        self.n_layer = int(self.field(r, f"{a}.block_count"))
        self.n_head = int(self.field(r, f"{a}.attention.head_count"))
        self.n_head_kv = int(self.field(r, f"{a}.attention.head_count_kv"))
        self.eps = float(self.field(r, f"{a}.attention.layer_norm_rms_epsilon"))
        self.base = float(self.field(r, f"{a}.rope.freq_base"))
        act = self.field(r, f"{a}.hidden_activation", None)
        self.act = act or ("relu2" if a == "bitnet-25" else "silu")
        self.t = {}
        for t in r.tensors:
            x = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float64)
            # ne = [cols, rows]: numpy [rows][cols]; 1-D tensors flat.
            shape = (int(t.shape[1]), int(t.shape[0])) if len(t.shape) == 2 else (-1,)
            self.t[t.name] = x.reshape(shape)
        self.embd = self.t["token_embd.weight"]
        self.n_vocab, self.d = self.embd.shape
        self.hd = self.d // self.n_head

    @staticmethod
    def field(r: gguf.GGUFReader, key: str, default=...):
        f = r.fields.get(key)
        if f is None:
            if default is ...:
                raise SystemExit(f"missing {key}")
            return default
        v = f.parts[f.data[0]]
        return bytes(v).decode() if f.types[0] == gguf.GGUFValueType.STRING else v[0]

    def norm(self, x, w):
        return x / np.sqrt((x * x).mean(axis=-1, keepdims=True) + self.eps) * w

    def proj(self, x, name):
        y = x @ self.t[name + ".weight"].T
        s = self.t.get(name + ".scale")
        return y * s.reshape(-1)[0] if s is not None else y

    def rope(self, x, pos):
        # NEOX: dims i and i + hd/2 rotate together by pos·base^(−2i/hd).
        half = self.hd // 2
        theta = pos[:, None] * self.base ** (-2.0 * np.arange(half) / self.hd)
        c, s = np.cos(theta)[:, None, :], np.sin(theta)[:, None, :]
        x = x.reshape(len(pos), -1, self.hd)
        x0, x1 = x[..., :half], x[..., half:]
        return np.concatenate([x0 * c - x1 * s, x0 * s + x1 * c], axis=-1)

    def forward(self, tokens: list[int]) -> np.ndarray:
        """Logits of every position, [n][n_vocab]."""
        n = len(tokens)
        pos = np.arange(n, dtype=np.float64)
        x = self.embd[tokens]
        mask = np.triu(np.full((n, n), -np.inf), 1)
        group = self.n_head // self.n_head_kv
        for i in range(self.n_layer):
            p = f"blk.{i}."
            h = self.norm(x, self.t[p + "attn_norm.weight"])
            q = self.rope(self.proj(h, p + "attn_q"), pos)
            k = self.rope(self.proj(h, p + "attn_k"), pos)
            v = self.proj(h, p + "attn_v").reshape(n, self.n_head_kv, self.hd)
            o = np.empty((n, self.n_head, self.hd))
            for hh in range(self.n_head):
                g = hh // group
                sc = q[:, hh] @ k[:, g].T / np.sqrt(self.hd) + mask
                w = np.exp(sc - sc.max(axis=1, keepdims=True))
                o[:, hh] = (w / w.sum(axis=1, keepdims=True)) @ v[:, g]
            a = self.norm(o.reshape(n, -1), self.t[p + "attn_sub_norm.weight"])
            x = x + self.proj(a, p + "attn_output")
            m = self.norm(x, self.t[p + "ffn_norm.weight"])
            gate, up = self.proj(m, p + "ffn_gate"), self.proj(m, p + "ffn_up")
            if self.act == "relu2":
                f = np.maximum(gate, 0.0) ** 2 * up
            elif self.act == "silu":
                f = gate / (1.0 + np.exp(-gate)) * up
            else:
                raise SystemExit(f"activation {self.act} not implemented here")
            f = self.norm(f, self.t[p + "ffn_sub_norm.weight"])
            x = x + self.proj(f, p + "ffn_down")
        return self.norm(x, self.t["output_norm.weight"]) @ self.embd.T


def nmse(a: np.ndarray, b: np.ndarray) -> float:
    return float(((a - b) ** 2).sum() / (b ** 2).sum())


def check(model: Model, manifest: Path) -> None:
    m = json.loads(manifest.read_text())
    for s in m["sequences"]:
        want = np.fromfile(manifest.parent / s["file"], dtype="<f4").reshape(s["shape"])
        e = nmse(model.forward(s["tokens"]), want.astype(np.float64))
        print(f"check {m['model']} {len(s['tokens'])} tokens: NMSE {e:.3e} vs llama.cpp", file=sys.stderr)
        if not e <= 1e-9:
            raise SystemExit(f"the reference disagrees with llama.cpp on {m['model']}: NMSE {e:e}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("model", type=Path)
    ap.add_argument("--check", nargs=2, type=Path, metavar=("LLAMA_GOLDEN_JSON", "CHECK_MODEL"))
    args = ap.parse_args()
    if args.check:
        check(Model(args.check[1]), args.check[0])

    model = Model(args.model)
    stem = args.model.name[:-len(".gguf")]
    out = args.out_dir
    seqs = []
    for i, toks in enumerate(sequences(model.n_vocab)):
        logits = model.forward(toks)
        fname = f"{stem}.s{i}.f32"
        logits.astype("<f4").tofile(out / fname)
        seqs.append({"file": fname, "shape": [len(toks), model.n_vocab], "tokens": toks,
                     "argmax": logits.argmax(axis=1).tolist()})
    ids = list(GREEDY_PROMPT)
    rows = []
    for _ in range(GREEDY_STEPS):
        row = model.forward(ids)[-1]
        rows.append(row)
        ids.append(int(row.argmax()))
    gfile = f"{stem}.greedy.f32"
    np.array(rows).astype("<f4").tofile(out / gfile)
    manifest = {
        "model": args.model.name,
        "model_sha256": hashlib.sha256(args.model.read_bytes()).hexdigest(),
        "model_committed": True,
        "reference": REFERENCE,
        "settings": {"activation": model.act, "precision": "f64"},
        "n_vocab": model.n_vocab,
        "dtype": "f32le",
        "sequences": seqs,
        "greedy": {"file": gfile, "shape": [GREEDY_STEPS, model.n_vocab],
                   "prompt_ids": list(GREEDY_PROMPT), "generated_ids": ids[len(GREEDY_PROMPT):]},
    }
    (out / f"{stem}.json").write_text(dumps(manifest) + "\n")
    print(f"{stem}: {len(seqs)} sequences and {GREEDY_STEPS} greedy steps", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
