"""Collect the benchmark's JSON lines into results.json and write RESULTS.md and chart.png.

Usage:
  report.py --collect PARTS_DIR --target-model NAME --synth-dir HF_DIR --zq-dir DIR
            [--seconds S] --out results.json --md RESULTS.md --chart chart.png
  report.py results.json --md RESULTS.md --chart chart.png

PARTS_DIR contains what bench/run.sh gathered: bandwidth.jsonl (`zq bench bandwidth --json`,
one or more records per thread count, of which the best counts),
kernels.jsonl (`zq bench kernels --json`) and records.jsonl (`zq bench model --json` and
bench/torch_peer.py). The decode limit of a model is the read bandwidth divided by the bytes of
weights that one decoded token reads, which `zq bench model` reports for its int8 file. The
targets are ratios between records of the same run, for the target model, int8, 2 threads.
"""
import argparse
import datetime
import json
import os
import platform
import subprocess
import sys

TARGET_THREADS = 2
KERNEL_ORDER = ("ref", "avx2", "avx512vnni", "neon", "neondot")
CPU_FLAGS = ("avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni")


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("results", nargs="?", help="results.json to report on (without --collect)")
    p.add_argument("--collect", metavar="PARTS_DIR", help="build results.json from JSON lines")
    p.add_argument("--target-model", help="model whose int8 records the targets are about")
    p.add_argument("--synth-dir", help="Hugging Face folder of the target model")
    p.add_argument("--zq-dir", help="folder with the MODEL-TYPE.zq files")
    p.add_argument("--seconds", type=float, help="duration of the benchmark run")
    p.add_argument("--nice", type=int, default=0, help="nice value of the measured processes")
    p.add_argument("--out", help="results.json to write (with --collect)")
    p.add_argument("--md", required=True, help="Markdown report to write")
    p.add_argument("--chart", required=True, help="PNG bar chart to write")
    args = p.parse_args()
    if args.collect:
        missing = [o for o in ("target_model", "synth_dir", "zq_dir", "out")
                   if getattr(args, o) is None]
        if missing:
            p.error("--collect needs " + ", ".join("--" + m.replace("_", "-") for m in missing))
    elif not args.results:
        p.error("expected results.json or --collect PARTS_DIR")
    return args


def read_jsonl(path):
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def cpu_model():
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError:
        return platform.processor() or platform.machine(), []
    model, flags = platform.machine(), []
    for line in lines:
        key, _, value = line.partition(":")
        if key.strip() == "model name" and model == platform.machine():
            model = value.strip()
        elif key.strip() == "flags" and not flags:
            flags = [f for f in CPU_FLAGS if f in value.split()]
    return model, flags


