#!/usr/bin/env python3
"""Our own PyTorch forward pass of an Itera-Lite checkpoint, checked against a golden file.

Loads the original `.pt` (torch.load with weights_only=True; falls back to
weights_only=False, with a note, only if that fails), dequantizes a
`quantize_dynamic` qint8 state dict as (q - zero_point) * scale, runs the golden
JSON's tokens through the model (whole sequence, float64 by default, on CUDA when
available), writes the logits in the golden layout (row-major [positions][vocab]
little-endian f32) and prints max |logit - golden|.

    python3 tools/reference/torch_reference.py GOLDEN.json [--checkpoint X.pt]
        [--out logits.f32] [--device cuda|cpu] [--dtype float64|float32] [--top-k 2] [--eps 1e-5]

The model, as itera-edge runs it (src/model.rs):
    x = E[tok] + P[pos]
    per layer: h = LN(x); [u|g] = in_proj h; v = silu(causal depthwise conv(u));
               dt = mean_j softplus(delta_proj v)_j; s = exp(dt A) s + dt B v, A = -exp(A_log);
               y = C s + D v; x += out_proj (y * silu(g))
               FFN: x += w2 gelu(w1 LN(x));  MoE: top-k of gate LN(x), softmax over picked
    logits = lm_head LN(x)
No numpy needed. Not run by CI.
"""
import argparse
import json
import sys
from array import array
from pathlib import Path

import torch
import torch.nn.functional as F

PACKED = "._packed_params._packed_params"


def dequantize(q):
    """(q - zero_point) * scale in float64, per tensor or per channel."""
    ints = q.int_repr().double()
    if q.qscheme() in (torch.per_tensor_affine, torch.per_tensor_symmetric):
        return (ints - q.q_zero_point()) * q.q_scale()
    shape = [1] * ints.dim()
    shape[q.q_per_channel_axis()] = -1
    zps = q.q_per_channel_zero_points().double().view(shape)
    return (ints - zps) * q.q_per_channel_scales().double().view(shape)


def load_state_dict(path):
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # e.g. an older torch without qtensor support in weights_only
        print(f"note: weights_only=True failed ({type(e).__name__}: {e}); loading with weights_only=False",
              file=sys.stderr)
        obj = torch.load(path, map_location="cpu", weights_only=False)
    if isinstance(obj, dict) and "model_state_dict" in obj:
        obj = obj["model_state_dict"]
    sd = {}
    for name, value in obj.items():
        if name.endswith(PACKED):  # quantize_dynamic Linear: (qint8 weight, bias or None)
            base = name[: -len(PACKED)]
            weight, bias = value[0], value[1]
            sd[base + ".weight"] = dequantize(weight)
            if bias is not None:
                sd[base + ".bias"] = bias.double()
        elif torch.is_tensor(value) and value.is_quantized:
            sd[name] = dequantize(value)
        elif torch.is_tensor(value) and value.is_floating_point():
            sd[name] = value.double()
    return sd


