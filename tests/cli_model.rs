//! The model commands of the CLI: `logits` against llama.cpp's golden logits, `bench` JSON,
//! `--backend gpu` as a clear error, and `-m URL` downloaded from a localhost server into the cache
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
    let out = Command::new(env!("CARGO_BIN_EXE_ternlm"))
        .args(args)
        .env("TERNLM_CACHE", cache)
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
fn bench_prints_json_and_gpu_backend_is_a_clear_error() {
    let dir = temp("bench");
    let model = repo().join("tests/data/models/tiny-qwen3-q8_0.gguf");
    let m = model.to_str().unwrap();
    let (ok, out, err) = run(
        &["bench", "-m", m, "-p", "16", "-n", "4", "--backend", "cpu"],
        &dir,
    );
    assert!(ok, "{err}");
    let j: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(j["n_prompt"], 16);
    assert_eq!(j["n_gen"], 4);
    assert!(
        j["prefill_tok_s"].as_f64().unwrap() > 0.0 && j["decode_tok_s"].as_f64().unwrap() > 0.0
    );

    let (ok, _, err) = run(&["bench", "-m", m, "--backend", "gpu"], &dir);
    assert!(!ok);
    assert!(err.contains("[backend_unavailable]"), "{err}");
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
