// golden: a small oracle driver over llama.cpp's public C API (llama.h).
//
// Our own code (testing.md §1, the `golden-dump` tool): it links against a
// llama.cpp build but contains no llama.cpp source. Build with
// tools/golden/build.sh LLAMA_CPP_DIR [OUT_BIN].
//
// Subcommands: tokenize, logits, greedy. Run without arguments for usage.

#include "llama.h"
#include "ggml-backend.h"

#include <algorithm>
#include <cerrno>
#include <cinttypes>
#include <cmath>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <string>
#include <vector>

static const char * USAGE =
"usage: golden <command> [options]\n"
"\n"
"commands:\n"
"  tokenize -m MODEL [--no-special] [--no-parse-special]\n"
"           [--detok-remove-special 0|1] [--detok-unparse-special 0|1] [--pieces]\n"
"      Reads stdin: one JSON string per line (UTF-8; blank lines are skipped).\n"
"      Writes stdout: one JSON object per input line:\n"
"        {\"ids\":[...], \"detok\":\"...\"[, \"detok_hex\":\"...\"][, \"pieces_hex\":[...]]}\n"
"      ids   = llama_tokenize(vocab, text, add_special, parse_special)\n"
"              add_special   (default true;  --no-special clears it): add BOS/EOS\n"
"                            if the vocab's add_bos/add_eos flags ask for them\n"
"              parse_special (default true;  --no-parse-special clears it):\n"
"                            text such as \"<|im_start|>\" becomes the special\n"
"                            (control/user-defined) token; when false it is\n"
"                            tokenized as plain text\n"
"              llama-tokenize's defaults are parse_special = true and\n"
"              add_special = llama_vocab_get_add_bos(vocab): the same as ours\n"
"              unless a vocab has add_bos = false but add_eos = true (see `info`).\n"
"      detok = llama_detokenize(vocab, ids, remove_special, unparse_special)\n"
"              remove_special  (default = add_special):   drop a leading BOS / trailing\n"
"                              EOS if the vocab adds them\n"
"              unparse_special (default = parse_special): render special tokens as\n"
"                              their text (otherwise control tokens render as \"\")\n"
"              If the detokenized bytes are not valid UTF-8, \"detok\" holds them with\n"
"              each bad byte replaced by U+FFFD and \"detok_hex\" holds the raw bytes.\n"
"      --pieces   add \"pieces_hex\": llama_token_to_piece(id, lstrip=0, special=true)\n"
"                 of every id, as lowercase hex of the raw bytes.\n"
"      The model is loaded with vocab_only = true (no weights).\n"
"\n"
"  logits -m MODEL --tokens ID,ID,... --out FILE [--top-k K] [common options]\n"
"      One llama_decode over the ids exactly as given (no BOS is added), one\n"
"      sequence, positions 0..n-1, logits requested at every position.\n"
"      FILE: raw little-endian f32, row-major [n_tokens][n_vocab].\n"
"      stdout: JSON {n_tokens, n_vocab, tokens, argmax[, top_k], settings}; argmax\n"
"      ties go to the lowest id; top_k (K > 0, default 0) lists [id, logit] pairs\n"
"      per position, highest first, ties by lowest id.\n"
"\n"
"  greedy -m MODEL --tokens ID,ID,... -n N --out FILE.json [--logits-out FILE]\n"
"         [--stop-eog] [--top-k K] [common options]\n"
"      Decodes the prompt ids exactly as given (no BOS added) in one batch, then\n"
"      N greedy steps: next = argmax of the last logits (ties: lowest id), fed\n"
"      back one token per llama_decode (KV cache). Without --stop-eog it does\n"
"      not stop at end-of-generation tokens.\n"
"      FILE.json: {prompt_ids, generated_ids, n_vocab, logits_file, settings[, top_k]}\n"
"      logits file (default FILE.json + \".logits.f32\"): raw little-endian f32\n"
"      [n_generated][n_vocab]; row i is the distribution generated_ids[i] was\n"
"      taken from (row 0 = logits of the last prompt position).\n"
"\n"
"  detokenize -m MODEL --tokens ID,ID,... [--detok-remove-special 0|1]\n"
"           [--detok-unparse-special 0|1] [--pieces]\n"
"      stdout: {\"detok\":\"...\"[, \"detok_hex\"][, \"pieces_hex\"]} as for tokenize;\n"
"      remove_special and unparse_special default to false here.\n"
"\n"
"  info -m MODEL\n"
"      stdout: JSON with the vocab's properties: n_vocab, vocab_type, add_bos,\n"
"      add_eos, bos, eos, eot (vocab-only load).\n"
"\n"
"common options (logits, greedy):\n"
"  --threads T        CPU threads for decode and batch (default 2)\n"
"  --n-ctx C          context size (default: n_tokens (+N), at least 64, rounded up to 64)\n"
"  --kv-type f16|f32  KV cache type (default f16, llama.cpp's default)\n"
"  --flash-attn auto|on|off   (default auto, llama.cpp's default; on CPU auto\n"
"                     enables it, and that reproduces llama-simple's greedy output)\n"
"  The most precise reference is --kv-type f32 --flash-attn off. The settings\n"
"  used are echoed in the JSON (\"settings\").\n"
"  --verbose          keep llama.cpp's log output on stderr\n";