def git_commit():
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True).stdout.strip()
        return out.stdout.strip() + ("+changes" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def machine_info(parts_dir):
    model, flags = cpu_model()
    load = {}
    start = os.path.join(parts_dir, "loadavg_start.txt")
    if os.path.exists(start):
        with open(start, encoding="utf-8") as f:
            load["start"] = [float(x) for x in f.read().split()[:3]]
    load["end"] = [round(x, 2) for x in os.getloadavg()]
    return {"cpu": model, "cores": os.cpu_count(), "flags": flags, "loadavg": load,
            "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "os": platform.platform(), "zq_commit": git_commit()}


def decode_limits(bandwidth, records):
    """Tokens/s at which decoding would read the weights at the measured bandwidth."""
    limits = {}
    for r in records:
        if r["engine"] == "zq" and r["type"] == "int8" and r["model"] not in limits:
            mb = r["weights_mb_per_token"]
            kv = r.get("kv_mb_per_token", 0.0)
            limits[r["model"]] = {"weights_mb_per_token": mb, "kv_mb_per_token": kv}
            for threads, gb_s in bandwidth.items():
                limits[r["model"]][threads] = round(gb_s * 1e3 / mb, 1)
                limits[r["model"]][threads + "_with_kv"] = round(gb_s * 1e3 / (mb + kv), 1)
    return limits


def file_sizes(args):
    sizes = {"safetensors_mb": os.path.getsize(os.path.join(args.synth_dir, "model.safetensors"))
             / 2**20}
    for t in ("f32", "f16", "int8"):
        path = os.path.join(args.zq_dir, f"{args.target_model}-{t}.zq")
        if os.path.exists(path):
            sizes[f"zq_{t}_mb"] = os.path.getsize(path) / 2**20
    return {k: round(v, 2) for k, v in sizes.items()}


def best_records(records):
    """Keep, of the records of one configuration (several processes), the fastest decode and
    count the processes in "processes"."""
    best, order = {}, []
    for r in records:
        key = (r["model"], r["engine"], r["type"], r["threads"], r.get("kernels"))
        if key not in best:
            order.append(key)
            best[key] = dict(r, processes=0)
        count = best[key]["processes"] + 1
        if r["decode_tok_s"] > best[key]["decode_tok_s"]:
            best[key] = dict(r)
        best[key]["processes"] = count
    return [best[k] for k in order]


def read_profiles(parts_dir):
    """Parse bench/profile.sh outputs (profile_KERNELS_THREADS.txt) into
    {"KERNELS_THREADS": {"decode": {step: us per token}, "prefill": {...}, "decode_tok_s": x}}."""
    profiles = {}
    for name in sorted(os.listdir(parts_dir)):
        if not (name.startswith("profile_") and name.endswith(".txt")):
            continue
        entry, phase = {}, None
        with open(os.path.join(parts_dir, name), encoding="utf-8") as f:
            for line in f:
                words = line.split()
                if line.startswith("profile "):
                    phase = words[1].rstrip(":")
                    entry[phase] = {}
                elif phase and line.startswith("  ") and len(words) >= 5:
                    entry[phase][words[0]] = float(words[-2])
                elif line.startswith("decode:"):
                    entry["decode_tok_s"] = float(words[1])
                elif line.startswith("prefill:"):
                    entry["prefill_tok_s"] = float(words[1])
        profiles[name[len("profile_"):-len(".txt")]] = entry
    return profiles


def collect(args):
    bandwidth_runs = read_jsonl(os.path.join(args.collect, "bandwidth.jsonl"))
    bandwidth = {}
    for r in bandwidth_runs:
        key = str(r["threads"])
        bandwidth[key] = max(bandwidth.get(key, 0.0), r["gb_s"])
    all_records = read_jsonl(os.path.join(args.collect, "records.jsonl"))
    for r in all_records:  # the reads of the zq model processes count too
        if r["engine"] == "zq" and r.get("bandwidth_gb_s"):
            key = str(r["threads"])
            bandwidth[key] = max(bandwidth.get(key, 0.0), r["bandwidth_gb_s"])
    records = best_records(all_records)
    results = {
        "machine": machine_info(args.collect),
        "target_model": args.target_model,
        "duration_s": args.seconds,
        "nice": args.nice,
        "bandwidth_gb_s": bandwidth,
        "bandwidth_runs": bandwidth_runs,
        "decode_limit_tok_s": decode_limits(bandwidth, records),
        "target_sizes_mb": file_sizes(args),
        "kernels": read_jsonl(os.path.join(args.collect, "kernels.jsonl")),
        "profile": read_profiles(args.collect),
        "records": records,
    }
    results["targets"] = targets(results)
    return results


# ---- targets ---------------------------------------------------------------------------------

def find(records, model, engine, type_, threads, kernels=None):
    for r in records:
        if (r["model"], r["engine"], r["type"], r["threads"]) == (model, engine, type_, threads) \
                and (kernels is None or r.get("kernels") == kernels):
            return r
    return None


def ratio(a, b):
    return a / b if a is not None and b else None


def process_limit(record):
    """Decode limit of a record from the bandwidth its own process read after decoding."""
    if not record or not record.get("bandwidth_gb_s"):
        return None
    return record["bandwidth_gb_s"] * 1e3 / record["weights_mb_per_token"]


def target_rows(results, zq_int8):
    """Return the target ratios for one zq int8 record; None where a record is missing."""
    recs, model, t = results["records"], results["target_model"], TARGET_THREADS
    pt_fp32 = find(recs, model, "pytorch", "fp32", t)
    pt_int8 = find(recs, model, "pytorch", "int8", t)
    zq_f32 = find(recs, model, "zq", "f32", t)
    run_limit = results["decode_limit_tok_s"].get(model, {}).get(str(t))
    limit = process_limit(zq_int8) or run_limit
    sizes = results["target_sizes_mb"]
    get = lambda r, k: r[k] if r else None  # noqa: E731
    return [
        ("decode vs PyTorch fp32", ratio(get(zq_int8, "decode_tok_s"),
                                         get(pt_fp32, "decode_tok_s")), ">=", 3.0),
        ("decode vs PyTorch int8", ratio(get(zq_int8, "decode_tok_s"),
                                         get(pt_int8, "decode_tok_s")), ">=", 2.0),
        ("decode vs bandwidth limit", ratio(get(zq_int8, "decode_tok_s"), limit), ">=", 0.7),
        ("decode vs limit at the run's best bandwidth", ratio(get(zq_int8, "decode_tok_s"),
                                                              run_limit), None, None),
        ("prefill vs PyTorch fp32", ratio(get(zq_int8, "prefill_tok_s"),
                                          get(pt_fp32, "prefill_tok_s")), ">=", 2.0),
        ("peak RSS int8 / f32", ratio(get(zq_int8, "peak_rss_mb"), get(zq_f32, "peak_rss_mb")),
         "<=", 0.4),
        (".zq int8 / f32 safetensors size", ratio(sizes.get("zq_int8_mb"),
                                                  sizes.get("safetensors_mb")), "<=", 0.3),
    ]


def targets(results):
    out = []
    model, t = results["target_model"], TARGET_THREADS
    variants = sorted({r.get("kernels") for r in results["records"]
                       if (r["model"], r["engine"], r["type"], r["threads"])
                       == (model, "zq", "int8", t)})
    for kernels in variants:
        zq_int8 = find(results["records"], model, "zq", "int8", t, kernels)
        for name, value, op, goal in target_rows(results, zq_int8):
            passed = None
            if value is not None and op is not None:
                passed = value >= goal if op == ">=" else value <= goal
            out.append({"target": name, "kernels": kernels, "value": value and round(value, 3),
                        "goal": f"{op} {goal}" if op else "(for reference)", "pass": passed})
    return out


# ---- Markdown --------------------------------------------------------------------------------

def fmt(x, digits=1):
    return "–" if x is None else f"{x:,.{digits}f}"


def record_note(r):
    if r["engine"] == "zq":
        note = f"kernels {r.get('kernels', '?')}"
        if r.get("processes", 1) > 1:
            note += f", faster of {r['processes']} processes"
        if r.get("bandwidth_gb_s"):
            note += f", read bandwidth {r['bandwidth_gb_s']} GB/s"
        return note
    note = f"OMP {r.get('omp_threads')}, BLAS {r.get('blas_threads')}"
    if r["type"] == "int8":
        note += f", {r.get('qengine')}"
    return note


def model_table(records, model):
    rows = [r for r in records if r["model"] == model]
    rows.sort(key=lambda r: (r["engine"] != "zq", r["engine"], r["type"], r["threads"],
                             r.get("kernels") or ""))
    lines = ["| engine | type | threads | prefill tok/s | decode tok/s | TTFT ms | peak RSS MiB "
             "| file MiB | load s | notes |", "|" + "---|" * 10]
    for r in rows:
        lines.append(f"| {r['engine']} | {r['type']} | {r['threads']} | "
                     f"{fmt(r['prefill_tok_s'])} | {fmt(r['decode_tok_s'])} | "
                     f"{fmt(r['ttft_ms'])} | {fmt(r['peak_rss_mb'])} | {fmt(r['file_mb'])} | "
                     f"{fmt(r['load_s'], 3)} | {record_note(r)} |")
    return lines


def kernel_tables(kernels):
    """Build one table for M = 1 (weight GB/s) and one for M > 1 (GOPS), a column per
    kernel and type."""
    out = []
    for m_is_one, metric, label in ((True, "weight_gb_s", "GB/s of weights read"),
                                    (False, "gops", "GOPS (2 M N K per second)")):
        rows = [k for k in kernels if (k["M"] == 1) == m_is_one]
        if not rows:
            continue
        order = {name: i for i, name in enumerate(KERNEL_ORDER)}
        cols = sorted({(k["kernel"], k["type"]) for k in rows},
                      key=lambda c: (c[1] != "int8", c[1], order.get(c[0], len(order)), c[0]))
        keys = sorted({(k["threads"], k["matrix"], k["K"], k["N"], k["M"]) for k in rows},
                      key=lambda x: (x[0], x[2] * x[3], x[2]))
        out += [f"M = {rows[0]['M']}: {label}, best of repeated calls through zq_linear.", "",
                "| threads | matrix | K x N | " + " | ".join(f"{c[0]} {c[1]}" for c in cols)
                + " |", "|" + "---|" * (3 + len(cols))]
        for threads, matrix, K, N, M in keys:
            cells = []
            for kernel, type_ in cols:
                hit = [k for k in rows if (k["threads"], k["matrix"], k["kernel"], k["type"])
                       == (threads, matrix, kernel, type_)]
                cells.append(fmt(hit[0][metric]) if hit else "–")
            out.append(f"| {threads} | {matrix} | {K} x {N} | " + " | ".join(cells) + " |")
        out.append("")
    return out


PROFILE_GROUPS = (
    ("matrix products, with GELU and residual adds",
     ("matmul_qkv", "matmul_proj", "matmul_fc", "matmul_fc2")),
    ("output head", ("head",)),
    ("attention", ("attention",)),
    ("layer norms", ("layernorm",)),
    ("embedding", ("embed",)),
)


def profile_section(results):
    """Build a table of microseconds per token for each part of the forward pass."""
    profiles = results.get("profile") or {}
    if not profiles:
        return []
    keys = sorted(profiles)
    lines = [f"Where the time goes: `bench/profile.sh`, {results['target_model']} int8, wall "
             "time of each step per token, summed over the layers. Decode covers every "
             "single-token step of the run, prefill the prompts and the warm-up. On 2 threads "
             "one team decodes the whole token, and each step then runs from the end of the "
             "step before to its own end, the wait for the other thread included.", "",
             "| step | " + " | ".join(f"decode us, {k.replace('_', ' ')} thr" for k in keys)
             + " | " + " | ".join(f"prefill us, {k.replace('_', ' ')} thr" for k in keys) + " |",
             "|" + "---|" * (1 + 2 * len(keys))]
    for label, steps in PROFILE_GROUPS:
        cells = []
        for phase in ("decode", "prefill"):
            for k in keys:
                values = profiles[k].get(phase, {})
                cells.append(fmt(sum(values.get(s, 0.0) for s in steps)))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    totals = []
    for phase in ("decode", "prefill"):
        for k in keys:
            totals.append(fmt(sum(profiles[k].get(phase, {}).values())))
    lines.append("| total | " + " | ".join(totals) + " |")
    return lines + [""]


def targets_section(results):
    lines = [f"Targets: {results['target_model']}, int8, {TARGET_THREADS} threads, measured in "
             "this run. PyTorch's 2-thread record is the best of its OpenMP/OpenBLAS thread "
             "combinations.", "",
             "The bandwidth limit of the targets is the read bandwidth of the process that "
             "decoded, the best of the reads that process made after each of its timed runs, "
             "divided by the weight bytes per token. On this machine the bandwidth changes "
             "from one process to the next, and within a process, with where the host runs "
             "its threads. The row after it uses the best bandwidth of the whole run "
             "instead.", "",
             "| target | kernels | measured | goal | result |", "|---|---|---|---|---|"]
    for t in results["targets"]:
        verdict = "no data" if t["value"] is None else "–"
        if t["pass"] is not None:
            verdict = "PASS" if t["pass"] else "MISS"
        lines.append(f"| {t['target']} | {t['kernels']} | {fmt(t['value'], 2)} | {t['goal']} "
                     f"| {verdict} |")
    return lines


def machine_section(results):
    m = results["machine"]
    bw = results["bandwidth_gb_s"]
    lines = [f"- CPU: {m['cpu']}, {m['cores']} cores; flags: {', '.join(m['flags'])}",
             f"- Date: {m['date']}; {m['os']}; zq commit {m['zq_commit']}",
             "- Read bandwidth (`zq bench bandwidth`, AVX2 loads, best of the passes of every "
             "measurement in the run, those of the zq model processes included): "
             + ", ".join(f"{gb} GB/s on {t} thread{'s' if t != '1' else ''}"
                         for t, gb in sorted(bw.items()))
             + "; every measurement: "
             + ", ".join(f"{r['gb_s']} ({r['threads']})" for r in results.get("bandwidth_runs", []))]
    load = m.get("loadavg", {})
    if load:
        lines.append("- Load average (1, 5, 15 min) "
                     + "; ".join(f"at the {k}: {', '.join(str(x) for x in v)}"
                                 for k, v in load.items())
                     + ". A load near 0 before the run means the cores were otherwise idle.")
    if results.get("nice"):
        lines.append(f"- Every measured process ran at nice {results['nice']}.")
    if results.get("duration_s"):
        lines.append(f"- Whole run: {results['duration_s'] / 60:.1f} minutes")
    lines += ["", "Decode limit: bandwidth / bytes of weights one int8 token reads (all matrices "
              "with their scales, the full output head, biases and layer norms), here at the "
              "best bandwidth of the run; the targets divide the same bytes by the bandwidth "
              "of each record's own process. The KV cache (int8 for int8 models) adds the bytes "
              "in the KV column per token on average over the decoded positions; the last "
              "columns include them.", "",
              "| model | weights MB/token | KV MB/token | "
              + " | ".join(f"limit {t} thr, tok/s" for t in sorted(bw)) + " | "
              + " | ".join(f"with KV {t} thr" for t in sorted(bw)) + " |",
              "|" + "---|" * (3 + 2 * len(bw))]
    for model, lim in results["decode_limit_tok_s"].items():
        lines.append(f"| {model} | {lim['weights_mb_per_token']:.2f} | "
                     f"{lim.get('kv_mb_per_token', 0):.2f} | "
                     + " | ".join(fmt(lim.get(t)) for t in sorted(bw)) + " | "
                     + " | ".join(fmt(lim.get(t + "_with_kv")) for t in sorted(bw)) + " |")
    return lines


def clipped_note(records, model):
    clipped = [r for r in records if r["model"] == model and r.get("prompt_clipped")]
    rec = next((r for r in records if r["model"] == model and r["engine"] == "zq"), None)
    if not rec:
        return []
    text = (f"Prompt {rec['prompt_len']} tokens, {rec['decode']} decoded tokens, median of "
            f"{rec['repeats']} runs after a warm-up.")
    if clipped or rec["prompt_len"] + rec["decode"] >= rec.get("n_ctx", 1 << 30):
        text += (f" The model has {rec.get('n_ctx')} positions, so the prompt is shorter than "
                 "512 tokens to leave room for the decoded ones.")
    return [text, ""]


def markdown(results):
    recs = results["records"]
    models = list(dict.fromkeys(r["model"] for r in recs))
    lines = ["# ZQ benchmark results", "",
             "Generated by `make bench` (bench/run.sh, then bench/report.py from "
             "bench/results.json). Each configuration ran in its own process; tokens/s are "
             "medians of the repeats. MiB = 2^20 bytes, MB = 10^6 bytes, GB = 10^9 bytes.", "",
             "## Machine", ""] + machine_section(results) + ["", "## Targets", ""]
    lines += targets_section(results)
    lines += ["", "## Profile", ""] + profile_section(results)
    for model in models:
        lines += ["", f"## {model}", ""] + clipped_note(recs, model) + model_table(recs, model)
    lines += ["", "## Kernels", "",
              "`zq bench kernels`: y = x W^T at the gpt2-distil matrix shapes. int8 includes "
              "quantizing the activations; ref runs only where one call is short.", ""]
    lines += kernel_tables(results["kernels"])
    lines += ["![decode and prefill tokens/s](chart.png)", ""]
    lines += ["## Server", "",
              "Requests/s, tokens/s, latency and time to first token of `zq serve` at 1, 4 and 16 "
              "concurrent clients, with batching on and off, are in "
              "[SERVE_RESULTS.md](SERVE_RESULTS.md) (bench/serve_bench.sh).", ""]
    return "\n".join(lines)


# ---- chart -----------------------------------------------------------------------------------

def write_chart(results, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # A build without OpenMP records every run as 1 thread; chart the most threads measured.
    counts = {r["threads"] for r in results["records"]}
    threads = TARGET_THREADS if TARGET_THREADS in counts or not counts else max(counts)
    recs = [r for r in results["records"] if r["threads"] == threads]
    models = list(dict.fromkeys(r["model"] for r in recs))
    fig, axes = plt.subplots(len(models), 2, figsize=(11, 3.2 * max(1, len(models))),
                             squeeze=False)
    for row, model in enumerate(models):
        rows = sorted((r for r in recs if r["model"] == model),
                      key=lambda r: (r["engine"] != "zq", r["type"], r.get("kernels") or ""))
        labels = [f"{r['engine']} {r['type']}" + (f"\n{r['kernels']}" if r["engine"] == "zq"
                                                   else "") for r in rows]
        colors = ["tab:blue" if r["engine"] == "zq" else "tab:gray" for r in rows]
        for col, key in enumerate(("decode_tok_s", "prefill_tok_s")):
            ax = axes[row][col]
            bars = ax.bar(range(len(rows)), [r[key] for r in rows], color=colors)
            ax.bar_label(bars, fmt="%.0f", fontsize=7)
            ax.set_xticks(range(len(rows)))
            ax.set_xticklabels(labels, fontsize=7)
            ax.set_ylabel("tokens/s")
            ax.set_title(f"{model}: {key.split('_')[0]}, {threads} threads", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main():
    args = parse_args()
    if args.collect:
        results = collect(args)
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump(results, f, ensure_ascii=False, indent=1)
            f.write("\n")
    else:
        with open(args.results, encoding="utf-8") as f:
            results = json.load(f)
    with open(args.md, "w", encoding="utf-8") as f:
        f.write(markdown(results))
    write_chart(results, args.chart)
    misses = [t["target"] for t in results["targets"] if t["pass"] is False]
    print(f"report: {len(results['records'])} records, {len(misses)} target(s) missed"
          + (": " + "; ".join(misses) if misses else ""), file=sys.stderr)


if __name__ == "__main__":
    main()
