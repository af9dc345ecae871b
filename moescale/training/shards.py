"""Token shards: a corpus tokenized once, in bounded memory, into flat uint16/uint32 files
with a manifest (`moescale tokenize`), and read back memory-mapped (`data.source: tokens`).

A folder holds train-NNNNN.bin and val-NNNNN.bin (each document whole, the tokenizer's
end-of-document id after it) and manifest.json: the dtype, the vocabulary, the tokenizer's
hash, and for every shard its tokens and the bytes of text they came from (for bits per
byte). Documents are split into train and validation by the hash of their name, as every
text source is. Memory holds one encoding batch and one shard's buffer per split, never the
corpus; a shard is written (atomically) only at a document boundary, and the manifest after
it, so a killed run resumes at the first document not yet in a shard.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from moescale.errors import UserError
from moescale.results import atomic_write_json, read_json
from moescale.training.data import (
    SHARD_CHARS,
    DataSpec,
    TokenData,
    Tokenizer,
    documents,
    is_held_out,
    pretrained_tokenizer,
    token_dtype,
)

MANIFEST = "manifest.json"
DEFAULT_SHARD_TOKENS = 2**25  # 32M tokens: 128 MB of uint32 buffered per split at most
EOS_CANDIDATES = ("<|endoftext|>", "</s>", "<|end_of_text|>", "<eos>", "[SEP]")
SPLITS = ("train", "val")


def end_of_document(tokenizer: Tokenizer, eos: str | None) -> int | None:
    """The id written after each document: `eos` named, else the first of EOS_CANDIDATES the
    vocabulary has; bytes have no spare id (None: documents simply follow each other)."""
    if tokenizer.kind == "bytes":
        if eos is not None:
            raise UserError("--eos: the bytes tokenizer has no id to spare for it")
        return None
    for name in (eos,) if eos is not None else EOS_CANDIDATES:
        token = tokenizer.token_id(name)
        if token is not None:
            return int(token)
    if eos is not None:
        raise UserError(f"--eos {eos}: not a token of this tokenizer")
    raise UserError(
        f"the tokenizer has none of {', '.join(EOS_CANDIDATES)}: name its end-of-document "
        "token with --eos"
    )


@dataclass
class _Buffer:
    """One split's tokens waiting for their shard, and the bytes of text they came from."""

    ids: np.ndarray
    used: int = 0
    text_bytes: int = 0

    def fits(self, n: int) -> bool:
        return self.used + n <= len(self.ids)

    def add(self, ids: np.ndarray, text_bytes: int) -> None:
        self.ids[self.used : self.used + len(ids)] = ids
        self.used += len(ids)
        self.text_bytes += text_bytes


def _batches(docs: Iterator[tuple[str, str]], skip: int) -> Iterator[list[tuple[int, str, str]]]:
    """(index, name, text) of the documents from `skip` on, in runs of about SHARD_CHARS."""
    batch, chars = [], 0
    for index, (name, text) in enumerate(docs):
        if index < skip:
            continue
        batch.append((index, name, text))
        chars += len(text)
        if chars >= SHARD_CHARS:
            yield batch
            batch, chars = [], 0
    if batch:
        yield batch


