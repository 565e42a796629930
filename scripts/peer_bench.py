#!/usr/bin/env python3
"""itera-edge against onnxruntime on the same weights, in one run on one thread.

Run through scripts/peer-bench, which makes the virtual environment (numpy, onnxruntime and
onnx, which onnxruntime.quantization needs) and builds itera-sim and itera-pack first.

What it does, in order:
  1. packs the published ONNX export (itera_lite_micro.onnx, the weights of
     itera_lite_int4.pt) into our f32, int8, mixed and integer blobs with
     `itera-pack convert --quant ...`, and makes onnxruntime's INT8 model of the same file
     with onnxruntime.quantization.quantize_dynamic (in a temporary folder);
  2. checks agreement first: the logits of every engine at each of the 128 positions of the
     fixtures' story sequence (golden/micro_distilled_story128.json) against onnxruntime
     FP32: max |delta logit| and top-1 agreement (ours through `itera-sim logits`). The f32
     blob must agree within --f32-tol, or nothing is timed;
  3. times, interleaved round by round (onnxruntime FP32, onnxruntime INT8, then each blob),
     prefill of 128 tokens and greedy generation, and reports the median per engine.

Both engines run on one thread: onnxruntime with intra_op and inter_op threads 1 and
sequential execution; itera-sim is single-threaded. The export's graph is fixed at [1, 128]
and returns the logits of all 128 positions, so onnxruntime's prefill is one run of the 128
story tokens and its generation is one full 128-token run per new token (the prompt padded
with <PAD>; the causal model's row p depends only on tokens 0..=p). Ours: `itera-sim bench`
(prefill of --length 128 in blocks of 8, last token's logits only; generation one step per
token from a 4-token prompt).
"""
import argparse
import json
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import tempfile
import time

SEQ = 128
PRECISIONS = ["f32", "int8", "mixed", "integer"]
# The target: our prefill against onnxruntime's, on the same weights, in one run.
TARGET = {"ort_fp32": 4.0, "ort_int8": 8.0}

EXAMPLES = """\
Examples:
  scripts/peer-bench                     # 7 rounds, the markdown table (about 30 s once installed and built)
  scripts/peer-bench --rounds 3 --json   # fewer rounds, one JSON object
  ITERA_FIXTURES=/data/itera-lite scripts/peer-bench

Run it on a quiet machine: the ratios come from one run, interleaved, so load hits every
engine alike, but a busy machine still widens the spread. Exit status 0 when every step
ran (whether or not the target is met: the table says), 1 on any failure, 2 on bad options.
Env: ITERA_FIXTURES (default ../shared/fixtures/itera-lite), ITERA_VENV (the virtual
environment, default $CARGO_TARGET_DIR/venv, as scripts/test keeps it), CARGO_TARGET_DIR.
"""


class Failure(Exception):
    """A one-line error for the user."""


