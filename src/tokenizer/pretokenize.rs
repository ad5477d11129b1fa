//! Pre-tokenizers of byte-level BPE: the word splitting selected by `tokenizer.ggml.pre`, exactly
//! as llama.cpp's `unicode_regex_split` performs it (`src/unicode.cpp`).
//!
//! llama.cpp applies a list of regexes in turn; each one splits every fragment left by the
//! previous one into its matches and the unmatched text between them. Most lists use the hand
//! written GPT-2 and Llama-3/Qwen splitters (`Stage::Gpt2`, `Stage::Llama3`); these are
//! reproduced here including their small departures from the regexes they stand for. The other
//! regexes go through `std::regex` in llama.cpp, over text where every non-ASCII code point is
//! replaced by one byte naming its category. `Pattern` reproduces that for the simple regexes
//! the supported pre-tokenizers use: a sequence of quantified character classes with an optional
//! `$`, matched with ECMAScript's leftmost, greedy, backtracking semantics.
//!
//! Out of scope: the pre-tokenizers whose regexes need lookaround or alternation outside the
//! hand-written splitters (tekken, gpt-4o, deepseek-v3, kimi-k2, …): they are refused as unknown.

use super::unicode::Flags;
use std::ops::Range;

/// One code point of the text with its flags.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Cp {
    pub c: u32,
    pub f: Flags,
}

/// The regex families of llama.cpp's `llm_tokenizer_bpe` that ternlm implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PreKind {
    /// `default` or no `tokenizer.ggml.pre`.
    Default,
    /// `llama-bpe`, `llama3`, `dbrx`, `chatglm-bpe`, `glm4`, …
    Llama3,
    /// `qwen2`, `stablelm2`, `hunyuan`, `grok-2`, …
    Qwen2,
    Qwen35,
    /// `gpt-2`, `mpt`, `olmo`, `jais`, `phi-2`, …
    Gpt2,
    /// `starcoder`, `refact`, `command-r`, `smollm`, `codeshell`, `exaone`, …
    Starcoder,
    Falcon,
    DeepseekLlm,
    DeepseekCoder,
    /// `bloom`, `poro-chat`, `gpt3-finnish`.
    Bloom,
    Viking,
    Laguna,
    /// SentencePiece-style BPE on raw UTF-8 split only at newlines (`gemma4`, `sarvam-moe`).
    Newlines,
    /// `whitespace` (jina-zh).
    Whitespace,
}

// The regexes exactly as llama.cpp spells them: the hand-written splitters are chosen by string
// equality, as in `unicode_regex_split_custom`.
const GPT2_RE: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)";
const LLAMA3_RE: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN2_RE: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN35_RE: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const NEWLINES_RE: &str = r"[^\n]+|[\n]+";
const CJK_RE: &str = "[一-龥ࠀ-一가-\u{d7ff}]+";
const BLOOM_RE: &str = r" ?[^(\s|.,!?…。，、।۔،)]+";