// ---------------------------------------------------------------------------
// logging

static bool g_verbose = false;

static void log_cb(enum ggml_log_level level, const char * text, void * /*user*/) {
    if (g_verbose || level == GGML_LOG_LEVEL_ERROR) {
        fputs(text, stderr);
    }
}

[[noreturn]] static void die(const char * fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("golden: error: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(1);
}

// ---------------------------------------------------------------------------
// JSON helpers (strings only; enough for our I/O)

// Parses one JSON string literal starting at s[i] (must be '"'). Returns the
// UTF-8 bytes; advances i past the closing quote.
static std::string json_parse_string(const std::string & s, size_t & i) {
    if (i >= s.size() || s[i] != '"') {
        throw std::runtime_error("expected '\"'");
    }
    ++i;
    std::string out;
    auto put_cp = [&](uint32_t cp) {
        if (cp < 0x80) {
            out += (char) cp;
        } else if (cp < 0x800) {
            out += (char) (0xC0 | (cp >> 6));
            out += (char) (0x80 | (cp & 0x3F));
        } else if (cp < 0x10000) {
            out += (char) (0xE0 | (cp >> 12));
            out += (char) (0x80 | ((cp >> 6) & 0x3F));
            out += (char) (0x80 | (cp & 0x3F));
        } else {
            out += (char) (0xF0 | (cp >> 18));
            out += (char) (0x80 | ((cp >> 12) & 0x3F));
            out += (char) (0x80 | ((cp >> 6) & 0x3F));
            out += (char) (0x80 | (cp & 0x3F));
        }
    };
    auto hex4 = [&](size_t at) -> uint32_t {
        if (at + 4 > s.size()) {
            throw std::runtime_error("truncated \\u escape");
        }
        uint32_t v = 0;
        for (size_t k = 0; k < 4; ++k) {
            char c = s[at + k];
            v <<= 4;
            if (c >= '0' && c <= '9') v |= (uint32_t) (c - '0');
            else if (c >= 'a' && c <= 'f') v |= (uint32_t) (c - 'a' + 10);
            else if (c >= 'A' && c <= 'F') v |= (uint32_t) (c - 'A' + 10);
            else throw std::runtime_error("bad hex digit in \\u escape");
        }
        return v;
    };
    while (true) {
        if (i >= s.size()) {
            throw std::runtime_error("unterminated string");
        }
        char c = s[i++];
        if (c == '"') {
            break;
        }
        if ((unsigned char) c < 0x20) {
            throw std::runtime_error("raw control character in string");
        }
        if (c != '\\') {
            out += c;
            continue;
        }
        if (i >= s.size()) {
            throw std::runtime_error("truncated escape");
        }
        char e = s[i++];
        switch (e) {
            case '"':  out += '"';  break;
            case '\\': out += '\\'; break;
            case '/':  out += '/';  break;
            case 'b':  out += '\b'; break;
            case 'f':  out += '\f'; break;
            case 'n':  out += '\n'; break;
            case 'r':  out += '\r'; break;
            case 't':  out += '\t'; break;
            case 'u': {
                uint32_t cp = hex4(i);
                i += 4;
                if (cp >= 0xD800 && cp <= 0xDBFF) {
                    if (i + 6 > s.size() || s[i] != '\\' || s[i + 1] != 'u') {
                        throw std::runtime_error("lone high surrogate");
                    }
                    uint32_t lo = hex4(i + 2);
                    if (lo < 0xDC00 || lo > 0xDFFF) {
                        throw std::runtime_error("bad low surrogate");
                    }
                    i += 6;
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
                    throw std::runtime_error("lone low surrogate");
                }
                put_cp(cp);
                break;
            }
            default:
                throw std::runtime_error("bad escape");
        }
    }
    return out;
}

// Length of the valid UTF-8 sequence at p (1..4), or 0 if invalid.
static size_t utf8_valid_len(const unsigned char * p, size_t n) {
    unsigned char c = p[0];
    size_t len;
    uint32_t cp;
    if (c < 0x80) return 1;
    if (c >= 0xC2 && c <= 0xDF) { len = 2; cp = c & 0x1F; }
    else if (c >= 0xE0 && c <= 0xEF) { len = 3; cp = c & 0x0F; }
    else if (c >= 0xF0 && c <= 0xF4) { len = 4; cp = c & 0x07; }
    else return 0;
    if (n < len) return 0;
    for (size_t k = 1; k < len; ++k) {
        if ((p[k] & 0xC0) != 0x80) return 0;
        cp = (cp << 6) | (p[k] & 0x3F);
    }
    if (len == 3 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) return 0;
    if (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)) return 0;
    return len;
}

