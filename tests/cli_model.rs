//! The model commands of the CLI: `logits` against llama.cpp's golden logits, `bench` JSON,
//! `--backend gpu|auto` (a missing adapter is a typed error or a CPU fallback), and `-m URL` downloaded from a localhost server into the cache
//! with the second run served from the cache.

use serde_json::Value;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn run(args: &[&str], cache: &Path) -> (bool, Vec<u8>, String) {
    run_env(args, cache, &[])
}

fn run_env(args: &[&str], cache: &Path, env: &[(&str, &str)]) -> (bool, Vec<u8>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ternlm"))
        .args(args)
        .env("TERNLM_CACHE", cache)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        out.status.success(),
        out.stdout,
        String::from_utf8(out.stderr).unwrap(),
    )
}

fn temp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ternlm-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect()
}

#[test]
fn logits_match_llama_cpp_golden() {
    let dir = temp("logits");
    let manifest: Value = serde_json::from_slice(
        &std::fs::read(repo().join("tests/data/golden/logits/tiny-llama-f32.json")).unwrap(),
    )
    .unwrap();
    let seq = &manifest["sequences"][1];
    let tokens: Vec<String> = seq["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.to_string())
        .collect();
    let out = dir.join("logits.f32");
    let model = repo().join("tests/data/models/tiny-llama-f32.gguf");
    let (ok, _, err) = run(
        &[
            "logits",
            "-m",
            model.to_str().unwrap(),
            "--tokens",
            &tokens.join(","),
            "--out",
            out.to_str().unwrap(),
            "--backend",
            "cpu",
        ],
        &dir,
    );
    assert!(ok, "{err}");
    let got = f32s(&std::fs::read(&out).unwrap());
    let want = f32s(
        &std::fs::read(
            repo()
                .join("tests/data/golden/logits")
                .join(seq["file"].as_str().unwrap()),
        )
        .unwrap(),
    );
    assert_eq!(got.len(), want.len());
    let num: f64 = got
        .iter()
        .zip(&want)
        .map(|(a, b)| f64::from(a - b).powi(2))
        .sum();
    let den: f64 = want.iter().map(|b| f64::from(*b).powi(2)).sum();
    assert!(num / den <= 1e-4, "NMSE {}", num / den);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bench_prints_json_on_each_backend() {
    let dir = temp("bench");
    let model = repo().join("tests/data/models/tiny-qwen3-q8_0.gguf");
    let m = model.to_str().unwrap();
    for backend in ["cpu", "gpu"] {
        let (ok, out, err) = run(
            &[
                "bench",
                "-m",
                m,
                "-p",
                "16",
                "-n",
                "4",
                "--backend",
                backend,
            ],
            &dir,
        );
        assert!(ok, "{err}");
        let j: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(j["backend"], backend);
        assert_eq!(j["n_prompt"], 16);
        assert_eq!(j["n_gen"], 4);
        // Each rate the mean of llama-bench's default 5 runs' rates, which are listed.
        assert_eq!(j["reps"], 5);
        for test in ["prefill", "decode"] {
            let runs: Vec<f64> = serde_json::from_value(j[format!("{test}_tok_s_runs")].clone())
                .unwrap_or_else(|e| panic!("{test} runs: {e} in {j}"));
            assert_eq!(runs.len(), 5, "{j}");
            assert!(runs.iter().all(|&r| r > 0.0), "{j}");
            let mean = runs.iter().sum::<f64>() / 5.0;
            let rate = j[format!("{test}_tok_s")].as_f64().unwrap();
            assert!(
                (rate - mean).abs() <= 1e-9 * mean,
                "{test}: {rate} vs {mean}"
            );
        }
        if backend == "gpu" {
            assert!(j["dispatches_per_token"].as_f64().unwrap() > 0.0, "{j}");
            assert!(j["effective_gb_s"].as_f64().unwrap() > 0.0, "{j}");
        }
    }

    // No adapter (wgpu limited to a backend this build lacks): `gpu` is a typed error, `auto`
    // falls back to the CPU and says why.
    let no_gpu = [("WGPU_BACKEND", "metal")];
    let args = ["bench", "-m", m, "-p", "4", "-n", "1"];
    let (ok, _, err) = run(&[&args[..], &["-r", "0"]].concat(), &dir);
    assert!(!ok && err.contains("-r"), "{err}");
    let (ok, _, err) = run_env(&[&args[..], &["--backend", "gpu"]].concat(), &dir, &no_gpu);
    assert!(!ok);
    assert!(err.contains("[gpu_no_adapter]"), "{err}");
    let (ok, out, err) = run_env(&[&args[..], &["--backend", "auto"]].concat(), &dir, &no_gpu);
    assert!(ok, "{err}");
    assert!(err.contains("running on the CPU"), "{err}");
    let j: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(j["backend"], "cpu");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Serves `body` for every request on 127.0.0.1 until `n` requests were answered.
fn serve(body: Vec<u8>, n: usize) -> (String, std::thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!(
        "http://{}/models/tiny-llama-q8_0.gguf",
        listener.local_addr().unwrap()
    );
    let handle = std::thread::spawn(move || {
        for stream in listener.incoming().take(n) {
            let mut s = stream.unwrap();
            let mut req = [0u8; 4096];
            let _ = s.read(&mut req);
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            s.write_all(head.as_bytes()).unwrap();
            s.write_all(&body).unwrap();
        }
    });
    (url, handle)
}

#[test]
fn model_url_is_downloaded_once_into_the_cache() {
    let dir = temp("url");
    let model = std::fs::read(repo().join("tests/data/models/tiny-llama-q8_0.gguf")).unwrap();
    let (url, server) = serve(model.clone(), 1);
    let (ok, out, err) = run(&["inspect", &url, "--json"], &dir);
    assert!(ok, "{err}");
    let j: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(j["architecture"], "llama");
    server.join().unwrap();
    let cached: Vec<_> = std::fs::read_dir(dir.join("downloads"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(cached.len(), 1, "{cached:?}");
    assert_eq!(std::fs::read(&cached[0]).unwrap(), model);
    // The server is gone: the second run must come from the cache.
    let (ok, _, err) = run(&["inspect", &url], &dir);
    assert!(ok, "{err}");
    // A refused connection is a typed error.
    let (ok, _, err) = run(&["inspect", "http://127.0.0.1:9/none.gguf"], &dir);
    assert!(!ok);
    assert!(err.contains("[download]"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Runs with `stdin` piped in.
fn run_stdin(args: &[&str], input: &str, cache: &Path) -> (bool, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ternlm"))
        .args(args)
        .env("TERNLM_CACHE", cache)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn generate_greedy_matches_llama_cpp_and_prints_ids() {
    let dir = temp("generate");
    let manifest: Value = serde_json::from_slice(
        &std::fs::read(repo().join("tests/data/golden/logits/tiny-llama-f32.json")).unwrap(),
    )
    .unwrap();
    let g = &manifest["greedy"];
    let prompt: Vec<String> = g["prompt_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.to_string())
        .collect();
    let want: Vec<u64> = g["generated_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_u64().unwrap())
        .collect();
    let model = repo().join("tests/data/models/tiny-llama-f32.gguf");
    let n = want.len().to_string();
    let (ok, out, err) = run_stdin(
        &[
            "generate",
            "-m",
            model.to_str().unwrap(),
            "--tokens",
            &prompt.join(","),
            "-n",
            &n,
            "--temp",
            "0",
            "--repeat-penalty",
            "1",
            "--ignore-eos",
            "--print-ids",
        ],
        "",
        &dir,
    );
    assert!(ok, "{err}");
    let ids: Vec<u64> = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert_eq!(ids, want, "greedy ids vs llama.cpp");
    assert!(err.contains("decode") && err.contains("tok/s"), "{err}");

    // The same seed gives the same text.
    let args = [
        "generate",
        "-m",
        model.to_str().unwrap(),
        "-p",
        "hello",
        "-n",
        "12",
        "--temp",
        "0.9",
        "--seed",
        "7",
        "--print-ids",
        "--ignore-eos",
    ];
    let a = run_stdin(&args, "", &dir);
    let b = run_stdin(&args, "", &dir);
    assert!(a.0 && b.0);
    assert_eq!(a.1, b.1);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn chat_runs_two_turns() {
    let dir = temp("chat");
    let model = repo().join("tests/data/models/tiny-qwen2-q8_0.gguf");
    let (ok, _, err) = run_stdin(
        &[
            "chat",
            "-m",
            model.to_str().unwrap(),
            "-n",
            "4",
            "--temp",
            "0",
        ],
        "hi\nand again\n\n",
        &dir,
    );
    assert!(ok, "{err}");
    // Two replies with statistics; the second turn reuses the first turn's KV cache.
    let stats: Vec<&str> = err.lines().filter(|l| l.contains("tok/s")).collect();
    assert_eq!(stats.len(), 2, "{err}");
    assert!(!stats[1].contains("(0 cached)"), "{}", stats[1]);
    std::fs::remove_dir_all(&dir).unwrap();
}
