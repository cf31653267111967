"""embed.js's BERT WordPiece (node/dashboard/static/embed.js) gives the token ids Hugging Face
``tokenizers`` gives with the node's settings (``models/embedder.load_tokenizer``: cut at
max_tokens, no padding), for the default embedder's own tokenizer.json and texts that take
every path: accents, CJK, controls, punctuation, added tokens, long words, truncation. Run in
Node.js (on the machine with the dashboard's npm tooling); the browser test runs the same in
Chromium."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from calinode.models.embedder import TOKENIZER_FILE, load_tokenizer
from calinode.models.prepare.minilm import locate_sources

EMBED_JS = Path(__file__).resolve().parents[2] / "node" / "dashboard" / "static" / "embed.js"
TEXTS = [
    "Hello, world!", "Crème brûlée à la façon de Paris", "naïve café résumé",
    "北京欢迎你 and 東京", "tab\there\nnewline\r\x0bvt\x0cff", "İstanbul ΣΊΣΥΦΟΣ straße",
    "don't stop-believing... #hashtag @user $100 50% a+b=c <tag> ^_^ ~`|",
    "supercalifragilisticexpialidocious antidisestablishmentarianism",
    "[CLS] inner [SEP] and [MASK] or [UNK] tokens x[PAD]y",
    "emoji 😀🎉 and zero\u200bwidth \ufeffbom \x00nul \ufffd", "a" * 120 + " b",
    "«quotes» „german“ — dash \u2013 endash … ellipsis", "ﬁ ligature \u210c Ⅻ ①",
    "Ñandú \u0301combining", "x\u0085y\u00a0z\u3000w\u2028v", "word ",
    " ".join(f"token{i}" for i in range(400)), "ǅ ǈ ẞ Å Ω K", "Ελληνικά ή Русский язык",
    "한국어 텍스트 and ไทย", "\U0001d400 math bold", "‰ € £ ¥ © ® ™ § ¶",
]
SCRIPT = """
import { readFileSync } from "node:fs";
const [embedJs, tokenizerJson, maxTokens, textsJson] = process.argv.slice(1);
const { BertWordPiece } = await import(embedJs);
const tokenizer = new BertWordPiece(JSON.parse(readFileSync(tokenizerJson, "utf8")),
                                    Number(maxTokens));
const texts = JSON.parse(readFileSync(textsJson, "utf8"));
console.log(JSON.stringify(texts.map((t) => tokenizer.encode(t))));
"""


def test_the_js_wordpiece_gives_the_nodes_token_ids(tmp_path: Path) -> None:
    node = shutil.which("node")
    assert node is not None, "Node.js is needed (the dashboard's npm tooling)"
    tokenizer_json = locate_sources().tokenizer_dir / TOKENIZER_FILE
    texts_json = tmp_path / "texts.json"
    texts_json.write_text(json.dumps(TEXTS), encoding="utf-8")
    for max_tokens in (256, 16):
        ran = subprocess.run(
            [node, "--input-type=module", "-e", SCRIPT, EMBED_JS.as_uri(), str(tokenizer_json),
             str(max_tokens), str(texts_json)],
            capture_output=True, text=True, timeout=120, check=False)
        assert ran.returncode == 0, ran.stderr
        js_ids = json.loads(ran.stdout)
        tokenizer, _ = load_tokenizer(tokenizer_json, max_tokens)
        python_ids = [e.ids for e in tokenizer.encode_batch(TEXTS)]
        mismatched = [(text, js, py) for text, js, py in zip(TEXTS, js_ids, python_ids,
                                                             strict=True) if js != py]
        assert not mismatched, mismatched[:3]
        assert max(len(ids) for ids in js_ids) == max_tokens  # truncation was exercised
