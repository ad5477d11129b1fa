//! Chat templates: `tokenizer.chat_template` (Jinja) rendered the way Hugging Face transformers
//! renders it, in a sandbox with hard limits (spec/runtime.md §7).
//!
//! The engine is minijinja (no unsafe I/O, no Python object model), configured to match
//! transformers' `ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)` with the
//! `loopcontrols` extension:
//! - globals `raise_exception(msg)` (→ [`TokenizerError::Template`] carrying `msg`) and
//!   `strftime_now(fmt)` (from [`RenderOptions::now`], else the system clock: `SystemTime`
//!   natively, JS `Date.now()` on wasm32-unknown-unknown, where `SystemTime::now()` panics), in
//!   UTC;
//! - `tojson` is transformers' `json.dumps(x, ensure_ascii=False, indent=None, separators=None,
//!   sort_keys=False)`, not Jinja's HTML-safe one;
//! - `{{ x }}` and `|string` print Python's `str(x)` (`True`, `None`, `{'a': 1}`, `1e-05`);
//! - Python string/dict/list methods (`.strip()`, `.items()`, `.split()`, …) come from
//!   minijinja-contrib's `pycompat`; `range` is Python's, within [`TemplateLimits::max_range`];
//! - the `{% generation %}…{% endgeneration %}` tag of transformers' assistant-mask tracking
//!   renders its body.
//!
//! Context: `messages`, `tools` (none when absent), `documents` (none), `add_generation_prompt`,
//! `bos_token`, `eos_token`, and [`RenderOptions::extra`], which may override `documents`,
//! `bos_token` and `eos_token` but never the other three.
//!
//! Hostile templates stop with [`TokenizerError::TemplateLimit`]: `fuel` (instructions executed),
//! `output size` (bytes written, and minijinja's cap on `'x' * n`), `recursion` (macro and block
//! nesting) and `range` (`range(n)` longer than allowed); `str()`/`tojson` of a value nested
//! deeper than 256 is a template error. Known gaps, for want of hooks in minijinja: a string
//! doubled in a short loop (`{% set ns.s = ns.s ~ ns.s %}`) grows past every limit, and a value
//! wrapped in itself at every loop step (`{% set ns.x = [ns.x] %}`) overflows the stack when
//! dropped after about 10 k steps in release builds (1 k in debug, on a 1 MiB stack). No real
//! template does either.
//!
//! Differences from jinja2 that remain (tests/chat_templates.rs lists where they show): none
//! iterates as empty (jinja2 raises), `map`/`select` give lists (jinja2 generators, which
//! `tojson` rejects), `'…'|safe + s` does not HTML-escape `s`, `~` prints `none`/`true` in
//! minijinja's spelling.
//!
//! Built-in templates ([`ChatTemplate::builtin`]) reproduce llama.cpp's hard-coded ones
//! (`llama-chat.cpp`): they add no BOS (the tokenizer adds it).
//!
//! Out of scope: multimodal content parts (content is a string), assistant-token masks.

use crate::error::{Error, Result, TokenizerError};
use crate::gguf::Metadata;
use minijinja::value::{Kwargs, Rest, Value, ValueKind};
use minijinja::{Environment, ErrorKind, Output, State};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

/// The name the template is registered under in its environment (shows in error messages).
const TEMPLATE_NAME: &str = "chat_template";

/// One message of a conversation, serialized into the template's `messages` as a dict with only
/// the fields that are set (so `message.tool_calls is defined` is false when absent).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
    /// OpenAI/transformers shape: `[{"id", "type": "function", "function": {"name", "arguments"}}]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<serde_json::Value>,
    /// The tool's name on a `tool` message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    /// Thinking text of an assistant turn (Qwen3, GLM, DeepSeek templates read it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<String>,
}

impl ChatMessage {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        ChatMessage {
            role: role.into(),
            content: content.into(),
            tool_calls: None,
            name: None,
            tool_call_id: None,
            reasoning_content: None,
        }
    }
}

/// Hard bounds on one render. Exceeding one gives [`TokenizerError::TemplateLimit`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TemplateLimits {
    /// Template instructions executed (minijinja fuel). The largest real templates use about
    /// 20 k for a short tool conversation.
    pub fuel: u64,
    /// Bytes of rendered output.
    pub max_output_bytes: usize,
    /// minijinja recursion depth (a macro call costs about 5, a loop or `if` 1). Kept well under
    /// minijinja's own maximum of 500 so that a 1 MiB stack (wasm's default) is enough.
    pub max_recursion: usize,
    /// Longest `range(...)` a template may create.
    pub max_range: usize,
}

impl Default for TemplateLimits {
    fn default() -> Self {
        TemplateLimits {
            fuel: 5_000_000,
            max_output_bytes: 16 << 20,
            max_recursion: 200,
            max_range: 100_000,
        }
    }
}

/// Per-render inputs besides the messages.
#[derive(Clone, Debug, Default)]
pub struct RenderOptions {
    pub add_generation_prompt: bool,
    /// transformers' `tools`: a list of `{"type": "function", "function": {...}}`.
    pub tools: Option<serde_json::Value>,
    /// Extra template variables (`enable_thinking`, `reasoning_effort`, `date_string`, …).
    pub extra: serde_json::Map<String, serde_json::Value>,
    /// Seconds since the Unix epoch (UTC) that `strftime_now` formats. `None`: the system clock
    /// (JS `Date.now()` on wasm32-unknown-unknown).
    pub now: Option<i64>,
    pub limits: TemplateLimits,
}

impl RenderOptions {
    pub fn new(add_generation_prompt: bool) -> Self {
        RenderOptions {
            add_generation_prompt,
            ..Default::default()
        }
    }
}

/// A compiled chat template plus the BOS/EOS strings it is rendered with.
#[derive(Clone)]
pub struct ChatTemplate {
    env: Environment<'static>,
    source: Arc<str>,
    bos_token: String,
    eos_token: String,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("source_len", &self.source.len())
            .field("bos_token", &self.bos_token)
            .field("eos_token", &self.eos_token)
            .finish()
    }
}