// Writes bytes as a JSON string literal. Invalid UTF-8 bytes become U+FFFD
// (one per bad byte); returns false if any were replaced. Non-ASCII valid
// characters are written raw (UTF-8); control characters, '"' and '\\' are
// escaped; U+0085, U+2028 and U+2029 are escaped too
// (some line splitters treat them as line breaks).
static bool json_write_string(std::string & out, const std::string & s) {
    bool valid = true;
    out += '"';
    const unsigned char * p = (const unsigned char *) s.data();
    size_t n = s.size();
    size_t i = 0;
    char buf[8];
    while (i < n) {
        unsigned char c = p[i];
        if (c < 0x80) {
            switch (c) {
                case '"':  out += "\\\""; break;
                case '\\': out += "\\\\"; break;
                case '\n': out += "\\n";  break;
                case '\r': out += "\\r";  break;
                case '\t': out += "\\t";  break;
                case '\b': out += "\\b";  break;
                case '\f': out += "\\f";  break;
                default:
                    if (c < 0x20 || c == 0x7F) {
                        snprintf(buf, sizeof(buf), "\\u%04x", c);
                        out += buf;
                    } else {
                        out += (char) c;
                    }
            }
            ++i;
            continue;
        }
        size_t len = utf8_valid_len(p + i, n - i);
        if (len == 0) {
            out += "\xEF\xBF\xBD";
            valid = false;
            ++i;
            continue;
        }
        if (len == 3 && p[i] == 0xE2 && p[i + 1] == 0x80 && (p[i + 2] == 0xA8 || p[i + 2] == 0xA9)) {
            out += p[i + 2] == 0xA8 ? "\\u2028" : "\\u2029";
        } else if (len == 2 && p[i] == 0xC2 && p[i + 1] == 0x85) {
            out += "\\u0085";
        } else {
            out.append((const char *) p + i, len);
        }
        i += len;
    }
    out += '"';
    return valid;
}

static std::string to_hex(const std::string & s) {
    static const char * d = "0123456789abcdef";
    std::string h;
    h.reserve(s.size() * 2);
    for (unsigned char c : s) {
        h += d[c >> 4];
        h += d[c & 15];
    }
    return h;
}

static std::string fmt_float(float v) {
    if (std::isnan(v)) return "\"nan\"";
    if (std::isinf(v)) return v > 0 ? "\"inf\"" : "\"-inf\"";
    char buf[32];
    snprintf(buf, sizeof(buf), "%.9g", (double) v);
    return buf;
}

// ---------------------------------------------------------------------------
// argument parsing

struct Args {
    std::string cmd;
    std::string model;
    bool add_special = true;
    bool parse_special = true;
    int detok_remove_special = -1;   // -1: follow add_special
    int detok_unparse_special = -1;  // -1: follow parse_special
    bool pieces = false;
    std::vector<llama_token> tokens;
    bool have_tokens = false;
    std::string out;
    std::string logits_out;
    int top_k = 0;
    int n_gen = -1;
    int threads = 2;
    int n_ctx = 0;
    std::string kv_type = "f16";
    std::string flash_attn = "auto";
    bool stop_eog = false;
};

