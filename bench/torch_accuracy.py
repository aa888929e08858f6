"""Measure how much PyTorch's dynamic int8 quantization changes a GPT-2's predictions on a
dialogue corpus, as the accuracy peer of `zq eval`.

Usage: torch_accuracy.py --model HF_DIR --text data/zh-dialogue-valid.tsv [--window 128
       --stride 128 --json OUT] [--threads 1 --qengine onednn --max-tokens N]

Framing, which must match `zq eval`: each line of the text file is one dialogue whose turns are
separated by TAB, and becomes [CLS] turn [SEP] turn [SEP] ... with the model's own WordPiece
vocabulary (bench/bert_tokenizer.py). The dialogues are concatenated into one token stream, cut
into windows of --window tokens that start every --stride tokens (the last window may be
shorter). Each window is run alone from position 0, without earlier context and without
batching, because quantize_dynamic picks one activation scale per call: batching windows would
make the int8 results depend on the batch. Every next-token prediction inside a window is
scored, except targets that an earlier window already scored, so stride == window scores
window - 1 predictions per window.

The fp32 model is the reference. For it and for the int8 model (torch.quantization.
quantize_dynamic on every nn.Linear, the tied output head included) the script reports the
perplexity and its ratio to the reference, the KL divergence KL(reference || model) of the
next-token distributions in nats (mean, median, 99th percentile, max), the share of positions
where both pick the same top-1 token, and the mean and RMS of the change in the probability of
the correct token (model minus reference).
"""
import argparse
import json
import os
import sys
import time

import numpy as np

from bert_tokenizer import BertTokenizer

QENGINES = ("onednn", "qnnpack")


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="Hugging Face GPT-2 folder")
    p.add_argument("--text", required=True, help="dialogues, one per line, turns split by TAB")
    p.add_argument("--window", type=int, default=128, help="tokens per window (default 128)")
    p.add_argument("--stride", type=int, help="tokens between window starts (default --window)")
    p.add_argument("--json", help="write the result to this file")
    # One thread by default. On zh-chat-tiny, 2 threads gave the same results but took 403 s
    # instead of 52 s, because the machine's 2 cores were shared with other jobs.
    p.add_argument("--threads", type=int, default=1, help="CPU threads (default 1)")
    p.add_argument("--qengine", choices=QENGINES, default="onednn",
                   help="torch.backends.quantized.engine for int8 (default onednn)")
    p.add_argument("--max-tokens", type=int,
                   help="use only the first N tokens of the stream (default all)")
    args = p.parse_args()
    if args.stride is None:
        args.stride = args.window
    if args.window < 2 or args.stride < 1 or args.threads < 1:
        p.error("--window must be at least 2, --stride and --threads at least 1")
    return args


def read_lower_case(model_dir):
    path = os.path.join(model_dir, "tokenizer_config.json")
    if not os.path.exists(path):
        return True
    with open(path, encoding="utf-8") as f:
        return json.load(f).get("do_lower_case", True)


def token_stream(model_dir, text_path):
    tok = BertTokenizer.from_file(os.path.join(model_dir, "vocab.txt"), read_lower_case(model_dir))
    cls, sep = tok.ids["[CLS]"], tok.ids["[SEP]"]
    ids = []
    with open(text_path, encoding="utf-8") as f:
        for line in f:
            line = line.rstrip("\n")
            if not line:
                continue
            ids.append(cls)
            for turn in line.split("\t"):
                ids.extend(tok.encode(turn))
                ids.append(sep)
    return ids


def windows(n_tokens, window, stride):
    """Yield (start, length, first) per window: tokens start .. start + length - 1 are run and
    predictions from the window's index first on are scored."""
    scored_until = 0  # highest target index scored so far
    start = 0
    while start + 1 < n_tokens:
        length = min(window, n_tokens - start)
        first = max(0, scored_until - start)
        if first < length - 1:
            yield start, length, first
            scored_until = start + length - 1
        start += stride


def score_window(models, ids, start, length, first):
    """Return the scored targets of one window and, per model, their float64
    log-probabilities [n_scored, vocab]."""
    x = torch.tensor([ids[start:start + length]])
    logprobs = []
    with torch.inference_mode():
        for model in models:
            logits = model(x, model.new_cache(1, length), 0, all_logits=True)[0]
            logprobs.append(logits[first:length - 1].double().log_softmax(-1))
    return x[0, first + 1:length], logprobs