// The engine shares one template between sessions and threads.
const _: fn() = || {
    fn shareable<T: Send + Sync>() {}
    shareable::<ChatTemplate>();
};

/// The names [`ChatTemplate::builtin`] knows.
pub const BUILTIN_TEMPLATES: &[&str] = &["chatml", "llama3", "gemma", "glm4"];

// llama.cpp `llm_chat_apply_template`, LLM_CHAT_TEMPLATE_CHATML.
const CHATML: &str = "{% for message in messages %}\
{{ '<|im_start|>' ~ message.role ~ '\\n' ~ message.content ~ '<|im_end|>\\n' }}\
{% endfor %}\
{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

// LLM_CHAT_TEMPLATE_LLAMA_3: content trimmed, no BOS.
const LLAMA3: &str = "{% for message in messages %}\
{{ '<|start_header_id|>' ~ message.role ~ '<|end_header_id|>\\n\\n' ~ message.content|trim ~ '<|eot_id|>' }}\
{% endfor %}\
{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}";

// LLM_CHAT_TEMPLATE_GEMMA: system text is merged into the next user turn, assistant is `model`.
const GEMMA: &str = "{% set ns = namespace(system='') %}\
{% for message in messages %}\
{% if message.role == 'system' %}{% set ns.system = ns.system ~ message.content|trim %}\
{% else %}\
{% set role = 'model' if message.role == 'assistant' else message.role %}\
{{ '<start_of_turn>' ~ role ~ '\\n' }}\
{% if ns.system and role != 'model' %}{{ ns.system ~ '\\n\\n' }}{% set ns.system = '' %}{% endif %}\
{{ message.content|trim ~ '<end_of_turn>\\n' }}\
{% endif %}\
{% endfor %}\
{% if add_generation_prompt %}{{ '<start_of_turn>model\\n' }}{% endif %}";

// LLM_CHAT_TEMPLATE_CHATGLM_4.
const GLM4: &str = "[gMASK]<sop>\
{% for message in messages %}{{ '<|' ~ message.role ~ '|>\\n' ~ message.content }}{% endfor %}\
{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}";

impl ChatTemplate {
    /// Compiles `source`. Syntax errors are [`TokenizerError::Template`].
    pub fn new(source: &str, bos_token: &str, eos_token: &str) -> Result<Self> {
        let mut env = Environment::new();
        let syntax = minijinja::syntax::SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .build()
            .map_err(|e| template_error(&e))?;
        env.set_syntax(syntax);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.set_formatter(py_formatter);
        env.add_filter("tojson", tojson_filter);
        env.add_filter("string", |v: &Value| py_str(v).map(Value::from));
        // Python's notion of these tests: None is neither iterable nor a sequence (minijinja
        // iterates it as empty), Undefined is both, a dict is a sequence, a bool is a number.
        env.add_test("iterable", |v: &Value| {
            matches!(
                v.kind(),
                ValueKind::String
                    | ValueKind::Bytes
                    | ValueKind::Seq
                    | ValueKind::Map
                    | ValueKind::Iterable
                    | ValueKind::Undefined
            )
        });
        env.add_test("sequence", |v: &Value| {
            matches!(
                v.kind(),
                ValueKind::String
                    | ValueKind::Bytes
                    | ValueKind::Seq
                    | ValueKind::Map
                    | ValueKind::Undefined
            )
        });
        env.add_test("number", |v: &Value| {
            matches!(v.kind(), ValueKind::Number | ValueKind::Bool)
        });
        let source: Arc<str> = Arc::from(source);
        let rewritten = rewrite_generation_tags(&source);
        env.add_template_owned(TEMPLATE_NAME, rewritten)
            .map_err(|e| template_error(&e))?;
        Ok(ChatTemplate {
            env,
            source,
            bos_token: bos_token.to_owned(),
            eos_token: eos_token.to_owned(),
        })
    }

    /// The model's default template (`tokenizer.chat_template`), if it has one.
    pub fn from_metadata(md: &Metadata, bos_token: &str, eos_token: &str) -> Result<Option<Self>> {
        Self::from_metadata_key(md, "tokenizer.chat_template", bos_token, eos_token)
    }

    /// A named variant (`tokenizer.chat_template.<name>`, e.g. Command-R's `tool_use` and `rag`).
    pub fn from_metadata_named(
        md: &Metadata,
        name: &str,
        bos_token: &str,
        eos_token: &str,
    ) -> Result<Option<Self>> {
        let key = format!("tokenizer.chat_template.{name}");
        Self::from_metadata_key(md, &key, bos_token, eos_token)
    }

    fn from_metadata_key(
        md: &Metadata,
        key: &str,
        bos_token: &str,
        eos_token: &str,
    ) -> Result<Option<Self>> {
        match md.str(key).map_err(Error::from)? {
            None => Ok(None),
            Some(src) => Self::new(src, bos_token, eos_token).map(Some),
        }
    }

    /// One of llama.cpp's hard-coded templates ([`BUILTIN_TEMPLATES`]), for models without one.
    pub fn builtin(name: &str, bos_token: &str, eos_token: &str) -> Option<Self> {
        let src = match name {
            "chatml" => CHATML,
            "llama3" => LLAMA3,
            "gemma" => GEMMA,
            "glm4" => GLM4,
            _ => return None,
        };
        // The built-in sources are constants covered by unit tests.
        Self::new(src, bos_token, eos_token).ok()
    }

    pub fn source(&self) -> &str {
        &self.source
    }
    pub fn bos_token(&self) -> &str {
        &self.bos_token
    }
    pub fn eos_token(&self) -> &str {
        &self.eos_token
    }