static std::vector<llama_token> parse_ids(const std::string & s) {
    std::vector<llama_token> ids;
    size_t i = 0;
    while (i < s.size()) {
        size_t j = s.find(',', i);
        if (j == std::string::npos) j = s.size();
        std::string part = s.substr(i, j - i);
        // trim spaces
        size_t a = part.find_first_not_of(" \t[]");
        size_t b = part.find_last_not_of(" \t[]");
        if (a != std::string::npos) {
            part = part.substr(a, b - a + 1);
            char * end = nullptr;
            errno = 0;
            long v = strtol(part.c_str(), &end, 10);
            if (errno || end == part.c_str() || *end != '\0' || v < 0 || v > INT32_MAX) {
                die("bad token id '%s'", part.c_str());
            }
            ids.push_back((llama_token) v);
        }
        i = j + 1;
    }
    return ids;
}

static int parse_int(const char * s, const char * what) {
    char * end = nullptr;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end != '\0' || v < INT32_MIN || v > INT32_MAX) {
        die("bad integer for %s: '%s'", what, s);
    }
    return (int) v;
}

static Args parse_args(int argc, char ** argv) {
    if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help") || !strcmp(argv[1], "help")) {
        fputs(USAGE, argc < 2 ? stderr : stdout);
        exit(argc < 2 ? 2 : 0);
    }
    Args a;
    a.cmd = argv[1];
    if (a.cmd != "tokenize" && a.cmd != "logits" && a.cmd != "greedy" && a.cmd != "info" &&
        a.cmd != "detokenize") {
        fputs(USAGE, stderr);
        die("unknown command '%s'", a.cmd.c_str());
    }
    for (int i = 2; i < argc; ++i) {
        std::string k = argv[i];
        auto val = [&]() -> const char * {
            if (i + 1 >= argc) die("missing value for %s", k.c_str());
            return argv[++i];
        };
        if (k == "-m" || k == "--model") a.model = val();
        else if (k == "--no-special") a.add_special = false;
        else if (k == "--no-parse-special") a.parse_special = false;
        else if (k == "--detok-remove-special") a.detok_remove_special = parse_int(val(), k.c_str()) != 0;
        else if (k == "--detok-unparse-special") a.detok_unparse_special = parse_int(val(), k.c_str()) != 0;
        else if (k == "--pieces") a.pieces = true;
        else if (k == "--tokens") { a.tokens = parse_ids(val()); a.have_tokens = true; }
        else if (k == "--out" || k == "-o") a.out = val();
        else if (k == "--logits-out") a.logits_out = val();
        else if (k == "--top-k") a.top_k = parse_int(val(), k.c_str());
        else if (k == "-n") a.n_gen = parse_int(val(), k.c_str());
        else if (k == "--threads" || k == "-t") a.threads = parse_int(val(), k.c_str());
        else if (k == "--n-ctx" || k == "-c") a.n_ctx = parse_int(val(), k.c_str());
        else if (k == "--kv-type") a.kv_type = val();
        else if (k == "--flash-attn") a.flash_attn = val();
        else if (k == "--stop-eog") a.stop_eog = true;
        else if (k == "--verbose") g_verbose = true;
        else if (k == "-h" || k == "--help") { fputs(USAGE, stdout); exit(0); }
        else die("unknown option '%s' (run without arguments for usage)", k.c_str());
    }
    if (a.model.empty()) die("-m MODEL is required");
    if (a.cmd == "detokenize" && !a.have_tokens) die("--tokens ID,ID,... is required");
    if (a.cmd == "logits" || a.cmd == "greedy") {
        if (!a.have_tokens || a.tokens.empty()) die("--tokens ID,ID,... (at least one id) is required");
        if (a.out.empty()) die("--out FILE is required");
        if (a.cmd == "greedy" && a.n_gen < 0) die("-n N is required for greedy");
        if (a.threads < 1) die("--threads must be >= 1");
        if (a.top_k < 0) die("--top-k must be >= 0");
        if (a.kv_type != "f16" && a.kv_type != "f32") die("--kv-type must be f16 or f32");
        if (a.flash_attn != "auto" && a.flash_attn != "on" && a.flash_attn != "off") die("--flash-attn must be auto, on or off");
    }
    return a;
}

