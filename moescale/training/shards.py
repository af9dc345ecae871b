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
    _held_out,
    _pretrained_tokenizer,
    documents,
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
    progress: Callable[[int], None] | None = None,
) -> dict:
    """Tokenize the documents of `spec` into shards in `out` (resuming what a killed run
    left), and return the manifest; `progress(documents done)` after each batch."""
    if shard_tokens < 1:
        raise UserError(f"--shard-tokens must be at least 1, got {shard_tokens}")
    if spec.tokenizer == "bytes":
        tokenizer, fingerprint = Tokenizer("bytes", 256), "bytes"
    elif spec.tokenizer == "hf":
        pretrained = _pretrained_tokenizer(spec)
        tokenizer, fingerprint = pretrained.tokenizer, pretrained.fingerprint
    else:
        raise UserError("--tokenizer: a tokenizer.json (or bytes); a BPE is trained per run")
    eos_id = end_of_document(tokenizer, eos)
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
    seen = 0
    for batch in _batches(documents(spec), manifest["next_document"]):
        encoded = tokenizer.encode_many([text for _, _, text in batch])
        for (index, name, text), ids in zip(batch, encoded, strict=True):
            if eos_id is not None:
                ids = np.append(ids, eos_id)
            split = "val" if _held_out(name, spec.val_percent) else "train"
            if not buffers[split].fits(len(ids)):
                _flush(out, manifest, buffers, pending)  # at a document boundary only
                size = max(shard_tokens, len(ids))  # a document longer than a shard: alone
                if len(buffers[split].ids) != size:
                    buffers[split] = _Buffer(np.empty(size, dtype))
            buffer = buffers[split]
            buffer.ids[buffer.used : buffer.used + len(ids)] = ids
            buffer.used += len(ids)
            buffer.text_bytes += len(text.encode("utf-8"))
            pending, seen = index + 1, seen + 1
        if progress is not None:
            progress(seen)
    _flush(out, manifest, buffers, pending)
    if not manifest["shards"]["train"] or not manifest["shards"]["val"]:
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
    splits = {
        split: ShardedTokens(
            [np.memmap(folder / s["file"], dtype=manifest["dtype"], mode="r") for s in shards]
        )
        for split, shards in manifest["shards"].items()
    }
    val = manifest["shards"]["val"]
    # tokens per byte of the held-out text, over every validation shard
    per_byte = sum(s["tokens"] for s in val) / max(1, sum(s["text_bytes"] for s in val))
    return TokenData(
        train=splits["train"],
        val=splits["val"],
        vocab_size=manifest["vocab_size"],
        tokenizer=None,
        fingerprint=f"tokens:{manifest['tokenizer']}:{folder.resolve()}",
        tokens_per_byte=per_byte,
    )