    /// Renders `messages` with default options.
    pub fn render(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> Result<String> {
        self.render_with(messages, &RenderOptions::new(add_generation_prompt))
    }

    /// Renders `messages`. Template errors (including `raise_exception`) are
    /// [`TokenizerError::Template`]; exceeded limits are [`TokenizerError::TemplateLimit`].
    pub fn render_with(&self, messages: &[ChatMessage], opts: &RenderOptions) -> Result<String> {
        let limits = opts.limits;
        let abort: Arc<Mutex<Option<Abort>>> = Arc::default();

        // A per-render environment: cheap (the compiled template is shared) and it lets the
        // functions below capture this render's clock, limits and abort slot.
        let mut env = self.env.clone();
        env.set_fuel(Some(limits.fuel));
        env.set_recursion_limit(limits.max_recursion);
        {
            let abort = abort.clone();
            env.add_function(
                "raise_exception",
                move |msg: Option<Value>| -> Result<Value, minijinja::Error> {
                    let msg = match msg {
                        Some(m) => py_str(&m)?,
                        None => String::new(),
                    };
                    set_abort(&abort, Abort::Raised(msg.clone()));
                    Err(minijinja::Error::new(ErrorKind::InvalidOperation, msg))
                },
            );
        }
        {
            let abort = abort.clone();
            let max = limits.max_range;
            env.add_function("range", move |args: Rest<Value>| {
                py_range(&args, max, &abort)
            });
        }
        {
            let now = opts.now;
            env.add_function(
                "strftime_now",
                move |fmt: String| -> Result<Value, minijinja::Error> {
                    let secs = match now {
                        Some(s) => s,
                        None => system_now()?,
                    };
                    Ok(Value::from(strftime(&fmt, secs)))
                },
            );
        }

        let mut ctx: BTreeMap<String, Value> = BTreeMap::new();
        ctx.insert("documents".into(), Value::from(()));
        ctx.insert("bos_token".into(), Value::from(self.bos_token.as_str()));
        ctx.insert("eos_token".into(), Value::from(self.eos_token.as_str()));
        for (k, v) in &opts.extra {
            ctx.insert(k.clone(), to_value(v));
        }
        ctx.insert("messages".into(), to_value(messages));
        ctx.insert(
            "tools".into(),
            opts.tools
                .as_ref()
                .map_or_else(|| Value::from(()), to_value),
        );
        ctx.insert(
            "add_generation_prompt".into(),
            Value::from(opts.add_generation_prompt),
        );

        let tmpl = env
            .get_template(TEMPLATE_NAME)
            .map_err(|e| template_error(&e))?;
        let mut out = CappedWriter {
            buf: Vec::new(),
            cap: limits.max_output_bytes,
            overflow: false,
        };
        let res = tmpl.render_captured_to(Value::from(ctx), &mut out);
        if out.overflow {
            return Err(limit("output size"));
        }
        if let Err(e) = res {
            let abort = abort.lock().ok().and_then(|mut a| a.take());
            return Err(match abort {
                Some(Abort::Limit(what)) => limit(what),
                Some(Abort::Raised(msg)) => TokenizerError::Template(msg).into(),
                None => map_error(&e),
            });
        }
        String::from_utf8(out.buf)
            .map_err(|_| TokenizerError::Template("rendered text is not UTF-8".into()).into())
    }
}

fn to_value<T: serde::Serialize + ?Sized>(x: &T) -> Value {
    Value::from(minijinja::value::Serde(x))
}

/// Why a render was stopped by one of our own functions.
enum Abort {
    Limit(&'static str),
    Raised(String),
}

fn set_abort(slot: &Mutex<Option<Abort>>, a: Abort) {
    if let Ok(mut s) = slot.lock() {
        s.get_or_insert(a);
    }
}

fn limit(what: &'static str) -> Error {
    TokenizerError::TemplateLimit { what }.into()
}

fn map_error(e: &minijinja::Error) -> Error {
    match e.kind() {
        ErrorKind::OutOfFuel => limit("fuel"),
        ErrorKind::InvalidOperation => match e.detail() {
            Some(d) if d.contains("recursion limit") => limit("recursion"),
            // minijinja's own caps on `'x' * n` and `[x] * n` (100 M).
            Some(d) if d.contains("is too large") => limit("output size"),
            _ => template_error(e),
        },
        _ => template_error(e),
    }
}

fn template_error(e: &minijinja::Error) -> Error {
    let mut msg = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        let _ = write!(msg, ": {s}");
        src = s.source();
    }
    TokenizerError::Template(msg).into()
}

/// An output sink that refuses to grow past `cap` bytes.
struct CappedWriter {
    buf: Vec<u8>,
    cap: usize,
    overflow: bool,
}

impl std::io::Write for CappedWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        if self.buf.len().saturating_add(data.len()) > self.cap {
            self.overflow = true;
            return Err(std::io::Error::other("chat template output size limit"));
        }
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(not(all(target_arch = "wasm32", target_os = "unknown")))]
fn system_now() -> Result<i64, minijinja::Error> {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|_| minijinja::Error::new(ErrorKind::InvalidOperation, "clock before 1970"))?;
    i64::try_from(d.as_secs())
        .map_err(|_| minijinja::Error::new(ErrorKind::InvalidOperation, "clock out of range"))
}

/// wasm32-unknown-unknown has no `SystemTime`; ask the JS host (`Date.now()`).
#[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
fn system_now() -> Result<i64, minijinja::Error> {
    Ok((js_sys::Date::now() / 1000.0).floor() as i64)
}

/// Python's `range(stop)` / `range(start, stop[, step])`, materialized, at most `max` long.
fn py_range(
    args: &[Value],
    max: usize,
    abort: &Mutex<Option<Abort>>,
) -> Result<Value, minijinja::Error> {
    let bad = |m: &str| minijinja::Error::new(ErrorKind::InvalidOperation, m.to_owned());
    let mut ints = Vec::with_capacity(args.len());
    for a in args {
        if !a.is_integer() {
            return Err(bad("range() arguments must be integers"));
        }
        ints.push(i64::try_from(a.clone()).map_err(|_| bad("range() argument out of range"))?);
    }
    let (start, stop, step) = match ints[..] {
        [stop] => (0, stop, 1),
        [start, stop] => (start, stop, 1),
        [start, stop, step] => (start, stop, step),
        _ => return Err(bad("range() takes 1 to 3 arguments")),
    };
    if step == 0 {
        return Err(bad("range() arg 3 must not be zero"));
    }
    let (start, stop, step) = (i128::from(start), i128::from(stop), i128::from(step));
    let len = if step > 0 {
        (stop - start + step - 1).div_euclid(step).max(0)
    } else {
        (start - stop - step - 1).div_euclid(-step).max(0)
    };
    if len > max as i128 {
        set_abort(abort, Abort::Limit("range"));
        return Err(bad("range too long"));
    }
    // len <= max, so every element fits in i64 (it lies between start and stop).
    Ok(Value::from(
        (0..len)
            .map(|i| (start + i * step) as i64)
            .collect::<Vec<i64>>(),
    ))
}

