"""Write a random GPT-2 model folder with the shape of gpt2-distil-chinese-cluecorpussmall.

Usage: make_synthetic_model.py OUT_DIR [--seed 1234] [--layers 6 --embd 768 --heads 12
       --vocab 21128 --ctx 1024] [--base-vocab models/zh-chat-tiny/vocab.txt]

The benchmarks need a model of the target shape, and this one is written from a fixed seed
instead of being downloaded. The folder is what transformers' save_pretrained writes for
GPT2LMHeadModel: config.json, model.safetensors (F32, Conv1D weights [in, out], no lm_head
because the head is tied to wte), tokenizer_config.json and vocab.txt. The vocabulary is the
base vocabulary followed by "[unused<i>]" lines up to --vocab entries. The same seed and
options write the same bytes.

The weights are random, so the model produces no meaningful text. Their statistics imitate a
trained GPT-2, so that quantization error and kernel speed are representative (d = n_embd, L =
n_layer, every draw Gaussian unless stated):

- wte [vocab, d]: std 0.12.
- wpe [ctx, d]: std falling from 0.02 at position 0 to 0.01 at the last position.
- Outlier channels: OUTLIER_COUNT residual-stream channels c, each with a factor f_c uniform in
  [20, 50] and a random sign. wpe adds a near-constant offset of f_c * 0.12 (+-5%) to channel c
  at every position, so the embeddings carry f_c times their typical magnitude there. The
  typical magnitude of the residual stream grows with depth, so each block's mlp.c_proj bias
  tops channel c up to f_c times the magnitude after that block, as measured by a float64
  forward over CALIBRATION_TOKENS random tokens. The LayerNorm outputs that feed c_attn and c_fc
  keep the ratio, so every block's inputs have 3 channels 20-50 times the others, like the
  activation outliers of trained GPT-2. The c_attn and c_fc weight rows that read an outlier
  channel are divided by f_c, as a trained model learns small weights for such inputs. wte's
  outlier columns have a mean of +-2 * 0.12 and a std of 0.12, so the tied head has a few
  wide columns.
- Projections: c_attn and c_fc std uniform in [0.06, 0.14] per matrix; attn.c_proj and
  mlp.c_proj std uniform in [0.02, 0.14] divided by sqrt(2 L), as GPT-2 scales residual
  projections. A fraction WEIGHT_OUTLIER_RATE (1 in 1,000) of the entries is multiplied by a
  value uniform in [3, 4] to give the heavy tails of trained weights, so some rows have a
  maximum near 13 std.
- Biases: std 0.02.
- LayerNorm gains: 1 + N(0, 0.1), with LN_LARGE_GAIN_COUNT random channels per LayerNorm set
  to a value uniform in [3, 6]. LayerNorm biases: std 0.02.
- ln_f: gains are further multiplied by FINAL_GAIN, so that the logits have a std near 4.5 and
  the next-token entropy averages about 3 nats (seed 1234), as for a trained model. Its gains
  on the outlier channels are 1 / f_c times uniform [1, 3], which keeps those channels from
  dominating the logits.

Determinism: one numpy PCG64 stream draws every tensor, and the calibration results are rounded
to 3 significant digits before they are used, so BLAS rounding differences cannot change the
file. NumPy does not promise that Generator streams stay the same across its versions.
"""
import argparse
import json
import math
import os
import struct

import numpy as np

OUTLIER_COUNT = 3
OUTLIER_FACTOR_RANGE = (20.0, 50.0)
WTE_STD = 0.12
WPE_STD_RANGE = (0.02, 0.01)  # at position 0, at the last position
WEIGHT_OUTLIER_RATE = 1e-3
LN_LARGE_GAIN_COUNT = 4
BIAS_STD = 0.02
CALIBRATION_TOKENS = 128
FINAL_GAIN = 2.5
DEFAULT_BASE_VOCAB = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "models",
                                  "zh-chat-tiny", "vocab.txt")


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out_dir", help="folder to write (created if missing)")
    p.add_argument("--seed", type=int, default=1234, help="random seed (default 1234)")
    p.add_argument("--layers", type=int, default=6, help="transformer blocks (default 6)")
    p.add_argument("--embd", type=int, default=768, help="model width (default 768)")
    p.add_argument("--heads", type=int, default=12, help="attention heads (default 12)")
    p.add_argument("--vocab", type=int, default=21128, help="vocabulary size (default 21128)")
    p.add_argument("--ctx", type=int, default=1024, help="maximum positions (default 1024)")
    p.add_argument("--base-vocab", default=DEFAULT_BASE_VOCAB,
                   help="vocab.txt whose tokens come first (default: zh-chat-tiny's)")
    args = p.parse_args()
    if args.embd % args.heads:
        p.error(f"--embd {args.embd} is not a multiple of --heads {args.heads}")
    if args.embd < 2 * OUTLIER_COUNT:
        p.error(f"--embd {args.embd} is too small; expected at least {2 * OUTLIER_COUNT}")
    return args


