/*
 * tokenizer.h - the Hugging Face BertTokenizer (WordPiece) algorithm in C.
 *
 * Pipeline, as BertTokenizer(do_lower_case=True) does it: drop NUL, U+FFFD and control
 * characters and map whitespace to spaces; put spaces around CJK ideographs; split on
 * whitespace; lower-case and strip accents (NFD, drop Mn); split punctuation; greedy
 * longest-match WordPiece with "##" continuations; words over 100 characters become [UNK].
 * Added tokens are cut out of the raw text first (longest match) and never split.
 */
#ifndef ZQ_TOKENIZER_H
#define ZQ_TOKENIZER_H

#include "zq.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct zq_tokenizer zq_tokenizer;

/* Builds a tokenizer. vocab[i] is the string of id i; added tokens get ids n_vocab + j. The
 * strings are copied. */
zq_status zq_tokenizer_create(const char *const *vocab, int n_vocab, const char *const *added,
                              int n_added, bool lower_case, zq_tokenizer **out);
void zq_tokenizer_free(zq_tokenizer *tok);

/* Tokenizes text (UTF-8; invalid bytes are treated as U+FFFD and dropped). Writes at most cap
 * ids, sets *n_out to the full count; ZQ_ERR_CONTEXT_FULL if cap was too small. */
zq_status zq_tokenizer_encode(const zq_tokenizer *tok, const char *text, size_t len,
                              int32_t *ids, int cap, int *n_out);

int zq_tokenizer_size(const zq_tokenizer *tok);                 /* n_vocab + n_added */
const char *zq_tokenizer_str(const zq_tokenizer *tok, int32_t id); /* NULL if out of range */
int32_t zq_tokenizer_find(const zq_tokenizer *tok, const char *token); /* -1 if absent */
zq_special_tokens zq_tokenizer_special(const zq_tokenizer *tok);

/* Returns the text token id adds after token prev (-1 at the start): its string with "##"
 * removed, preceded by a space when both sides are words that HF decoding would separate.
 * Special tokens ([CLS], [SEP], [PAD], [MASK]) give "". Writes at most cap bytes with NUL and
 * returns the full length excluding the NUL. */
size_t zq_tokenizer_piece(const zq_tokenizer *tok, int32_t prev, int32_t id, char *buf,
                          size_t cap);

#endif /* ZQ_TOKENIZER_H */