/// Replaces transformers' `{% generation %}` / `{% endgeneration %}` (keeping whitespace-control
/// markers) with an always-true `if`, which renders the same.
fn rewrite_generation_tags(src: &str) -> String {
    let mut out = String::with_capacity(src.len());
    let mut rest = src;
    while let Some(pos) = rest.find("{%") {
        out.push_str(&rest[..pos]);
        let tag = &rest[pos..];
        let after_open = &tag[2..];
        let marker_len = usize::from(after_open.starts_with(['-', '+']));
        let body = after_open[marker_len..].trim_start();
        let ws = after_open.len() - marker_len - body.len();
        let (word, repl) = if body.starts_with("endgeneration") {
            ("endgeneration", "endif")
        } else if body.starts_with("generation") {
            ("generation", "if true")
        } else {
            ("", "")
        };
        let closes = !word.is_empty() && {
            let tail = body[word.len()..].trim_start();
            let tail = tail.strip_prefix(['-', '+']).unwrap_or(tail);
            tail.starts_with("%}")
        };
        if closes {
            out.push_str("{%");
            out.push_str(&after_open[..marker_len + ws]);
            out.push_str(repl);
            rest = &body[word.len()..];
        } else {
            out.push_str("{%");
            rest = after_open;
        }
    }
    out.push_str(rest);
    out
}

// ---- Python's str(), repr() and json.dumps() over minijinja values ------------------------------

/// The `{{ … }}` formatter: Python's `str(value)`.
fn py_formatter(
    out: &mut Output,
    state: &mut State,
    value: &Value,
) -> Result<(), minijinja::Error> {
    match value.kind() {
        ValueKind::Undefined | ValueKind::Invalid | ValueKind::Plain | ValueKind::Iterable => {
            minijinja::escape_formatter(out, state, value)
        }
        _ => out
            .write_str(&py_str(value)?)
            .map_err(minijinja::Error::from),
    }
}

/// Python's `str(value)` (`''` for undefined, as Jinja prints it).
fn py_str(v: &Value) -> Result<String, minijinja::Error> {
    Ok(match v.kind() {
        ValueKind::String => v.as_str().unwrap_or_default().to_owned(),
        ValueKind::Undefined => String::new(),
        _ => {
            let mut s = String::new();
            py_repr(v, 0, &mut s)?;
            s
        }
    })
}

/// Deepest container nesting that `str()`/`tojson` walk (Python raises RecursionError near 1000;
/// this also keeps our own recursion within a small stack).
const MAX_VALUE_DEPTH: usize = 256;

fn too_deep() -> minijinja::Error {
    minijinja::Error::new(ErrorKind::InvalidOperation, "value nested too deeply")
}

/// Python's `repr(value)`.
fn py_repr(v: &Value, depth: usize, out: &mut String) -> Result<(), minijinja::Error> {
    if depth > MAX_VALUE_DEPTH {
        return Err(too_deep());
    }
    match v.kind() {
        ValueKind::None => out.push_str("None"),
        ValueKind::Bool => out.push_str(if v.is_true() { "True" } else { "False" }),
        ValueKind::Number => push_number(v, out, false),
        ValueKind::String => py_str_repr(v.as_str().unwrap_or_default(), out),
        ValueKind::Seq => {
            let (open, close) = if v.is_tuple() { ('(', ")") } else { ('[', "]") };
            out.push(open);
            let mut n = 0;
            for item in v.try_iter()? {
                if n > 0 {
                    out.push_str(", ");
                }
                py_repr(&item, depth + 1, out)?;
                n += 1;
            }
            out.push_str(if open == '(' && n == 1 { ",)" } else { close });
        }
        ValueKind::Map => {
            out.push('{');
            for (i, key) in v.try_iter()?.enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                py_repr(&key, depth + 1, out)?;
                out.push_str(": ");
                py_repr(&v.get_item(&key)?, depth + 1, out)?;
            }
            out.push('}');
        }
        _ => {
            let _ = write!(out, "{v}");
        }
    }
    Ok(())
}

/// Python's `repr(str)`: single quotes unless the text has `'` and no `"`.
fn py_str_repr(s: &str, out: &mut String) {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if !py_printable(c) => {
                let n = u32::from(c);
                let _ = match n {
                    0..=0xff => write!(out, "\\x{n:02x}"),
                    0x100..=0xffff => write!(out, "\\u{n:04x}"),
                    _ => write!(out, "\\U{n:08x}"),
                };
            }
            c => out.push(c),
        }
    }
    out.push(quote);
}

/// `str.isprintable()` for the characters that occur in practice: not Cc, Zl, Zp, Zs (other than
/// the space), common Cf, or private use.
fn py_printable(c: char) -> bool {
    !matches!(c,
        '\0'..='\x1f' | '\x7f'..='\u{a0}' | '\u{ad}'
        | '\u{1680}' | '\u{2000}'..='\u{200f}' | '\u{2028}'..='\u{202f}'
        | '\u{205f}'..='\u{2064}' | '\u{2066}'..='\u{206f}' | '\u{3000}' | '\u{feff}'
        | '\u{fff9}'..='\u{fffb}' | '\u{e000}'..='\u{f8ff}' | '\u{f0000}'..)
}

/// Integers as digits; floats as Python's `repr(float)` (or JSON's `NaN`/`Infinity`).
fn push_number(v: &Value, out: &mut String, json: bool) {
    if v.is_integer() {
        let _ = write!(out, "{v}");
        return;
    }
    let f = f64::try_from(v.clone()).unwrap_or(f64::NAN);
    if f.is_nan() {
        out.push_str(if json { "NaN" } else { "nan" });
    } else if f.is_infinite() {
        out.push_str(match (json, f > 0.0) {
            (true, true) => "Infinity",
            (true, false) => "-Infinity",
            (false, true) => "inf",
            (false, false) => "-inf",
        });
    } else {
        py_float_repr(f, out);
    }
}

