//! The independent reference forward pass (`itera_sim::reference`) against the published
//! golden logits, and `check --reference` end to end.
//!
//! Fixtures come from `itera_test_support::fixtures::dir()`; missing fixtures skip those tests.

use std::path::{Path, PathBuf};
use std::process::Command;

use itera_pack::quant::QuantPolicy;
use itera_pack::PackOptions;
use itera_sim::reference::RefModel;
use itera_sim::reference_cuda::{self, Arg, CpuBuffer, CpuDevice, Device, Kernel, Launch, EXIT_UNAVAILABLE};
use itera_sim::Golden;
use itera_test_support::{fixtures, Scratch};

const BIN: &str = env!("CARGO_BIN_EXE_itera-sim");

/// Largest |reference − golden| over every logit, in f64 (the golden file is f32).
fn max_diff(reference: &[f64], golden: &[f32]) -> f64 {
    assert_eq!(reference.len(), golden.len());
    reference.iter().zip(golden).map(|(&r, &g)| (r - g as f64).abs()).fold(0.0, f64::max)
}

fn pack(path: &Path, quant: &str) -> Vec<u8> {
    let opts = PackOptions { top_k: Some(2), quant: QuantPolicy::parse_spec(quant).unwrap(), ..Default::default() };
    itera_pack::convert_file(path, &opts).expect("pack the checkpoint")
}