// ---------------------------------------------------------------------------
// tokenize

static std::string detokenize(const llama_vocab * vocab, const std::vector<llama_token> & ids,
                              bool remove_special, bool unparse_special) {
    std::string out(ids.size() * 16 + 64, '\0');
    int32_t n = llama_detokenize(vocab, ids.data(), (int32_t) ids.size(), out.data(), (int32_t) out.size(),
                                 remove_special, unparse_special);
    if (n < 0) {
        out.resize((size_t) -n);
        n = llama_detokenize(vocab, ids.data(), (int32_t) ids.size(), out.data(), (int32_t) out.size(),
                             remove_special, unparse_special);
        if (n < 0) die("llama_detokenize failed twice");
    }
    out.resize((size_t) n);
    return out;
}

static std::string token_piece(const llama_vocab * vocab, llama_token id, bool special) {
    std::string out(64, '\0');
    int32_t n = llama_token_to_piece(vocab, id, out.data(), (int32_t) out.size(), 0, special);
    if (n < 0) {
        out.resize((size_t) -n);
        n = llama_token_to_piece(vocab, id, out.data(), (int32_t) out.size(), 0, special);
        if (n < 0) die("llama_token_to_piece failed twice");
    }
    out.resize((size_t) n);
    return out;
}

static std::vector<llama_token> tokenize(const llama_vocab * vocab, const std::string & text, bool add_special,
                                         bool parse_special) {
    std::vector<llama_token> ids(text.size() + 8);
    int32_t n = llama_tokenize(vocab, text.data(), (int32_t) text.size(), ids.data(), (int32_t) ids.size(),
                               add_special, parse_special);
    if (n == INT32_MIN) die("llama_tokenize overflow");
    if (n < 0) {
        ids.resize((size_t) -n);
        n = llama_tokenize(vocab, text.data(), (int32_t) text.size(), ids.data(), (int32_t) ids.size(),
                           add_special, parse_special);
        if (n < 0) die("llama_tokenize failed twice");
    }
    ids.resize((size_t) n);
    return ids;
}

// Appends "detok":...[,"detok_hex":...][,"pieces_hex":[...]] to o.
static void detok_fields(std::string & o, const llama_vocab * vocab, const std::vector<llama_token> & ids,
                         bool remove_special, bool unparse_special, bool pieces) {
    std::string detok = detokenize(vocab, ids, remove_special, unparse_special);
    o += "\"detok\":";
    if (!json_write_string(o, detok)) {
        o += ",\"detok_hex\":\"" + to_hex(detok) + "\"";
    }
    if (pieces) {
        o += ",\"pieces_hex\":[";
        for (size_t k = 0; k < ids.size(); ++k) {
            if (k) o += ',';
            o += "\"" + to_hex(token_piece(vocab, ids[k], true)) + "\"";
        }
        o += "]";
    }
}

static int cmd_tokenize(const Args & a) {
    llama_model_params mp = llama_model_default_params();
    mp.vocab_only = true;
    mp.n_gpu_layers = 0;
    llama_model * model = llama_model_load_from_file(a.model.c_str(), mp);
    if (!model) die("failed to load model '%s'", a.model.c_str());
    const llama_vocab * vocab = llama_model_get_vocab(model);

    const bool remove_special = a.detok_remove_special < 0 ? a.add_special : a.detok_remove_special != 0;
    const bool unparse_special = a.detok_unparse_special < 0 ? a.parse_special : a.detok_unparse_special != 0;

    std::string line;
    size_t lineno = 0;
    while (std::getline(std::cin, line)) {
        ++lineno;
        if (!line.empty() && line.back() == '\r') line.pop_back();
        if (line.find_first_not_of(" \t") == std::string::npos) continue;
        std::string text;
        try {
            size_t i = line.find_first_not_of(" \t");
            text = json_parse_string(line, i);
            if (line.find_first_not_of(" \t", i) != std::string::npos) {
                throw std::runtime_error("trailing characters after the string");
            }
        } catch (const std::exception & e) {
            die("stdin line %zu: %s", lineno, e.what());
        }
        std::vector<llama_token> ids = tokenize(vocab, text, a.add_special, a.parse_special);
        std::string o = "{\"ids\":[";
        for (size_t k = 0; k < ids.size(); ++k) {
            if (k) o += ',';
            o += std::to_string(ids[k]);
        }
        o += "],";
        detok_fields(o, vocab, ids, remove_special, unparse_special, a.pieces);
        o += "}\n";
        fwrite(o.data(), 1, o.size(), stdout);
    }
    fflush(stdout);
    llama_model_free(model);
    return 0;
}