def forward(sd, tokens, top_k, eps, device, dtype):
    def w(name):
        return sd[name].to(device=device, dtype=dtype)

    def linear(x, base):
        y = x @ w(base + ".weight").T
        return y + w(base + ".bias") if base + ".bias" in sd else y

    def norm(x, base):
        return F.layer_norm(x, x.shape[-1:], w(base + ".weight"), w(base + ".bias"), eps)

    def mlp(h, base):
        return linear(F.gelu(linear(h, base + ".w1")), base + ".w2")  # exact (erf) GELU

    T = len(tokens)
    x = w("embedding.weight")[torch.tensor(tokens, device=device)] + w("position_embedding.weight")[:T]
    n_layers = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("layers."))
    for l in range(n_layers):
        p = f"layers.{l}."
        ug = linear(norm(x, p + "ssm.norm"), p + "ssm.in_proj")
        di = ug.shape[1] // 2
        u, g = ug[:, :di], ug[:, di:]
        conv_w = w(p + "ssm.conv1d.weight")  # [d_inner, 1, K]
        k = conv_w.shape[-1]
        # Causal depthwise conv: pad K-1 zeros before, keep the first T outputs.
        v = F.conv1d(u.T.unsqueeze(0), conv_w, w(p + "ssm.conv1d.bias"), padding=k - 1, groups=di)[0, :, :T].T
        v = F.silu(v)
        dt = F.softplus(linear(v, p + "ssm.ssm.delta_proj")).mean(dim=1)  # one step size per position
        a = -torch.exp(w(p + "ssm.ssm.A_log"))
        bu = v @ w(p + "ssm.ssm.B").T  # [T, N]
        s = torch.zeros_like(a)
        states = []
        for t in range(T):
            s = torch.exp(dt[t] * a) * s + dt[t] * bu[t]
            states.append(s)
        y = torch.stack(states) @ w(p + "ssm.ssm.C").T + w(p + "ssm.ssm.D") * v
        x = x + linear(y * F.silu(g), p + "ssm.out_proj")
        if p + "moe.layer.router.gate.weight" in sd:
            h = norm(x, p + "moe.layer.norm")
            z = linear(h, p + "moe.layer.router.gate")
            # top-k, ties to the lower index (stable descending sort)
            order = torch.sort(z, dim=-1, descending=True, stable=True).indices[:, :top_k]
            mix = torch.softmax(torch.gather(z, 1, order), dim=-1)
            out = torch.zeros_like(x)
            for e in range(z.shape[1]):
                weight = (mix * (order == e)).sum(dim=-1)  # [T], 0 where e was not picked
                if bool((order == e).any()):
                    out = out + weight[:, None] * mlp(h, p + f"moe.layer.experts.{e}")
            x = x + out
        else:
            x = x + mlp(norm(x, p + "moe.norm"), p + "moe.ffn")
    h = norm(x, "norm")
    return linear(h, "lm_head") if "lm_head.weight" in sd else h @ w("embedding.weight").T


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("golden", type=Path, help="golden JSON (tokens, vocab, logits_file, checkpoint)")
    ap.add_argument("--checkpoint", type=Path, help="default: the golden's `checkpoint`, in the fixtures folder")
    ap.add_argument("--out", type=Path, help="write the logits here (row-major [positions][vocab] LE f32)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default="float64", choices=["float64", "float32"])
    ap.add_argument("--top-k", type=int, help="experts per token (default: the golden's top_k_experts, else 2)")
    ap.add_argument("--eps", type=float, default=1e-5, help="LayerNorm epsilon")
    args = ap.parse_args()

    g = json.loads(args.golden.read_text())
    checkpoint = args.checkpoint or args.golden.resolve().parent.parent / g["checkpoint"]
    top_k = args.top_k or g.get("top_k_experts") or 2
    sd = load_state_dict(checkpoint)
    with torch.no_grad():
        logits = forward(sd, g["tokens"], top_k, args.eps, args.device, getattr(torch, args.dtype))
    logits = logits.double().cpu()
    vocab = g["vocab"]
    if tuple(logits.shape) != (len(g["tokens"]), vocab):
        sys.exit(f"error: logits have shape {tuple(logits.shape)}, the golden says {len(g['tokens'])} x {vocab}")
    if args.out:
        out = array("f", logits.flatten().tolist())
        if sys.byteorder != "little":
            out.byteswap()
        args.out.write_bytes(out.tobytes())
    ref = array("f")
    ref.frombytes((args.golden.parent / g["logits_file"]).read_bytes())
    if sys.byteorder != "little":
        ref.byteswap()
    golden = torch.tensor(ref, dtype=torch.float64).view(-1, vocab)
    diff = (logits - golden).abs()
    top1 = (logits.argmax(-1) == golden.argmax(-1)).double().mean().item()
    print(f"{args.golden.name}: {checkpoint.name} on {args.device} ({args.dtype}): "
          f"max |logit - golden| = {diff.max().item():.3e}, top-1 agreement {top1:.4f}")


if __name__ == "__main__":
    main()
