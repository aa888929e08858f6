"""WordPiece tokenization with the semantics of Hugging Face's slow BertTokenizer.

The benchmark peers use it so that they score exactly the token ids that ZQ's C tokenizer
(runtime/tokenizer.h) produces. Steps, in order:

1. Special tokens present in the vocabulary ([CLS], [SEP], ...) are cut out of the raw text
   first, longest match first, and map straight to their ids.
2. Cleaning: NUL, U+FFFD and control characters are dropped; whitespace becomes a space.
3. A space is put on both sides of every CJK ideograph, then the text is split on whitespace.
4. With lower-casing on, each word is lower-cased and its accents stripped (NFD, drop Mn).
5. Each word is split into runs of non-punctuation and single punctuation characters.
6. WordPiece splits each word by greedy longest match from the left, with "##" on continuation
   pieces. A word with an unmatched part, or of more than 100 characters, becomes one [UNK].
"""
import re
import unicodedata

MAX_WORD_CHARS = 100
BERT_SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")

# The CJK Unified Ideographs blocks and their extensions, as BERT defines "Chinese character".
# Hangul, Hiragana and Katakana are not in them and are split like Latin words.
CJK_RANGES = (
    (0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F),
    (0x2B740, 0x2B81F), (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F),
)


def is_cjk(ch):
    cp = ord(ch)
    return any(lo <= cp <= hi for lo, hi in CJK_RANGES)


def is_whitespace(ch):
    return ch in " \t\n\r" or unicodedata.category(ch) == "Zs"


def is_control(ch):
    # Tab, newline and carriage return count as whitespace, not as control characters.
    return ch not in "\t\n\r" and unicodedata.category(ch).startswith("C")


def is_punctuation(ch):
    # All non-alphanumeric printable ASCII counts as punctuation, as in BERT, even "$" or "^"
    # that Unicode classes as symbols.
    cp = ord(ch)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


def clean_text(text):
    out = []
    for ch in text:
        if ch == "\0" or ch == "\ufffd" or is_control(ch):
            continue
        out.append(" " if is_whitespace(ch) else ch)
    return "".join(out)


def strip_accents(word):
    decomposed = unicodedata.normalize("NFD", word)
    return "".join(ch for ch in decomposed if unicodedata.category(ch) != "Mn")


def split_punctuation(word):
    pieces, current = [], ""
    for ch in word:
        if is_punctuation(ch):
            if current:
                pieces.append(current)
            pieces.append(ch)
            current = ""
        else:
            current += ch
    if current:
        pieces.append(current)
    return pieces


class BertTokenizer:
    """Tokenizer over vocab.txt lines; the id of a token is its line number."""

    def __init__(self, vocab_lines, lower_case=True):
        self.ids = {token: i for i, token in enumerate(vocab_lines)}
        self.tokens = list(vocab_lines)
        self.lower_case = lower_case
        self.unk_id = self.ids["[UNK]"]
        special = sorted((t for t in BERT_SPECIAL_TOKENS if t in self.ids), key=len, reverse=True)
        self.special_re = re.compile("(" + "|".join(map(re.escape, special)) + ")")

    @classmethod
    def from_file(cls, vocab_path, lower_case=True):
        with open(vocab_path, encoding="utf-8") as f:
            return cls([line.rstrip("\n") for line in f], lower_case)

    def basic_words(self, text):
        spaced = "".join(f" {ch} " if is_cjk(ch) else ch for ch in clean_text(text))
        words = []
        for word in spaced.split():
            if self.lower_case:
                word = strip_accents(word.lower())
            words.extend(split_punctuation(word))
        return words

    def wordpiece(self, word):
        if len(word) > MAX_WORD_CHARS:
            return [self.unk_id]
        ids, start = [], 0
        while start < len(word):
            for end in range(len(word), start, -1):
                piece = word[start:end] if start == 0 else "##" + word[start:end]
                if piece in self.ids:
                    ids.append(self.ids[piece])
                    start = end
                    break
            else:
                return [self.unk_id]
        return ids

    def encode(self, text):
        """Return the token ids of text, without [CLS]/[SEP] framing."""
        ids = []
        for part in self.special_re.split(text):
            if part in self.ids and part in BERT_SPECIAL_TOKENS:
                ids.append(self.ids[part])
                continue
            for word in self.basic_words(part):
                ids.extend(self.wordpiece(word))
        return ids
