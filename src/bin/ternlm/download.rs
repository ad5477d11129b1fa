//! `-m URL`: downloads a model into the cache directory with a progress bar, once. The file is
//! written to `NAME.part` and renamed when complete, so an interrupted download is never used.

use indicatif::{ProgressBar, ProgressStyle};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use ternlm::{Error, Result};

/// Where a URL's file lives in the cache: `CACHE/downloads/<hash of URL>-<file name>`.
pub fn cached_path(cache: &Path, url: &str) -> PathBuf {
    let hash: String = Sha256::digest(url.as_bytes())
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect();
    let name = url
        .rsplit('/')
        .next()
        .filter(|n| !n.is_empty())
        .unwrap_or("model.gguf");
    let name: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    cache.join("downloads").join(format!("{hash}-{name}"))
}

/// The local path of `model`: itself, or for an http(s) URL its cached download.
pub fn resolve(model: &str, cache: &Path) -> Result<PathBuf> {
    if !(model.starts_with("http://") || model.starts_with("https://")) {
        return Ok(PathBuf::from(model));
    }
    let dest = cached_path(cache, model);
    if dest.exists() {
        return Ok(dest);
    }
    download(model, &dest)?;
    Ok(dest)
}

fn download(url: &str, dest: &Path) -> Result<()> {
    let fail = |reason: String| Error::Download {
        url: url.to_string(),
        reason,
    };
    let dir = dest.parent().expect("cached paths have a parent");
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir.display().to_string(), e))?;
    let resp = ureq::get(url).call().map_err(|e| fail(e.to_string()))?;
    let total: Option<u64> = resp
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let bar = match total {
        Some(n) => ProgressBar::new(n).with_style(
            ProgressStyle::with_template(
                "{msg} {bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .expect("valid template"),
        ),
        None => ProgressBar::new_spinner(),
    };
    bar.set_message(url.rsplit('/').next().unwrap_or(url).to_string());
    let part = dest.with_extension("part");
    let shown = part.display().to_string();
    let mut out = std::fs::File::create(&part).map_err(|e| Error::io(&shown, e))?;
    let mut body = resp.into_body().into_reader();
    let mut buf = vec![0u8; 1 << 20];
    let mut got = 0u64;
    loop {
        let n = body.read(&mut buf).map_err(|e| fail(e.to_string()))?;
        if n == 0 {
            break;
        }
        out.write_all(&buf[..n]).map_err(|e| Error::io(&shown, e))?;
        got += n as u64;
        bar.set_position(got);
    }
    bar.finish_and_clear();
    if let Some(n) = total.filter(|&n| n != got) {
        let _ = std::fs::remove_file(&part);
        return Err(fail(format!("got {got} of {n} bytes")));
    }
    out.sync_all().map_err(|e| Error::io(&shown, e))?;
    std::fs::rename(&part, dest).map_err(|e| Error::io(dest.display().to_string(), e))
}
