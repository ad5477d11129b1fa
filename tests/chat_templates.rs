//! Chat templates rendered by ours against Python jinja2 as Hugging Face transformers configures
//! it (goldens from scripts/gen_chat_golden.py in tests/data/chat/): byte-exact output, or an
//! error where jinja2 raised.
//!
//! Every template in tests/data/chat/ is checked. The few (template, case) pairs that cannot match
//! are listed in [`EXPECTED_DIFFERENT`] with the reason; the test also fails when a listed pair
//! starts to match, so the list stays exact.

mod common;

use serde_json::Value as Json;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use ternlm::error::{Error, TokenizerError};
use ternlm::gguf::GgufFile;
use ternlm::tokenizer::chat::{ChatMessage, ChatTemplate, RenderOptions};

/// Why an entry of [`EXPECTED_DIFFERENT`] cannot match.
const NONE_NOT_ITERABLE: &str =
    "transformers passes tools=None when there are no tools; the template \
     loops over `tools` unguarded, which jinja2 rejects (TypeError: 'NoneType' object is not \
     iterable) while minijinja iterates none as empty (no hook to change it), so ours renders \
     the prompt with an empty tool list";
const MAP_IS_GENERATOR: &str = "jinja2's `map` filter returns a generator that json.dumps rejects \
     (TypeError); minijinja's returns a list, which serializes";
const MARKUP_CONCAT: &str =
    "`'...'|safe + text` makes a jinja2 Markup, whose `+` HTML-escapes the \
     right operand (`\"` becomes `&#34;` in the tool JSON); minijinja concatenates safe strings as \
     plain text";

/// (template, case or `*` for every case, text jinja2's error must contain (`*` entries only
/// excuse that failure), reason).
const EXPECTED_DIFFERENT: &[(&str, &str, Option<&str>, &str)] = &[
    (
        "CohereForAI-c4ai-command-r-plus-tool_use",
        "*",
        Some("'NoneType' object is not iterable"),
        NONE_NOT_ITERABLE,
    ),
    (
        "gguf-ggml-vocab-command-r.tool_use",
        "*",
        Some("'NoneType' object is not iterable"),
        NONE_NOT_ITERABLE,
    ),
    (
        "gguf-ggml-vocab-command-r.rag",
        "*",
        Some("'NoneType' object is not iterable"),
        NONE_NOT_ITERABLE,
    ),
    (
        "NousResearch-Hermes-2-Pro-Llama-3-8B-tool_use",
        "*",
        Some("'NoneType' object is not iterable"),
        NONE_NOT_ITERABLE,
    ),
    (
        "NousResearch-Hermes-3-Llama-3.1-8B-tool_use",
        "*",
        Some("'NoneType' object is not iterable"),
        NONE_NOT_ITERABLE,
    ),
    (
        "llama-cpp-deepseek-r1",
        "tools_user",
        None,
        MAP_IS_GENERATOR,
    ),
    ("llama-cpp-deepseek-r1", "tool_call", None, MAP_IS_GENERATOR),
    (
        "llama-cpp-deepseek-r1",
        "tool_call_done",
        None,
        MAP_IS_GENERATOR,
    ),
    (
        "meetkai-functionary-medium-v3.1",
        "tools_user",
        None,
        MARKUP_CONCAT,
    ),
    (
        "meetkai-functionary-medium-v3.1",
        "tool_call",
        None,
        MARKUP_CONCAT,
    ),
    (
        "meetkai-functionary-medium-v3.1",
        "tool_call_done",
        None,
        MARKUP_CONCAT,
    ),
];

/// The entry excusing this (template, case, jinja2 outcome), if any.
fn excuse(template: &str, case: &str, golden: &Json) -> Option<usize> {
    EXPECTED_DIFFERENT.iter().position(|(t, c, err, _)| {
        *t == template
            && (*c == case
                || (*c == "*"
                    && err
                        .is_some_and(|e| golden["error"].as_str().is_some_and(|g| g.contains(e)))))
    })
}

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/chat")
}

