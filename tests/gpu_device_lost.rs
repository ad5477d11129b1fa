//! A lost GPU device (issue #5 item 2; the handbook's bad-input rule): after the device goes
//! away (`wgpu::Device::destroy`, what a driver reset or the browser reclaiming the GPU does),
//! every GPU forward is the typed error `gpu_device_lost` — never a panic, never a hang —,
//! the model falls back to the CPU (`Model::detach_gpu`) with the same greedy ids (a KV cache
//! whose rows were only on that device reports the loss), and a new device can be attached
//! again. Natively (lavapipe in CI) and in headless Chromium
//! (tests/gpu_browser.rs includes this file).

mod gpu_util;

use gpu_util::*;
use ternlm::backend::gpu::GpuOptions;
use ternlm::model::{LogitsFor, Model};

#[gpu_test]
async fn device_loss_is_a_typed_error_and_the_cpu_takes_over() {
    let c = &DECODE_CASES[1];
    let mut m = Model::from_bytes(c.bytes.to_vec()).unwrap();
    m.use_gpu_async(&GpuOptions::default())
        .await
        .unwrap_or_else(|e| panic!("no GPU adapter: {e}"));
    assert_eq!(greedy_ids(&m, c).await.unwrap(), c.want);

    // a cache that already lives on the lost device, and a fresh one
    let mut warm = m.new_cache(32);
    m.forward_argmax_async(&mut warm, c.prompt).await.unwrap();
    m.gpu().expect("attached").ctx.device.destroy();
    let e = greedy_ids(&m, c).await.unwrap_err();
    assert_eq!(e.code(), "gpu_device_lost", "{e}");
    let e = m
        .forward_async(&mut warm, &[1], LogitsFor::Last)
        .await
        .unwrap_err();
    assert_eq!(e.code(), "gpu_device_lost", "{e}");

    // the CPU takes over (a cache whose rows were only on the lost device cannot follow:
    // the same typed error), and a new device works
    m.detach_gpu();
    assert_eq!(greedy_ids(&m, c).await.unwrap(), c.want, "on the CPU");
    let e = m
        .forward_async(&mut warm, &[1], LogitsFor::Last)
        .await
        .unwrap_err();
    assert_eq!(e.code(), "gpu_device_lost", "{e}");
    m.use_gpu_async(&GpuOptions::default()).await.unwrap();
    assert_eq!(greedy_ids(&m, c).await.unwrap(), c.want, "on a new device");
}

/// Devices one after another in one process: NVIDIA's Vulkan driver (580) fails to load after
/// about 30 unloads, which it got whenever the last `wgpu::Instance` went with its context
/// (context.rs `instance`). Native only: in the browser there is no driver to load.
#[cfg(not(target_arch = "wasm32"))]
#[test]
fn forty_devices_one_after_another() {
    let c = &DECODE_CASES[1];
    let mut m = Model::from_bytes(c.bytes.to_vec()).unwrap();
    for i in 0..40 {
        pollster::block_on(m.use_gpu_async(&GpuOptions::default()))
            .unwrap_or_else(|e| panic!("device {i}: {e}"));
        if i % 13 == 0 {
            let ids = pollster::block_on(greedy_ids(&m, c)).unwrap();
            assert_eq!(ids, c.want, "device {i}");
        }
        m.detach_gpu();
    }
}
