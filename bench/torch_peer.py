"""Measure PyTorch's CPU speed on a Hugging Face GPT-2 folder, as the peer of `zq bench`.

Usage:
  torch_peer.py --model HF_DIR --engine fp32|int8 --threads N [--prompt-len 512 --decode 128
                --repeats 3 --json OUT] [--omp-threads N --blas-threads M | --sweep]
  torch_peer.py --model tests/fixtures/tiny-random --check-ref tests/fixtures/tiny-random-ref

The model is bench/torch_gpt2.py: eager PyTorch, nn.Linear projections, tied head, KV cache.
int8 is torch.quantization.quantize_dynamic on every nn.Linear, the output head included.
Each run loads the model, warms up with one prefill and a few decode steps, then repeats:
prefill of a fixed prompt (token ids from a seeded RNG over the vocabulary's non-special
tokens), the first token by argmax, and greedy decoding of --decode more tokens one at a time.
It reports the median of the repeats. peak_rss_mb includes what importing torch costs, which
import_rss_mb reports alone.

Thread settings must be in the environment before torch is imported, so this script sets
OMP_NUM_THREADS (PyTorch's intra-op pool, and oneDNN's) and OPENBLAS_NUM_THREADS (the fp32
matrix products) itself. Both pools spin, so giving both N threads on N cores oversubscribes
the cores; --sweep runs every combination in its own process and keeps the fastest decode.

After an fp32 run, the same prompt's logits through the KV-cache path are compared with a
float64 copy of the model run over the whole sequence, and the run fails if they differ by
more than FP64_TOLERANCE. The peak RSS is read before that check.
"""
import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

FP64_TOLERANCE = 1e-3
FIXTURE_TOLERANCE = 1e-4
CHECK_PROMPT_LEN = 24
WARMUP_DECODE = 4
QENGINES = ("onednn", "qnnpack")


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="Hugging Face GPT-2 folder")
    p.add_argument("--engine", choices=("fp32", "int8"), default="fp32",
                   help="fp32, or int8 by quantize_dynamic (default fp32)")
    p.add_argument("--threads", type=int, default=1, help="cores to use (default 1)")
    p.add_argument("--omp-threads", type=int,
                   help="OMP_NUM_THREADS and torch.set_num_threads (default 1 for fp32, "
                        "--threads for int8)")
    p.add_argument("--blas-threads", type=int,
                   help="OPENBLAS_NUM_THREADS (default --threads for fp32, 1 for int8)")
    p.add_argument("--sweep", action="store_true",
                   help="try each OMP/OpenBLAS thread combination up to --threads in a "
                        "separate process and report the one with the fastest decode")
    p.add_argument("--qengine", choices=QENGINES,
                   help="torch.backends.quantized.engine for int8 (default onednn; --sweep "
                        "tries both unless this is given)")
    p.add_argument("--prompt-len", type=int, default=512, help="prompt tokens (default 512)")
    p.add_argument("--decode", type=int, default=128, help="tokens to generate (default 128)")
    p.add_argument("--repeats", type=int, default=3, help="timed runs; reports the median")
    p.add_argument("--seed", type=int, default=1, help="seed of the prompt's token ids")
    p.add_argument("--json", help="append the result record to this file (JSON Lines)")
    p.add_argument("--check-ref", metavar="REF_DIR",
                   help="compare logits with REF_DIR/reference.json and its logits_<i>.f32 "
                        "(float64 reference) instead of benchmarking")
    args = p.parse_args()
    if args.threads < 1 or args.repeats < 1 or args.decode < 1 or args.prompt_len < 1:
        p.error("--threads, --repeats, --decode and --prompt-len must be at least 1")
    # fp32 spends its time in OpenBLAS, and int8 in oneDNN or qnnpack on the OpenMP pool.
    if args.omp_threads is None:
        args.omp_threads = args.threads if args.engine == "int8" else 1
    if args.blas_threads is None:
        args.blas_threads = 1 if args.engine == "int8" else args.threads
    if args.qengine is None and args.engine == "int8" and not args.sweep:
        args.qengine = "onednn"
    return args


def set_thread_environment(omp_threads, blas_threads):
    os.environ["OMP_NUM_THREADS"] = str(omp_threads)
    os.environ["OPENBLAS_NUM_THREADS"] = str(blas_threads)
    os.environ["MKL_NUM_THREADS"] = str(blas_threads)