impl PreKind {
    /// llama.cpp's `regex_exprs` for this pre-tokenizer, in order.
    pub fn regexes(self) -> &'static [&'static str] {
        match self {
            PreKind::Default => &[
                r"[\p{P}\$\+<=>\^~\|]+",
                GPT2_RE,
                r"\p{N}+",
                "[0-9][0-9][0-9]",
            ],
            PreKind::Llama3 => &[LLAMA3_RE],
            PreKind::Qwen2 => &[QWEN2_RE],
            PreKind::Qwen35 => &[QWEN35_RE],
            PreKind::Gpt2 => &[GPT2_RE],
            PreKind::Starcoder => &[r"\p{N}", GPT2_RE],
            PreKind::Falcon => &[r"[\p{P}\$\+<=>\^~\|`]+", GPT2_RE, "[0-9][0-9][0-9]"],
            PreKind::DeepseekLlm => &[
                "[\r\n]",
                "\\s?[A-Za-zµÀ-ÖØ-öø-ƺƼ-ƿǄ-ʓʕ-ʯͰ-ͳͶͷͻ-ͽͿΆΈ-ΊΌΎ-ΡΣ-ϵϷ-ҁҊ-ԯԱ-ՖႠ-ჅᎠ-Ᏽᏸ-ᏽᲐ-ᲺᲽ-Ჿᴀ-ᴫᵫ-ᵷᵹ-ᶚḀ-ἕἘ-Ἕἠ-ὅὈ-Ὅὐ-ὗὙὛὝὟ-\u{1f7d}ᾀ-ᾴᾶ-ᾼ\u{1fbe}ῂ-ῄῆ-ῌῐ-\u{1fd3}ῖ-\u{1fdb}ῠ-Ῥῲ-ῴῶ-ῼ\u{2102}\u{2107}\u{210a}-\u{2113}\u{2115}\u{2119}-\u{211d}\u{2124}\u{2126}\u{2128}\u{212a}-\u{212d}\u{212f}-\u{2134}\u{2139}\u{213c}-\u{213f}\u{2145}-\u{2149}ⅎↃↄⰀ-ⱻⱾ-ⳤⳫ-ⳮⳲⳳꙀ-ꙭꚀ-ꚛꜢ-ꝯꝱ-ꞇꞋ-ꞎꭰ-ꮿ\u{fb00}-\u{fb06}\u{fb13}-\u{fb17}\u{ff21}-\u{ff3a}\u{ff41}-\u{ff5a}𐐀-𐑏𐒰-𐓓𐓘-𐓻𐲀-𐲲𐳀-𐳲𑢠-𑣟𞤀-𞥃]+",
                "\\s?[!-/:-~！-／：-～‘-‟\u{3000}-。]+",
                r"\s+$",
                CJK_RE,
                r"\p{N}+",
            ],
            PreKind::DeepseekCoder => &["[\r\n]", r"\s?\p{L}+", r"\s?\p{P}+", CJK_RE, r"\p{N}"],
            PreKind::Bloom => &[BLOOM_RE],
            PreKind::Viking => &[BLOOM_RE, r"\p{N}"],
            PreKind::Laguna => &[NEWLINES_RE, QWEN2_RE],
            PreKind::Newlines => &[NEWLINES_RE],
            PreKind::Whitespace => &[r"\S+"],
        }
    }
}

/// One regex of the list.
#[derive(Debug, Clone)]
pub(crate) enum Stage {
    /// `unicode_regex_split_custom_gpt2`.
    Gpt2,
    /// `unicode_regex_split_custom_llama3` (`max_digits` 3), `_qwen2` (1) and `_qwen35` (1, with
    /// combining marks joining letters).
    Llama3 { max_digits: usize, marks: bool },
    /// `unicode_regex_split_custom_newlines`.
    Newlines,
    /// Everything else, as `std::regex` would match it.
    Pattern(Pattern),
}

impl Stage {
    pub fn from_regex(re: &str) -> Result<Stage, String> {
        Ok(match re {
            GPT2_RE => Stage::Gpt2,
            LLAMA3_RE => Stage::Llama3 {
                max_digits: 3,
                marks: false,
            },
            QWEN2_RE => Stage::Llama3 {
                max_digits: 1,
                marks: false,
            },
            QWEN35_RE => Stage::Llama3 {
                max_digits: 1,
                marks: true,
            },
            NEWLINES_RE => Stage::Newlines,
            _ => Stage::Pattern(Pattern::parse(re)?),
        })
    }

    /// Splits the fragment `ini..end` of `cps`, appending the pieces (code point ranges) to `out`.
    fn split(&self, cps: &[Cp], ini: usize, end: usize, out: &mut Vec<Range<usize>>) {
        match self {
            Stage::Gpt2 => split_gpt2(cps, ini, end, out),
            Stage::Llama3 { max_digits, marks } => {
                split_llama3(cps, ini, end, *max_digits, *marks, out)
            }
            Stage::Newlines => split_newlines(cps, ini, end, out),
            Stage::Pattern(p) => p.split(cps, ini, end, out),
        }
    }
}

/// A pre-tokenizer: the stages of one [`PreKind`].
#[derive(Debug, Clone)]
pub struct PreTokenizer {
    kind: PreKind,
    stages: Vec<Stage>,
}

/// Reusable buffers of [`PreTokenizer::split`].
#[derive(Debug, Default)]
pub(crate) struct SplitScratch {
    cps: Vec<Cp>,
    /// Byte offset of each code point, plus the text length at the end.
    offs: Vec<usize>,
    a: Vec<Range<usize>>,
    b: Vec<Range<usize>>,
}

