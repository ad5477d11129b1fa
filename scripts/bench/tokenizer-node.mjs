// Tokenizer benchmark under node (wasm): construction time and encode throughput, as JSON.
// Usage: node tokenizer-node.mjs PKG_DIR MODEL.gguf TEXT_FILE [RUNS]
// PKG_DIR holds the wasm-bindgen `--target nodejs` output of the ternlm library.
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { resolve } from "node:path";

const [pkg, model, file, runsArg] = process.argv.slice(2);
const { Tokenizer } = createRequire(import.meta.url)(resolve(pkg, "ternlm.js"));
const bytes = readFileSync(model);
const text = readFileSync(file, "utf8");
const t0 = performance.now();
const tok = Tokenizer.fromGguf(bytes);
const constructMs = performance.now() - t0;
let best = Infinity;
let nTokens = 0;
for (let i = 0; i < Number(runsArg ?? 5); i++) {
  const t = performance.now();
  nTokens = tok.encode(text, false, false).length;
  best = Math.min(best, performance.now() - t);
}
const textBytes = Buffer.byteLength(text, "utf8");
console.log(JSON.stringify({
  runtime: "wasm (node " + process.version + ")", model, n_vocab: tok.nVocab,
  construct_ms: constructMs, text_bytes: textBytes, n_tokens: nTokens,
  encode_ms: best, mb_per_s: textBytes / 1e6 / (best / 1e3),
}));