fn load(path: &Path) -> Json {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

struct Case {
    name: String,
    messages: Vec<ChatMessage>,
    opts: RenderOptions,
}

fn cases() -> Vec<Case> {
    let conv = load(&data_dir().join("conversations.json"));
    let now = conv["now_unix"].as_i64().expect("now_unix");
    let tools = conv["tools"].clone();
    conv["cases"]
        .as_array()
        .expect("cases")
        .iter()
        .map(|c| {
            let name = c["name"].as_str().unwrap().to_owned();
            let messages: Vec<ChatMessage> = serde_json::from_value(
                conv["conversations"][c["conversation"].as_str().unwrap()].clone(),
            )
            .unwrap_or_else(|e| panic!("case {name}: {e}"));
            let opts = RenderOptions {
                add_generation_prompt: c["add_generation_prompt"].as_bool().unwrap(),
                tools: c["tools"].as_bool().unwrap().then(|| tools.clone()),
                extra: c["extra"].as_object().cloned().unwrap_or_default(),
                now: Some(now),
                ..Default::default()
            };
            Case {
                name,
                messages,
                opts,
            }
        })
        .collect()
}

fn golden_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(data_dir())
        .expect("tests/data/chat")
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("tmpl-") && n.ends_with(".json"))
        })
        .collect();
    files.sort();
    files
}

/// Where the first difference is, for a readable failure.
fn first_diff(a: &str, b: &str) -> String {
    let i = a
        .char_indices()
        .zip(b.chars())
        .find(|((_, x), y)| x != y)
        .map_or(a.len().min(b.len()), |((i, _), _)| i);
    let lo = a.floor_char_boundary(i.saturating_sub(60));
    format!(
        "at byte {i}:\n  ours:   {:?}\n  jinja2: {:?}",
        &a[lo..a.ceil_char_boundary((i + 60).min(a.len()))],
        &b[b.floor_char_boundary(lo.min(b.len()))..b.ceil_char_boundary((i + 60).min(b.len()))]
    )
}

