"""`moescale tokenize` against the `tokenizers` batch encoder alone, side by side in one run:
throughput on the same text (the ratio is what the shard writing, the document split and
the resumable bookkeeping cost) and the peak RSS of `moescale tokenize` (VmHWM, its own
address space) on a corpus of at least 1 GB of real text — the standard library's source,
repeated under new names until the size is reached.

    .venv/bin/python -m benchmarks.bench_shards [--megabytes 1024] [--vocab 32000]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PEAK = """
import sys, time
from moescale.cli import main
start = time.perf_counter()
try:
    main(sys.argv[1:])
except SystemExit:
    pass
status = open("/proc/self/status").read().split("VmHWM:")[1]
print(time.perf_counter() - start, int(status.split()[0]) * 1024)
"""

ENCODER_ALONE = """
import sys, time
from pathlib import Path
from tokenizers import Tokenizer
tokenizer = Tokenizer.from_file(sys.argv[1])
start, tokens, batch, chars = time.perf_counter(), 0, [], 0
for path in sorted(Path(sys.argv[2]).iterdir()):
    batch.append(path.read_text())
    chars += len(batch[-1])
    if chars >= 4_000_000:
        tokens += sum(len(e.ids) for e in tokenizer.encode_batch(batch, add_special_tokens=False))
        batch, chars = [], 0
if batch:
    tokens += sum(len(e.ids) for e in tokenizer.encode_batch(batch, add_special_tokens=False))
print(time.perf_counter() - start, tokens)
"""


def make_corpus(folder: Path, megabytes: int) -> int:
    """Files of real text (the standard library's source) up to `megabytes`; returns bytes."""
    from moescale.training.data import stdlib_files

    sources = [p.read_text(encoding="utf-8", errors="replace") for p in stdlib_files()]
    folder.mkdir(parents=True)
    total, i = 0, 0
    while total < megabytes * 2**20:
        text = sources[i % len(sources)]
        (folder / f"doc{i:07d}.txt").write_text(text)
        total += len(text.encode())
        i += 1
    return total


def train_tokenizer(path: Path, vocab: int) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from moescale.training.data import stdlib_files

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    texts = [p.read_text(encoding="utf-8", errors="replace") for p in stdlib_files()]
    bpe.train_from_iterator(texts, trainer=trainer)
    bpe.save(str(path))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=int, default=1024)
    parser.add_argument("--vocab", type=int, default=32000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as root:
        root = Path(root)
        size = make_corpus(root / "corpus", args.megabytes)
        train_tokenizer(root / "tokenizer.json", args.vocab)
        print(f"corpus: {size / 2**20:,.0f} MB of text in {len(list((root / 'corpus').iterdir())):,} files; "
              f"byte-level BPE of {args.vocab:,} ids trained on the standard library")  # fmt: skip
        alone = subprocess.run(
            [sys.executable, "-c", ENCODER_ALONE, str(root / "tokenizer.json"), str(root / "corpus")],
            capture_output=True, text=True, check=True,
        ).stdout.split()  # fmt: skip
        started = time.perf_counter()
        ours = subprocess.run(
            [sys.executable, "-c", PEAK, "tokenize", str(root / "corpus"), "--tokenizer",
             str(root / "tokenizer.json"), "--out", str(root / "shards")],
            capture_output=True, text=True,
        )  # fmt: skip
        if ours.returncode != 0:
            sys.exit(ours.stderr)
        seconds, peak = (float(v) for v in ours.stdout.strip().splitlines()[-1].split())
        wall = time.perf_counter() - started
        encoder_s, tokens = float(alone[0]), int(alone[1])
        print(f"tokenizers encode_batch alone: {encoder_s:,.1f} s, {size / 2**20 / encoder_s:,.1f} MB/s, "
              f"{tokens:,} tokens")  # fmt: skip
        print(f"moescale tokenize:             {seconds:,.1f} s ({wall:,.1f} s with start-up), "
              f"{size / 2**20 / seconds:,.1f} MB/s; peak RSS {peak / 2**30:.2f} GB")  # fmt: skip
        print(f"ratio (moescale / encoder alone): {seconds / encoder_s:.2f}")


if __name__ == "__main__":
    main()