def peak_rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def prompt_ids(model_dir, length, seed):
    """Draw token ids uniformly from the vocabulary lines that are not bracketed specials
    such as [CLS] or [unused5]."""
    with open(os.path.join(model_dir, "vocab.txt"), encoding="utf-8") as f:
        vocab = [line.rstrip("\n") for line in f]
    ordinary = [i for i, t in enumerate(vocab) if not (t.startswith("[") and t.endswith("]"))]
    g = torch.Generator().manual_seed(seed)
    picks = torch.randint(len(ordinary), (length,), generator=g)
    return torch.tensor([ordinary[i] for i in picks]).view(1, -1)


def generate(model, cache, prompt, n_decode):
    """Prefill prompt, pick the first token, decode n_decode more. Returns seconds taken by
    (prefill, prefill + first token, decode) and the generated ids."""
    start = time.perf_counter()
    logits = model(prompt, cache, 0)
    prefilled = time.perf_counter()
    token = logits.argmax(-1, keepdim=True)
    first = time.perf_counter()
    out = [int(token)]
    pos = prompt.shape[1]
    for _ in range(n_decode):
        token = model(token, cache, pos).argmax(-1, keepdim=True)
        out.append(int(token))
        pos += 1
    done = time.perf_counter()
    return prefilled - start, first - start, done - first, out


def benchmark(args):
    import_rss = peak_rss_mib()
    file_bytes = os.path.getsize(os.path.join(args.model, "model.safetensors"))
    start = time.perf_counter()
    model, cfg = torch_gpt2.load_model(args.model)
    n_int8 = 0
    if args.engine == "int8":
        n_int8 = torch_gpt2.quantize_int8(model, args.qengine)
        print(f"int8: {n_int8} DynamicQuantizedLinear modules (4 per block and the output "
              f"head), engine {args.qengine}", file=sys.stderr)
    load_s = time.perf_counter() - start
    if args.prompt_len + args.decode > cfg["n_positions"]:
        raise SystemExit(f"error: --prompt-len {args.prompt_len} + --decode {args.decode} "
                         f"exceeds the model's n_positions {cfg['n_positions']}")

    prompt = prompt_ids(args.model, args.prompt_len, args.seed)
    cache = model.new_cache()
    runs = []
    with torch.inference_mode():
        generate(model, cache, prompt, WARMUP_DECODE)
        for _ in range(args.repeats):
            prefill_s, ttft_s, decode_s, tokens = generate(model, cache, prompt, args.decode)
            runs.append({"prefill_tok_s": round(args.prompt_len / prefill_s, 2),
                         "decode_tok_s": round(args.decode / decode_s, 2),
                         "ttft_ms": round(1e3 * ttft_s, 2)})
    peak = peak_rss_mib()

    record = {"engine": "pytorch", "type": args.engine, "threads": args.threads,
              "model": os.path.basename(os.path.normpath(args.model))}
    for key in ("prefill_tok_s", "decode_tok_s", "ttft_ms"):
        record[key] = round(statistics.median(r[key] for r in runs), 2)
    record.update({
        "peak_rss_mb": round(peak, 1), "import_rss_mb": round(import_rss, 1),
        "file_mb": round(file_bytes / 2**20, 1),
        "load_s": round(load_s, 3), "prompt_len": args.prompt_len, "decode": args.decode,
        "repeats": args.repeats, "omp_threads": args.omp_threads,
        "blas_threads": args.blas_threads, "torch": torch.__version__,
        "int8_modules": n_int8, "qengine": args.qengine if args.engine == "int8" else None,
        "first_tokens": tokens[:8], "runs": runs})
    if args.engine == "fp32":
        record["fp64_max_abs_diff"] = check_against_fp64(model, args.model, prompt)
    return record


def cached_logits(model, ids, n_prefill):
    """Logits [T, V] for ids [1, T]: one call for the first n_prefill tokens, then one call per
    token, so that the KV-cache path is what gets checked."""
    cache = model.new_cache()
    rows = [model(ids[:, :n_prefill], cache, 0, all_logits=True)[0]]
    for pos in range(n_prefill, ids.shape[1]):
        rows.append(model(ids[:, pos:pos + 1], cache, pos))
    return torch.cat(rows)