#[test]
fn templates_match_jinja2() {
    let cases = cases();
    let files = golden_files();
    assert!(files.len() >= 70, "only {} golden templates", files.len());
    let mut failures = Vec::new();
    let mut listed_but_matching = Vec::new();
    let mut entry_used = vec![false; EXPECTED_DIFFERENT.len()];
    let mut n_compared = 0;
    let mut per_template: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for file in &files {
        let g = load(file);
        let name = g["name"].as_str().unwrap().to_owned();
        let source = g["source"].as_str().unwrap();
        let tmpl = ChatTemplate::new(
            source,
            g["bos_token"].as_str().unwrap(),
            g["eos_token"].as_str().unwrap(),
        );
        if let Some(err) = g.get("compile_error") {
            // jinja2 rejected the template: ours must reject it or fail every render.
            if let Ok(t) = &tmpl {
                for c in &cases {
                    if let Ok(out) = t.render_with(&c.messages, &c.opts) {
                        failures.push(format!(
                            "{name}/{}: jinja2 failed to compile ({err}) but ours rendered {out:?}",
                            c.name
                        ));
                    }
                }
            }
            continue;
        }
        let tmpl = match tmpl {
            Ok(t) => t,
            Err(e) => {
                failures.push(format!("{name}: ours failed to compile: {e}"));
                continue;
            }
        };
        for c in &cases {
            let golden = &g["cases"][&c.name];
            let ours = tmpl.render_with(&c.messages, &c.opts);
            let listed = excuse(&name, &c.name, golden);
            let problem = match (golden.get("expected"), &ours) {
                (Some(want), Ok(got)) if want.as_str() == Some(got.as_str()) => None,
                (Some(want), Ok(got)) => Some(first_diff(got, want.as_str().unwrap())),
                (Some(_), Err(e)) => Some(format!("ours failed: {e}")),
                (None, Err(Error::Tokenizer(TokenizerError::Template(_)))) => None,
                (None, Err(e)) => Some(format!("jinja2 raised, ours gave another error: {e}")),
                (None, Ok(got)) => Some(format!(
                    "jinja2 raised {} but ours rendered {got:?}",
                    golden["error"]
                )),
            };
            n_compared += 1;
            let entry = per_template.entry(name.clone()).or_default();
            match (problem, listed) {
                (None, None) => entry.0 += 1,
                (None, Some(i)) if EXPECTED_DIFFERENT[i].1 == "*" => entry.0 += 1,
                (None, Some(_)) => listed_but_matching.push(format!("{name}/{}", c.name)),
                (Some(_), Some(i)) => {
                    entry_used[i] = true;
                    entry.1 += 1
                }
                (Some(p), None) => failures.push(format!("{name}/{}: {p}", c.name)),
            }
        }
    }
    let matched: usize = per_template.values().map(|v| v.0).sum();
    eprintln!(
        "chat templates: {} templates, {n_compared} renders compared, {matched} match, {} listed as expected-different",
        files.len(),
        per_template.values().map(|v| v.1).sum::<usize>()
    );
    for (i, used) in entry_used.iter().enumerate() {
        if !used {
            listed_but_matching.push(format!("{:?}", EXPECTED_DIFFERENT[i]));
        }
    }
    assert!(
        listed_but_matching.is_empty(),
        "listed in EXPECTED_DIFFERENT but now matching (remove them): {listed_but_matching:#?}"
    );
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

/// The brief's required set is present in the goldens and renders there.
#[test]
fn required_templates_are_covered() {
    let names: Vec<String> = golden_files()
        .iter()
        .map(|p| load(p)["name"].as_str().unwrap().to_owned())
        .collect();
    for want in [
        "gguf-SmolLM2-135M-Instruct.Q4_1",
        "gguf-ggml-vocab-command-r",
        "gguf-ggml-vocab-command-r.tool_use",
        "gguf-ggml-vocab-command-r.rag",
        "gguf-ggml-vocab-phi-3",
        "gguf-ggml-vocab-qwen2",
        "gguf-ggml-vocab-qwen35",
        "gguf-ggml-vocab-gemma-4",
        "meta-llama-Llama-3.1-8B-Instruct",
        "meta-llama-Llama-3.2-3B-Instruct",
        "Qwen-Qwen2.5-7B-Instruct",
        "Qwen-Qwen3-0.6B",
        "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B",
        "deepseek-ai-DeepSeek-V3.1",
        "GLM-4.6",
        "GLM-4.7-Flash",
        "google-gemma-2-2b-it",
        "microsoft-Phi-3.5-mini-instruct",
        "mistralai-Mistral-Nemo-Instruct-2407",
    ] {
        assert!(names.iter().any(|n| n == want), "missing golden for {want}");
    }
}

/// `from_metadata` reads `tokenizer.chat_template` (and named variants) from a GGUF.
#[test]
fn from_metadata_reads_gguf_keys() {
    let src = "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}{% endfor %}";
    let mut g = common::Gguf::new(3, 0, 3);
    g.kv_str("general.architecture", "llama")
        .kv_str("tokenizer.chat_template", src)
        .kv_str(
            "tokenizer.chat_template.tool_use",
            "tools:{{ tools|length }}",
        )
        .pad(32);
    let bytes = g.finish();
    let file = GgufFile::from_bytes(&bytes).unwrap();
    let md = file.metadata();
    let t = ChatTemplate::from_metadata(md, "<s>", "</s>")
        .unwrap()
        .expect("template present");
    assert_eq!(t.source(), src);
    assert_eq!(
        t.render(&[ChatMessage::new("user", "hi")], true).unwrap(),
        "<|user|>hi"
    );
    let named = ChatTemplate::from_metadata_named(md, "tool_use", "", "")
        .unwrap()
        .unwrap();
    let opts = RenderOptions {
        tools: Some(serde_json::json!([{"type": "function"}])),
        ..Default::default()
    };
    assert_eq!(named.render_with(&[], &opts).unwrap(), "tools:1");
    assert!(ChatTemplate::from_metadata_named(md, "rag", "", "")
        .unwrap()
        .is_none());

    let mut g = common::Gguf::new(3, 0, 1);
    g.kv_str("general.architecture", "llama").pad(32);
    let bytes = g.finish();
    let file = GgufFile::from_bytes(&bytes).unwrap();
    assert!(ChatTemplate::from_metadata(file.metadata(), "", "")
        .unwrap()
        .is_none());
}