def write_shards(
    spec: DataSpec,
    out: Path,
    shard_tokens: int = DEFAULT_SHARD_TOKENS,
    eos: str | None = None,
    progress: Callable[[int, int], None] | None = None,
    *,
    tokenizer: tuple[Tokenizer, str] | None = None,
    cache: bool = False,
) -> dict:
    """Tokenize the documents of `spec` into shards in `out` (resuming what a killed run
    left), and return the manifest; `progress(documents done, characters done)` after each
    batch. `tokenizer` (with its fingerprint) instead of the spec's: a BPE trained for the
    corpus. `cache`: as the token cache of a text source writes, documents back to back (no
    end-of-document id: the stream every cached run has trained on) and, where the split
    holds out no document, the last one held out (a tiny corpus still has a validation set)."""
    if shard_tokens < 1:
        raise UserError(f"--shard-tokens must be at least 1, got {shard_tokens}")
    if tokenizer is not None:
        tokenizer, fingerprint = tokenizer
    elif spec.tokenizer == "bytes":
        tokenizer, fingerprint = Tokenizer("bytes", 256), "bytes"
    elif spec.tokenizer == "hf":
        pretrained = pretrained_tokenizer(spec)
        tokenizer, fingerprint = pretrained.tokenizer, pretrained.fingerprint
    else:
        raise UserError("--tokenizer: a tokenizer.json (or bytes); a BPE is trained per run")
    eos_id = None if cache else end_of_document(tokenizer, eos)
    dtype = token_dtype(tokenizer.vocab_size)
    fresh = {
        "dtype": dtype.name, "vocab_size": tokenizer.vocab_size, "tokenizer": fingerprint,
        "eos_id": eos_id, "val_percent": spec.val_percent, "next_document": 0,
        "complete": False, "shards": {split: [] for split in SPLITS},
    }  # fmt: skip
    manifest = _resumable(out, fresh)
    out.mkdir(parents=True, exist_ok=True)
    buffers = {split: _Buffer(np.empty(shard_tokens, dtype)) for split in SPLITS}
    pending = manifest["next_document"]  # the first document not yet in a written shard
    seen = chars = 0
    last = None  # the last document's split, ids and bytes: it is still in its buffer
    for batch in _batches(documents(spec), manifest["next_document"]):
        encoded = tokenizer.encode_many([text for _, _, text in batch])
        for (index, name, text), ids in zip(batch, encoded, strict=True):
            if eos_id is not None:
                ids = np.append(ids, eos_id)
            split = "val" if is_held_out(name, spec.val_percent) else "train"
            if not buffers[split].fits(len(ids)):
                _flush(out, manifest, buffers, pending)  # at a document boundary only
                size = max(shard_tokens, len(ids))  # a document longer than a shard: alone
                if len(buffers[split].ids) != size:
                    buffers[split] = _Buffer(np.empty(size, dtype))
            last = (split, ids, len(text.encode("utf-8")))
            buffers[split].add(ids, last[2])
            pending, seen, chars = index + 1, seen + 1, chars + len(text)
        if progress is not None:
            progress(seen, chars)
    held_out = manifest["shards"]["val"] or buffers["val"].used
    if cache and not held_out and last is not None and last[0] == "train":
        _, ids, text_bytes = last  # tiny corpora: the last document moves to validation
        buffers["train"].used -= len(ids)
        buffers["train"].text_bytes -= text_bytes
        buffers["val"] = _Buffer(np.empty(len(ids), dtype))
        buffers["val"].add(ids, text_bytes)
    _flush(out, manifest, buffers, pending)
    if not manifest["shards"]["train"] or not manifest["shards"]["val"]:
        if cache:  # the run's own words: its corpus, not a folder it never named
            raise UserError(f"{spec.path}: corpus too small to split into train and validation")
        raise UserError(
            f"{out}: the corpus gave no {'training' if not manifest['shards']['train'] else 'validation'} "
            "documents (too few documents for the split, or none at all)"
        )
    manifest["complete"] = True
    atomic_write_json(out / MANIFEST, manifest)
    return manifest


def _resumable(out: Path, fresh: dict) -> dict:
    """The manifest a killed run left (same tokenizer and split), or `fresh`."""
    path = out / MANIFEST
    if not path.exists():
        if out.exists() and any(out.iterdir()):
            raise UserError(f"{out}: not empty and holds no {MANIFEST}; choose an empty folder")
        return fresh
    manifest = read_json(path)
    same = all(manifest.get(k) == fresh[k] for k in ("dtype", "vocab_size", "tokenizer", "eos_id", "val_percent"))  # fmt: skip
    if not same:
        raise UserError(f"{out}: holds shards of another tokenizer or split; choose another folder")
    return manifest


def _flush(out: Path, manifest: dict, buffers: dict[str, _Buffer], next_document: int) -> None:
    """Write every non-empty buffer as its split's next shard, then the manifest (which
    names the documents done): a kill between the two leaves an unnamed shard, rewritten."""
    for split, buffer in buffers.items():
        if not buffer.used:
            continue
        name = f"{split}-{len(manifest['shards'][split]):05d}.bin"
        tmp = out / f".{name}.{os.getpid()}.tmp"
        buffer.ids[: buffer.used].tofile(tmp)
        os.replace(tmp, out / name)
        manifest["shards"][split].append(
            {"file": name, "tokens": int(buffer.used), "text_bytes": int(buffer.text_bytes)}
        )
        buffer.used = buffer.text_bytes = 0
    manifest["next_document"] = next_document
    atomic_write_json(out / MANIFEST, manifest)


