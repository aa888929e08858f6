/*
 * zq.h - the public API of the ZQ runtime: load a .zq model, tokenize, run the GPT-2 forward
 * pass with a KV cache, sample, and hold a chat history.
 *
 * Conventions:
 * - Every function that can fail returns a zq_status. On failure, zq_last_error() returns a
 *   one-line message for the calling thread that names the file, field or value at fault.
 * - The library never exits and never prints except through the logger (zq_log_set_callback).
 * - Free functions accept NULL. Other pointer arguments must not be NULL unless documented;
 *   the entry points that take text, paths or token arrays return ZQ_ERR_INVALID_ARG for NULL.
 * - A zq_model is read-only after loading and may be shared by many threads. A zq_context,
 *   zq_sampler or zq_chat belongs to one thread at a time.
 */
#ifndef ZQ_H
#define ZQ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define ZQ_VERSION_STRING "0.1.0"

/* ---- status and errors ------------------------------------------------------------------ */

typedef enum {
    ZQ_OK = 0,
    ZQ_ERR_IO,           /* a file could not be opened, read or written */
    ZQ_ERR_FORMAT,       /* a file is malformed: wrong magic, truncated, bad field */
    ZQ_ERR_CHECKSUM,     /* a zstd frame failed to decompress or its checksum did not match */
    ZQ_ERR_VERSION,      /* a file was written by an unsupported format version */
    ZQ_ERR_UNSUPPORTED,  /* valid input that ZQ does not handle (an activation, a dtype) */
    ZQ_ERR_INVALID_ARG,  /* a caller passed an out-of-range value */
    ZQ_ERR_NOMEM,        /* an allocation failed */
    ZQ_ERR_CONTEXT_FULL, /* the tokens do not fit in the context window */
    ZQ_ERR_INTERNAL,     /* a library call (oneDNN, zstd) failed unexpectedly */
} zq_status;

/* Returns a constant name for a status, such as "format error". */
const char *zq_status_str(zq_status status);

/* Returns the detailed message of the last failure on this thread ("" if none). The string
 * stays valid until the next failing call on the same thread. */
const char *zq_last_error(void);

/* ---- logging ------------------------------------------------------------------------------ */

typedef enum {
    ZQ_LOG_ERROR = 0,
    ZQ_LOG_WARN = 1,
    ZQ_LOG_INFO = 2,  /* once per load or command */
    ZQ_LOG_DEBUG = 3, /* once per request or layer */
    ZQ_LOG_TRACE = 4, /* once per token */
} zq_log_level;

typedef void (*zq_log_fn)(zq_log_level level, const char *func, const char *message, void *user);

/* Sets the maximum level that is emitted (default ZQ_LOG_WARN). */
void zq_log_set_level(zq_log_level level);

/* Replaces the log sink. NULL restores the default, which writes "zq: LEVEL: func: msg" to
 * stderr. The callback may be called from several threads at once. */
void zq_log_set_callback(zq_log_fn fn, void *user);

/* ---- model -------------------------------------------------------------------------------- */

typedef enum {
    ZQ_ACT_GELU_TANH = 0, /* "gelu_new", "gelu_pytorch_tanh", "gelu_fast" */
    ZQ_ACT_GELU_ERF = 1,  /* "gelu" */
    ZQ_ACT_RELU = 2,      /* "relu" */
} zq_activation;

typedef struct {
    int32_t n_vocab; /* rows of the token embedding, including added tokens */
    int32_t n_ctx;   /* maximum positions (n_positions) */
    int32_t n_embd;
    int32_t n_layer;
    int32_t n_head;
    int32_t n_inner; /* MLP width; 4 * n_embd when config.json gives null */
    float ln_eps;
    zq_activation activation;
} zq_hparams;

/* Storage type of the large matrices of a model. */
typedef enum {
    ZQ_TYPE_F32 = 0,
    ZQ_TYPE_F16 = 1,
    ZQ_TYPE_Q8 = 2, /* int8 in [-127, 127] with f32 scales per row or per group */
} zq_type;

const char *zq_type_name(zq_type type); /* "f32", "f16", "int8" */

typedef struct zq_model zq_model;

typedef struct {
    int n_threads; /* threads for parallel decompression; 0 = physical cores */
} zq_load_params;

/* Loads a .zq file. Every tensor frame's checksum is verified. On success *out owns the
 * model; free it with zq_model_free. */
zq_status zq_model_load(const char *path, const zq_load_params *params, zq_model **out);
void zq_model_free(zq_model *model);

const zq_hparams *zq_model_hparams(const zq_model *model);
zq_type zq_model_type(const zq_model *model);      /* type of the transformer matrices */
double zq_model_load_seconds(const zq_model *model); /* wall time of zq_model_load */
size_t zq_model_weight_bytes(const zq_model *model); /* bytes held for tensors in memory */

/* Returns a one-line description such as "zh-chat-tiny int8 (6 layers, 256 wide)". */
const char *zq_model_desc(const zq_model *model);

