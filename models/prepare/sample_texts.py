"""The texts an export is verified on (models/prepare/export.py)."""

# Varied on purpose: one word to several hundred tokens (past any max_tokens, so truncation is
# checked), punctuation, numbers, code, non-Latin scripts; batches of 16 mix lengths (padding).
SAMPLE_TEXTS: tuple[str, ...] = (
    "Hello!",
    "ok",
    "What is the capital of France?",
    "Paris is the capital and most populous city of France.",
    "The quick brown fox jumps over the lazy dog.",
    "How do I reset my password if I no longer have access to my email?",
    "Peer-to-peer networks let every node act as both a client and a server.",
    "Retrieval-augmented generation combines a search index with a language model.",
    "FAISS performs efficient similarity search over dense vectors.",
    "ONNX Runtime runs the exported graph on CPU without PyTorch.",
    "The invoice #4471 totals $1,299.95, due on 2024-03-31.",
    "pi = 3.14159265358979, e = 2.71828182845904, sqrt(2) = 1.41421356",
    "Call +1 (555) 010-9999 ext. 42 before 17:30 UTC.",
    "Version 2.13.0 fixed 1024 bugs in 365 days; 99.9% uptime!",
    "!!! ??? ... --- *** ### @@@ $$$ %%% ^^^ &&& ((( ))) [[[ ]]] {{{ }}}",
    "def add(a, b):\n    return a + b  # adds two numbers",
    "SELECT id, name FROM users WHERE age > 30 ORDER BY name;",
    "<html><body><p class=\"x\">Hi &amp; bye</p></body></html>",
    "https://example.org/path?query=1&lang=en#section-2",
    "user@example.com wrote: 'see you at 9am'",
    "Le chat dort sur le canapé pendant que la pluie tombe.",
    "Der schnelle braune Fuchs springt über den faulen Hund.",
    "¿Dónde está la biblioteca más cercana, por favor?",
    "Questo ristorante serve la migliore pizza napoletana della città.",
    "O rato roeu a roupa do rei de Roma.",
    "Быстрая коричневая лиса прыгает через ленивую собаку.",
    "東京は日本の首都であり、世界最大の都市圏の一つです。",
    "北京是中华人民共和国的首都。",
    "서울은 대한민국의 수도입니다.",
    "القاهرة هي عاصمة مصر وأكبر مدنها.",
    "עברית נכתבת מימין לשמאל.",
    "हिन्दी भारत की राजभाषाओं में से एक है।",
    "Η Αθήνα είναι η πρωτεύουσα της Ελλάδας.",  # noqa: RUF001  (Greek on purpose)
    "Emoji test: 🚀🔥✨ launch day 🎉",
    "naïve café résumé coöperate façade jalapeño",
    "A",
    "   leading and trailing spaces   ",
    "UPPERCASE SHOUTING TEXT ABOUT DISTRIBUTED SYSTEMS",
    "Water boils at 100 °C (212 °F) at sea level.",
    "The mitochondria is the powerhouse of the cell.",
    "Photosynthesis converts light energy into chemical energy stored in glucose.",
    "In 1969, Apollo 11 landed the first humans on the Moon.",
    "Machine learning models can be quantized to 8-bit integers to run faster.",
    "A replica that misses heartbeats for ten seconds is considered dead.",
    "Shards are placed on peers with rendezvous hashing to limit data movement.",
    "Please summarize the attached quarterly report in three bullet points.",
    "It was the best of times, it was the worst of times, it was the age of wisdom, it was "
    "the age of foolishness, it was the epoch of belief, it was the epoch of incredulity.",
    "Vector databases store embeddings and answer nearest-neighbour queries; approximate "
    "indexes such as HNSW or IVF trade a little recall for a lot of speed, while exact flat "
    "indexes compare the query with every stored vector and are the reference for recall.",
    "Transformers process all tokens of a sequence in parallel using self-attention, which "
    "lets each token attend to every other token; the cost grows quadratically with the length "
    "of the sequence, which is why encoders cap their input at a few hundred tokens.",
    " ".join(["Distributed systems must tolerate partial failures, slow networks and clocks "
              "that disagree, so every request carries a deadline and every write a quorum."]
             * 12),
    " ".join(f"item {i}: {i * i}" for i in range(200)),
    "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor "
    "incididunt ut labore et dolore magna aliqua. Ut enim ad minim veniam, quis nostrud "
    "exercitation ullamco laboris nisi ut aliquip ex ea commodo consequat.",
    "query: how much protein should a female eat",
    "passage: As a general guideline, the CDC's average requirement of protein for women "
    "ages 19 to 70 is 46 grams per day.",
    "Tabs\tand\nnewlines\r\nmixed in",
    "1 2 3 4 5 6 7 8 9 10",
)