/// Python's `repr(float)`: the shortest round-trip digits, positional for exponents in
/// [-4, 16), otherwise `d.ddde±XX`.
fn py_float_repr(f: f64, out: &mut String) {
    let sci = format!("{f:e}"); // shortest round-trip digits, e.g. "-1.25e-5", "1e16"
    let (mant, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let (neg, mant) = match mant.strip_prefix('-') {
        Some(m) => (true, m),
        None => (false, mant),
    };
    let digits: String = mant.chars().filter(|c| *c != '.').collect();
    if neg {
        out.push('-');
    }
    if (-4..16).contains(&exp) {
        if exp < 0 {
            out.push_str("0.");
            for _ in 0..(-exp - 1) {
                out.push('0');
            }
            out.push_str(&digits);
        } else {
            let int_len = exp as usize + 1;
            if digits.len() <= int_len {
                out.push_str(&digits);
                for _ in digits.len()..int_len {
                    out.push('0');
                }
                out.push_str(".0");
            } else {
                out.push_str(&digits[..int_len]);
                out.push('.');
                out.push_str(&digits[int_len..]);
            }
        }
    } else {
        out.push_str(&digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        let _ = write!(out, "e{}{:02}", if exp < 0 { '-' } else { '+' }, exp.abs());
    }
}

struct JsonStyle {
    ensure_ascii: bool,
    indent: Option<String>,
    item_sep: String,
    key_sep: String,
    sort_keys: bool,
}

/// transformers' `tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False)`.
fn tojson_filter(
    value: &Value,
    ensure_ascii: Option<Value>,
    indent: Option<Value>,
    separators: Option<Value>,
    kwargs: Kwargs,
) -> Result<Value, minijinja::Error> {
    let bad = |m: String| minijinja::Error::new(ErrorKind::InvalidOperation, m);
    let positional = [ensure_ascii, indent, separators];
    let mut named: Vec<(String, Value)> = Vec::new();
    for key in kwargs.args() {
        named.push((key.to_owned(), kwargs.get::<Value>(key)?));
    }
    const PARAMS: [&str; 4] = ["ensure_ascii", "indent", "separators", "sort_keys"];
    let mut slots: [Option<Value>; 4] = Default::default();
    for (i, v) in positional.into_iter().enumerate() {
        slots[i] = v;
    }
    for (k, v) in named {
        let i = PARAMS
            .iter()
            .position(|p| *p == k)
            .ok_or_else(|| bad(format!("tojson() got an unexpected keyword argument '{k}'")))?;
        if slots[i].is_some() {
            return Err(bad(format!(
                "tojson() got multiple values for argument '{k}'"
            )));
        }
        slots[i] = Some(v);
    }
    let [ensure_ascii, indent, separators, sort_keys] = slots;
    let ensure_ascii = ensure_ascii.is_some_and(|v| v.is_true());
    let sort_keys = sort_keys.is_some_and(|v| v.is_true());
    // json.dumps: an int indent is that many spaces, a string is used as is, None is compact.
    let indent = match indent {
        None => None,
        Some(v) if v.is_none() => None,
        Some(v) if v.kind() == ValueKind::String => Some(v.as_str().unwrap_or_default().to_owned()),
        Some(v) if v.is_integer() => {
            let n = i64::try_from(v).unwrap_or(0).clamp(0, 64);
            Some(" ".repeat(n as usize))
        }
        Some(_) => return Err(bad("tojson(): indent must be an integer or a string".into())),
    };
    let (item_sep, key_sep) = match separators {
        Some(v) if !v.is_none() => {
            let parts: Vec<Value> = v.try_iter()?.collect();
            match &parts[..] {
                [a, b] if a.as_str().is_some() && b.as_str().is_some() => (py_str(a)?, py_str(b)?),
                _ => return Err(bad("tojson(): separators must be two strings".into())),
            }
        }
        _ if indent.is_some() => (",".to_owned(), ": ".to_owned()),
        _ => (", ".to_owned(), ": ".to_owned()),
    };
    let style = JsonStyle {
        ensure_ascii,
        indent,
        item_sep,
        key_sep,
        sort_keys,
    };
    let mut out = String::new();
    json_write(value, &style, 0, &mut out)?;
    Ok(Value::from(out))
}

fn json_write(
    v: &Value,
    st: &JsonStyle,
    depth: usize,
    out: &mut String,
) -> Result<(), minijinja::Error> {
    if depth > MAX_VALUE_DEPTH {
        return Err(too_deep());
    }
    let newline = |out: &mut String, d: usize| {
        if let Some(ind) = &st.indent {
            out.push('\n');
            for _ in 0..d {
                out.push_str(ind);
            }
        }
    };
    match v.kind() {
        ValueKind::None => out.push_str("null"),
        ValueKind::Bool => out.push_str(if v.is_true() { "true" } else { "false" }),
        ValueKind::Number => push_number(v, out, true),
        ValueKind::String => json_str(v.as_str().unwrap_or_default(), st.ensure_ascii, out),
        ValueKind::Seq => {
            let items: Vec<Value> = v.try_iter()?.collect();
            if items.is_empty() {
                out.push_str("[]");
                return Ok(());
            }
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(&st.item_sep);
                }
                newline(out, depth + 1);
                json_write(item, st, depth + 1, out)?;
            }
            newline(out, depth);
            out.push(']');
        }
        ValueKind::Map => {
            let mut keys: Vec<Value> = v.try_iter()?.collect();
            if keys.is_empty() {
                out.push_str("{}");
                return Ok(());
            }
            if st.sort_keys {
                keys.sort();
            }
            out.push('{');
            for (i, key) in keys.iter().enumerate() {
                if i > 0 {
                    out.push_str(&st.item_sep);
                }
                newline(out, depth + 1);
                // json.dumps turns str, int, float, bool and None keys into strings.
                let key_text = match key.kind() {
                    ValueKind::String => key.as_str().unwrap_or_default().to_owned(),
                    ValueKind::None => "null".to_owned(),
                    ValueKind::Bool => (if key.is_true() { "true" } else { "false" }).to_owned(),
                    ValueKind::Number => {
                        let mut s = String::new();
                        push_number(key, &mut s, true);
                        s
                    }
                    k => {
                        return Err(minijinja::Error::new(
                            ErrorKind::InvalidOperation,
                            format!("tojson: keys must be str, int, float, bool or None, not {k}"),
                        ))
                    }
                };
                json_str(&key_text, st.ensure_ascii, out);
                out.push_str(&st.key_sep);
                json_write(&v.get_item(key)?, st, depth + 1, out)?;
            }
            newline(out, depth);
            out.push('}');
        }
        k => {
            return Err(minijinja::Error::new(
                ErrorKind::InvalidOperation,
                format!("tojson: object of type {k} is not JSON serializable"),
            ))
        }
    }
    Ok(())
}