class Stats:
    """Per-position measurements of one model against the reference."""

    def __init__(self):
        self.nll, self.kld, self.same_top1, self.dp = [], [], [], []

    def add(self, ref_lp, lp, targets):
        idx = targets.view(-1, 1)
        self.nll.append(-lp.gather(1, idx).squeeze(1).numpy())
        self.kld.append((ref_lp.exp() * (ref_lp - lp)).sum(1).numpy())
        self.same_top1.append((ref_lp.argmax(1) == lp.argmax(1)).numpy())
        dp = lp.gather(1, idx).exp() - ref_lp.gather(1, idx).exp()
        self.dp.append(dp.squeeze(1).numpy())

    def summary(self, ref_ppl):
        nll, kld = np.concatenate(self.nll), np.concatenate(self.kld)
        dp = np.concatenate(self.dp)
        ppl = float(np.exp(nll.mean()))
        return {"ppl": ppl, "ppl_ratio": ppl / ref_ppl if ref_ppl else 1.0,
                "kld_mean": float(kld.mean()), "kld_median": float(np.median(kld)),
                "kld_p99": float(np.percentile(kld, 99)), "kld_max": float(kld.max()),
                "same_top1": float(np.concatenate(self.same_top1).mean()),
                "dp_mean": float(dp.mean()), "dp_rms": float(np.sqrt((dp ** 2).mean()))}


def evaluate(args):
    t0 = time.perf_counter()
    ids = token_stream(args.model, args.text)
    n_stream = len(ids)
    if args.max_tokens:
        ids = ids[:args.max_tokens]
    reference, cfg = torch_gpt2.load_model(args.model)
    if args.window > cfg["n_positions"]:
        raise SystemExit(f"error: --window {args.window} exceeds the model's n_positions "
                         f"{cfg['n_positions']}")
    quantized, _ = torch_gpt2.load_model(args.model)
    n_int8 = torch_gpt2.quantize_int8(quantized, args.qengine)

    stats = [Stats(), Stats()]
    n_scored = 0
    for start, length, first in windows(len(ids), args.window, args.stride):
        targets, (ref_lp, q_lp) = score_window([reference, quantized], ids, start, length, first)
        stats[0].add(ref_lp, ref_lp, targets)
        stats[1].add(ref_lp, q_lp, targets)
        n_scored += len(targets)

    ref = stats[0].summary(None)
    ref["ppl_ratio"] = 1.0
    entries = [{"path": args.model, "type": "fp32", **ref},
               {"path": args.model, "type": "int8", "qengine": args.qengine,
                "int8_modules": n_int8, **stats[1].summary(ref["ppl"])}]
    for e in entries:
        for key, value in e.items():
            if isinstance(value, float):
                e[key] = float(f"{value:.6g}")  # 6 significant digits, also for tiny KLs
    return {"text": args.text, "tokens": len(ids), "stream_tokens": n_stream,
            "window": args.window, "stride": args.stride, "scored": n_scored,
            "seconds": round(time.perf_counter() - t0, 1), "models": entries}


def main():
    # torch is imported only here, after the thread variables are set, because OpenMP and
    # OpenBLAS read them once, when the libraries load. OpenBLAS gets one thread because
    # OpenMP's threads already occupy the cores.
    global torch, torch_gpt2
    args = parse_args()
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    os.environ["OPENBLAS_NUM_THREADS"] = "1"
    import torch
    import torch_gpt2

    torch.set_num_threads(args.threads)
    result = evaluate(args)
    for m in result["models"]:
        print(f"{m['type']}: ppl {m['ppl']:.4f} (ratio {m['ppl_ratio']:.5f}), KL mean "
              f"{m['kld_mean']:.5f} median {m['kld_median']:.5f} p99 {m['kld_p99']:.5f} max "
              f"{m['kld_max']:.4f}, same top-1 {m['same_top1']:.4f}, dp mean "
              f"{m['dp_mean']:+.5f} rms {m['dp_rms']:.5f}", file=sys.stderr)
    text = json.dumps(result, ensure_ascii=False, indent=1)
    print(text)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