#[test]
fn the_reference_matches_every_golden_file() {
    let Some(dir) = fixtures::dir() else { return };
    let mut goldens: Vec<PathBuf> = std::fs::read_dir(dir.join("golden"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    goldens.sort();
    assert!(!goldens.is_empty());
    for json in goldens {
        let golden = Golden::load(&json).unwrap();
        let checkpoint = golden.checkpoint.clone().expect("the golden names its checkpoint");
        // `keep`: PyTorch qint8 tensors stay int8 with their per-tensor (scale, zero point),
        // so the reference dequantizes them itself, as the golden did.
        for quant in ["f32", "keep"] {
            let bytes = pack(&dir.join(&checkpoint), quant);
            let reference = RefModel::from_bytes(&bytes).unwrap();
            let logits = reference.logits(&golden.tokens).unwrap();
            let d = max_diff(&logits, &golden.logits);
            println!("{} ({checkpoint}, --quant {quant}): max |reference - golden| = {d:.3e}", json.display());
            assert!(d <= 1e-6, "{}: {d:e}", json.display());
        }
    }
}

fn tiny_blob(s: &Scratch, quant: &str) -> PathBuf {
    let opts = PackOptions { quant: QuantPolicy::parse_spec(quant).unwrap(), ..Default::default() };
    s.write(&format!("tiny-{quant}.itb"), &itera_test_support::tiny_blob_with(1, &opts))
}

#[test]
fn check_reference_cpu_passes_on_a_synthetic_blob() {
    let s = Scratch::new("ref-cpu");
    let blob = tiny_blob(&s, "f32");
    let out =
        Command::new(BIN).args(["check", blob.to_str().unwrap(), "--reference", "cpu", "--json"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(v["pass"], true);
    assert_eq!(v["reference"], "cpu");
    assert!(v["max_abs_diff"].as_f64().unwrap() < 1e-4, "{v}");
    assert!(v["kld_mean"].as_f64().unwrap() < 1e-8, "{v}");
    assert_eq!(v["top1_agreement"], 1.0);

    // int8: the core quantizes activations too, so it is close, not exact; a zero tolerance fails.
    let blob8 = tiny_blob(&s, "int8");
    let out = Command::new(BIN)
        .args(["check", blob8.to_str().unwrap(), "--reference", "cpu", "--tokens", "1,2,3,4,5", "--tol", "0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("kld_mean"));
}

#[test]
fn check_reference_cuda_cpu_runs_the_cuda_kernels_here() {
    let s = Scratch::new("ref-cuda-cpu");
    let blob = tiny_blob(&s, "f32");
    let out = Command::new(BIN)
        .args(["check", blob.to_str().unwrap(), "--reference", "cuda-cpu", "--tol", "1e-4", "--json"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!((v["pass"].as_bool(), v["reference"].as_str()), (Some(true), Some("cuda-cpu")), "{v}");
    assert_eq!(v["top1_agreement"], 1.0);
}

#[test]
fn check_reference_cuda_without_a_gpu_exits_3_with_one_line() {
    // Only meaningful where no GPU reference can run (this build without `cuda`, or no driver).
    let s = Scratch::new("ref-cuda");
    let blob = tiny_blob(&s, "f32");
    let out = Command::new(BIN).args(["check", blob.to_str().unwrap(), "--reference", "cuda"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.success() {
        println!("a GPU reference ran here: {}", String::from_utf8_lossy(&out.stdout));
        return;
    }
    assert_ne!(out.status.code(), Some(101), "panicked: {stderr}");
    assert_eq!(out.status.code(), Some(EXIT_UNAVAILABLE as i32), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("--reference cuda"), "{stderr}");
    if cfg!(not(feature = "cuda")) {
        assert!(stderr.contains("built without the cuda feature"), "{stderr}");
    }
}

/// `run --context slide` past the window computes what upstream's `generate()` computes:
/// every token is the argmax of the reference forward pass over the last `max_seq` tokens,
/// from an empty state with positions from 0 (an independent computation, in f64).
#[test]
fn context_slide_is_upstreams_policy() {
    let Some(dir) = fixtures::dir() else { return };
    let s = Scratch::new("ref-slide");
    let blob = s.write("micro.itb", &pack(&dir.join("itera_lite_micro_distilled.pt"), "f32"));
    let golden = Golden::load(&dir.join("golden/micro_distilled_story128.json")).unwrap();
    let prompt: Vec<u32> = golden.tokens[..120].to_vec();
    let ids = prompt.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
    let out = Command::new(BIN)
        .args(["run", blob.to_str().unwrap(), "--tokens", &ids, "-n", "24", "--context", "slide", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let generated: Vec<u32> =
        json["generated"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
    assert_eq!(generated.len(), 24, "slide does not stop at max_seq");
    // The 9th token is predicted after exactly 128; each of the 15 after it from a re-run.
    assert_eq!(json["window_reruns"], 24 + 120 - 128 - 1);
    let reference = RefModel::from_bytes(&std::fs::read(&blob).unwrap()).unwrap();
    let (max_seq, vocab) = (128usize, 2000usize);
    let mut seq = prompt.clone();
    for (i, &token) in generated.iter().enumerate() {
        let window = &seq[seq.len().saturating_sub(max_seq)..];
        let logits = reference.logits(window).unwrap();
        let last = &logits[logits.len() - vocab..];
        let best = (0..vocab).max_by(|&a, &b| last[a].total_cmp(&last[b])).unwrap() as u32;
        assert_eq!(
            token,
            best,
            "token {i} (sequence length {}): the engine took {token}, the reference {best}",
            seq.len()
        );
        seq.push(token);
    }
}

/// The CUDA reference's fixture cases: (golden name, f64 reference model, golden tokens, the
/// f64 reference's logits). The micro model (FP32 checkpoint) and the tiny one (its dynamic
/// int8 dequantized), each on its golden file's 128 tokens.
fn cuda_cases(dir: &Path) -> Vec<(String, RefModel, Vec<u32>, Vec<f64>)> {
    ["micro_distilled_story128.json", "tiny_int8_story128.json"]
        .into_iter()
        .map(|name| {
            let golden = Golden::load(&dir.join("golden").join(name)).unwrap();
            let checkpoint = golden.checkpoint.clone().expect("the golden names its checkpoint");
            let reference = RefModel::from_bytes(&pack(&dir.join(&checkpoint), "f32")).unwrap();
            let want = reference.logits(&golden.tokens).unwrap();
            (name.to_string(), reference, golden.tokens.clone(), want)
        })
        .collect()
}

/// max |Δlogit| (infinite if either side is not finite) and how many positions agree on the
/// top-1 token, f32 logits against the f64 reference's.
fn agreement(got: &[f32], want: &[f64], vocab: usize) -> (f64, usize) {
    assert_eq!(got.len(), want.len());
    let max = got
        .iter()
        .zip(want)
        .map(|(&g, &w)| if g.is_finite() && w.is_finite() { (g as f64 - w).abs() } else { f64::INFINITY })
        .fold(0.0, f64::max);
    let argmax64 = |r: &[f64]| (0..r.len()).max_by(|&a, &b| r[b].total_cmp(&r[a]).reverse().then(b.cmp(&a))).unwrap();
    let top1 = got
        .chunks(vocab)
        .zip(want.chunks(vocab))
        .filter(|(g, w)| itera_edge::sample::argmax(g) as usize == argmax64(w))
        .count();
    (max, top1)
}

/// The CUDA reference's kernel source, compiled for the CPU (`reference_cuda::CpuDevice`),
/// runs the whole forward pass within f32 rounding of the f64 reference: what a GPU would
/// compute, proven before one is lent.
#[test]
fn the_cuda_kernels_on_the_cpu_match_the_f64_reference() {
    let Some(dir) = fixtures::dir() else { return };
    for (name, reference, tokens, want) in cuda_cases(&dir) {
        let got = itera_sim::reference_cuda::logits_on_cpu(&reference, &tokens).unwrap();
        let (max, top1) = agreement(&got, &want, reference.config.vocab as usize);
        println!("{name}: CUDA kernels on the CPU vs f64: max |Δlogit| {max:.3e}, top-1 {top1}/{}", tokens.len());
        assert!(max <= 1e-4, "{name}: max |Δlogit| {max:e}");
        assert_eq!(top1, tokens.len(), "{name}: top-1 agreement");
    }
}

/// A device that launches one kernel wrongly: half its grid (along its largest dimension;
/// a one-block launch loses half its threads instead).
struct HalvedGrid {
    kernel: Kernel,
}

impl Device for HalvedGrid {
    type Buffer = CpuBuffer;
    fn upload(&self, words: &[u32]) -> anyhow::Result<CpuBuffer> {
        CpuDevice.upload(words)
    }
    fn zeros(&self, len: usize) -> anyhow::Result<CpuBuffer> {
        CpuDevice.zeros(len)
    }
    fn download(&self, buffer: &CpuBuffer) -> anyhow::Result<Vec<u32>> {
        CpuDevice.download(buffer)
    }
    fn launch(&self, kernel: Kernel, mut launch: Launch, args: &mut [Arg<'_, CpuBuffer>]) -> anyhow::Result<()> {
        if kernel == self.kernel {
            let widest = (0..3).max_by_key(|&i| launch.grid[i]).unwrap();
            if launch.grid[widest] > 1 {
                launch.grid[widest] /= 2;
            } else {
                launch.block[0] = (launch.block[0] / 2).max(1);
            }
        }
        CpuDevice.launch(kernel, launch, args)
    }
}

/// The comparison above can fail: halving the grid of any one kernel (so part of its output
/// is never computed) takes the logits far outside 1e-4 of the reference. The one exception
/// is by design: `scan` is a single block whose threads stride over the state channels, so
/// half the threads still cover them all, and the logits stay exact.
#[test]
fn a_halved_grid_fails_the_cuda_comparison() {
    let Some(dir) = fixtures::dir() else { return };
    let (name, reference, tokens, want) = cuda_cases(&dir).swap_remove(0);
    for kernel in Kernel::ALL {
        let got = reference_cuda::forward(&HalvedGrid { kernel }, &reference, &tokens).unwrap();
        let (max, top1) = agreement(&got, &want, reference.config.vocab as usize);
        println!("{name}, {} with half its grid: max |Δlogit| {max:.3e}, top-1 {top1}/{}", kernel.name(), tokens.len());
        if kernel == Kernel::Scan {
            assert!(max <= 1e-4 && top1 == tokens.len(), "{name}: scan's threads no longer stride over the channels");
        } else {
            assert!(max > 1e-4, "{name}: halving the grid of {} went unnoticed (max |Δ| {max:e})", kernel.name());
        }
    }
}