def bounded_int(name, low, high, why):
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} takes a whole number, not {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{name} {value} is out of range: give {low} to {high} ({why})")
        return value

    return parse


class Parser(argparse.ArgumentParser):
    def error(self, message):
        # One line, as every error of the script; --help has the usage.
        self.exit(2, f"peer-bench: {message} (scripts/peer-bench --help)\n")


def parse_args(argv):
    p = Parser(
        prog="scripts/peer-bench",
        description="Speed and agreement of itera-edge (f32, int8, mixed and integer blobs) against "
        "onnxruntime FP32 and INT8 (quantize_dynamic) on the same weights, the published ONNX export "
        "of the Itera-Lite micro model, interleaved in one run on one thread.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--rounds", type=bounded_int("--rounds", 1, 50, "each round times every engine once; default 7"),
                   default=7, metavar="N", help="interleaved rounds, 1 to 50 (default 7)")
    p.add_argument("--gen-tokens", type=bounded_int("--gen-tokens", 1, SEQ - 4, "the export holds 128 positions "
                   "and generation starts after a 4-token prompt"), default=16, metavar="N",
                   help="tokens onnxruntime generates per round, each one full 128-token run, 1 to 124 (default 16)")
    p.add_argument("--repeat", type=bounded_int("--repeat", 1, 100, "itera-sim bench repeats per round"),
                   default=5, metavar="N", help="itera-sim bench --repeat per blob per round, 1 to 100 (default 5)")
    p.add_argument("--f32-tol", type=float, default=1e-4, metavar="X",
                   help="largest |delta logit| of our f32 blob against onnxruntime FP32 before nothing is timed "
                   "(default 1e-4, as scripts/test checks the ONNX blob)")
    p.add_argument("--fixtures", type=pathlib.Path, metavar="DIR",
                   default=pathlib.Path(os.environ.get("ITERA_FIXTURES", "../shared/fixtures/itera-lite")),
                   help="the itera-lite fixtures (default $ITERA_FIXTURES or ../shared/fixtures/itera-lite)")
    p.add_argument("--bin", type=pathlib.Path, metavar="DIR",
                   help="folder holding itera-sim and itera-pack (scripts/peer-bench gives the release build)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the markdown table")
    args = p.parse_args(argv)
    if not 0 < args.f32_tol < 1:
        p.error(f"--f32-tol {args.f32_tol} is out of range: give a value above 0 and below 1")
    return args


def fixture(args, name, what_for):
    path = args.fixtures / name
    if not path.is_file():
        raise Failure(f"missing fixture {path} ({what_for}): point ITERA_FIXTURES or --fixtures at the "
                      "itera-lite fixtures folder (README, 'Fixtures')")
    return path


def check_fixtures(args):
    onnx_path = fixture(args, "itera_lite_micro.onnx", "the published ONNX export, the weights under test")
    story = fixture(args, "golden/micro_distilled_story128.json", "the 128-token story sequence")
    return onnx_path, story


def log(msg):
    print(f"peer-bench: {msg}", file=sys.stderr, flush=True)


def run_tool(cmd):
    """Runs one of our tools; its stdout, or a Failure naming the command and its last error line."""
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True)
    if r.returncode != 0:
        last = (r.stderr.strip().splitlines() or ["(no message)"])[-1]
        raise Failure(f"{pathlib.Path(cmd[0]).name} {cmd[1]} failed (exit {r.returncode}): {last}")
    return r.stdout


def machine():
    """The CPU as /proc/cpuinfo names it (model name, family and model: a bare "AMD EPYC" says
    little), the cores this process may run on, and whether it is a virtual machine."""
    info = {}
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            info.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    cpu = info.get("model name", "unknown CPU")
    if "cpu family" in info:
        cpu += f" (family {info['cpu family']}, model {info.get('model', '?')})"
    return {"cpu": cpu, "cores": len(os.sched_getaffinity(0)), "arch": platform.machine(),
            "os": f"{platform.system()} {platform.release()}",
            "virtual_machine": "hypervisor" in info.get("flags", "").split()}


