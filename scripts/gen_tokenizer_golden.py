#!/usr/bin/env python3
"""Generate tokenizer goldens from llama.cpp for the real test models (testing.md §1, §2.4).

Usage:
  python3 scripts/gen_tokenizer_golden.py GOLDEN_BIN OUTDIR [--models-dir DIR] [--llama-tokenize BIN]
  python3 scripts/gen_tokenizer_golden.py --write-strings FILE

  GOLDEN_BIN   the `golden` tool built by tools/golden/build.sh
  OUTDIR       normally tests/data/tokenizer
  --models-dir directory holding the real models (default: <repo>/.cache/models, as
               written by scripts/fetch-models.sh)
  --llama-tokenize  llama.cpp's llama-tokenize; if given, a sample of strings is
               cross-checked against it (its defaults, `--ids --no-escape -f FILE`)

Only the Python standard library is needed.

Writes into OUTDIR:
  strings.jsonl        the input strings, one JSON string per line. They come from
                       tricky_strings() below (the source of truth), so the file is
                       rewritten on every run and must not be edited by hand.
  <model-stem>.jsonl   for each model and each string, two lines, in the order of
                       strings.jsonl, first special=true then special=false:
                         {"text": ..., "special": true|false, "ids": [...],
                          "detok": ..., "roundtrip": detok == text}
                       (plus "detok_hex" when llama.cpp's detokenized bytes are not
                       valid UTF-8; "detok" then has U+FFFD for each bad byte).
                       special=true lines also carry "detok_plain" (placed before
                       "roundtrip"): llama_detokenize(remove_special=false,
                       unparse_special=false) of the same ids, i.e. the text
                       with control tokens (BOS, <|im_start|>, ...) rendered as "".
                       special=true:  llama_tokenize(add_special=true,  parse_special=true)
                                      llama_detokenize(remove_special=true,  unparse_special=true)
                       special=false: llama_tokenize(add_special=false, parse_special=false)
                                      llama_detokenize(remove_special=false, unparse_special=false)
  manifest.json        model file names, sizes and sha256, llama.cpp source
                       (llama-cpp-python sdist version), flags, counts.

special=true is what llama-tokenize does by default (it passes parse_special=true and
add_special=llama_vocab_get_add_bos(vocab); for both models that equals
add_special=true, see "add_bos"/"add_eos" in the manifest).
"""

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import unicodedata
from pathlib import Path

LLAMA_CPP_PYTHON_VERSION = "0.3.36"
MODELS = ["SmolLM2-135M-Instruct.Q4_1.gguf", "gemma-3-270m-q4_k_m.gguf"]
MODES = [
    # (special, golden tokenize flags)
    (True, []),
    (False, ["--no-special", "--no-parse-special"]),
]
PLAIN_FLAGS = ["--detok-remove-special", "0", "--detok-unparse-special", "0"]
# Known golden (testing.md section 1): must come out of the special=true mode.
KNOWN = {
    "SmolLM2-135M-Instruct.Q4_1.gguf": ("Hello world, this is 🦙.cpp",
                                        [19556, 905, 28, 451, 314, 15107, 116, 243, 30, 35392]),
}


