"""Tokenizing a corpus with byte-level BPE: one document at a time (the serial path) against
`Tokenizer.encode_many` (shards through `tokenizers`' batch encoder, on every core), on the
same documents with the same trained tokenizer; checks they give the same tokens.

    python -m benchmarks.bench_tokenize            # ~10 MB of the standard library's source
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from moescale.training.data import stdlib_files, train_bpe


def corpus(megabytes: float) -> list[str]:
    texts, size = [], 0
    for path in stdlib_files():
        text = path.read_text(encoding="utf-8", errors="replace")
        texts.append(text)
        size += len(text)
        if size > megabytes * 1e6:
            break
    return texts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=float, default=10)
    parser.add_argument("--vocab", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    texts = corpus(args.megabytes)
    with tempfile.TemporaryDirectory() as folder:
        tokenizer = train_bpe(texts[: len(texts) // 4], args.vocab, Path(folder) / "bpe.json")
        serial_s, parallel_s = [], []
        for _ in range(args.repeats):  # A B A B: the machine's noise hits both alike
            start = time.perf_counter()
            serial = [tokenizer.encode(t) for t in texts]
            serial_s.append(time.perf_counter() - start)
            start = time.perf_counter()
            parallel = tokenizer.encode_many(texts)
            parallel_s.append(time.perf_counter() - start)
        same = all(np.array_equal(a, b) for a, b in zip(serial, parallel, strict=True))
    chars = sum(map(len, texts))
    print(f"{len(texts)} documents, {chars / 1e6:.1f} M characters, BPE vocabulary {args.vocab}")
    print(f"one at a time: {min(serial_s):.2f} s   encode_many: {min(parallel_s):.2f} s")
    ratios = [a / b for a, b in zip(serial_s, parallel_s, strict=True)]
    print(
        f"speed-up pair by pair: {', '.join(f'{r:.2f}×' for r in ratios)}; identical tokens: {same}"
    )


if __name__ == "__main__":
    main()