impl PreTokenizer {
    pub fn new(kind: PreKind) -> Result<Self, String> {
        let stages = kind
            .regexes()
            .iter()
            .map(|r| Stage::from_regex(r))
            .collect::<Result<_, _>>()?;
        Ok(PreTokenizer { kind, stages })
    }

    pub fn kind(&self) -> PreKind {
        self.kind
    }

    /// Splits `text` into words, appending their byte ranges to `words`.
    pub(crate) fn split(&self, text: &str, s: &mut SplitScratch, words: &mut Vec<Range<usize>>) {
        s.cps.clear();
        s.offs.clear();
        for (i, ch) in text.char_indices() {
            let c = ch as u32;
            s.cps.push(Cp { c, f: Flags::of(c) });
            s.offs.push(i);
        }
        s.offs.push(text.len());
        s.a.clear();
        if !s.cps.is_empty() {
            s.a.push(0..s.cps.len());
        }
        for stage in &self.stages {
            s.b.clear();
            for r in &s.a {
                stage.split(&s.cps, r.start, r.end, &mut s.b);
            }
            std::mem::swap(&mut s.a, &mut s.b);
        }
        words.extend(s.a.iter().map(|r| s.offs[r.start]..s.offs[r.end]));
    }

    /// Convenience for tests: the words of `text`.
    pub fn words<'t>(&self, text: &'t str) -> Vec<&'t str> {
        let mut s = SplitScratch::default();
        let mut w = Vec::new();
        self.split(text, &mut s, &mut w);
        w.into_iter().map(|r| &text[r]).collect()
    }
}

/// llama.cpp's `OUT_OF_RANGE` code point outside the fragment.
const OOR: u32 = u32::MAX;

/// A fragment with llama.cpp's accessors: outside `ini..end` the code point is [`OOR`] and the
/// flags are empty.
struct Frag<'a> {
    cps: &'a [Cp],
    end: usize,
    prev: usize,
}

impl Frag<'_> {
    #[inline]
    fn cpt(&self, p: usize) -> u32 {
        if p < self.end {
            self.cps[p].c
        } else {
            OOR
        }
    }
    #[inline]
    fn fl(&self, p: usize) -> Flags {
        if p < self.end {
            self.cps[p].f
        } else {
            Flags(0)
        }
    }
    /// `_add_token`: ends the current piece at `end` (empty pieces are dropped).
    #[inline]
    fn emit(&mut self, end: usize, out: &mut Vec<Range<usize>>) {
        if end > self.prev {
            out.push(self.prev..end);
        }
        self.prev = end;
    }
}

const fn is_cr_lf(c: u32) -> bool {
    c == '\r' as u32 || c == '\n' as u32
}

/// Length of an English contraction (`'s`, `'t`, `'re`, …) at `pos`, 0 if none. `fold` lower-cases
/// the letters first (llama.cpp's `unicode_tolower`: only ASCII maps onto these letters).
fn contraction(f: &Frag, pos: usize, fold: bool) -> usize {
    if f.cpt(pos) != '\'' as u32 || pos + 1 >= f.end {
        return 0;
    }
    let low = |c: u32| {
        if fold && (b'A' as u32..=b'Z' as u32).contains(&c) {
            c + 32
        } else {
            c
        }
    };
    let n = low(f.cpt(pos + 1));
    if [b's', b't', b'm', b'd'].iter().any(|&x| n == x as u32) {
        return 2;
    }
    if pos + 2 < f.end {
        let nn = low(f.cpt(pos + 2));
        let pair = |a: u8, b: u8| n == a as u32 && nn == b as u32;
        if pair(b'r', b'e') || pair(b'v', b'e') || pair(b'l', b'l') {
            return 3;
        }
    }
    0
}