static int cmd_detokenize(const Args & a) {
    llama_model_params mp = llama_model_default_params();
    mp.vocab_only = true;
    mp.n_gpu_layers = 0;
    llama_model * model = llama_model_load_from_file(a.model.c_str(), mp);
    if (!model) die("failed to load model '%s'", a.model.c_str());
    const llama_vocab * vocab = llama_model_get_vocab(model);
    const int n_vocab = llama_vocab_n_tokens(vocab);
    for (llama_token t : a.tokens) {
        if (t < 0 || t >= n_vocab) die("token id %d out of range (n_vocab %d)", t, n_vocab);
    }
    std::string o = "{";
    detok_fields(o, vocab, a.tokens, a.detok_remove_special == 1, a.detok_unparse_special == 1, a.pieces);
    o += "}\n";
    fwrite(o.data(), 1, o.size(), stdout);
    llama_model_free(model);
    return 0;
}

// ---------------------------------------------------------------------------
// info

static int cmd_info(const Args & a) {
    llama_model_params mp = llama_model_default_params();
    mp.vocab_only = true;
    mp.n_gpu_layers = 0;
    llama_model * model = llama_model_load_from_file(a.model.c_str(), mp);
    if (!model) die("failed to load model '%s'", a.model.c_str());
    const llama_vocab * vocab = llama_model_get_vocab(model);
    static const char * types[] = {"none", "spm", "bpe", "wpm", "ugm", "rwkv", "plamo2", "test"};
    int vt = (int) llama_vocab_type(vocab);
    std::string o = "{\"n_vocab\":" + std::to_string(llama_vocab_n_tokens(vocab)) + ",\"vocab_type\":\"" +
                    std::string(vt >= 0 && vt < 8 ? types[vt] : "unknown") + "\",\"add_bos\":" +
                    (llama_vocab_get_add_bos(vocab) ? "true" : "false") + ",\"add_eos\":" +
                    (llama_vocab_get_add_eos(vocab) ? "true" : "false") +
                    ",\"bos\":" + std::to_string(llama_vocab_bos(vocab)) +
                    ",\"eos\":" + std::to_string(llama_vocab_eos(vocab)) +
                    ",\"eot\":" + std::to_string(llama_vocab_eot(vocab)) + "}\n";
    fwrite(o.data(), 1, o.size(), stdout);
    llama_model_free(model);
    return 0;
}

// ---------------------------------------------------------------------------
// logits / greedy

struct Runner {
    llama_model * model = nullptr;
    llama_context * ctx = nullptr;
    const llama_vocab * vocab = nullptr;
    int n_vocab = 0;
    uint32_t n_ctx = 0;

    Runner(const Args & a, size_t n_total) {
        llama_model_params mp = llama_model_default_params();
        mp.n_gpu_layers = 0;
        model = llama_model_load_from_file(a.model.c_str(), mp);
        if (!model) die("failed to load model '%s'", a.model.c_str());
        vocab = llama_model_get_vocab(model);
        n_vocab = llama_vocab_n_tokens(vocab);

        uint32_t want = a.n_ctx > 0 ? (uint32_t) a.n_ctx : (uint32_t) std::max<size_t>(n_total, 64);
        if (a.n_ctx <= 0) want = (want + 63) / 64 * 64;
        if (want < n_total) die("--n-ctx %u is smaller than the %zu tokens needed", want, n_total);
        n_ctx = want;

        llama_context_params cp = llama_context_default_params();
        cp.n_ctx = n_ctx;
        cp.n_batch = n_ctx;
        cp.n_ubatch = n_ctx;
        cp.n_seq_max = 1;
        cp.n_threads = a.threads;
        cp.n_threads_batch = a.threads;
        cp.no_perf = true;
        cp.type_k = a.kv_type == "f32" ? GGML_TYPE_F32 : GGML_TYPE_F16;
        cp.type_v = cp.type_k;
        cp.flash_attn_type = a.flash_attn == "on"    ? LLAMA_FLASH_ATTN_TYPE_ENABLED
                           : a.flash_attn == "auto"  ? LLAMA_FLASH_ATTN_TYPE_AUTO
                                                     : LLAMA_FLASH_ATTN_TYPE_DISABLED;
        ctx = llama_init_from_model(model, cp);
        if (!ctx) die("failed to create a llama context (n_ctx %u)", n_ctx);
        if (llama_n_ctx(ctx) < n_total) die("context is %u tokens, need %zu", llama_n_ctx(ctx), n_total);
    }

