/*
 * tokenizer.h - the Hugging Face BertTokenizer (WordPiece) algorithm in C.
 *
 * Pipeline, as BertTokenizer(do_lower_case=True) does it: drop NUL, U+FFFD and control
 * characters and map whitespace to spaces; put spaces around CJK ideographs; split on
 * whitespace; lower-case and strip accents (NFD, drop Mn); split punctuation; greedy
 * longest-match WordPiece with "##" continuations; words over 100 characters become [UNK].
 * Added tokens are cut out of the raw text first (longest match) and never split.
 *
 * Unlike HF's tokenizer, this one tokenizes "[CLS]", "[SEP]" and the other special token
 * strings in the text as ordinary text, so user input cannot inject them. Passing them as added
 * tokens gives HF's behaviour, with ids past n_vocab.
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
 * ids, sets *n_out to the full count; ZQ_ERR_CONTEXT_FULL if cap was too small. ids may be
 * NULL when cap is 0 (to count), and text NULL when len is 0. ZQ_ERR_UNSUPPORTED if a word
 * needs [UNK] and the vocabulary has none. Safe to call from several threads at once. */
zq_status zq_tokenizer_encode(const zq_tokenizer *tok, const char *text, size_t len,
                              int32_t *ids, int cap, int *n_out);

int zq_tokenizer_size(const zq_tokenizer *tok);                 /* n_vocab + n_added */
const char *zq_tokenizer_str(const zq_tokenizer *tok, int32_t id); /* NULL if out of range */
int32_t zq_tokenizer_find(const zq_tokenizer *tok, const char *token); /* -1 if absent */
zq_special_tokens zq_tokenizer_special(const zq_tokenizer *tok);

/* Returns the text token id adds after token prev (-1 at the start). Writes at most cap bytes
 * with NUL (cap 0 only measures) and returns the full length excluding the NUL.
 *
 * The text is the token's string, with these rules:
 * - [CLS], [SEP], [PAD], [MASK] and ids out of range give "". [UNK] gives "[UNK]".
 * - A "##" piece loses its "##" and joins the previous text with no space.
 * - Otherwise one space comes first only when the previous token gave text and neither the
 *   last character before nor the first character after is "tight", and HF's
 *   clean_up_tokenization_spaces would keep it: no space before . , ! ? ' and none after '.
 * - Tight characters: any non-ASCII character that is not a letter, mark or digit (CJK and
 *   full-width punctuation such as "，" "“" "…", symbols, emoji), and everything from U+2E80 up
 *   (CJK ideographs, kana, hangul, full-width forms).
 * So "你好，世界！" and "iphone15很好用" decode without spaces, "hello world" and
 * "hello, world." keep theirs, "don ' t" becomes "don't", and "3 . 14" becomes "3. 14" as in
 * HF. */
size_t zq_tokenizer_piece(const zq_tokenizer *tok, int32_t prev, int32_t id, char *buf,
                          size_t cap);

#endif /* ZQ_TOKENIZER_H */
