// tokenizer_reference.mjs - a test-only reference for ZQ's tokenizer, built on the npm package
// @huggingface/tokenizers (a JavaScript implementation of HF tokenizers, separate from ZQ's C).
//
//   node tokenizer_reference.mjs gen SEED COUNT     prints COUNT JSON lines of mixed text
//   node tokenizer_reference.mjs encode VOCAB FILE  prints the ids of each JSON line of FILE
//
// A line is a JSON string, or {"text": ..., "added_tokens": [...]}, the format that
// tests/test_tokenizer.c reads when ZQ_TOKENIZER_LINES is set.
import fs from "fs";
import { Tokenizer } from "@huggingface/tokenizers";

// The package also lets WordPiece match added tokens as word pieces, which HF's Python tokenizer
// does not. So every added token here contains a CJK or punctuation character, which the basic
// tokenizer splits off before WordPiece runs.
const ADDED = ["人工智能", "深度学习", "人工", "<ab", "<abc>", "[X]"];

// mulberry32: a small seeded generator, so a seed always gives the same lines.
function makeRandom(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

// Character pools. Code points come from explicit lists or from U+4E00..U+9FA5 (assigned since
// Unicode 1.1), because the two implementations may use different Unicode versions. The
// package also keeps unassigned (Cn) code points, which BERT drops, and does not treat astral
// CJK (U+20000 and up) as CJK, so neither appears here.
const POOLS = [
  [..."的一是不了人我在有他这中大来上国个到说们为子和你地出道也时年得就那要下以生会自着去之过家学对可里后小么心多天而能好都然没日于起还发成事只作当想看文无开手十用主行方又如前所本见经头面公同三已老从动两长知民样现分将外但身些与高意进把法此实回二理美点月明其种声全工己话儿者向情部正名定女问力机给等几很业最间新什打便位因重被走电四第门相次东政海口使教西再平真听世气信北少关并内加化由却代军产入先山五太水万市眼体别处总才场师书比住员九笑性通目华报立马命张活难神数件安表原车白应路期叫死常提感金何更反合放做系计或司利受光王果亲界及今京务制解各任至清物台象记边共风战干接它许八特觉望直服毛林题建南度统色字请交爱让认算论百吃义科怎元社术结六功指思非流每青管夫连远资队跟带花快条院变联言权往展该领传近留红治决周保达办运武半候七必城父强步完革深区即求品士转量空甚众技轻程告江语英基派满式李息写呢识极令黄德收脸钱党倒未持取设始版双历越史商千片容研像找友孩站广改议形委早房音火际则首单据导影失拿网香似斯专石若兵弟谁校读志飞观争究包组造落视济喜离虽坏兴切"],
  "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ",
  "0123456789",
  "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~",
  "，。！？、；：“”‘’（）《》【】…—～·「」『』",
  "áéíóúàèìòùâêîôûäëïöüñçÁÉÍÓÚÑÇÅØåøǖǘǚǜ",
  "ＡＢＣＸＹＺａｂｃｘｙｚ０１２３！？（），．",
  ["😀", "👍", "🎉", "❤️", "🇨🇳", "👨‍👩‍👧", "☺"],
  [" ", "  ", "\t", "\n", "\r\n", "\u3000", "\u00a0", "\u2028", "\u200b", "\ufeff"],
  ["hello", "World", "iPhone", "don't", "it's", "the", "top-k", "3.14", "e-mail", "[UNK]", "##",
   "<ab", "<abc", "abc>", "人工智", "[X", "X]"],
  ["e\u0301", "o\u0308\u0323", "a\u030a", "\u0345", "ΑΣ", "ΟΔΟΣ", "Σ.", "İ", "ß", "ﬁ", "ガ",
   "한국어", "豈", "\u0007", "\u007f", "\ufffd", "a".repeat(101), "é".repeat(101), "x".repeat(99)],
];

function randomChar(random) {
  if (random() < 0.1) {
    return String.fromCodePoint(0x4e00 + Math.floor(random() * (0x9fa5 - 0x4e00)));
  }
  const pool = POOLS[Math.floor(random() * POOLS.length)];
  const items = typeof pool === "string" ? [...pool] : pool;
  return items[Math.floor(random() * items.length)];
}

function generate(seed, count) {
  const random = makeRandom(seed);
  const lines = [];
  for (let i = 0; i < count; i++) {
    let text = "";
    const length = Math.floor(random() * 40);
    for (let k = 0; k < length; k++) {
      text += randomChar(random);
    }
    if (i % 4 === 0) {
      const chars = [...text]; // cut between code points, never inside a surrogate pair
      const cut = Math.floor(chars.length / 2);
      const token = ADDED[Math.floor(random() * ADDED.length)];
      if (random() < 0.5) {
        text = chars.slice(0, cut).join("") + token + chars.slice(cut).join("");
      }
      lines.push(JSON.stringify({ text, added_tokens: ADDED }));
    } else {
      lines.push(JSON.stringify(text));
    }
  }
  return lines;
}

// Builds a tokenizer.json equivalent to BertTokenizer(do_lower_case=True). Added tokens match
// the raw text (normalized: false), as in the HF Python tokenizer, and get ids from n_vocab.
function makeTokenizer(vocabLines, added) {
  const vocab = new Map();
  vocabLines.forEach((token, id) => vocab.set(token, id)); // a repeated string keeps its last id
  const json = {
    version: "1.0",
    truncation: null,
    padding: null,
    added_tokens: added.map((content, j) => ({
      id: vocabLines.length + j,
      content,
      single_word: false,
      lstrip: false,
      rstrip: false,
      normalized: false,
      special: false,
    })),
    normalizer: {
      type: "BertNormalizer",
      clean_text: true,
      handle_chinese_chars: true,
      strip_accents: null,
      lowercase: true,
    },
    pre_tokenizer: { type: "BertPreTokenizer" },
    post_processor: null,
    decoder: { type: "WordPiece", prefix: "##", cleanup: true },
    model: {
      type: "WordPiece",
      unk_token: "[UNK]",
      continuing_subword_prefix: "##",
      max_input_chars_per_word: 100,
      vocab: Object.fromEntries(vocab),
    },
  };
  return new Tokenizer(json, { do_lower_case: true, tokenizer_class: "BertTokenizer" });
}

function encodeLines(vocabPath, path) {
  const text = fs.readFileSync(vocabPath, "utf8");
  const vocabLines = text.split("\n");
  if (text.endsWith("\n")) {
    vocabLines.pop();
  }
  const tokenizers = new Map();
  const out = [];
  for (const line of fs.readFileSync(path, "utf8").split("\n")) {
    if (line === "") {
      continue;
    }
    const item = JSON.parse(line);
    const added = typeof item === "string" ? [] : item.added_tokens ?? [];
    const key = JSON.stringify(added);
    if (!tokenizers.has(key)) {
      tokenizers.set(key, makeTokenizer(vocabLines, added));
    }
    const input = typeof item === "string" ? item : item.text;
    out.push(tokenizers.get(key).encode(input, { add_special_tokens: false }).ids.join(" "));
  }
  return out;
}

const [command, first, second] = process.argv.slice(2);
if (command === "gen" && first && second) {
  process.stdout.write(generate(Number(first), Number(second)).join("\n") + "\n");
} else if (command === "encode" && first && second) {
  process.stdout.write(encodeLines(first, second).join("\n") + "\n");
} else {
  process.stderr.write("usage: tokenizer_reference.mjs gen SEED COUNT | encode VOCAB FILE\n");
  process.exit(2);
}