class WeightMaker:
    """Draws the tensors in a fixed order from one seeded generator, in float32."""

    def __init__(self, seed, d, n_layer):
        self.rng = np.random.Generator(np.random.PCG64(seed))
        self.d = d
        self.n_layer = n_layer
        self.outliers = self.rng.choice(d, OUTLIER_COUNT, replace=False)
        self.factors = self.rng.uniform(*OUTLIER_FACTOR_RANGE, OUTLIER_COUNT).astype(np.float32)
        self.signs = self.rng.choice(np.array([-1.0, 1.0], dtype=np.float32), OUTLIER_COUNT)

    def normal(self, shape, std):
        return self.rng.standard_normal(shape, dtype=np.float32) * np.float32(std)

    def heavy_tailed(self, shape, std):
        w = self.normal(shape, std)
        hits = self.rng.random(shape, dtype=np.float32) < WEIGHT_OUTLIER_RATE
        w[hits] *= self.rng.uniform(3.0, 4.0, int(hits.sum())).astype(np.float32)
        return w

    def token_embedding(self, vocab):
        wte = self.normal((vocab, self.d), WTE_STD)
        for c, sign in zip(self.outliers, self.signs):
            wte[:, c] += sign * np.float32(2 * WTE_STD)
        return wte

    def position_embedding(self, ctx):
        hi, lo = WPE_STD_RANGE
        stds = hi * (lo / hi) ** (np.arange(ctx, dtype=np.float32) / max(ctx - 1, 1))
        wpe = self.normal((ctx, self.d), 1.0) * stds[:, None].astype(np.float32)
        for c, f, sign in zip(self.outliers, self.factors, self.signs):
            spread = 1 + self.normal(ctx, 0.05)
            wpe[:, c] = sign * f * np.float32(WTE_STD) * spread
        return wpe

    def layer_norm(self):
        gain = 1 + self.normal(self.d, 0.1)
        large = self.rng.choice(self.d, LN_LARGE_GAIN_COUNT, replace=False)
        gain[large] = self.rng.uniform(3.0, 6.0, LN_LARGE_GAIN_COUNT)
        return gain, self.normal(self.d, BIAS_STD)

    def reading_projection(self, n_out):
        """Conv1D weight [d, n_out] that reads the residual stream through a LayerNorm."""
        w = self.heavy_tailed((self.d, n_out), self.rng.uniform(0.06, 0.14))
        w[self.outliers] /= self.factors[:, None]
        return w, self.normal(n_out, BIAS_STD)

    def residual_projection(self, n_in):
        """Conv1D weight [n_in, d] that writes into the residual stream."""
        std = self.rng.uniform(0.02, 0.14) / math.sqrt(2 * self.n_layer)
        return self.heavy_tailed((n_in, self.d), std), self.normal(self.d, BIAS_STD)

    def final_layer_norm(self):
        gain, bias = self.layer_norm()
        gain *= np.float32(FINAL_GAIN)
        gain[self.outliers] = self.rng.uniform(1.0, 3.0, OUTLIER_COUNT) / self.factors
        return gain, bias


def layer_norm(x, gain, bias):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + 1e-5) * gain + bias


def attention(x, w, b, n_head):
    T, d = x.shape
    q, k, v = np.split(x @ w + b, 3, axis=1)
    q, k, v = (z.reshape(T, n_head, -1).transpose(1, 0, 2) for z in (q, k, v))
    scores = q @ k.transpose(0, 2, 1) / math.sqrt(d // n_head)
    scores[:, np.triu_indices(T, 1)[0], np.triu_indices(T, 1)[1]] = -np.inf
    probs = np.exp(scores - scores.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    return (probs @ v).transpose(1, 0, 2).reshape(T, d)


def gelu(x):
    return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))


def round_significant(x, digits=3):
    """Round so that last-bit differences between BLAS builds cannot change the output bytes."""
    return float(f"{x:.{digits - 1}e}")


def hold_outliers(t, maker, args, seed):
    """Set each block's mlp.c_proj bias on the outlier channels so that after every block the
    residual stream is f_c times its typical magnitude there, as it is after the embeddings.

    Without this the outliers would fade, because the block outputs make the typical
    magnitude grow with depth. Runs a float64 forward over CALIBRATION_TOKENS random tokens.
    """
    rng = np.random.Generator(np.random.PCG64(seed))
    ids = rng.integers(0, args.vocab, CALIBRATION_TOKENS)
    g = {k.removeprefix("transformer."): v.astype(np.float64) for k, v in t.items()}
    x = g["wte.weight"][ids] + g["wpe.weight"][:CALIBRATION_TOKENS]
    normal = np.setdiff1d(np.arange(args.embd), maker.outliers)
    for i in range(args.layers):
        p = f"h.{i}."
        h = layer_norm(x, g[p + "ln_1.weight"], g[p + "ln_1.bias"])
        y = attention(h, g[p + "attn.c_attn.weight"], g[p + "attn.c_attn.bias"], args.heads)
        x = x + y @ g[p + "attn.c_proj.weight"] + g[p + "attn.c_proj.bias"]
        h = layer_norm(x, g[p + "ln_2.weight"], g[p + "ln_2.bias"])
        h = gelu(h @ g[p + "mlp.c_fc.weight"] + g[p + "mlp.c_fc.bias"])
        x = x + h @ g[p + "mlp.c_proj.weight"] + g[p + "mlp.c_proj.bias"]

        typical = round_significant(float(np.sqrt((x[:, normal] ** 2).mean())))
        bias = t["transformer." + p + "mlp.c_proj.bias"]
        for c, f, sign in zip(maker.outliers, maker.factors, maker.signs):
            shift = round_significant(sign * f * typical - float(x[:, c].mean()))
            bias[c] += np.float32(shift)
            x[:, c] += shift