/// GPT-2: `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`.
fn split_gpt2(cps: &[Cp], ini: usize, end: usize, out: &mut Vec<Range<usize>>) {
    let mut f = Frag {
        cps,
        end,
        prev: ini,
    };
    let mut pos = ini;
    while pos < end {
        let cpt = f.cpt(pos);
        let flags = f.fl(pos);
        let n = contraction(&f, pos, false);
        if n > 0 {
            pos += n;
            f.emit(pos, out);
            continue;
        }
        let space = cpt == ' ' as u32;
        let flags2 = if space { f.fl(pos + 1) } else { flags };
        if flags2.is_letter() {
            pos += space as usize;
            while f.fl(pos).is_letter() {
                pos += 1;
            }
            f.emit(pos, out);
            continue;
        }
        if flags2.is_number() {
            pos += space as usize;
            while f.fl(pos).is_number() {
                pos += 1;
            }
            f.emit(pos, out);
            continue;
        }
        let other = |g: Flags| !(g.is_whitespace() || g.is_letter() || g.is_number()) && g.any();
        if other(flags2) {
            pos += space as usize;
            while other(f.fl(pos)) {
                pos += 1;
            }
            f.emit(pos, out);
            continue;
        }
        let mut n_ws = 0;
        while f.fl(pos + n_ws).is_whitespace() {
            n_ws += 1;
        }
        if n_ws > 1 && f.cpt(pos + n_ws) != OOR {
            // \s+(?!\S): leave the last space to the word that follows
            pos += n_ws - 1;
        } else if n_ws > 0 {
            pos += n_ws;
        } else {
            pos += 1;
        }
        f.emit(pos, out);
    }
}

/// Llama 3 (`\p{N}{1,3}`), Qwen2 (`\p{N}`) and Qwen3.5 (letters with marks):
/// `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`.
fn split_llama3(
    cps: &[Cp],
    ini: usize,
    end: usize,
    max_digits: usize,
    marks: bool,
    out: &mut Vec<Range<usize>>,
) {
    let mut f = Frag {
        cps,
        end,
        prev: ini,
    };
    let word = |g: Flags| g.is_letter() || (marks && g.is_mark());
    let mut pos = ini;
    while pos < end {
        let cpt = f.cpt(pos);
        let flags = f.fl(pos);
        let n = contraction(&f, pos, true);
        if n > 0 {
            pos += n;
            f.emit(pos, out);
            continue;
        }
        // [^\r\n\p{L}\p{N}]?\p{L}+
        if !(is_cr_lf(cpt) || flags.is_number()) && (word(flags) || word(f.fl(pos + 1))) {
            pos += 1;
            while word(f.fl(pos)) {
                pos += 1;
            }
            f.emit(pos, out);
            continue;
        }
        // \p{N}{1,max}
        if flags.is_number() {
            let mut start = pos;
            while f.fl(pos).is_number() {
                pos += 1;
                if pos - start >= max_digits {
                    f.emit(pos, out);
                    start = pos;
                }
            }
            f.emit(pos, out);
            continue;
        }
        // ` ?[^\s\p{L}\p{N}]+[\r\n]*`; note llama.cpp tests `flags` (not `flags2`) for "in range"
        let other = |g: Flags| !(g.is_whitespace() || word(g) || g.is_number());
        let space = cpt == ' ' as u32;
        let flags2 = if space { f.fl(pos + 1) } else { flags };
        if other(flags2) && flags.any() {
            pos += space as usize;
            while other(f.fl(pos)) && f.fl(pos).any() {
                pos += 1;
            }
            while is_cr_lf(f.cpt(pos)) {
                pos += 1;
            }
            f.emit(pos, out);
            continue;
        }
        let mut n_ws = 0;
        let mut last_cr_lf = 0;
        while f.fl(pos + n_ws).is_whitespace() {
            if is_cr_lf(f.cpt(pos + n_ws)) {
                last_cr_lf = pos + n_ws + 1;
            }
            n_ws += 1;
        }
        if last_cr_lf > 0 {
            // \s*[\r\n]+
            pos = last_cr_lf;
        } else if n_ws > 1 && f.cpt(pos + n_ws) != OOR {
            // \s+(?!\S)
            pos += n_ws - 1;
        } else if n_ws > 0 {
            pos += n_ws;
        } else {
            pos += 1;
        }
        f.emit(pos, out);
    }
}

/// `[^\n]+|[\n]+`.
fn split_newlines(cps: &[Cp], ini: usize, end: usize, out: &mut Vec<Range<usize>>) {
    let mut pos = ini;
    while pos < end {
        let nl = cps[pos].c == '\n' as u32;
        let start = pos;
        while pos < end && (cps[pos].c == '\n' as u32) == nl {
            pos += 1;
        }
        out.push(start..pos);
    }
}