def main(argv):
    args = parse_args(argv)
    onnx_path, story_path = check_fixtures(args)
    if os.environ.get("ITERA_PEER_BENCH_PARSE_ONLY"):
        return 0  # scripts/peer-bench checks the options and fixtures before making the venv
    if args.bin is None:
        raise Failure("--bin is not given: run scripts/peer-bench, which builds the tools and passes it")
    sim, pack = args.bin / "itera-sim", args.bin / "itera-pack"
    for tool in (sim, pack):
        if not os.access(tool, os.X_OK):
            raise Failure(f"{tool} is missing: build it with cargo build --release -p itera-sim -p itera-pack")

    import logging

    import numpy as np
    import onnxruntime as ort

    try:
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError as e:
        raise Failure(f"onnxruntime.quantization cannot load ({e}): pip install onnx in the venv") from None

    started = time.time()
    story = json.loads(story_path.read_text())["tokens"][:SEQ]
    if len(story) != SEQ:
        raise Failure(f"{story_path} holds {len(story)} tokens; {SEQ} are needed")

    with tempfile.TemporaryDirectory(prefix="peer-bench-") as tmp:
        tmp = pathlib.Path(tmp)
        # 1. The engines, all from the one ONNX file.
        blobs = {}
        for q in PRECISIONS:
            blobs[q] = tmp / f"micro_{q}.itb"
            log(f"itera-pack convert {onnx_path.name} --quant {q}")
            run_tool([pack, "convert", onnx_path, "-o", blobs[q], "--quant", q])
        int8_onnx = tmp / "itera_lite_micro_int8.onnx"
        log("onnxruntime.quantization.quantize_dynamic (INT8 weights, about 10-40 s)")
        # Its warnings (no pre-processing run; the MoE's NonZero outputs are int64 indices,
        # nothing to quantize) say nothing about the result: silence them.
        logging.disable(logging.WARNING)
        try:
            quantize_dynamic(str(onnx_path), str(int8_onnx), weight_type=QuantType.QInt8)
        finally:
            logging.disable(logging.NOTSET)

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        sessions = {
            "ort_fp32": ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"]),
            "ort_int8": ort.InferenceSession(str(int8_onnx), opts, providers=["CPUExecutionProvider"]),
        }
        input_name = sessions["ort_fp32"].get_inputs()[0].name

        def ort_logits(name, tokens):
            (out,) = sessions[name].run(None, {input_name: np.array([tokens], dtype=np.int64)})
            return np.asarray(out, dtype=np.float32)[0]

        # 2. Agreement first, against onnxruntime FP32 over the 128 story positions.
        reference = ort_logits("ort_fp32", story)
        vocab = reference.shape[1]

        def agreement(logits):
            if logits.shape != reference.shape or not np.isfinite(logits).all():
                raise Failure(f"logits of shape {logits.shape} (finite: {np.isfinite(logits).all()}); "
                              f"{reference.shape} finite values are needed")
            top1 = int((logits.argmax(axis=1) == reference.argmax(axis=1)).sum())
            return {"max_abs_dlogit": float(np.abs(logits - reference).max()), "top1_agree": top1, "positions": SEQ}

        agree = {"ort_int8": agreement(ort_logits("ort_int8", story))}
        ids = ",".join(map(str, story))
        for q, blob in blobs.items():
            out = tmp / f"logits_{q}.f32"
            run_tool([sim, "logits", blob, "--tokens", ids, "-o", out])
            agree[q] = agreement(np.fromfile(out, dtype="<f4").reshape(-1, vocab))
        log("agreement with onnxruntime FP32: " + ", ".join(
            f"{k} {v['max_abs_dlogit']:.2e} / top-1 {v['top1_agree']}/{SEQ}" for k, v in agree.items()))
        if agree["f32"]["max_abs_dlogit"] > args.f32_tol:
            raise Failure(f"our f32 blob differs from onnxruntime FP32 by {agree['f32']['max_abs_dlogit']:.3g} "
                          f"(> --f32-tol {args.f32_tol:g}): not the same model, so nothing is timed")

        # 3. Speed, interleaved.
        prompt = story[:4]

        def ort_prefill(name):
            x = {input_name: np.array([story], dtype=np.int64)}
            t = time.perf_counter()
            sessions[name].run(None, x)
            return SEQ / (time.perf_counter() - t)

        def ort_generate(name, n):
            # One full [1, 128] run per new token: the graph takes nothing else.
            seq, secs = list(prompt), 0.0
            for _ in range(n):
                x = {input_name: np.array([seq + [0] * (SEQ - len(seq))], dtype=np.int64)}
                t = time.perf_counter()
                (out,) = sessions[name].run(None, x)
                secs += time.perf_counter() - t
                seq.append(int(out[0, len(seq) - 1].argmax()))
            return n / secs

        for name in sessions:  # warm-up, untimed
            ort_prefill(name)
            ort_generate(name, 2)
        samples = {k: {"prefill": [], "generate": []} for k in [*sessions, *blobs]}
        bench_info = {}
        for r in range(args.rounds):
            log(f"round {r + 1}/{args.rounds}")
            for name in sessions:
                samples[name]["prefill"] += [ort_prefill(name) for _ in range(3)]
                samples[name]["generate"].append(ort_generate(name, args.gen_tokens))
            for q, blob in blobs.items():
                d = json.loads(run_tool([sim, "bench", blob, "--length", SEQ, "--repeat", args.repeat, "--json"]))
                samples[q]["prefill"] += d["prefill_runs"]
                samples[q]["generate"] += d["generate_runs"]
                bench_info[q] = {"kernel": d["kernel"], "blob_bytes": d["blob_bytes"], "prefill_tokens": d["prefill_tokens"]}

        engines = {}
        sizes = {"ort_fp32": onnx_path.stat().st_size, "ort_int8": int8_onnx.stat().st_size}
        for name, s in samples.items():
            e = {"prefill_tok_per_s": statistics.median(s["prefill"]),
                 "generate_tok_per_s": statistics.median(s["generate"]),
                 "prefill_samples": len(s["prefill"]), "generate_samples": len(s["generate"])}
            if name in sizes:
                e.update(engine=f"onnxruntime {'FP32' if name == 'ort_fp32' else 'INT8 (quantize_dynamic)'}",
                         bytes=sizes[name], kernel="CPUExecutionProvider")
            else:
                e.update(engine=f"itera-edge {name}", bytes=bench_info[name]["blob_bytes"],
                         kernel=bench_info[name]["kernel"])
            if name != "ort_fp32":
                e["agreement"] = agree[name]
            engines[name] = e
        fp32 = engines["ort_fp32"]
        engines["ort_int8"]["ratio"] = {f"{kind}_vs_ort_fp32": engines["ort_int8"][f"{kind}_tok_per_s"]
                                        / fp32[f"{kind}_tok_per_s"] for kind in ("prefill", "generate")}
        for name, e in engines.items():
            if name in blobs:
                e["ratio"] = {f"{kind}_vs_{ref}": e[f"{kind}_tok_per_s"] / engines[ref][f"{kind}_tok_per_s"]
                              for kind in ("prefill", "generate") for ref in TARGET}
                # ORT's prefill computes the logits of all 128 positions; our generation rate is
                # a step with logits per token, so this ratio compares like work.
                e["ratio"]["all_logits_vs_ort_fp32"] = e["generate_tok_per_s"] / fp32["prefill_tok_per_s"]
                e["target"] = {ref: {"ratio": e["ratio"][f"prefill_vs_{ref}"], "needed": x,
                                     "met": e["ratio"][f"prefill_vs_{ref}"] >= x} for ref, x in TARGET.items()}
                e["target_met"] = all(t["met"] for t in e["target"].values())

    import onnx

    report = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(started)),
        "machine": machine(),
        "threads": 1,
        "versions": {"onnxruntime": ort.__version__, "onnx": onnx.__version__, "numpy": np.__version__,
                     "python": platform.python_version(),
                     "itera-sim": run_tool([sim, "--version"]).split()[-1]},
        "model": {"onnx": onnx_path.name, "same_weights_as": "itera_lite_int4.pt",
                  "blobs_packed_from": onnx_path.name, "sequence": f"{story_path.name} tokens[0:{SEQ}]"},
        "settings": {"rounds": args.rounds, "ort_gen_tokens_per_round": args.gen_tokens,
                     "ort_prefill_runs_per_round": 3, "itera_sim_bench_repeat": args.repeat, "length": SEQ},
        "target": {"prefill_vs_ort_fp32": TARGET["ort_fp32"], "prefill_vs_ort_int8": TARGET["ort_int8"]},
        "engines": engines,
        "seconds": round(time.time() - started, 1),
    }
    print(json.dumps(report, indent=2) if args.json else render(report))
    return 0