def tricky_strings():
    """The tokenizer test strings, in a fixed order. Each entry is a str."""
    s = []
    add = s.append

    # ---- basics and the known golden ------------------------------------
    for t in [
        "Hello world, this is 🦙.cpp",
        "Hello world",
        " Hello world",
        "Hello",
        " Hello",
        "  Hello",
        "   Hello",
        "hello world",
        "HELLO WORLD",
        "Hello, World!",
        "The quick brown fox jumps over the lazy dog.",
        "Once upon a time",
        "a",
        "A",
        ".",
        "I",
        "the",
        " the",
        "The",
    ]:
        add(t)

    # ---- empty and whitespace -------------------------------------------
    for t in [
        "",
        " ",
        "  ",
        "   ",
        "    ",
        " " * 17,
        "\t",
        "\t\t",
        " \t ",
        "\n",
        "\n\n",
        "\n\n\n",
        "\r\n",
        "\r\n\r\n",
        "\r",
        "line1\nline2",
        "line1\r\nline2",
        "line1\n\nline2",
        "line1\n \nline2",
        "trailing space ",
        "trailing spaces   ",
        " leading space",
        "   leading spaces",
        " both ",
        "a  b",
        "a   b",
        "a\tb",
        "a \tb",
        "a\t b",
        "\t\tindented",
        "    indented four",
        "a\u00a0b",            # NBSP
        "\u00a0",
        "a\u3000b",            # ideographic space
        "\u3000",
        "a\u2009b",            # thin space
        "a\u200bb",            # zero width space
        "a\u2028b",            # line separator
        "a\u2029b",            # paragraph separator
        "a\u0085b",            # NEL
        "a\u000bb\u000cc",     # VT, FF
        "\ufeffBOM at start",
        "end\n",
        "\n start",
        " \n ",
        "\n\t\n",
    ]:
        add(t)

    # ---- digits and numbers ----------------------------------------------
    for t in [
        "0",
        "1",
        "12",
        "123",
        "1234",
        "12345",
        "123456789",
        "3.14159",
        "-42",
        "+1 (555) 123-4567",
        "1,000,000",
        "1.000.000,50",
        "2024-01-15",
        "12:34:56",
        "0x7FFF_FFFF",
        "1e-10",
        "1234567890" * 5,
        "9" * 40,
        "007",
        "v1.2.3",
        "100%",
        "$19.99",
        "€5,00",
        "٠١٢٣٤٥٦٧٨٩",          # Arabic-Indic digits
        "१२३",                  # Devanagari digits
        "１２３",                # fullwidth digits
        "½ ¼ ¾",
        "Ⅻ",
        "²³",
    ]:
        add(t)

    # ---- contractions and punctuation ---------------------------------
    for t in [
        "it's",
        "don't",
        "we're",
        "they'll",
        "I've",
        "I'd",
        "I'm",
        "IT'S",
        "DON'T",
        "WE'RE",
        "THEY'LL",
        "I'VE",
        "I'M",
        "we'Re",
        "You'LL",
        "o'clock",
        "rock 'n' roll",
        "'quoted'",
        "' ",
        " ' ",
        "it’s",                # right single quotation mark
        "\"double\"",
        "“curly” ‘quotes’",
        "Hello , world !",
        "Hi . Bye ?",
        "wait...",
        "what?!",
        "—em dash–en dash-hyphen",
        "«guillemets»",
        "a/b\\c|d",
        "@user #tag",
        "foo@example.com",
        "https://example.com/path?q=1&r=2#frag",
        "C:\\Windows\\System32",
        "~!@#$%^&*()_+`-=[]{};:,./<>?",
        "((((((((((",
        "!!!!!!!!!!!!",
        "...",
        "????",
        "----------",
        "==========",
        "**bold** _italic_ `code`",
        "# Heading\n\n- item 1\n- item 2\n",
    ]:
        add(t)

    # ---- scripts ---------------------------------------------------------
    for t in [
        "你好，世界",
        "我爱北京天安门",
        "中文字符测试：繁體字與简体字",
        "漢字",
        "日本語のテキストです。",
        "ひらがな カタカナ",
        "ｶﾀｶﾅ",                  # halfwidth katakana
        "東京タワー",
        "한국어 텍스트",
        "안녕하세요 세계",
        "\u1112\u1161\u11ab",    # conjoining jamo (NFD of U+D55C)
        "مرحبا بالعالم",
        "السلام عليكم",
        "العربية: ١٢٣",
        "שלום עולם",
        "עִבְרִית",              # Hebrew with niqqud
        "नमस्ते दुनिया",
        "हिन्दी",
        "क्षत्रिय",
        "สวัสดีชาวโลก",
        "ภาษาไทย",
        "Привет, мир!",
        "Съешь же ещё этих мягких французских булок",
        "ЁЖИК",
        "Γειά σου Κόσμε",
        "αβγδε ΑΒΓΔΕ",
        "ς σ Σ",
        "Ελληνικά",
        "Հայերեն",
        "ქართული",
        "አማርኛ",
        "தமிழ்",
        "বাংলা",
        "ગુજરાતી",
        "ਪੰਜਾਬੀ",
        "తెలుగు",
        "ಕನ್ನಡ",
        "മലയാളം",
        "සිංහල",
        "ລາວ",
        "ខ្មែរ",
        "မြန်မာ",
        "བོད་ཡིག",
        "Tiếng Việt có dấu",
        "Türkçe İıŞş",
        "Straße groß",
        "Ærøskøbing",
        "Łódź",
        "Español: ¿Qué tal? ¡Hola!",
        "français: ça, où, être",
        "mixed 中文 and English",
        "English日本語English",
        "Ελληνικά и русский",
        "abc абв αβγ",
    ]:
        add(t)

    # ---- emoji -----------------------------------------------------------
    for t in [
        "🦙",
        "😀",
        "😀😃😄😁",
        "I ❤ you",
        "I ❤️ you",                # with VS16
        "👍",
        "👍🏻",
        "👍🏽",
        "👍🏿",
        "👨‍👩‍👧‍👦",             # family ZWJ
        "👩‍💻",
        "🧑🏾‍🚀",
        "🏳️‍🌈",
        "🏴‍☠️",
        "🇺🇸",
        "🇯🇵🇫🇷🇩🇪",
        "🇺",                     # lone regional indicator
        "🏴\U000e0067\U000e0062\U000e0073\U000e0063\U000e0074\U000e007f",  # Scotland tag sequence
        "1️⃣ #️⃣",                 # keycaps
        "☺︎ text style",
        "emoji at end 🎉",
        "🎉 emoji at start",
        "no🎉space",
        "🔥" * 8,
        "👋 Hello! 🌍",
        "🤷‍♀️",
    ]:
        add(t)

    # ---- combining marks, normalization forms ---------------------------
    for base in ["café", "naïve", "Ångström", "Pokémon", "ñandú", "Việt Nam", "한국"]:
        nfc = unicodedata.normalize("NFC", base)
        nfd = unicodedata.normalize("NFD", base)
        add(nfc)
        if nfd != nfc:
            add(nfd)
    for t in [
        "e\u0301",                 # e + combining acute
        "\u00e9",
        "a\u0308\u0301",          # stacked combining marks
        "Z\u0351\u036b\u0343\u036a\u0302\u036b\u033d\u034f\u0334\u0319\u0324\u031e\u0349\u035a\u032f\u031e\u0320\u034dA\u036b\u0357\u0334\u0362\u0335\u031c\u0330\u0354L\u0368\u0367\u0369\u0358\u0320G\u0311\u0357\u030e\u0305\u035b\u0341\u0334\u033b\u0348\u034d\u0354\u0339O",  # zalgo
        "\u0301",                  # lone combining mark
        " \u0301",
        "ﬁ ﬂ",                     # ligatures (NFKC would change them)
        "Ｆｕｌｌｗｉｄｔｈ",
        "ℌ𝔢𝔩𝔩𝔬",                   # math fraktur
        "𝐇𝐞𝐥𝐥𝐨",                   # math bold
        "\u212b",                  # angstrom sign (NFC: U+00C5)
        "\u2126",                  # ohm sign (NFC: U+03A9)
        "x\u0338",                 # combining long solidus
        "\u1e9b\u0323",
    ]:
        add(t)

    # ---- code --------------------------------------------------------------
    for t in [
        "def foo(x):\n    return x * 2\n",
        "import numpy as np\nprint(np.arange(10))",
        "class A:\n\tdef __init__(self):\n\t\tpass",
        "if x == 1:\n        pass\n    else:\n        y = [i for i in range(10)]",
        "for (let i = 0; i < n; i++) { console.log(i); }",
        "const f = (a, b) => a + b;",
        "function hello() {\n  return \"world\";\n}",
        "fn main() {\n    println!(\"Hello, {}!\", name);\n}",
        "let v: Vec<u8> = vec![0u8; 256];",
        "impl<'a> Foo<'a> for &'a str {}",
        "#include <stdio.h>\nint main(void) { return 0; }",
        "{\"key\": \"value\", \"n\": [1, 2, 3], \"nested\": {\"a\": null}}",
        "[{\"id\":1},{\"id\":2}]",
        "<html><body><p class=\"x\">Hi &amp; bye</p></body></html>",
        "<div>\n  <span>text</span>\n</div>",
        "SELECT * FROM users WHERE id = 42;",
        "$ ls -la | grep foo > out.txt 2>&1",
        "x=$((1+2)); echo \"$x\"",
        "a && b || !c",
        "i += 1; j -= 2; k *= 3; l /= 4;",
        "x->y::z.w",
        "0b1010 0o17 0xdeadBEEF",
        "/* comment */ // line comment",
        "# python comment",
        "    \n    \n",
        "\t\t\t}\n\t\t}\n\t}\n}",
        "```python\nprint('hi')\n```",
        "key: value\nlist:\n  - a\n  - b",
        "\\begin{equation} E = mc^2 \\end{equation}",
        "∑_{i=0}^{n} x_i ≤ ∞",
        "a_b_c__d___e",
        "camelCaseIdentifier snake_case_identifier SCREAMING_CASE",
        "getHTTPResponseCode",
    ]:
        add(t)

    # ---- special-token text ------------------------------------------
    for t in [
        "<|im_start|>",
        "<|im_end|>",
        "<|endoftext|>",
        "<start_of_turn>",
        "<end_of_turn>",
        "<bos>",
        "<eos>",
        "<pad>",
        "<unk>",
        "<mask>",
        "<s>",
        "</s>",
        "<|im_start|>user\nHello!<|im_end|>\n<|im_start|>assistant\n",
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>",
        "<start_of_turn>user\nHello!<end_of_turn>\n<start_of_turn>model\n",
        "<bos><start_of_turn>user\nhi<end_of_turn>",
        "<s>[INST] hi [/INST]",
        "text<|endoftext|>more text",
        "<|endoftext|><|endoftext|>",
        " <|im_start|> ",
        "  <|im_end|>  ",
        "x<|im_end|>y",
        "<|im_start",
        "<|im_start|",
        "|im_start|>",
        "<<|im_end|>>",
        "<|IM_START|>",
        "< |im_start| >",
        "<start_of_turn",
        "<start_of_turn>>",
        "<<bos>>",
        "<eos><eos>",
        " <eos> ",
        "<start_of_image>",
        "<end_of_image>",
        "[multimodal]",
        "<|fim_prefix|>a<|fim_suffix|>b<|fim_middle|>",
        "<tool_call>",
        "<|unknown_special|>",
        "<>",
        "</>",
        "<|>",
    ]:
        add(t)

    # ---- byte-fallback-heavy and rare characters ------------------------
    for t in [
        "𐀀𐀁𐀂",                    # Linear B
        "𒀀𒀁",                     # cuneiform
        "𓀀𓀁𓀂",                    # Egyptian hieroglyphs
        "𠀀𠀁𠀂",                    # CJK extension B
        "𝄞 𝄢",                     # musical symbols
        "ᚠᚢᚦᚨᚱᚲ",                   # runic
        "ⰀⰁⰂ",                     # Glagolitic
        "ꦲꦏ꧀ꦱꦫ",                    # Javanese
        "ᠮᠣᠩᠭᠣᠯ",                   # Mongolian
        "ߒߞߏ",                      # N'Ko
        "\u0001\u0002\u0003",
        "a\u0007b",
        "\u007f",
        "\u0080\u0081\u009f",
        "\u00ad",                  # soft hyphen
        "\u00ff\u00fe",
        "ÿþý",
        "\u200c\u200d",            # ZWNJ, ZWJ
        "\u200e\u200f",            # LRM, RLM
        "\u202eRTL override\u202c",
        "\u2066isolate\u2069",
        "\u2060word joiner",
        "\ufe0f",                  # lone VS16
        "\U000e0001\U000e0041",    # tag characters
        "\ufffd",
        "\ufffd\ufffd\ufffd",
        "bad \ufffd replacement",
        "\ufffe",                  # noncharacter
        "\uffff",
        "\ufdd0\ufdef",
        "\U0001fffe\U0010ffff",
        "\ue000\uf8ff",            # private use area
        "\U000f0000\U00100000",    # supplementary private use
        "\uffef",
        "\u0000",
        "a\u0000b",
        "\u2603\u2764\u2705",
        "★☆♠♣♥♦",
        "←↑→↓↔",
        "⠁⠃⠉⠙",                    # braille
        "█▓▒░",
        "┌─┐│└┘",
        "µ μ",
        "℃ ℉ № ™ ©®",
        "\u0e3f\u20ac\u00a3\u00a5\u20b9\u20bf",
    ]:
        add(t)

    # ---- long words and long runs -----------------------------------------
    for t in [
        "Pneumonoultramicroscopicsilicovolcanoconiosis",
        "supercalifragilisticexpialidocious",
        "Donaudampfschifffahrtselektrizitätenhauptbetriebswerkbauunterbeamtengesellschaft",
        "Llanfairpwllgwyngyllgogerychwyrndrobwllllantysiliogogogoch",
        "antidisestablishmentarianism" * 3,
        "a" * 300,
        "ab" * 150,
        "abc " * 60,
        "x" * 1000,
        " " * 200,
        "\n" * 64,
        "\t" * 40,
        "- " * 80,
        "=" * 120,
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa!",
        "😀" * 40,
        "漢" * 100,
        "ก" * 80,
        "é" * 60,
        "e\u0301" * 30,
        "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ" * 4,
        "https://example.com/" + "very/long/path/" * 20,
        "ATGCGTACGTTAGCCGATCGATCGTAGCTAGCTAGCTGATCGATCGTAGCTAGCTAGCTAGCATCGATCG",
        "0xDEADBEEFCAFEBABE0123456789ABCDEF" * 4,
        "lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor "
        "incididunt ut labore et dolore magna aliqua. Ut enim ad minim veniam, quis nostrud "
        "exercitation ullamco laboris nisi ut aliquip ex ea commodo consequat.",
    ]:
        add(t)

    # ---- mixed sentences ---------------------------------------------------
    for t in [
        "The price is $1,234.56 (about €1.100) — a 12% increase!",
        "He said, \"I can't believe it's not butter.\"",
        "日本語と English と 한국어 mixed with 🎌 emoji.",
        "Email me at john.doe+tag@example.co.uk or call +44 20 7946 0958.",
        "In 1969, Apollo 11 landed on the Moon. 🌕🚀",
        "résumé, naïve café, coöperate, façade",
        "Ich heiße Müller und wohne in Köln.",
        "Москва — столица России.",
        "東京は日本の首都です。人口は約1400万人です。",
        "Python 3.12's f-strings: f\"{x!r:>10}\"",
        "TODO(user): fix bug #1234 in src/main.rs:42:7",
        "Q: What's 2+2?\nA: 4.",
        "   multiple   spaces   between   words   ",
        "tab\tseparated\tvalues\n1\t2\t3",
        "CSV,with,commas\n\"quoted, field\",x,y",
        "User: hi\nAssistant: Hello! How can I help you today?",
        "<p>Ünïcödé in HTML &lt;tag&gt;</p>",
        "α + β = γ; ∀x ∈ ℝ, x² ≥ 0",
        "Ａ　Ｂ　Ｃ",
        "one\u00a0two\u2009three\u3000four",
    ]:
        add(t)

    return s