/// A character class as llama.cpp's `std::regex` sees it (see [`Class::matches`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Class {
    /// Unicode categories (`\p{N}` …, [`Flags`] category bits).
    cats: u16,
    /// `\s`.
    ws: bool,
    /// Inclusive code point ranges.
    ranges: Vec<(u32, u32)>,
    negated: bool,
}

impl Class {
    /// Whether code point `c` matches. llama.cpp hands `std::regex` either a "collapsed" text
    /// (when the regex uses `\p{..}`: ASCII kept, other code points replaced by one byte per
    /// category, non-ASCII whitespace by `\v`) or the code points themselves with non-ASCII
    /// whitespace replaced by `\v`. Both come down to: non-ASCII whitespace is `\v`; other
    /// non-ASCII code points match by category (collapsed) or by range (wide); ASCII matches by
    /// range, by `\s` and by its category.
    fn matches(&self, c: u32, f: Flags) -> bool {
        let in_ranges = |x: u32| self.ranges.iter().any(|&(a, b)| a <= x && x <= b);
        let hit = if c >= 0x80 && !f.is_whitespace() {
            self.cats & f.0 != 0 || in_ranges(c)
        } else {
            let (e, g) = if c >= 0x80 {
                (0x0b, Flags::of(0x0b))
            } else {
                (c, f)
            };
            in_ranges(e)
                || (self.ws && g.is_whitespace())
                || self.cats & g.0 & Flags::CATEGORIES != 0
        };
        hit != self.negated
    }
}

/// One quantified class.
#[derive(Debug, Clone, PartialEq)]
struct Atom {
    class: Class,
    min: usize,
    max: usize,
}

/// A regex of the form `atom atom … [$]`, each atom a character class with a quantifier
/// (`?`, `*`, `+`, `{n}`, `{n,m}`), as used by the simpler pre-tokenizers.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Pattern {
    atoms: Vec<Atom>,
    anchored_end: bool,
}

/// The Unicode category escapes llama.cpp's collapsing understands.
const CATEGORY_ESCAPES: [(&str, u16); 10] = [
    ("N", Flags::NUMBER),
    ("L", Flags::LETTER),
    ("P", Flags::PUNCTUATION),
    ("M", Flags::MARK),
    ("S", Flags::SYMBOL),
    ("Lu", Flags::LETTER),
    ("Ll", Flags::LETTER),
    ("Lt", Flags::LETTER),
    ("Lm", Flags::LETTER),
    ("Lo", Flags::LETTER),
];

impl Pattern {
    /// Parses the subset of ECMAScript regex syntax described on [`Pattern`].
    pub fn parse(re: &str) -> Result<Pattern, String> {
        let collapsed = CATEGORY_ESCAPES
            .iter()
            .any(|(n, _)| re.contains(&format!("\\p{{{n}}}")));
        let chars: Vec<char> = re.chars().collect();
        if collapsed && chars.iter().any(|c| !c.is_ascii()) {
            return Err(format!(
                "regex '{re}' mixes categories and non-ASCII characters"
            ));
        }
        let mut p = Parser { chars, i: 0 };
        let mut atoms = Vec::new();
        let mut anchored_end = false;
        while let Some(c) = p.peek() {
            if c == '$' {
                p.i += 1;
                anchored_end = true;
                if p.peek().is_some() {
                    return Err(format!("regex '{re}': '$' must end the pattern"));
                }
                break;
            }
            let class = p.atom().map_err(|e| format!("regex '{re}': {e}"))?;
            let (min, max) = p.quantifier().map_err(|e| format!("regex '{re}': {e}"))?;
            atoms.push(Atom { class, min, max });
        }
        if atoms.iter().all(|a| a.min == 0) {
            return Err(format!("regex '{re}' can match the empty string"));
        }
        Ok(Pattern {
            atoms,
            anchored_end,
        })
    }

    /// `std::regex_iterator` over the fragment: matches and the text between them become pieces.
    fn split(&self, cps: &[Cp], ini: usize, end: usize, out: &mut Vec<Range<usize>>) {
        let frag = &cps[..end];
        let mut last = ini;
        let mut p = ini;
        while p < end {
            match self.match_at(frag, 0, p) {
                Ok(e) => {
                    if p > last {
                        out.push(last..p);
                    }
                    out.push(p..e);
                    last = e;
                    p = e;
                }
                // A one-atom pattern that failed after a run of n matching code points fails at
                // every start inside the run as well (same run end): skip it, which keeps `\s+$`
                // linear on long runs of spaces.
                Err(run) if self.atoms.len() == 1 => p += run + 1,
                Err(_) => p += 1,
            }
        }
        if last < end {
            out.push(last..end);
        }
    }

