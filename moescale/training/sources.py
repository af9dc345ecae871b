"""What a run reads: the tokens a DataSpec names, from whichever source (text corpora
tokenized once and cached as token shards, nanoGPT's bin files, token shards written by
`moescale tokenize`, mixtures of these), and its training batches. The one module that knows
every source, above data.py (corpora, tokenizers), shards.py and mixture.py, so none of those
imports another's loader: a mixture is handed this loader for its parts."""

from __future__ import annotations

import hashlib
import sysconfig
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from moescale.errors import UserError
from moescale.training.data import (
    SUFFIXES,
    SYNTHETIC_TOKENS,
    DataSpec,
    TokenData,
    Tokenizer,
    cache_root,
    documents,
    is_held_out,
    pretrained_tokenizer,
    source_files,
    token_dtype,
    train_bpe,
)
from moescale.training.mixture import Mixture, load_mixture
from moescale.training.shards import cached_shards, read_shards

if TYPE_CHECKING:
    import torch


def load_tokens(spec: DataSpec, progress: Callable[[int, int], None] | None = None) -> TokenData:
    """Tokenize (or load from the cache) the corpus of `spec`; `progress(characters done,
    total)` while a BPE corpus is encoded."""
    if spec.source == "mixture":  # each part loaded as its own source would be
        return load_mixture(spec, load_tokens)
    if spec.source == "bin":
        return _load_bin(spec)
    if spec.source == "tokens":  # tokenized already: the manifest names the vocabulary
        return read_shards(spec)
    if spec.tokenizer == "bytes" and spec.vocab_size != 256:
        raise UserError("data.vocab_size must be 256 with the bytes tokenizer")
    if spec.source == "synthetic":  # nothing read, nothing cached
        rng = np.random.default_rng(0)
        dtype = token_dtype(spec.vocab_size)
        train = rng.integers(0, spec.vocab_size, SYNTHETIC_TOKENS, dtype=dtype)
        val = rng.integers(0, spec.vocab_size, SYNTHETIC_TOKENS // 16, dtype=dtype)
        return TokenData(train, val, spec.vocab_size, None, f"synthetic{spec.vocab_size}")
    pretrained = pretrained_tokenizer(spec) if spec.tokenizer == "hf" else None
    corpus, total_chars = _corpus_digest(spec)  # one streamed pass: nothing held in memory
    kind = spec.tokenizer if pretrained is None else f"hf{pretrained.fingerprint}"
    key = f"{corpus}-{kind}{spec.vocab_size}-val{spec.val_percent:g}"
    folder = cache_root(spec) / "tokens" / key
    if spec.tokenizer == "bytes":
        tokenizer = Tokenizer("bytes", 256)
    elif pretrained is not None:
        tokenizer = pretrained.tokenizer
    else:
        training_texts = (t for n, t in documents(spec) if not is_held_out(n, spec.val_percent))
        tokenizer = train_bpe(training_texts, spec.vocab_size, folder / "tokenizer.json")
    train, val = cached_shards(
        spec,
        folder / "shards",
        tokenizer,
        key,
        None if progress is None else lambda _, chars: progress(chars, total_chars),
    )
    return TokenData(
        train=train, val=val, vocab_size=spec.vocab_size, tokenizer=tokenizer, fingerprint=key
    )


_DIGESTS: dict[tuple, tuple[str, int]] = {}  # this process's digests, by corpus signature


def _corpus_signature(spec: DataSpec) -> tuple | None:
    """What names a corpus's documents without reading them, where that is sure: the standard
    library by its folder (it does not change under a running Python), files by their path,
    size and modification time (with the text column read from them). None: read it."""
    if spec.source == "stdlib":
        return ("stdlib", sysconfig.get_paths()["stdlib"])
    if spec.source not in SUFFIXES:
        return None
    files = []
    for path in source_files(spec, SUFFIXES[spec.source]):
        stat = path.stat()
        files.append((str(path.resolve()), stat.st_size, stat.st_mtime_ns))
    return (spec.source, spec.text_column, tuple(files))


def _corpus_digest(spec: DataSpec) -> tuple[str, int]:
    """(a hash of every document's name and text, the characters in all), the token cache's
    key, from one pass over the documents; an empty corpus is an error. Kept for the process
    by the corpus's signature: every run of a sweep's trial worker (and of a test session)
    would otherwise read and hash the whole corpus again (the standard library: ~1 s)."""
    signature = _corpus_signature(spec)
    if signature is None:
        return _read_corpus_digest(spec)
    if signature not in _DIGESTS:
        _DIGESTS[signature] = _read_corpus_digest(spec)
    return _DIGESTS[signature]


def _read_corpus_digest(spec: DataSpec) -> tuple[str, int]:
    digest = hashlib.blake2b(digest_size=12)
    total = 0
    for name, text in documents(spec):
        digest.update(name.encode())
        digest.update(hashlib.blake2b(text.encode(), digest_size=16).digest())
        total += len(text)
    if not total:
        where = spec.path if spec.source != "stdlib" else "the standard library"
        raise UserError(f"{where}: empty corpus")
    return digest.hexdigest(), total


def _load_bin(spec: DataSpec) -> TokenData:
    folder = Path(str(spec.path)).expanduser()
    arrays = {}
    for split in ("train", "val"):
        path = folder / f"{split}.bin"
        if not path.is_file():
            raise UserError(f"{path}: no such file (source 'bin' needs train.bin and val.bin)")
        if path.stat().st_size < 4:
            raise UserError(f"{path}: empty corpus")
        arrays[split] = np.memmap(path, dtype=np.uint16, mode="r")
    top = int(max(arrays["train"].max(), arrays["val"].max()))
    if top >= spec.vocab_size:
        raise UserError(f"{folder}: token id {top} >= data.vocab_size {spec.vocab_size}")
    return TokenData(
        arrays["train"], arrays["val"], spec.vocab_size, None, f"bin:{folder.resolve()}"
    )


def train_batch(
    tokens: np.ndarray, batch_size: int, seq_len: int, seed: int, step: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random windows of the training tokens, a pure function of (seed, step): the data
    position of a run is its step, so a resumed run sees exactly the batches it would have.
    A mixture draws each window's source too (mixture.py)."""
    import torch

    if isinstance(tokens, Mixture):
        return tokens.batch(batch_size, seq_len, seed, step)
    if len(tokens) <= seq_len + 1:
        raise UserError(
            f"training corpus has {len(tokens)} tokens: fewer than one sequence of {seq_len}"
        )
    rng = np.random.default_rng([seed, step])
    starts = rng.integers(0, len(tokens) - seq_len - 1, size=batch_size)
    window = np.stack([tokens[s : s + seq_len + 1] for s in starts]).astype(np.int64)
    window = torch.from_numpy(window)
    return window[:, :-1], window[:, 1:]