def render(rep):
    m, v, s = rep["machine"], rep["versions"], rep["settings"]
    out = [
        "| engine | bytes | max \\|Δlogit\\| vs ORT FP32 | top-1 vs ORT FP32 | prefill tok/s | gen tok/s "
        "| prefill / ORT FP32 | prefill / ORT INT8 | gen / ORT FP32 | gen / ORT INT8 | kernel |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, e in rep["engines"].items():
        a = e.get("agreement")
        agree = (f"{a['max_abs_dlogit']:.1e} | {a['top1_agree']}/{a['positions']}" if a else "(reference) | (reference)")
        r = e.get("ratio", {})
        ratios = " | ".join(f"{r[k]:,.2f}x" if k in r else "-" for k in (
            "prefill_vs_ort_fp32", "prefill_vs_ort_int8", "generate_vs_ort_fp32", "generate_vs_ort_int8"))
        out.append(f"| {e['engine']} | {e['bytes']:,} | {agree} | {e['prefill_tok_per_s']:,.0f} | "
                   f"{e['generate_tok_per_s']:,.0f} | {ratios} | {e['kernel']} |")
    out.append("")
    t = rep["target"]
    verdicts, all_logits = [], []
    for name, e in rep["engines"].items():
        if "target" not in e:
            continue
        misses = [f"{g['ratio']:.2f}x of {g['needed']:g}x vs ORT {ref[4:].upper()}, "
                  f"{100 * (1 - g['ratio'] / g['needed']):.0f}% short"
                  for ref, g in e["target"].items() if not g["met"]]
        verdicts.append(f"{name} met" if not misses else f"{name} MISSED ({'; '.join(misses)})")
        all_logits.append(f"{name} {e['ratio']['all_logits_vs_ort_fp32']:.2f}x")
    out += [
        f"Target (prefill >= {t['prefill_vs_ort_fp32']:g}x ORT FP32 and >= {t['prefill_vs_ort_int8']:g}x ORT INT8): "
        + ", ".join(verdicts) + ".",
        "",
        "Logits at all 128 positions, the work ORT's prefill does (our generation rate, one step with "
        "logits per token, over ORT FP32's prefill rate): " + ", ".join(all_logits) + ".",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores ({m['arch']}, {m['os']}"
        f"{', a virtual machine' if m['virtual_machine'] else ''}); one thread per engine "
        "(onnxruntime intra_op = inter_op = 1, sequential; itera-sim is single-threaded).",
        f"Date: {rep['date']}. Versions: onnxruntime {v['onnxruntime']}, onnx {v['onnx']}, numpy {v['numpy']}, "
        f"Python {v['python']}, itera-sim {v['itera-sim']}.",
        f"Weights: {rep['model']['onnx']} (those of {rep['model']['same_weights_as']}); our blobs packed from the "
        f".onnx itself (itera-pack convert --quant f32|int8|mixed|integer); ORT INT8 is quantize_dynamic(QInt8) "
        f"of the same file. Agreement over the {s['length']} positions of {rep['model']['sequence']}.",
        f"Speed: medians over {s['rounds']} interleaved round{'s' if s['rounds'] > 1 else ''} (each: ORT FP32, ORT INT8, then each blob). "
        f"ORT prefill = one run of the 128 story tokens (it computes logits at all 128 positions; ours only the "
        f"last), {s['ort_prefill_runs_per_round']} per round; ORT generation = one full 128-token run per new "
        f"token (its fixed [1, 128] graph allows nothing else), {s['ort_gen_tokens_per_round']} tokens per round. "
        f"Ours: itera-sim bench --length {s['length']} --repeat {s['itera_sim_bench_repeat']} per round "
        "(its own fixed token sequence; prefill in blocks of 8; generation one step per token).",
        f"Run time: {rep['seconds']:.0f} s.",
    ]
    return "\n".join(out)


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except Failure as e:
        print(f"peer-bench: {e}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as e:  # onnxruntime, numpy or the OS: still one line, with what failed
        print(f"peer-bench: {type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}",
              file=sys.stderr)
        sys.exit(1)