/* ---- tokenizer ---------------------------------------------------------------------------- */

/* Ids of the special tokens; -1 when the vocabulary lacks one. */
typedef struct {
    int32_t pad, unk, cls, sep, mask;
} zq_special_tokens;

const zq_special_tokens *zq_model_special(const zq_model *model);

/* Tokenizes UTF-8 text with the model's tokenizer (BERT WordPiece with the model's
 * lower-casing and added tokens). Writes at most cap ids, sets *n_out to the full count, and
 * returns ZQ_ERR_CONTEXT_FULL if cap was too small. Special tokens are not added. */
zq_status zq_tokenize(const zq_model *model, const char *text, int32_t *ids, int cap,
                      int *n_out);

/* Returns the vocabulary string of a token ("##ing", "你", "[SEP]"), or NULL if out of range. */
const char *zq_token_str(const zq_model *model, int32_t id);

/* Decodes ids into clean text (no spaces between CJK characters, "##" pieces joined, one
 * space between Latin words, special tokens skipped). Writes at most cap bytes including the
 * terminating NUL and returns the full length that the text needs, excluding the NUL. */
size_t zq_detokenize(const zq_model *model, const int32_t *ids, int n, char *buf, size_t cap);

/* Streams decoded text token by token. Each call returns the text that becomes final with
 * this token; it never ends inside a UTF-8 character. */
typedef struct {
    const zq_model *model;
    int32_t prev;     /* last token emitted, -1 at the start */
    char pending[16]; /* bytes of an incomplete UTF-8 character */
    int n_pending;
} zq_detok_stream;

void zq_detok_stream_init(zq_detok_stream *stream, const zq_model *model);

/* Appends the text for token id to buf (NUL-terminated, at most cap bytes) and returns the
 * number of bytes written, excluding the NUL. */
size_t zq_detok_stream_push(zq_detok_stream *stream, int32_t id, char *buf, size_t cap);

/* ---- inference context -------------------------------------------------------------------- */

typedef struct zq_context zq_context;

/* Element type of the KV cache. Decoding reads the whole cache once per token, so at long
 * contexts the cache costs as much memory bandwidth as the weights: f16 halves that, int8
 * halves it again. An int8 cache keeps one f32 scale per row and head (64 values for GPT-2),
 * and decoding quantizes the query the same way so that scores are int8 dot products. */
typedef enum {
    ZQ_KV_AUTO = 0, /* the type of the weights: f32 (the exact comparison path), f16 or int8 */
    ZQ_KV_F32 = 1,
    ZQ_KV_F16 = 2,
    ZQ_KV_Q8 = 3,
} zq_kv_type;

/* "auto", "f32", "f16", "int8"; "unknown" otherwise */
const char *zq_kv_type_name(zq_kv_type type);
/* Parses "auto", "f32", "f16" or "int8"; returns ZQ_ERR_INVALID_ARG for anything else. */
zq_status zq_kv_type_parse(const char *name, zq_kv_type *out);

typedef struct {
    int n_ctx;          /* KV cache positions; 0 = the model's n_ctx */
    int n_threads;      /* OpenMP threads; 0 = physical cores */
    int n_batch;        /* maximum tokens per forward call (prompt chunk); 0 = 512 */
    zq_kv_type kv_type; /* 0 = ZQ_KV_AUTO */
} zq_context_params;

zq_status zq_context_create(const zq_model *model, const zq_context_params *params,
                            zq_context **out);
void zq_context_free(zq_context *ctx);

/* Runs the forward pass for n tokens appended at the current position, updating the KV cache.
 * If all_logits is not NULL it receives [n, n_vocab] logits, else only the last token's logits
 * are computed and kept (see zq_context_logits). Returns ZQ_ERR_CONTEXT_FULL, with the cache
 * unchanged, if pos + n exceeds n_ctx. */
zq_status zq_context_eval(zq_context *ctx, const int32_t *ids, int n, float *all_logits);

/* Returns the logits [n_vocab] of the last evaluated token (valid until the next eval). */
const float *zq_context_logits(const zq_context *ctx);

int zq_context_pos(const zq_context *ctx);  /* tokens in the KV cache */
int zq_context_size(const zq_context *ctx); /* n_ctx of this context */
zq_kv_type zq_context_kv_type(const zq_context *ctx); /* never ZQ_KV_AUTO */
/* Returns the cache type a context of this model gets when it requests the given one. */
zq_kv_type zq_model_kv_type(const zq_model *model, zq_kv_type requested);
/* Returns the bytes that the cache of this model stores per position with the given type
 * (auto resolved as for a context): keys and values of every layer, with the scales of int8. */
size_t zq_model_kv_bytes_per_position(const zq_model *model, zq_kv_type type);

/* Drops the cache entries at positions >= pos, so a prompt prefix can be reused. */
void zq_context_truncate(zq_context *ctx, int pos);
void zq_context_set_threads(zq_context *ctx, int n_threads);