def make_weights(args):
    maker = WeightMaker(args.seed, args.embd, args.layers)
    t = {"transformer.wte.weight": maker.token_embedding(args.vocab),
         "transformer.wpe.weight": maker.position_embedding(args.ctx)}
    for i in range(args.layers):
        p = f"transformer.h.{i}."
        t[p + "ln_1.weight"], t[p + "ln_1.bias"] = maker.layer_norm()
        t[p + "attn.c_attn.weight"], t[p + "attn.c_attn.bias"] = \
            maker.reading_projection(3 * args.embd)
        t[p + "attn.c_proj.weight"], t[p + "attn.c_proj.bias"] = \
            maker.residual_projection(args.embd)
        t[p + "ln_2.weight"], t[p + "ln_2.bias"] = maker.layer_norm()
        t[p + "mlp.c_fc.weight"], t[p + "mlp.c_fc.bias"] = maker.reading_projection(4 * args.embd)
        t[p + "mlp.c_proj.weight"], t[p + "mlp.c_proj.bias"] = \
            maker.residual_projection(4 * args.embd)
    t["transformer.ln_f.weight"], t["transformer.ln_f.bias"] = maker.final_layer_norm()
    hold_outliers(t, maker, args, args.seed + 1)
    return t, maker


def write_safetensors(path, tensors, metadata):
    """Write F32 tensors in name order: an 8-byte little-endian header length, the JSON
    header padded with spaces to a multiple of 8 bytes, then the raw little-endian data."""
    header, offset = {}, 0
    for name in sorted(tensors):
        nbytes = tensors[name].nbytes
        header[name] = {"dtype": "F32", "shape": list(tensors[name].shape),
                        "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    header["__metadata__"] = metadata
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for name in sorted(tensors):
            f.write(np.ascontiguousarray(tensors[name], dtype="<f4").tobytes())


def make_vocab(base_path, size):
    with open(base_path, encoding="utf-8") as f:
        tokens = [line.rstrip("\n") for line in f]
    if len(tokens) > size:
        raise SystemExit(f"error: {base_path} has {len(tokens)} tokens, more than --vocab {size}")
    taken = set(tokens)
    i = 1
    while len(tokens) < size:
        if f"[unused{i}]" not in taken:
            tokens.append(f"[unused{i}]")
        i += 1
    return tokens


def write_json(path, obj):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")


def main():
    args = parse_args()
    vocab = make_vocab(args.base_vocab, args.vocab)
    tensors, maker = make_weights(args)
    os.makedirs(args.out_dir, exist_ok=True)
    metadata = {"format": "pt", "generator": "bench/make_synthetic_model.py",
                "seed": str(args.seed),
                "outlier_channels": ",".join(str(c) for c in maker.outliers)}
    write_safetensors(os.path.join(args.out_dir, "model.safetensors"), tensors, metadata)
    write_json(os.path.join(args.out_dir, "config.json"), {
        "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2",
        "vocab_size": args.vocab, "n_positions": args.ctx, "n_ctx": args.ctx,
        "n_embd": args.embd, "n_layer": args.layers, "n_head": args.heads, "n_inner": None,
        "activation_function": "gelu_new", "layer_norm_epsilon": 1e-5,
        "initializer_range": 0.02, "bos_token_id": vocab.index("[CLS]"),
        "eos_token_id": vocab.index("[SEP]"), "pad_token_id": vocab.index("[PAD]"),
        "tie_word_embeddings": True, "tokenizer_class": "BertTokenizer",
        "torch_dtype": "float32"})
    write_json(os.path.join(args.out_dir, "tokenizer_config.json"), {
        "do_lower_case": True, "tokenize_chinese_chars": True,
        "model_max_length": args.ctx, "tokenizer_class": "BertTokenizer"})
    with open(os.path.join(args.out_dir, "vocab.txt"), "w", encoding="utf-8") as f:
        f.write("\n".join(vocab) + "\n")
    n_params = sum(t.size for t in tensors.values())
    print(f"wrote {args.out_dir}: {n_params:,} parameters, seed {args.seed}, "
          f"outlier channels {sorted(int(c) for c in maker.outliers)}")


if __name__ == "__main__":
    main()