def check_against_fp64(model, model_dir, prompt):
    ids = prompt[:, :CHECK_PROMPT_LEN]
    reference, _ = torch_gpt2.load_model(model_dir)
    reference.double()
    with torch.inference_mode():
        expected = reference(ids, reference.new_cache(), 0, all_logits=True)[0]
        got = cached_logits(model, ids, ids.shape[1] // 2).double()
    diff = float((got - expected).abs().max())
    print(f"fp32 KV-cache logits vs float64 full forward, {ids.shape[1]} tokens: "
          f"max abs diff {diff:.3g}", file=sys.stderr)
    if not diff <= FP64_TOLERANCE:
        raise SystemExit(f"error: fp32 logits differ from float64 by {diff:.3g}, more than "
                         f"{FP64_TOLERANCE}")
    return diff


def check_fixture(model_dir, ref_dir):
    """Compare full-sequence and KV-cache logits with a float64 reference written by an
    independent implementation. Returns the number of prompts that failed."""
    import numpy as np

    model, _ = torch_gpt2.load_model(model_dir)
    with open(os.path.join(ref_dir, "reference.json"), encoding="utf-8") as f:
        prompts = json.load(f)["prompts"]
    failures = 0
    for p in prompts:
        ids = torch.tensor([p["ids"]])
        raw = np.fromfile(os.path.join(ref_dir, p["logits_file"]), dtype="<f4")
        expected = torch.from_numpy(raw).view(len(p["ids"]), -1)
        with torch.inference_mode():
            full = model(ids, model.new_cache(), 0, all_logits=True)[0]
            cached = cached_logits(model, ids, max(1, len(p["ids"]) // 2))
        diff = max(float((full - expected).abs().max()), float((cached - expected).abs().max()))
        ok = diff <= FIXTURE_TOLERANCE
        failures += not ok
        print(f"{'PASS' if ok else 'FAIL'} {p['logits_file']} {len(p['ids'])} tokens: "
              f"max abs diff {diff:.3g} (tolerance {FIXTURE_TOLERANCE})")
    return failures


def sweep(args):
    """Run every thread combination (and, for int8, quantized engine) in a child process.

    Returns the record of the fastest decode, with prefill_tok_s and ttft_ms replaced by the
    best values of any combination. Its "best_settings" names the combination behind each of
    the three values, and "sweep" lists every result.
    """
    counts = sorted({1, args.threads})
    qengines = [args.qengine] if args.qengine or args.engine == "fp32" else list(QENGINES)
    records = []
    for qengine in qengines:
        for omp in counts:
            for blas in counts:
                records.append(run_child(args, omp, blas, qengine))

    def settings(r):
        engine = f"{r['qengine']} " if r["qengine"] else ""
        return f"{engine}OMP {r['omp_threads']} OpenBLAS {r['blas_threads']}"

    best = dict(max(records, key=lambda r: r["decode_tok_s"]))
    fastest_prefill = max(records, key=lambda r: r["prefill_tok_s"])
    fastest_ttft = min(records, key=lambda r: r["ttft_ms"])
    best["prefill_tok_s"] = fastest_prefill["prefill_tok_s"]
    best["ttft_ms"] = fastest_ttft["ttft_ms"]
    best["best_settings"] = {"prefill_tok_s": settings(fastest_prefill),
                             "decode_tok_s": settings(best), "ttft_ms": settings(fastest_ttft)}
    keys = ("qengine", "omp_threads", "blas_threads", "prefill_tok_s", "decode_tok_s",
            "ttft_ms", "peak_rss_mb")
    best["sweep"] = [{k: r[k] for k in keys} for r in records]
    return best


def run_child(args, omp, blas, qengine):
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        cmd = [sys.executable, os.path.abspath(__file__), "--model", args.model,
               "--engine", args.engine, "--threads", str(args.threads),
               "--omp-threads", str(omp), "--blas-threads", str(blas),
               "--prompt-len", str(args.prompt_len), "--decode", str(args.decode),
               "--repeats", str(args.repeats), "--seed", str(args.seed), "--json", out.name]
        if qengine:
            cmd += ["--qengine", qengine]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        with open(out.name, encoding="utf-8") as f:
            record = json.loads(f.readline())
    print(f"sweep: qengine {qengine} OMP {omp} OpenBLAS {blas}: prefill "
          f"{record['prefill_tok_s']} tok/s, decode {record['decode_tok_s']} tok/s",
          file=sys.stderr)
    return record


def main():
    # torch is imported only here, after the thread variables are set, because OpenMP and
    # OpenBLAS read them once, when the libraries load.
    global torch, torch_gpt2
    args = parse_args()
    if args.sweep and not args.check_ref:
        record = sweep(args)
    else:
        set_thread_environment(args.omp_threads, args.blas_threads)
        import torch
        import torch_gpt2

        if args.check_ref:
            sys.exit(1 if check_fixture(args.model, args.check_ref) else 0)
        torch.set_num_threads(args.omp_threads)
        record = benchmark(args)
    line = json.dumps(record, ensure_ascii=False)
    print(line)
    if args.json:
        with open(args.json, "a", encoding="utf-8") as f:
            f.write(line + "\n")


if __name__ == "__main__":
    main()