/* Called after each transformer block (layer 0..n_layer-1) and after the final layer norm
 * (layer == n_layer) with the hidden states x [n][n_embd] of the n tokens being evaluated.
 * Used to compare layers between models; NULL turns it off. */
typedef void (*zq_layer_fn)(int layer, const float *x, int n, int n_embd, void *user);
void zq_context_set_layer_callback(zq_context *ctx, zq_layer_fn fn, void *user);

/* Decodes one token for each of n contexts as one batched matrix product. Each context's
 * logits are updated as by zq_context_eval. All contexts must share a model; the first
 * context's thread count is used. ZQ_ERR_CONTEXT_FULL if any context is full (none changes). */
zq_status zq_decode_batch(zq_context *const *ctxs, const int32_t *ids, int n);

/* ---- sampling ----------------------------------------------------------------------------- */

typedef struct {
    float temperature;        /* 0 = greedy */
    int top_k;                /* 0 = off; default 50 */
    float top_p;              /* 1 = off; default 0.95 */
    float repetition_penalty; /* 1 = off; CTRL-style: positive logits divided, negative multiplied */
    int repeat_last_n;        /* tokens of history the penalty looks at; default 64 */
    uint64_t seed;
} zq_sampler_params;

/* Fills the defaults: temperature 0.7, top_k 50, top_p 0.95, penalty 1.1, last 64, seed 0. */
void zq_sampler_params_default(zq_sampler_params *params);

/* Checks the ranges (temperature >= 0, top_k >= 0, top_p in (0, 1], penalty > 0). */
zq_status zq_sampler_params_check(const zq_sampler_params *params);

typedef struct zq_sampler zq_sampler;

zq_status zq_sampler_create(const zq_sampler_params *params, int n_vocab, zq_sampler **out);
void zq_sampler_free(zq_sampler *sampler);

/* Picks the next token. logits [n_vocab] is used as scratch and changed. Entries set to
 * -INFINITY are never picked; NaN entries count as -INFINITY. If every entry is masked it
 * returns -1. history contains the ids the repetition penalty looks at. */
int32_t zq_sampler_sample(zq_sampler *sampler, float *logits, const int32_t *history,
                          int n_history);

/* ---- chat --------------------------------------------------------------------------------- */

/* A dialogue in the format of BERT-vocabulary chat GPT-2 models:
 * [CLS] user [SEP] reply [SEP] user [SEP] ... ; the reply is generated until [SEP]. */
typedef struct zq_chat zq_chat;

#define ZQ_CHAT_MAX_EXCHANGES 64

typedef struct {
    int max_exchanges;  /* user+reply pairs of history kept, 0..ZQ_CHAT_MAX_EXCHANGES; default 3 */
    int max_new_tokens; /* reply length cap; default 64 */
    int n_threads;      /* 0 = physical cores */
    zq_kv_type kv_type; /* 0 = ZQ_KV_AUTO */
    zq_sampler_params sampling;
} zq_chat_params;

void zq_chat_params_default(zq_chat_params *params);

zq_status zq_chat_create(const zq_model *model, const zq_chat_params *params, zq_chat **out);
void zq_chat_free(zq_chat *chat);
void zq_chat_reset(zq_chat *chat);

/* Called with each piece of reply text as it becomes final; return false to stop. */
typedef bool (*zq_text_fn)(const char *piece, size_t len, void *user);

/* Generates a reply to user_text, streaming it through on_text (may be NULL), and stores the
 * exchange in the history. The reply's text is written to reply (NUL-terminated, at most cap
 * bytes) when reply is not NULL. The oldest exchanges are dropped when the prompt plus
 * max_new_tokens would not fit in n_ctx. If on_text stops the generation, nothing is stored. */
zq_status zq_chat_reply(zq_chat *chat, const char *user_text, zq_text_fn on_text, void *user,
                        char *reply, size_t cap);

int zq_chat_exchanges(const zq_chat *chat); /* exchanges currently kept */

/* Builds the chat prompt ids for a history of turns (user, reply, user, reply, ..., user:
 * n_turns is odd) into ids[cap], dropping the oldest exchanges until it and room for
 * reserve new tokens fit in n_ctx. Sets *n_out and *n_dropped (exchanges dropped).
 * ZQ_ERR_CONTEXT_FULL if even the last user turn alone does not fit. */
zq_status zq_chat_build_prompt(const zq_model *model, const char *const *turns, int n_turns,
                               int n_ctx, int reserve, int32_t *ids, int cap, int *n_out,
                               int *n_dropped);

/* Sets to -INFINITY the logits of the special tokens a reply must not contain ([PAD], [UNK],
 * [CLS], [MASK]), leaving [SEP], which ends the reply. */
void zq_chat_mask_logits(const zq_model *model, float *logits);

#ifdef __cplusplus
}
#endif

#endif /* ZQ_H */