    ~Runner() {
        if (ctx) llama_free(ctx);
        if (model) llama_model_free(model);
    }

    void check_ids(const std::vector<llama_token> & ids) const {
        for (llama_token t : ids) {
            if (t < 0 || t >= n_vocab) die("token id %d out of range (n_vocab %d)", t, n_vocab);
        }
    }

    // Decodes ids at positions pos0.. in one batch; logits on every position
    // if all_logits, else only on the last.
    void decode(const std::vector<llama_token> & ids, int pos0, bool all_logits) {
        llama_batch b = llama_batch_init((int32_t) ids.size(), 0, 1);
        for (size_t i = 0; i < ids.size(); ++i) {
            b.token[i] = ids[i];
            b.pos[i] = pos0 + (llama_pos) i;
            b.n_seq_id[i] = 1;
            b.seq_id[i][0] = 0;
            b.logits[i] = (int8_t) (all_logits || i + 1 == ids.size());
        }
        b.n_tokens = (int32_t) ids.size();
        int32_t rc = llama_decode(ctx, b);
        llama_batch_free(b);
        if (rc != 0) die("llama_decode returned %d", rc);
    }

    const float * logits(int32_t i) {
        const float * p = llama_get_logits_ith(ctx, i);
        if (!p) die("llama_get_logits_ith(%d) returned null", i);
        return p;
    }
};

static llama_token argmax(const float * v, int n) {
    int best = 0;
    for (int i = 1; i < n; ++i) {
        if (v[i] > v[best]) best = i;  // strict: ties keep the lowest id
    }
    return best;
}

static std::string top_k_json(const float * v, int n, int k) {
    std::vector<int> idx(n);
    for (int i = 0; i < n; ++i) idx[i] = i;
    k = std::min(k, n);
    std::partial_sort(idx.begin(), idx.begin() + k, idx.end(), [&](int x, int y) {
        return v[x] > v[y] || (v[x] == v[y] && x < y);
    });
    std::string o = "[";
    for (int j = 0; j < k; ++j) {
        if (j) o += ',';
        o += "[" + std::to_string(idx[j]) + "," + fmt_float(v[idx[j]]) + "]";
    }
    return o + "]";
}

static std::string ids_json(const std::vector<llama_token> & ids) {
    std::string o = "[";
    for (size_t k = 0; k < ids.size(); ++k) {
        if (k) o += ',';
        o += std::to_string(ids[k]);
    }
    return o + "]";
}

static std::string settings_json(const Args & a, const Runner & r) {
    std::string o = "{\"n_ctx\":" + std::to_string(r.n_ctx) + ",\"n_batch\":" + std::to_string(r.n_ctx) +
                    ",\"n_ubatch\":" + std::to_string(r.n_ctx) + ",\"threads\":" + std::to_string(a.threads) +
                    ",\"kv_type\":\"" + a.kv_type + "\",\"flash_attn\":\"" + a.flash_attn +
                    "\",\"add_bos\":false,\"n_gpu_layers\":0,\"model\":";
    std::string m = a.model;
    size_t slash = m.find_last_of('/');
    if (slash != std::string::npos) m = m.substr(slash + 1);
    json_write_string(o, m);
    return o + "}";
}

static void write_f32(FILE * f, const float * v, size_t n, const std::string & path) {
    // The host is little-endian on every platform we build for; check anyway.
    const uint16_t probe = 1;
    if (*(const uint8_t *) &probe != 1) die("big-endian host: f32 output would not be little-endian");
    if (fwrite(v, sizeof(float), n, f) != n) die("write to '%s' failed", path.c_str());
}

