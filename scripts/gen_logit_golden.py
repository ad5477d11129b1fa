#!/usr/bin/env python3
"""Write the llama.cpp logit goldens (testing.md §1, §3, §4.1) into
tests/data/golden/ with our `golden` tool (tools/golden).

Usage:
    python scripts/gen_logit_golden.py GOLDEN_BIN MODELS_DIR OUT_DIR
        [--extra-model PATH]... [--real-models DIR] [--threads N]

    GOLDEN_BIN   our golden tool, built against the llama.cpp vendored in the
                 llama-cpp-python 0.3.36 sdist (tools/golden/build.sh)
    MODELS_DIR   the synthetic models (tests/data/models)
    OUT_DIR      tests/data/golden; writes OUT_DIR/logits/ and OUT_DIR/real/
    --extra-model  a synthetic model that is not committed (e.g. the scratch
                 tiny-bitnet-f32.gguf from `make_synthetic.py --scratch DIR`);
                 its manifest says "model_committed": false
    --real-models  directory holding SmolLM2-135M-Instruct.Q4_1.gguf and
                 gemma-3-270m-q4_k_m.gguf (scripts/fetch-models.sh); without it
                 OUT_DIR/real/ is left alone

Synthetic models (every *.gguf in MODELS_DIR except tiny-bitnet-i2_s and
tiny-bitnet25-tq2_0, which upstream llama.cpp cannot load, and the second file
of a split, which is loaded through the first), per model <stem>:

  logits/<stem>.json          manifest (see tests/data/golden/README.md)
  logits/<stem>.s0.f32 ...    `golden logits` of each of the SEQ_LENS fixed
                              token sequences: little-endian f32, row-major
                              [n_tokens][n_vocab], logits at every position
  logits/<stem>.greedy.f32    `golden greedy`: GREEDY_STEPS steps from
                              GREEDY_PROMPT, row i = the logits generated_ids[i]
                              was the argmax of, [n_steps][n_vocab]

All runs use --kv-type f32 --flash-attn off (the most precise reference) and
no BOS (the ids exactly as given). The token sequences are deterministic
(numpy PCG64 seeded with [SEQ_SEED, i]) and are stored in the manifests, so
tests never need to regenerate them.

Real models: for each of REAL_PROMPTS, the prompt is tokenized by llama.cpp
(`golden tokenize`: add_special = true, so gemma3 gets BOS 2; parse_special =
true, so chat-template markers become their special tokens), then 64 greedy
steps (not stopping at end-of-generation tokens) with the top-20 (id, logit)
of every step: real/<stem>.json.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

LLAMA_CPP = "llama.cpp vendored in the llama-cpp-python 0.3.36 sdist (CPU build), via tools/golden"
COMMON = ["--kv-type", "f32", "--flash-attn", "off"]
SEQ_SEED = 20250601
SEQ_LENS = [1, 17, 128]
GREEDY_PROMPT = [72, 101, 108, 108, 111, 259]   # "Hello the": 5 byte ids + merge 259 "Ġthe"
GREEDY_STEPS = 16
REAL_STEPS = 64
REAL_TOP_K = 20
# Upstream llama.cpp cannot load I2_S (type 36) or the bitnet-25 architecture; the latter's
# golden comes from scripts/ref_bitnet.py (regen-goldens.sh runs it after this script).
SKIP = {"tiny-bitnet-i2_s.gguf", "tiny-bitnet25-tq2_0.gguf"}

REAL_MODELS = {
    "SmolLM2-135M-Instruct.Q4_1.gguf":
        "<|im_start|>user\nWhat is the tallest mountain in the world?<|im_end|>\n<|im_start|>assistant\n",
    "gemma-3-270m-q4_k_m.gguf":
        "<start_of_turn>user\nWhat is the tallest mountain in the world?<end_of_turn>\n<start_of_turn>model\n",
}
REAL_PROMPTS = [
    "Once upon a time",
    "The capital of France is",
    "def fibonacci(n):\n",
    "Hello world, this is 🦙.cpp",
    None,          # the model's chat-format prompt from REAL_MODELS
]


def sha256(p: Path) -> str:
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def run(cmd: list[str], stdin: str | None = None) -> str:
    r = subprocess.run(cmd, input=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if r.returncode != 0:
        sys.stderr.write(r.stderr)
        raise SystemExit(f"failed ({r.returncode}): {' '.join(cmd)}")
    return r.stdout


def sequences(n_vocab: int) -> list[list[int]]:
    return [np.random.default_rng([SEQ_SEED, i]).integers(0, n_vocab, n).tolist()
            for i, n in enumerate(SEQ_LENS)]


def clean_settings(s: dict) -> dict:
    """The tool's settings without the per-run ones: the model file name (in
    the manifest) and n_ctx / n_batch / n_ubatch (the tool sets all three to
    the run's n_ctx, stored per run)."""
    s = dict(s)
    assert s["n_batch"] == s["n_ubatch"] == s["n_ctx"], s
    for k in ("model", "n_ctx", "n_batch", "n_ubatch"):
        s.pop(k, None)
    return s


def dumps(obj, indent: int = 0) -> str:
    """JSON with objects one key per line and lists of scalars (or of short
    lists) on one line."""
    pad = " " * indent
    if isinstance(obj, dict):
        items = [f'{pad} {json.dumps(k)}: {dumps(v, indent + 1).lstrip()}' for k, v in obj.items()]
        return pad + "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(obj, list) and any(isinstance(x, dict) for x in obj):
        return pad + "[\n" + ",\n".join(dumps(x, indent + 1) for x in obj) + "\n" + pad + "]"
    if isinstance(obj, list) and obj and isinstance(obj[0], list) and obj[0] and isinstance(obj[0][0], list):
        # top-k per step: one step per line
        return pad + "[\n" + ",\n".join(pad + " " + json.dumps(x, separators=(",", ":")) for x in obj) \
            + "\n" + pad + "]"
    return pad + json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def golden_synthetic(golden: str, model: Path, out: Path, committed: bool, threads: int) -> int:
    stem = model.name[:-len(".gguf")]
    n_vocab = None
    seqs_out = []
    settings = None
    tmp = tempfile.TemporaryDirectory(prefix="gen_logit_golden-")
    try:
        for i, toks in enumerate(sequences(265)):
            fname = f"{stem}.s{i}.f32"
            meta = json.loads(run([golden, "logits", "-m", str(model), "--tokens",
                                   ",".join(map(str, toks)), "--out", str(out / fname),
                                   "--threads", str(threads)] + COMMON))
            n_vocab = meta["n_vocab"]
            assert n_vocab == 265, (model, n_vocab)   # sequences() assumed it
            assert meta["tokens"] == toks
            data = np.fromfile(out / fname, dtype="<f4")
            assert data.size == len(toks) * n_vocab and np.all(np.isfinite(data)), fname
            assert data.reshape(len(toks), n_vocab).argmax(axis=1).tolist() == meta["argmax"]
            settings = clean_settings(meta["settings"])
            seqs_out.append({"file": fname, "shape": [len(toks), n_vocab], "n_ctx": meta["settings"]["n_ctx"],
                             "tokens": toks, "argmax": meta["argmax"]})
        gjson = Path(tmp.name) / "g.json"
        gfile = f"{stem}.greedy.f32"
        run([golden, "greedy", "-m", str(model), "--tokens", ",".join(map(str, GREEDY_PROMPT)),
             "-n", str(GREEDY_STEPS), "--out", str(gjson), "--logits-out", str(out / gfile),
             "--threads", str(threads)] + COMMON)
        g = json.loads(gjson.read_text())
        data = np.fromfile(out / gfile, dtype="<f4").reshape(GREEDY_STEPS, n_vocab)
        assert data.argmax(axis=1).tolist() == g["generated_ids"], gfile
    finally:
        tmp.cleanup()
    manifest = {
        "model": model.name,
        "model_sha256": sha256(model),
        "model_committed": committed,
        "reference": LLAMA_CPP,
        "settings": settings,
        "n_vocab": n_vocab,
        "dtype": "f32le",
        "sequences": seqs_out,
        "greedy": {"file": gfile, "shape": [GREEDY_STEPS, n_vocab],
                   "n_ctx": g["settings"]["n_ctx"],
                   "prompt_ids": g["prompt_ids"], "generated_ids": g["generated_ids"]},
    }
    if not committed:
        manifest["note"] = ("model not committed: regenerate it with scripts/make_synthetic.py "
                            "OUTDIR --scratch DIR (deterministic; model_sha256 identifies it)")
    (out / f"{stem}.json").write_text(dumps(manifest) + "\n")
    return sum((out / s["file"]).stat().st_size for s in seqs_out) + (out / gfile).stat().st_size


def golden_real(golden: str, model: Path, out: Path, threads: int) -> None:
    prompts = [p if p is not None else REAL_MODELS[model.name] for p in REAL_PROMPTS]
    lines = run([golden, "tokenize", "-m", str(model)],
                stdin="".join(json.dumps(p) + "\n" for p in prompts)).splitlines()
    assert len(lines) == len(prompts)
    results = []
    settings = None
    with tempfile.TemporaryDirectory(prefix="gen_logit_golden-") as tmp:
        for text, line in zip(prompts, lines):
            ids = json.loads(line)["ids"]
            gjson = Path(tmp) / "g.json"
            run([golden, "greedy", "-m", str(model), "--tokens", ",".join(map(str, ids)),
                 "-n", str(REAL_STEPS), "--top-k", str(REAL_TOP_K), "--out", str(gjson),
                 "--logits-out", str(Path(tmp) / "g.f32"), "--threads", str(threads)] + COMMON)
            g = json.loads(gjson.read_text())
            assert g["prompt_ids"] == ids
            assert [s[0][0] for s in g["top_k"]] == g["generated_ids"]
            settings = clean_settings(g["settings"])
            results.append({"text": text, "n_ctx": g["settings"]["n_ctx"], "prompt_ids": ids,
                            "generated_ids": g["generated_ids"], "top_k": g["top_k"]})
    manifest = {
        "model": model.name,
        "model_sha256": sha256(model),
        "reference": LLAMA_CPP,
        "settings": settings,
        "tokenize": "golden tokenize: add_special = true, parse_special = true",
        "n_steps": REAL_STEPS,
        "top_k": REAL_TOP_K,
        "stop_at_eog": False,
        "prompts": results,
    }
    stem = model.name[:-len(".gguf")]
    (out / f"{stem}.json").write_text(dumps(manifest) + "\n")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("golden")
    ap.add_argument("models_dir", type=Path)
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--extra-model", type=Path, action="append", default=[])
    ap.add_argument("--real-models", type=Path, default=None)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    logits = args.out_dir / "logits"
    logits.mkdir(parents=True, exist_ok=True)
    for old in list(logits.glob("*.json")) + list(logits.glob("*.f32")):
        old.unlink()
    models = [(m, True) for m in sorted(args.models_dir.glob("*.gguf"))
              if m.name not in SKIP and "-00002-of-" not in m.name]
    models += [(m, False) for m in args.extra_model]
    total = 0
    for m, committed in models:
        n = golden_synthetic(args.golden, m, logits, committed, args.threads)
        total += n
        print(f"{m.name}: {n} bytes of logits", file=sys.stderr)
    print(f"logits: {len(models)} models, {total} bytes of f32 data", file=sys.stderr)

    if args.real_models is not None:
        real = args.out_dir / "real"
        real.mkdir(parents=True, exist_ok=True)
        for name in REAL_MODELS:
            p = args.real_models / name
            if not p.exists():
                raise SystemExit(f"{p} is missing (scripts/fetch-models.sh)")
            golden_real(args.golden, p, real, args.threads)
            print(f"real: {name} done", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