# Characters that some line splitters (Python's str.splitlines, editors) treat as line breaks;
# always written as \u escapes so that every record is exactly one '\n'-terminated line.
_LINE_BREAKS = {"\u0085": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"}


def dumps_line(obj, **kw):
    out = json.dumps(obj, ensure_ascii=False, **kw)
    for ch, esc in _LINE_BREAKS.items():
        out = out.replace(ch, esc)
    assert "\n" not in out and "\r" not in out
    return out


def write_strings(path):
    strings = tricky_strings()
    # Every entry must be unique, a str, and encodable as UTF-8 (no lone surrogates).
    assert len(set(strings)) == len(strings), [t for t in strings if strings.count(t) > 1]
    for t in strings:
        assert isinstance(t, str)
        t.encode("utf-8")
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for t in strings:
            f.write(dumps_line(t) + "\n")
    return strings


def read_strings(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f.read().split("\n") if line.strip()]


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def run_golden(golden, model, flags, strings_path, n_expected):
    with open(strings_path, "rb") as inp:
        res = subprocess.run([golden, "tokenize", "-m", str(model)] + flags, stdin=inp,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False)
    if res.returncode != 0:
        sys.exit(f"golden tokenize failed on {model.name} {flags}:\n{res.stderr.decode(errors='replace')}")
    rows = [json.loads(line) for line in res.stdout.decode("utf-8").split("\n") if line.strip()]
    if len(rows) != n_expected:
        sys.exit(f"golden tokenize gave {len(rows)} lines for {n_expected} strings")
    return rows


def vocab_info(golden, model):
    """`golden info`: n_vocab, vocab_type, add_bos, add_eos, bos, eos, eot."""
    res = subprocess.run([golden, "info", "-m", str(model)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         check=False)
    if res.returncode != 0:
        sys.exit(f"golden info failed on {model.name}:\n{res.stderr.decode(errors='replace')}")
    return json.loads(res.stdout)


def cross_check(llama_tokenize, model, strings, rows_special, sample):
    """Compare golden's special=true ids with llama-tokenize defaults on a sample."""
    bad = 0
    for idx in sample:
        text = strings[idx]
        if text == "" or "\u0000" in text:
            continue  # llama-tokenize -f rejects/clips these; not what we compare
        with tempfile.NamedTemporaryFile("wb", suffix=".txt", delete=False) as f:
            f.write(text.encode("utf-8"))
            tmp = f.name
        try:
            res = subprocess.run([llama_tokenize, "-m", str(model), "-f", tmp, "--ids", "--no-escape",
                                  "--log-disable"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False)
        finally:
            os.unlink(tmp)
        out = res.stdout.decode("utf-8", errors="replace").strip().splitlines()
        got = json.loads(out[-1]) if res.returncode == 0 and out else None
        if got != rows_special[idx]["ids"]:
            bad += 1
            print(f"  MISMATCH {model.name} #{idx} {text!r}: llama-tokenize {got} vs golden "
                  f"{rows_special[idx]['ids']}", file=sys.stderr)
    return bad


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("golden", nargs="?")
    ap.add_argument("outdir", nargs="?")
    ap.add_argument("--models-dir", default=None)
    ap.add_argument("--llama-tokenize", default=None)
    ap.add_argument("--write-strings", metavar="FILE", default=None)
    args = ap.parse_args()

    if args.write_strings:
        n = len(write_strings(args.write_strings))
        print(f"wrote {n} strings to {args.write_strings}", file=sys.stderr)
        return
    if not args.golden or not args.outdir:
        ap.error("GOLDEN_BIN and OUTDIR are required")

    repo = Path(__file__).resolve().parent.parent
    models_dir = Path(args.models_dir) if args.models_dir else repo / ".cache" / "models"
    outdir = Path(args.outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    golden = str(Path(args.golden).resolve())

    strings_path = outdir / "strings.jsonl"
    strings = write_strings(strings_path)
    if read_strings(strings_path) != strings:
        sys.exit("strings.jsonl does not read back identically")

    manifest = {
        "generator": "scripts/gen_tokenizer_golden.py",
        "tool": "tools/golden/golden.cpp (golden tokenize)",
        "reference": f"llama.cpp vendored in the llama-cpp-python {LLAMA_CPP_PYTHON_VERSION} sdist",
        "llama_cpp_python_version": LLAMA_CPP_PYTHON_VERSION,
        "strings_file": "strings.jsonl",
        "n_strings": len(strings),
        "modes": {
            "special=true": {"tokenize": {"add_special": True, "parse_special": True},
                             "detokenize": {"remove_special": True, "unparse_special": True},
                             "golden_flags": []},
            "special=false": {"tokenize": {"add_special": False, "parse_special": False},
                              "detokenize": {"remove_special": False, "unparse_special": False},
                              "golden_flags": ["--no-special", "--no-parse-special"]},
        },
        "line_order": "for each string of strings.jsonl in order: special=true, then special=false",
        "roundtrip": "detok == text (exact UTF-8 string equality)",
        "detok_plain": "special=true lines only: llama_detokenize(ids, remove_special=false, unparse_special=false)",
        "models": [],
    }

    total_bytes = 0
    for name in MODELS:
        model = models_dir / name
        if not model.is_file():
            sys.exit(f"missing model {model} (run scripts/fetch-models.sh)")
        per_mode = {}
        for special, flags in MODES:
            per_mode[special] = run_golden(golden, model, flags, strings_path, len(strings))
        plain = run_golden(golden, model, PLAIN_FLAGS, strings_path, len(strings))
        for a, b in zip(plain, per_mode[True]):
            if a["ids"] != b["ids"]:
                sys.exit("detok flags changed the ids")
        if name in KNOWN:
            text, ids = KNOWN[name]
            got = per_mode[True][strings.index(text)]["ids"]
            if got != ids:
                sys.exit(f"known golden mismatch on {name}: {text!r} -> {got}, expected {ids}")
        stem = name[: -len(".gguf")]
        out_path = outdir / f"{stem}.jsonl"
        counts = {}
        with open(out_path, "w", encoding="utf-8", newline="\n") as f:
            for i, text in enumerate(strings):
                for special, _ in MODES:
                    r = per_mode[special][i]
                    rec = {"text": text, "special": special, "ids": r["ids"], "detok": r["detok"]}
                    if "detok_hex" in r:
                        rec["detok_hex"] = r["detok_hex"]
                    if special:
                        rec["detok_plain"] = plain[i]["detok"]
                        if "detok_hex" in plain[i]:
                            rec["detok_plain_hex"] = plain[i]["detok_hex"]
                    rec["roundtrip"] = r["detok"] == text and "detok_hex" not in r
                    key = f"special={str(special).lower()}"
                    c = counts.setdefault(key, {"roundtrip_true": 0, "roundtrip_false": 0, "tokens": 0,
                                                "invalid_utf8_detok": 0})
                    c["roundtrip_true" if rec["roundtrip"] else "roundtrip_false"] += 1
                    c["tokens"] += len(r["ids"])
                    c["invalid_utf8_detok"] += "detok_hex" in r
                    f.write(dumps_line(rec, separators=(",", ":")) + "\n")
        size = out_path.stat().st_size
        total_bytes += size
        entry = {"file": name, "size": model.stat().st_size, "sha256": sha256(model),
                 "golden_file": out_path.name, "vocab": vocab_info(golden, model), "counts": counts}
        if args.llama_tokenize:
            sample = list(range(0, len(strings), 7)) + [i for i, t in enumerate(strings) if "<" in t]
            bad = cross_check(args.llama_tokenize, model, strings, per_mode[True], sorted(set(sample)))
            entry["cross_check_llama_tokenize"] = {"strings": len(set(sample)), "mismatches": bad,
                                                   "flags": "--ids --no-escape -f FILE (defaults otherwise)"}
            if bad:
                sys.exit(f"{bad} mismatches against llama-tokenize on {name}")
        manifest["models"].append(entry)
        print(f"{out_path}: {size} bytes, {counts}", file=sys.stderr)

    with open(outdir / "manifest.json", "w", encoding="utf-8", newline="\n") as f:
        json.dump(manifest, f, ensure_ascii=False, indent=2)
        f.write("\n")
    total_bytes += (outdir / "manifest.json").stat().st_size + strings_path.stat().st_size
    print(f"total {total_bytes} bytes in {outdir}", file=sys.stderr)


if __name__ == "__main__":
    main()
