//! Seeded synthetic checkpoints: a state dict with Itera-Lite's names and shapes and random
//! weights, for demos and tests that must run without the real fixtures. The weights mean
//! nothing; the text they generate is noise.

use itera_edge::format::{for_each_expected, Config, Role};
use itera_edge::Rng;

use crate::checkpoint::{RawTensor, StateDict, TensorData};
use crate::convert::checkpoint_name;

/// The shape of `itera_lite_micro_distilled.pt`: vocab 2000, d 64, 3 layers (layer 1 MoE with
/// 4 experts of width 32, top-2), d_inner 128, state 8, conv 4, 128 positions, tied head.
pub fn micro_config() -> Config {
    Config {
        vocab: 2000,
        d_model: 64,
        n_layers: 3,
        d_inner: 128,
        d_state: 8,
        conv_kernel: 4,
        max_seq: 128,
        ffn_hidden: 32,
        n_experts: 4,
        expert_hidden: 32,
        top_k: 2,
        moe_layers: 0b010,
        norm_eps: 1e-5,
        tied_lm_head: true,
    }
}

/// A very small config (vocab 48, d 8) for exhaustive tests.
pub fn tiny_config() -> Config {
    Config {
        vocab: 48,
        d_model: 8,
        n_layers: 2,
        d_inner: 16,
        d_state: 4,
        conv_kernel: 4,
        max_seq: 16,
        ffn_hidden: 8,
        n_experts: 3,
        expert_hidden: 8,
        top_k: 2,
        moe_layers: 0b10,
        norm_eps: 1e-5,
        tied_lm_head: true,
    }
}

/// A state dict for `config` with weights drawn from `seed`, scaled like a trained model's
/// (norm weights near 1, projections ~ 1/sqrt(fan-in)), so activations stay in range.
pub fn state_dict(config: &Config, seed: u64) -> StateDict {
    let mut rng = Rng::new(seed);
    let mut tensors = Vec::new();
    let _ = for_each_expected::<()>(config, |e| {
        if e.role == Role::LmHead && config.tied_lm_head {
            return Ok(());
        }
        let [rows, cols] = e.shape.map(|v| v as usize);
        let mut uniform = |scale: f32, offset: f32| -> Vec<f32> {
            (0..rows * cols).map(|_| offset + scale * (2.0 * rng.next_f32() - 1.0)).collect()
        };
        let fan_in = (cols as f32).sqrt();
        let data = match e.role {
            Role::SsmNormWeight | Role::MixNormWeight | Role::FinalNormWeight => uniform(0.1, 1.0),
            Role::ALog => uniform(0.5, 0.0),
            Role::Embedding | Role::Position => uniform(1.0, 0.0),
            _ => uniform(1.0 / fan_in, 0.0),
        };
        let shape = match e.role {
            Role::ConvWeight => vec![rows, 1, cols],
            Role::Gate | Role::Embedding | Role::Position => vec![rows, cols],
            _ if rows == 1 => vec![cols],
            _ => vec![rows, cols],
        };
        let name = checkpoint_name(config, &e);
        tensors.push((name, RawTensor { shape, data: TensorData::F32(data), storage: None }));
        Ok(())
    });
    let source_dtypes = tensors.iter().map(|(n, _)| (n.clone(), "float32".to_string())).collect();
    StateDict { tensors, source_dtypes }
}