/// A JSON string as Python's `json.dumps` writes it.
fn json_str(s: &str, ensure_ascii: bool, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c if ensure_ascii && !c.is_ascii() => {
                let mut units = [0u16; 2];
                for u in c.encode_utf16(&mut units) {
                    let _ = write!(out, "\\u{u:04x}");
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

// ---- strftime ------------------------------------------------------------------------------------

const WEEKDAYS: [&str; 7] = [
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
];
const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

/// Civil date (year, month 1-12, day 1-31) of a day count since 1970-01-01 (H. Hinnant's
/// `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

/// C/Python `strftime` for a UTC time: `%a %A %b %B %c %d %e %F %H %I %j %m %M %p %S %T %u %w %y
/// %Y %Z %z %%`, with glibc's `%-d` (no padding). Unknown directives are copied.
pub fn strftime(fmt: &str, unix_secs: i64) -> String {
    let days = unix_secs.div_euclid(86_400);
    let sod = unix_secs.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    let (hour, minute, second) = (sod / 3600, (sod / 60) % 60, sod % 60);
    let wday = (days + 4).rem_euclid(7) as usize; // 1970-01-01 was a Thursday
    const CUM: [u32; 12] = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334];
    let yday = CUM[month as usize - 1] + day + u32::from(month > 2 && is_leap(year)); // 1-based
    let hour12 = if hour % 12 == 0 { 12 } else { hour % 12 };

    let mut out = String::new();
    let mut chars = fmt.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let mut spec = chars.next();
        let unpadded = spec == Some('-');
        if unpadded {
            spec = chars.next();
        }
        let num = |out: &mut String, v: i64, width: usize| {
            if unpadded {
                let _ = write!(out, "{v}");
            } else {
                let _ = write!(out, "{v:0width$}");
            }
        };
        match spec {
            Some('a') => out.push_str(&WEEKDAYS[wday][..3]),
            Some('A') => out.push_str(WEEKDAYS[wday]),
            Some('b') | Some('h') => out.push_str(&MONTHS[month as usize - 1][..3]),
            Some('B') => out.push_str(MONTHS[month as usize - 1]),
            Some('c') => {
                let _ = write!(
                    out,
                    "{} {} {:>2} {hour:02}:{minute:02}:{second:02} {year}",
                    &WEEKDAYS[wday][..3],
                    &MONTHS[month as usize - 1][..3],
                    day
                );
            }
            Some('d') => num(&mut out, i64::from(day), 2),
            Some('e') => {
                let _ = write!(out, "{day:>2}");
            }
            Some('F') => {
                let _ = write!(out, "{year:04}-{month:02}-{day:02}");
            }
            Some('H') => num(&mut out, hour, 2),
            Some('I') => num(&mut out, hour12, 2),
            Some('j') => num(&mut out, i64::from(yday), 3),
            Some('m') => num(&mut out, i64::from(month), 2),
            Some('M') => num(&mut out, minute, 2),
            Some('p') => out.push_str(if hour < 12 { "AM" } else { "PM" }),
            Some('S') => num(&mut out, second, 2),
            Some('T') => {
                let _ = write!(out, "{hour:02}:{minute:02}:{second:02}");
            }
            Some('u') => {
                let _ = write!(out, "{}", if wday == 0 { 7 } else { wday });
            }
            Some('w') => {
                let _ = write!(out, "{wday}");
            }
            Some('y') => num(&mut out, year.rem_euclid(100), 2),
            Some('Y') => {
                let _ = write!(out, "{year}");
            }
            // A naive datetime (transformers' `datetime.now()`) has no zone.
            Some('Z') | Some('z') => {}
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                if unpadded {
                    out.push('-');
                }
                out.push(other);
            }
            None => {
                out.push('%');
                if unpadded {
                    out.push('-');
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msgs(pairs: &[(&str, &str)]) -> Vec<ChatMessage> {
        pairs
            .iter()
            .map(|(r, c)| ChatMessage::new(*r, *c))
            .collect()
    }

    /// llama.cpp's tests/test-chat-template.cpp conversation.
    fn llama_cpp_conversation() -> Vec<ChatMessage> {
        msgs(&[
            ("system", "You are a helpful assistant"),
            ("user", "Hello"),
            ("assistant", "Hi there"),
            ("user", "Who are you"),
            ("assistant", "   I am an assistant   "),
            ("user", "Another question"),
        ])
    }

    fn render(src: &str, opts: &RenderOptions) -> Result<String> {
        ChatTemplate::new(src, "<s>", "</s>")?.render_with(&msgs(&[("user", "hi")]), opts)
    }

    fn limit_of(r: Result<String>) -> &'static str {
        match r {
            Err(Error::Tokenizer(TokenizerError::TemplateLimit { what })) => what,
            other => panic!("expected a template limit, got {other:?}"),
        }
    }

    #[test]
    fn builtins_match_llama_cpp() {
        let conv = llama_cpp_conversation();
        let cases = [
            ("chatml", "<|im_start|>system\nYou are a helpful assistant<|im_end|>\n<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\nHi there<|im_end|>\n<|im_start|>user\nWho are you<|im_end|>\n<|im_start|>assistant\n   I am an assistant   <|im_end|>\n<|im_start|>user\nAnother question<|im_end|>\n<|im_start|>assistant\n"),
            ("llama3", "<|start_header_id|>system<|end_header_id|>\n\nYou are a helpful assistant<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHello<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nHi there<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nWho are you<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nI am an assistant<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nAnother question<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"),
            ("gemma", "<start_of_turn>user\nYou are a helpful assistant\n\nHello<end_of_turn>\n<start_of_turn>model\nHi there<end_of_turn>\n<start_of_turn>user\nWho are you<end_of_turn>\n<start_of_turn>model\nI am an assistant<end_of_turn>\n<start_of_turn>user\nAnother question<end_of_turn>\n<start_of_turn>model\n"),
            ("glm4", "[gMASK]<sop><|system|>\nYou are a helpful assistant<|user|>\nHello<|assistant|>\nHi there<|user|>\nWho are you<|assistant|>\n   I am an assistant   <|user|>\nAnother question<|assistant|>\n"),
        ];
        for (name, want) in cases {
            let t = ChatTemplate::builtin(name, "", "").expect(name);
            assert_eq!(t.render(&conv, true).unwrap(), want, "{name}");
        }
        for name in BUILTIN_TEMPLATES {
            let t = ChatTemplate::builtin(name, "", "").unwrap();
            let closed = t.render(&conv[..3], false).unwrap();
            assert!(
                !closed.ends_with("\n\n") || *name == "llama3",
                "{name}: {closed:?}"
            );
        }
        assert!(ChatTemplate::builtin("nope", "", "").is_none());
    }

    #[test]
    fn compile_error_is_template_error() {
        let e = ChatTemplate::new("{% for x in %}", "", "").unwrap_err();
        assert!(
            matches!(e, Error::Tokenizer(TokenizerError::Template(_))),
            "{e:?}"
        );
        assert_eq!(e.code(), "template");
    }

    #[test]
    fn raise_exception_carries_the_message() {
        let t = ChatTemplate::new(
            "{% if messages[0].role != 'system' %}{{ raise_exception('System role required!') }}{% endif %}ok",
            "",
            "",
        )
        .unwrap();
        match t.render(&msgs(&[("user", "x")]), true) {
            Err(Error::Tokenizer(TokenizerError::Template(m))) => {
                assert_eq!(m, "System role required!")
            }
            other => panic!("{other:?}"),
        }
        // The template stays usable.
        assert_eq!(t.render(&msgs(&[("system", "x")]), true).unwrap(), "ok");
    }

    #[test]
    fn strftime_now_uses_the_given_date() {
        let opts = RenderOptions {
            now: Some(1_741_944_413), // 2025-03-14 09:26:53 UTC, a Friday
            ..Default::default()
        };
        let out = render(
            "{{ strftime_now('%d %b %Y') }}|{{ strftime_now('%Y-%m-%d') }}|{{ strftime_now('%B %d, %Y') }}|{{ strftime_now('%A %H:%M:%S %j %I%p %-d') }}",
            &opts,
        )
        .unwrap();
        assert_eq!(
            out,
            "14 Mar 2025|2025-03-14|March 14, 2025|Friday 09:26:53 073 09AM 14"
        );
        assert_eq!(strftime("%Y-%m-%d %a", 0), "1970-01-01 Thu");
        assert_eq!(strftime("%Y-%m-%d %j", 951_782_400), "2000-02-29 060");
        assert_eq!(strftime("%F %T", -1), "1969-12-31 23:59:59");
        assert_eq!(
            render("{{ strftime_now('%Y')|length }}", &RenderOptions::default()).unwrap(),
            "4"
        );
    }

    #[test]
    fn fuel_stops_infinite_loops() {
        let opts = RenderOptions::default();
        // Nested loops, each range within max_range: only fuel stops them.
        let t = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}";
        assert_eq!(limit_of(render(t, &opts)), "fuel");
        // Exponential macro recursion that never gets deep.
        let small = RenderOptions {
            limits: TemplateLimits {
                fuel: 200_000,
                ..Default::default()
            },
            ..Default::default()
        };
        let t = "{% macro f(n) %}{% if n > 0 %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(25) }}";
        assert_eq!(limit_of(render(t, &small)), "fuel");
    }

    #[test]
    fn range_is_bounded() {
        let opts = RenderOptions::default();
        assert_eq!(
            limit_of(render("{% for i in range(10**9) %}x{% endfor %}", &opts)),
            "range"
        );
        assert_eq!(
            limit_of(render("{{ range(10**12)|length }}", &opts)),
            "range"
        );
        assert_eq!(
            render("{{ range(3)|list }}{{ range(1, 7, 2)|list }}{{ range(3, 0, -1)|list }}{{ range(2, 1)|list }}", &opts)
                .unwrap(),
            "[0, 1, 2][1, 3, 5][3, 2, 1][]"
        );
    }

    #[test]
    fn output_size_is_bounded() {
        let opts = RenderOptions::default();
        assert_eq!(limit_of(render("{{ 'x' * 10**9 }}", &opts)), "output size");
        // Each piece is small; the total is 10^5 * 10^3 bytes = 100 MB > 16 MiB.
        let t = "{% for i in range(100000) %}{{ 'y' * 1000 }}{% endfor %}";
        assert_eq!(limit_of(render(t, &opts)), "output size");
        let small = RenderOptions {
            limits: TemplateLimits {
                max_output_bytes: 10,
                ..Default::default()
            },
            ..Default::default()
        };
        assert_eq!(
            limit_of(render("{{ 'abcdefghijk' }}", &small)),
            "output size"
        );
        assert_eq!(render("{{ 'abcdefghij' }}", &small).unwrap(), "abcdefghij");
    }

    #[test]
    fn recursion_is_bounded_within_a_small_stack() {
        // A 1 MiB stack (wasm32's default) must be enough to reach the recursion limit.
        let h = std::thread::Builder::new()
            .stack_size(1 << 20)
            .spawn(|| {
                let t = "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}";
                let r = render(t, &RenderOptions::default());
                let deep = "{% macro f(n) %}{% for x in [1] %}{% if true %}{{ f(n + 1) }}{% endif %}{% endfor %}{% endmacro %}{{ f(0) }}";
                (limit_of(r), limit_of(render(deep, &RenderOptions::default())))
            })
            .unwrap();
        assert_eq!(h.join().unwrap(), ("recursion", "recursion"));
    }

    #[test]
    fn long_conversations_fit_a_small_stack_and_the_fuel() {
        // Real templates accumulate with `ns.x = ns.x + [m]`; minijinja flattens such chains, so
        // thousands of turns overflow neither a 1 MiB stack nor exhaust the default fuel.
        let h = std::thread::Builder::new()
            .stack_size(1 << 20)
            .spawn(|| {
                let t = ChatTemplate::new(
                    "{% set ns = namespace(m=[]) %}{% for m in messages %}{% set ns.m = ns.m + [m] %}{% endfor %}{{ ns.m|length }}",
                    "",
                    "",
                )
                .unwrap();
                let conv: Vec<ChatMessage> =
                    (0..2000).map(|i| ChatMessage::new("user", i.to_string())).collect();
                t.render(&conv, false)
            })
            .unwrap();
        assert_eq!(h.join().unwrap().unwrap(), "2000");
    }

    #[test]
    fn deep_values_are_an_error_not_a_crash() {
        let opts = RenderOptions::default();
        let t = "{% set ns = namespace(x=[]) %}{% for i in range(300) %}{% set ns.x = [ns.x] %}{% endfor %}";
        for out in ["{{ ns.x }}", "{{ ns.x|tojson }}", "{{ ns.x|string }}"] {
            let e = render(&format!("{t}{out}"), &opts).unwrap_err();
            assert!(e.to_string().contains("nested too deeply"), "{out}: {e}");
        }
        assert_eq!(
            render("{{ (1,) }} {{ (1, 'a') }}", &opts).unwrap(),
            "(1,) (1, 'a')"
        );
    }

    #[test]
    fn engine_usable_after_limits() {
        let t = ChatTemplate::new(
            "{% if messages[0].content == 'loop' %}{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}{% else %}{{ messages[0].content }}{% endif %}",
            "",
            "",
        )
        .unwrap();
        let opts = RenderOptions {
            limits: TemplateLimits {
                fuel: 100_000,
                ..Default::default()
            },
            ..Default::default()
        };
        let e = t.render_with(&msgs(&[("user", "loop")]), &opts);
        assert_eq!(limit_of(e), "fuel");
        assert_eq!(
            t.render_with(&msgs(&[("user", "fine")]), &opts).unwrap(),
            "fine"
        );
    }

    #[test]
    fn python_semantics() {
        let opts = RenderOptions::default();
        let r = |t: &str| render(t, &opts).unwrap();
        assert_eq!(
            r("{{ true }} {{ none }} {{ [1, 'a', none] }} {{ {'k': \"it's\"} }}"),
            "True None [1, 'a', None] {'k': \"it's\"}"
        );
        assert_eq!(
            r("{{ 1.0 }} {{ 0.1 }} {{ 1e16 }} {{ 1.5e-5 }} {{ 123.456 }} {{ -0.0 }}"),
            "1.0 0.1 1e+16 1.5e-05 123.456 -0.0"
        );
        assert_eq!(
            r("{{ ' a b '.strip() }}|{{ 'a,b'.split(',') }}|{{ 'abc'.startswith('ab') }}"),
            "a b|['a', 'b']|True"
        );
        assert_eq!(
            r("{{ {'a': 1}|string }}|{{ false|string }}"),
            "{'a': 1}|False"
        );
        assert_eq!(
            r("{% for x in [1, 2, 3, 4] %}{% if x == 2 %}{% continue %}{% endif %}{% if x == 4 %}{% break %}{% endif %}{{ x }}{% endfor %}"),
            "13"
        );
        assert_eq!(r("{% set ns = namespace(n=0) %}{% for m in messages %}{% set ns.n = ns.n + 1 %}{% endfor %}{{ ns.n }}"), "1");
        // trim_blocks + lstrip_blocks, and {% generation %}.
        assert_eq!(r("a\n  {% if true %}\nb\n  {% endif %}\nc"), "a\nb\nc");
        assert_eq!(
            r("{%- generation -%} x {%- endgeneration %}|{% generation %}y{% endgeneration %}"),
            "x|y"
        );
    }

    #[test]
    fn tojson_matches_python() {
        let opts = RenderOptions::default();
        let r = |t: &str| render(t, &opts).unwrap();
        assert_eq!(
            r(r#"{{ {"b": 1, "a": [1.5, true, none, "é\n\"<>&"]}|tojson }}"#),
            r#"{"b": 1, "a": [1.5, true, null, "é\n\"<>&"]}"#
        );
        assert_eq!(
            r(r#"{{ "é😀"|tojson(ensure_ascii=True) }}"#),
            r#""\u00e9\ud83d\ude00""#
        );
        assert_eq!(
            r(r#"{{ {"a": [1, {}], "b": []}|tojson(indent=2) }}"#),
            "{\n  \"a\": [\n    1,\n    {}\n  ],\n  \"b\": []\n}"
        );
        assert_eq!(
            r(r#"{{ {"b": 1, "a": 2}|tojson(sort_keys=true, separators=(",", ":")) }}"#),
            r#"{"a":2,"b":1}"#
        );
    }

    #[test]
    fn context_variables() {
        let t = ChatTemplate::new(
            "{{ bos_token }}{{ tools is none }}{{ documents is none }}{{ add_generation_prompt }}{{ enable_thinking }}{{ eos_token }}{{ messages[0].tool_calls is defined }}",
            "<s>",
            "</s>",
        )
        .unwrap();
        let mut extra = serde_json::Map::new();
        extra.insert("enable_thinking".into(), serde_json::Value::Bool(false));
        let opts = RenderOptions {
            add_generation_prompt: true,
            extra,
            ..Default::default()
        };
        assert_eq!(
            t.render_with(&msgs(&[("user", "x")]), &opts).unwrap(),
            "<s>TrueTrueTrueFalse</s>False"
        );
    }
}
