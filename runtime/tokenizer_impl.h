/*
 * tokenizer_impl.h - the layout of zq_tokenizer, shared by tokenizer.c (vocabulary, lookup,
 * decoding) and tokenizer_encode.c (text to ids). Not installed.
 */
#ifndef ZQ_TOKENIZER_IMPL_H
#define ZQ_TOKENIZER_IMPL_H

#include "tokenizer.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* HF BertTokenizer's max_input_chars_per_word: longer words become [UNK]. */
#define ZQ_TOK_MAX_WORD_CHARS 100

struct zq_tokenizer {
    int n_vocab;
    int n_added;
    bool lower_case;
    zq_special_tokens special;

    char *arena;     /* every token string, NUL-terminated, ids in order */
    size_t *offsets; /* [n_vocab + n_added] start of each string in arena */
    uint32_t *lens;  /* [n_vocab + n_added] byte length of each string */
    size_t max_body; /* maximum byte length of a vocabulary string, "##" not counted */

    int32_t *slots; /* open-addressing hash table of ids, -1 when empty */
    uint32_t mask;  /* number of slots - 1 (a power of two) */

    /* Added tokens grouped by first byte, longest first within a group, so the first match
     * at a position is the longest: added_order[added_start[b] .. added_start[b + 1]). */
    int32_t *added_order;
    int32_t added_start[257];
};

/* Returns the id whose string is s[0..n), or "##" followed by it when continuation is true,
 * or -1. Added tokens are found only when no vocabulary entry has the same string. */
int32_t zq_tok_lookup(const zq_tokenizer *tok, bool continuation, const char *s, size_t n);

/* CJK Unified Ideographs blocks that BERT surrounds with spaces (its _is_chinese_char). */
static inline bool zq_tok_is_cjk(uint32_t cp)
{
    return (cp >= 0x4E00 && cp <= 0x9FFF) || (cp >= 0x3400 && cp <= 0x4DBF) ||
           (cp >= 0x20000 && cp <= 0x2A6DF) || (cp >= 0x2A700 && cp <= 0x2B73F) ||
           (cp >= 0x2B740 && cp <= 0x2B81F) || (cp >= 0x2B820 && cp <= 0x2CEAF) ||
           (cp >= 0xF900 && cp <= 0xFAFF) || (cp >= 0x2F800 && cp <= 0x2FA1F);
}

/* Decodes one strict UTF-8 sequence from s[0..n), n > 0. Sets *cp, or 0xFFFD for an invalid
 * byte (overlong, surrogate, truncated, above U+10FFFF), and returns the bytes consumed: the
 * whole sequence, or 1 for an invalid byte, so decoding resumes at the next byte. */
size_t zq_tok_utf8_next(const unsigned char *s, size_t n, uint32_t *cp);

#endif /* ZQ_TOKENIZER_IMPL_H */