    /// Backtracking match of atoms `i..` at `pos`: the end of the match, or the length of the
    /// greedy run of atom `i` on failure.
    fn match_at(&self, cps: &[Cp], i: usize, pos: usize) -> Result<usize, usize> {
        let Some(a) = self.atoms.get(i) else {
            return if !self.anchored_end || pos == cps.len() {
                Ok(pos)
            } else {
                Err(0)
            };
        };
        let mut n = 0;
        while n < a.max && pos + n < cps.len() && a.class.matches(cps[pos + n].c, cps[pos + n].f) {
            n += 1;
        }
        if n < a.min {
            return Err(n);
        }
        if i + 1 == self.atoms.len() {
            // Shorter runs of the last atom cannot reach the end the anchor needs.
            return if !self.anchored_end || pos + n == cps.len() {
                Ok(pos + n)
            } else {
                Err(n)
            };
        }
        for k in (a.min..=n).rev() {
            if let Ok(e) = self.match_at(cps, i + 1, pos + k) {
                return Ok(e);
            }
        }
        Err(n)
    }
}

struct Parser {
    chars: Vec<char>,
    i: usize,
}

impl Parser {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.i).copied()
    }
    fn next(&mut self) -> Result<char, String> {
        let c = self.peek().ok_or("unexpected end")?;
        self.i += 1;
        Ok(c)
    }

    /// `\p{X}` after the backslash and `p`: the category bits.
    fn category(&mut self) -> Result<u16, String> {
        if self.next()? != '{' {
            return Err("expected '{' after \\p".into());
        }
        let mut name = String::new();
        loop {
            match self.next()? {
                '}' => break,
                c => name.push(c),
            }
        }
        CATEGORY_ESCAPES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|&(_, f)| f)
            .ok_or_else(|| format!("unsupported category \\p{{{name}}}"))
    }

    /// A literal character after a backslash.
    fn escaped_literal(c: char) -> Result<char, String> {
        Ok(match c {
            'r' => '\r',
            'n' => '\n',
            't' => '\t',
            'v' => '\x0b',
            'f' => '\x0c',
            c if c.is_ascii_punctuation() => c,
            c => return Err(format!("unsupported escape \\{c}")),
        })
    }

    fn atom(&mut self) -> Result<Class, String> {
        let mut class = Class::default();
        match self.next()? {
            '[' => self.class_body(&mut class)?,
            '\\' => match self.next()? {
                'p' => class.cats = self.category()?,
                's' => class.ws = true,
                'S' => {
                    class.ws = true;
                    class.negated = true;
                }
                'd' => class.ranges.push(('0' as u32, '9' as u32)),
                c => {
                    let l = Self::escaped_literal(c)? as u32;
                    class.ranges.push((l, l));
                }
            },
            c @ ('(' | ')' | '|' | '.' | '*' | '+' | '?' | '{' | '^') => {
                return Err(format!("unsupported syntax '{c}'"))
            }
            c => class.ranges.push((c as u32, c as u32)),
        }
        Ok(class)
    }

    fn class_body(&mut self, class: &mut Class) -> Result<(), String> {
        if self.peek() == Some('^') {
            self.i += 1;
            class.negated = true;
        }
        loop {
            let lo = match self.next()? {
                ']' => return Ok(()),
                '\\' => match self.next()? {
                    'p' => {
                        class.cats |= self.category()?;
                        continue;
                    }
                    's' => {
                        class.ws = true;
                        continue;
                    }
                    'd' => {
                        class.ranges.push(('0' as u32, '9' as u32));
                        continue;
                    }
                    c => Self::escaped_literal(c)?,
                },
                c => c,
            };
            let mut hi = lo;
            if self.peek() == Some('-') && self.chars.get(self.i + 1).is_some_and(|&c| c != ']') {
                self.i += 1;
                hi = match self.next()? {
                    '\\' => Self::escaped_literal(self.next()?)?,
                    c => c,
                };
                if hi < lo {
                    return Err(format!("bad range {lo}-{hi}"));
                }
            }
            class.ranges.push((lo as u32, hi as u32));
        }
    }

    fn number(&mut self) -> Result<usize, String> {
        let start = self.i;
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.i += 1;
        }
        self.chars[start..self.i]
            .iter()
            .collect::<String>()
            .parse()
            .map_err(|_| "bad repetition count".to_string())
    }

    fn quantifier(&mut self) -> Result<(usize, usize), String> {
        let q = match self.peek() {
            Some('?') => (0, 1),
            Some('*') => (0, usize::MAX),
            Some('+') => (1, usize::MAX),
            Some('{') => {
                self.i += 1;
                let min = self.number()?;
                let max = if self.peek() == Some(',') {
                    self.i += 1;
                    self.number()?
                } else {
                    min
                };
                if self.peek() != Some('}') || max < min {
                    return Err("bad repetition".into());
                }
                (min, max)
            }
            _ => return Ok((1, 1)),
        };
        self.i += 1;
        if matches!(self.peek(), Some('?' | '+')) {
            return Err("lazy and possessive quantifiers are not supported".into());
        }
        Ok(q)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(kind: PreKind, text: &str) -> Vec<String> {
        PreTokenizer::new(kind)
            .unwrap()
            .words(text)
            .into_iter()
            .map(String::from)
            .collect()
    }

    #[test]
    fn every_table_regex_is_supported() {
        use PreKind::*;
        for k in [
            Default,
            Llama3,
            Qwen2,
            Qwen35,
            Gpt2,
            Starcoder,
            Falcon,
            DeepseekLlm,
            DeepseekCoder,
            Bloom,
            Viking,
            Laguna,
            Newlines,
            Whitespace,
        ] {
            PreTokenizer::new(k).unwrap();
        }
        assert!(Pattern::parse(r"\s+(?!\S)").is_err());
        // the source must keep llama.cpp's code points (editors normalise U+1F7D to U+03CE)
        let ds = Pattern::parse(PreKind::DeepseekLlm.regexes()[1]).unwrap();
        let class = &ds.atoms[1].class;
        assert!(class.matches(0x1f7d, Flags::of(0x1f7d)));
        assert!(class.matches(0x212a, Flags::of(0x212a)));
        assert!(Pattern::parse(r"\s*").is_err());
    }

    #[test]
    fn gpt2_splitter() {
        assert_eq!(
            words(PreKind::Gpt2, "Hello world's  end 123\n\n x!!"),
            ["Hello", " world", "'s", " ", " end", " 123", "\n\n", " x", "!!"]
        );
    }

    #[test]
    fn llama3_splitter() {
        assert_eq!(
            words(PreKind::Llama3, "I'M 12345 ok!\n\n  \tyes"),
            // "\tyes": a non-letter may lead a word
            ["I", "'M", " ", "123", "45", " ok", "!\n\n", "  ", "\tyes"]
        );
        assert_eq!(words(PreKind::Qwen2, "a12"), ["a", "1", "2"]);
    }

    #[test]
    fn patterns_follow_std_regex() {
        // default: punctuation runs, then GPT-2, then digit runs, then groups of three
        assert_eq!(
            words(PreKind::Default, "a+b 12345"),
            ["a", "+", "b", " ", "123", "45"]
        );
        let p = Pattern::parse(r"\s+$").unwrap();
        let cps: Vec<Cp> = "a  b   "
            .chars()
            .map(|c| Cp {
                c: c as u32,
                f: Flags::of(c as u32),
            })
            .collect();
        let mut out = Vec::new();
        p.split(&cps, 0, cps.len(), &mut out);
        assert_eq!(out, [0..4, 4..7]);
        // non-ASCII whitespace is \v to std::regex, so it is not in a range that names it
        let p = Pattern::parse("[\u{3000}]").unwrap();
        assert!(!p.atoms[0].class.matches(0x3000, Flags::of(0x3000)));
        let p = Pattern::parse(r"[^\s\p{L}]").unwrap();
        assert!(!p.atoms[0].class.matches(0x3000, Flags::of(0x3000)));
        assert!(p.atoms[0].class.matches('€' as u32, Flags::of('€' as u32)));
        assert!(!p.atoms[0].class.matches('é' as u32, Flags::of('é' as u32)));
    }
}