class ShardedTokens:
    """A split's shards as one sequence of ids, memory-mapped: its length and slices (a
    window may straddle two shards), which is all batches need."""

    def __init__(self, arrays: list[np.ndarray]):
        self.arrays = arrays
        self.starts = np.cumsum([0] + [len(a) for a in arrays])
        self.dtype = arrays[0].dtype

    def __len__(self) -> int:
        return int(self.starts[-1])

    def __getitem__(self, index: slice) -> np.ndarray:
        if not isinstance(index, slice) or index.step not in (None, 1):
            raise TypeError("token shards are read in contiguous slices")
        start, stop, _ = index.indices(len(self))
        first = int(np.searchsorted(self.starts, start, side="right")) - 1
        pieces = []
        while start < stop:
            offset = start - self.starts[first]
            take = min(stop - start, len(self.arrays[first]) - offset)
            pieces.append(self.arrays[first][offset : offset + take])
            start += take
            first += 1
        return np.concatenate(pieces) if len(pieces) != 1 else pieces[0]


def read_split(folder: Path, manifest: dict, split: str) -> np.ndarray | ShardedTokens:
    """One split of a shards folder, memory-mapped: the array itself when it is one shard."""
    arrays = [
        np.memmap(folder / s["file"], dtype=manifest["dtype"], mode="r")
        for s in manifest["shards"][split]
    ]
    return arrays[0] if len(arrays) == 1 else ShardedTokens(arrays)


def cached_shards(
    spec: DataSpec,
    folder: Path,
    tokenizer: Tokenizer,
    fingerprint: str,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[np.ndarray | ShardedTokens, np.ndarray | ShardedTokens]:
    """(train, val) of a text source's token cache in `folder`: written once by
    `write_shards` in cache mode, in bounded memory, into a private folder renamed into place
    (a failed write leaves nothing; of two processes writing at once, the first to finish
    wins and the other's is removed), then memory-mapped."""
    if not (folder / MANIFEST).is_file():
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = folder.with_name(f".{folder.name}.{os.getpid()}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            write_shards(
                spec, tmp, progress=progress, tokenizer=(tokenizer, fingerprint), cache=True
            )
            try:
                os.replace(tmp, folder)
            except OSError:
                if not (folder / MANIFEST).is_file():
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    manifest = read_json(folder / MANIFEST)
    return read_split(folder, manifest, "train"), read_split(folder, manifest, "val")


def read_shards(spec: DataSpec) -> TokenData:
    """`data.source: tokens`: a folder `moescale tokenize` wrote, memory-mapped."""
    if spec.path is None:
        raise UserError("data.path is required for source 'tokens' (a folder of token shards)")
    folder = Path(str(spec.path)).expanduser()
    if not (folder / MANIFEST).is_file():
        raise UserError(f"{folder}: no {MANIFEST} (write one with `moescale tokenize`)")
    manifest = read_json(folder / MANIFEST)
    if not manifest.get("complete"):
        raise UserError(f"{folder}: tokenizing did not finish; run `moescale tokenize` again")
    if manifest["vocab_size"] != spec.vocab_size:
        raise UserError(
            f"{folder}: tokens of a vocabulary of {manifest['vocab_size']:,}, but "
            f"data.vocab_size is {spec.vocab_size:,}"
        )
    val = manifest["shards"]["val"]
    # tokens per byte of the held-out text, over every validation shard
    per_byte = sum(s["tokens"] for s in val) / max(1, sum(s["text_bytes"] for s in val))
    return TokenData(
        train=read_split(folder, manifest, "train"),
        val=read_split(folder, manifest, "val"),
        vocab_size=manifest["vocab_size"],
        tokenizer=None,
        fingerprint=f"tokens:{manifest['tokenizer']}:{folder.resolve()}",
        tokens_per_byte=per_byte,
    )
