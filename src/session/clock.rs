//! Clocks and entropy that work on every target (spec/runtime.md §8).
//!
//! `std::time::Instant::now()` and `SystemTime::now()` panic on `wasm32-unknown-unknown`, so the
//! session measures time through [`Clock`]: [`SystemClock`] is `Instant` natively and
//! `performance.now()` (falling back to `Date.now()`) on wasm32; [`ManualClock`] is a fake for
//! tests.

use std::fmt::Debug;
use std::sync::atomic::{AtomicU64, Ordering};

/// A monotonic millisecond clock.
pub trait Clock: Send + Sync + Debug {
    /// Milliseconds since an arbitrary fixed origin.
    fn now_ms(&self) -> f64;
}

/// The platform's monotonic clock.
#[derive(Debug, Clone, Copy)]
pub struct SystemClock {
    #[cfg(not(target_arch = "wasm32"))]
    origin: std::time::Instant,
}

impl SystemClock {
    pub fn new() -> Self {
        SystemClock {
            #[cfg(not(target_arch = "wasm32"))]
            origin: std::time::Instant::now(),
        }
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for SystemClock {
    #[cfg(not(target_arch = "wasm32"))]
    fn now_ms(&self) -> f64 {
        self.origin.elapsed().as_secs_f64() * 1e3
    }

    #[cfg(target_arch = "wasm32")]
    fn now_ms(&self) -> f64 {
        js_now_ms()
    }
}

/// `globalThis.performance.now()` when it exists (window and worker scopes, node), else
/// `Date.now()`.
#[cfg(target_arch = "wasm32")]
fn js_now_ms() -> f64 {
    use js_sys::{Function, Reflect};
    use wasm_bindgen::{JsCast, JsValue};
    let global = js_sys::global();
    let perf = Reflect::get(&global, &JsValue::from_str("performance")).ok();
    if let Some(perf) = perf.filter(|p| p.is_object()) {
        let now = Reflect::get(&perf, &JsValue::from_str("now")).ok();
        if let Some(f) = now.and_then(|f| f.dyn_into::<Function>().ok()) {
            if let Some(t) = f.call0(&perf).ok().and_then(|v| v.as_f64()) {
                return t;
            }
        }
    }
    js_sys::Date::now()
}

/// A clock that only moves when told to (tests).
#[derive(Debug, Default)]
pub struct ManualClock {
    /// Microseconds.
    us: AtomicU64,
}

impl ManualClock {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn advance_ms(&self, ms: f64) {
        self.us
            .fetch_add((ms * 1e3).max(0.0) as u64, Ordering::Relaxed);
    }

    pub fn set_ms(&self, ms: f64) {
        self.us.store((ms * 1e3).max(0.0) as u64, Ordering::Relaxed);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> f64 {
        self.us.load(Ordering::Relaxed) as f64 / 1e3
    }
}

/// A seed for sampling when the caller gives none: `Math.random()` on wasm32 (sampling needs no
/// cryptographic strength), the std hasher's per-process random keys and the time natively.
pub fn entropy_seed() -> u64 {
    #[cfg(target_arch = "wasm32")]
    {
        let hi = (js_sys::Math::random() * 4294967296.0) as u64;
        let lo = (js_sys::Math::random() * 4294967296.0) as u64;
        (hi << 32) ^ lo ^ (js_now_ms().to_bits())
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        h.write_u64(t);
        h.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clocks_move_forward() {
        let c = SystemClock::new();
        let a = c.now_ms();
        assert!(c.now_ms() >= a);
        let m = ManualClock::new();
        assert_eq!(m.now_ms(), 0.0);
        m.advance_ms(2.5);
        assert_eq!(m.now_ms(), 2.5);
        m.set_ms(10.0);
        assert_eq!(m.now_ms(), 10.0);
        assert_ne!(entropy_seed(), entropy_seed());
    }
}