static int cmd_logits(const Args & a) {
    Runner r(a, a.tokens.size());
    r.check_ids(a.tokens);
    r.decode(a.tokens, 0, true);

    FILE * f = fopen(a.out.c_str(), "wb");
    if (!f) die("cannot open '%s' for writing", a.out.c_str());
    std::vector<llama_token> am;
    std::string topk = "[";
    for (size_t i = 0; i < a.tokens.size(); ++i) {
        const float * v = r.logits((int32_t) i);
        write_f32(f, v, (size_t) r.n_vocab, a.out);
        am.push_back(argmax(v, r.n_vocab));
        if (a.top_k > 0) {
            if (i) topk += ',';
            topk += top_k_json(v, r.n_vocab, a.top_k);
        }
    }
    if (fclose(f) != 0) die("write to '%s' failed", a.out.c_str());

    std::string o = "{\"n_tokens\":" + std::to_string(a.tokens.size()) + ",\"n_vocab\":" + std::to_string(r.n_vocab) +
                    ",\"tokens\":" + ids_json(a.tokens) + ",\"argmax\":" + ids_json(am);
    if (a.top_k > 0) o += ",\"top_k\":" + topk + "]";
    o += ",\"settings\":" + settings_json(a, r) + "}\n";
    fwrite(o.data(), 1, o.size(), stdout);
    return 0;
}

static int cmd_greedy(const Args & a) {
    Runner r(a, a.tokens.size() + (size_t) a.n_gen);
    r.check_ids(a.tokens);
    std::string lpath = a.logits_out.empty() ? a.out + ".logits.f32" : a.logits_out;
    FILE * f = fopen(lpath.c_str(), "wb");
    if (!f) die("cannot open '%s' for writing", lpath.c_str());

    std::vector<llama_token> gen;
    std::string topk = "[";
    bool stopped_eog = false;
    if (a.n_gen > 0) {
        r.decode(a.tokens, 0, false);
        int pos = (int) a.tokens.size();
        for (int step = 0; step < a.n_gen; ++step) {
            const float * v = r.logits(-1);
            write_f32(f, v, (size_t) r.n_vocab, lpath);
            if (a.top_k > 0) {
                if (step) topk += ',';
                topk += top_k_json(v, r.n_vocab, a.top_k);
            }
            llama_token next = argmax(v, r.n_vocab);
            gen.push_back(next);
            if (a.stop_eog && llama_vocab_is_eog(r.vocab, next)) {
                stopped_eog = true;
                break;
            }
            if (step + 1 == a.n_gen) break;
            r.decode({next}, pos++, true);
        }
    }
    if (fclose(f) != 0) die("write to '%s' failed", lpath.c_str());

    std::string lname = lpath;
    size_t slash = lname.find_last_of('/');
    if (slash != std::string::npos) lname = lname.substr(slash + 1);

    std::string o = "{\"prompt_ids\":" + ids_json(a.tokens) + ",\"generated_ids\":" + ids_json(gen) +
                    ",\"n_vocab\":" + std::to_string(r.n_vocab) + ",\"logits_file\":";
    json_write_string(o, lname);
    o += ",\"logits_shape\":[" + std::to_string(gen.size()) + "," + std::to_string(r.n_vocab) + "]";
    o += std::string(",\"stopped_eog\":") + (stopped_eog ? "true" : "false");
    if (a.top_k > 0) o += ",\"top_k\":" + topk + "]";
    o += ",\"settings\":" + settings_json(a, r) + "}\n";
    FILE * jf = fopen(a.out.c_str(), "wb");
    if (!jf) die("cannot open '%s' for writing", a.out.c_str());
    if (fwrite(o.data(), 1, o.size(), jf) != o.size() || fclose(jf) != 0) die("write to '%s' failed", a.out.c_str());
    fwrite(o.data(), 1, o.size(), stdout);
    return 0;
}

int main(int argc, char ** argv) {
    Args a = parse_args(argc, argv);
    llama_log_set(log_cb, nullptr);
    ggml_log_set(log_cb, nullptr);
    ggml_backend_load_all();
    llama_backend_init();
    int rc = 0;
    if (a.cmd == "tokenize") rc = cmd_tokenize(a);
    else if (a.cmd == "info") rc = cmd_info(a);
    else if (a.cmd == "detokenize") rc = cmd_detokenize(a);
    else if (a.cmd == "logits") rc = cmd_logits(a);
    else rc = cmd_greedy(a);
    llama_backend_free();
    return rc;
}
