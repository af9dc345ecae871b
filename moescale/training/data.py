"""Training data: corpora that need no download, tokenizers, the token cache's place, held-out
batches. What a run reads from a spec, and its training batches, are sources.py's.

Sources: the Python standard library's own source (the embedded default: several MB of real
code on every machine with Python), a folder or list of plain-text files, nanoGPT-style
`train.bin`/`val.bin` (uint16 token ids), Parquet or JSONL files with a text column, and a
Hugging Face dataset saved to disk (the optional `datasets` extra). Text sources are split
into train and validation by document, fixed by a hash of each document's name, so every run
sees the same held-out tokens. A tokenized corpus is cached as token shards (shards.py, the
code `moescale tokenize` runs: bounded memory, memory-mapped), keyed by the corpus
fingerprint, the tokenizer and its vocabulary size.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sysconfig
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_serializer, model_validator

from moescale.errors import UserError

if TYPE_CHECKING:  # torch loads where batches are made: planning and spec checks stay light
    import torch

SourceKind = Literal[
    "stdlib", "text", "bin", "parquet", "jsonl", "hf_disk", "synthetic", "tokens", "mixture"
]
SYNTHETIC_TOKENS = 2**22  # uniform random ids: for measuring speed, never for a loss
TokenizerKind = Literal["bytes", "bpe", "hf"]


class DataSpec(BaseModel):
    """Where the text comes from and how it becomes tokens."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: SourceKind = "stdlib"
    path: str | list[str] | None = None  # folder, file, or list of files (not for stdlib)
    text_column: str = "text"  # parquet, jsonl, hf_disk
    tokenizer: TokenizerKind = "bytes"
    vocab_size: int = 256  # bytes: 256; bpe: the size to train; hf: the tokenizer's own
    val_percent: float = 5.0  # share of documents held out (by hash of their name)
    cache_dir: str | None = None  # default: $MOESCALE_CACHE or ~/.cache/moescale
    # hf: a local tokenizer.json (the `tokenizers` file every Hugging Face model ships); never
    # downloaded. Left out of the spec's dump while None, so older run ids hold.
    tokenizer_path: str | None = None
    # source: mixture — every part a source of its own, read in the shares of its weight
    mixture: list[MixturePart] | None = None

    @model_serializer(mode="wrap")
    def _dump(self, handler):
        data = handler(self)
        for later in ("tokenizer_path", "mixture"):  # unset: left out, so older ids hold
            if data.get(later) is None:
                data.pop(later, None)
        return data

    @model_validator(mode="after")
    def _mixture(self) -> DataSpec:
        if (self.source == "mixture") != bool(self.mixture):
            raise ValueError(
                "data.mixture: a list of sources, with source: mixture (and only then)"
            )
        if self.mixture:
            tokenizers = {(p.tokenizer, p.vocab_size, p.tokenizer_path) for p in self.mixture}
            if len(tokenizers) > 1 or any(p.mixture for p in self.mixture):
                raise ValueError(
                    "data.mixture: every part needs one tokenizer and vocab_size, and no mixture of its own"
                )
        return self


class MixturePart(DataSpec):
    """One source of a mixture and its weight (the share of training sequences it gives)."""

    weight: float = Field(gt=0)


DataSpec.model_rebuild()


def token_dtype(vocab_size: int) -> np.dtype:
    """How ids are stored: uint16 while every id fits, else uint32."""
    return np.dtype(np.uint16 if vocab_size <= 2**16 else np.uint32)


def cache_root(spec: DataSpec) -> Path:
    root = spec.cache_dir or os.environ.get("MOESCALE_CACHE") or Path.home() / ".cache" / "moescale"
    return Path(root)


def is_held_out(name: str, val_percent: float) -> bool:
    """A fixed, machine-independent split: the document's name hashed into [0, 100)."""
    digest = hashlib.blake2b(name.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") % 10_000 < val_percent * 100


# the files each file-based text source reads (a folder: every such file below it)
SUFFIXES = {"text": (".txt", ".md", ".py", ".text"), "jsonl": (".jsonl",), "parquet": (".parquet",)}


def source_files(spec: DataSpec, suffixes: tuple[str, ...]) -> list[Path]:
    if spec.path is None:
        raise UserError(f"data.path is required for source '{spec.source}'")
    given = [spec.path] if isinstance(spec.path, str) else spec.path
    files: list[Path] = []
    for item in given:
        path = Path(item).expanduser()
        if not path.exists():
            raise UserError(f"{path}: no such file or folder")
        if path.is_dir():
            files.extend(p for p in sorted(path.rglob("*")) if p.is_file() and p.suffix in suffixes)
        else:
            files.append(path)
    if not files:
        raise UserError(f"{given[0]}: empty corpus (no {'/'.join(suffixes)} files)")
    return files


def stdlib_files() -> list[Path]:
    """The standard library's .py files in a fixed order (site-packages and tests left out).
    The left-out folders are never entered: walking site-packages only to drop what it holds
    took 0.4 s of every trial worker's start."""
    root = Path(sysconfig.get_paths()["stdlib"])
    skip = {"site-packages", "test", "tests", "idlelib", "lib2to3", "__pycache__"}
    files = []
    for folder, subfolders, names in os.walk(root):  # symlinked folders not followed
        subfolders[:] = [name for name in subfolders if name not in skip]
        files.extend(Path(folder, name) for name in names if name.endswith(".py"))
    return sorted(files)  # Path order (part by part), as the corpus has always been read


def documents(spec: DataSpec) -> Iterator[tuple[str, str]]:
    """(name, text) pairs of a text source, in a fixed order."""
    if spec.source == "stdlib":
        root = Path(sysconfig.get_paths()["stdlib"])
        for path in stdlib_files():
            yield str(path.relative_to(root)), path.read_text(encoding="utf-8", errors="replace")
    elif spec.source == "text":
        for path in source_files(spec, SUFFIXES["text"]):
            yield str(path), path.read_text(encoding="utf-8", errors="replace")
    elif spec.source == "jsonl":
        for path in source_files(spec, SUFFIXES["jsonl"]):
            with path.open(encoding="utf-8") as handle:
                for i, line in enumerate(handle):
                    if line.strip():
                        yield f"{path}:{i}", _text_field(json.loads(line), spec.text_column, path)
    elif spec.source == "parquet":
        import pyarrow.parquet as pq

        for path in source_files(spec, SUFFIXES["parquet"]):
            table = pq.ParquetFile(path)
            if spec.text_column not in table.schema_arrow.names:
                raise UserError(f"{path}: missing column '{spec.text_column}'")
            i = 0  # read in record batches: a file larger than memory streams through
            for batch in table.iter_batches(batch_size=1024, columns=[spec.text_column]):
                for text in batch.column(0).to_pylist():
                    yield f"{path}:{i}", text or ""
                    i += 1
    elif spec.source == "hf_disk":
        try:
            import datasets
        except ImportError:
            raise UserError(
                "data source 'hf_disk' needs the optional extra: pip install 'moescale[datasets]'"
            ) from None
        path = Path(str(spec.path))
        if not path.exists():
            raise UserError(f"{path}: no such saved dataset")
        dataset = datasets.load_from_disk(str(path))
        if isinstance(dataset, datasets.DatasetDict):
            dataset = dataset[next(iter(dataset))]
        for i, row in enumerate(dataset):
            yield f"{path}:{i}", _text_field(row, spec.text_column, path)
    else:
        raise UserError(f"data.source '{spec.source}' has no documents")


def _text_field(row: dict, column: str, path: Path) -> str:
    if column not in row:
        raise UserError(f"{path}: missing field '{column}'")
    return str(row[column] or "")


class Tokenizer:
    """bytes (UTF-8, vocabulary 256), byte-level BPE trained locally with `tokenizers`, or a
    pretrained `tokenizers` model read from a local tokenizer.json ("hf")."""

    def __init__(self, kind: TokenizerKind, vocab_size: int, bpe=None):
        self.kind, self.vocab_size, self._bpe = kind, vocab_size, bpe

    def encode(self, text: str) -> np.ndarray:
        if self.kind == "bytes":
            return np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
        # a pretrained tokenizer's BOS/EOS templates are not added inside a corpus's stream
        return np.array(self._bpe.encode(text, add_special_tokens=False).ids, dtype=np.uint32)

    def encode_many(
        self, texts: list[str], progress: Callable[[int, int], None] | None = None
    ) -> list[np.ndarray]:
        """Every text's ids, the same as `encode` one by one. BPE runs shard by shard (about
        SHARD_CHARS characters each) through `tokenizers`' batch encoder, which spreads a
        shard's documents over every core in Rust threads (no GIL, no copies to processes);
        bytes need no work worth spreading. `progress(characters done, total)` after each."""
        if self.kind == "bytes":
            return [self.encode(text) for text in texts]
        total, done, out = sum(map(len, texts)), 0, []
        for shard in _shards(texts, SHARD_CHARS):
            encoded = self._bpe.encode_batch(shard, add_special_tokens=False)
            out.extend(np.array(e.ids, dtype=np.uint32) for e in encoded)
            done += sum(map(len, shard))
            if progress is not None:
                progress(done, total)
        return out

    def token_id(self, token: str) -> int | None:
        """The id of a token of a BPE or pretrained vocabulary (None if it has none)."""
        return None if self.kind == "bytes" else self._bpe.token_to_id(token)

    def decode(self, ids) -> str:
        if self.kind == "bytes":
            return bytes(int(i) for i in ids).decode("utf-8", errors="replace")
        return self._bpe.decode([int(i) for i in ids])


SHARD_CHARS = 4_000_000  # per batch handed to the BPE encoder: big enough to fill the cores


def _shards(texts: list[str], size: int) -> Iterator[list[str]]:
    """Consecutive runs of texts of about `size` characters (a longer text is a shard alone)."""
    shard, length = [], 0
    for text in texts:
        if shard and length + len(text) > size:
            yield shard
            shard, length = [], 0
        shard.append(text)
        length += len(text)
    if shard:
        yield shard


def train_bpe(texts: Iterable[str], vocab_size: int, path: Path) -> Tokenizer:
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import decoders, models, pre_tokenizers, trainers

    if path.exists():
        return Tokenizer("bpe", vocab_size, HFTokenizer.from_file(str(path)))
    bpe = HFTokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(texts, trainer=trainer)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    bpe.save(str(tmp))
    os.replace(tmp, path)
    return Tokenizer("bpe", vocab_size, bpe)


@dataclass(frozen=True)
class Pretrained:
    tokenizer: Tokenizer
    fingerprint: str  # a hash of the tokenizer file: part of the token cache's key


def pretrained_tokenizer(spec: DataSpec) -> Pretrained:
    """The tokenizer.json of `data.tokenizer_path`, checked against `data.vocab_size`."""
    if spec.tokenizer_path is None:
        raise UserError("data.tokenizer: hf needs data.tokenizer_path (a local tokenizer.json)")
    pretrained = read_tokenizer(spec.tokenizer_path)
    size = pretrained.tokenizer.vocab_size
    if size != spec.vocab_size:
        raise UserError(
            f"{spec.tokenizer_path}: a vocabulary of {size:,}, but data.vocab_size is "
            f"{spec.vocab_size:,}: set data.vocab_size and model.vocab_size to {size}"
        )
    return pretrained


def read_tokenizer(path: str | Path) -> Pretrained:
    """A local tokenizer.json (the `tokenizers` format), never a download."""
    from tokenizers import Tokenizer as HFTokenizer

    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"{path}: no such tokenizer file")
    try:
        loaded = HFTokenizer.from_file(str(path))
    except Exception as err:  # tokenizers raises its own Exception type for a bad file
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"{path}: not a tokenizer.json ({first})") from None
    size = loaded.get_vocab_size(with_added_tokens=True)
    digest = hashlib.blake2b(path.read_bytes(), digest_size=8).hexdigest()
    return Pretrained(Tokenizer("hf", size, loaded), digest)


@dataclass
class TokenData:
    """Train and validation token ids (memory-mapped) and the tokenizer that made them."""

    train: np.ndarray
    val: np.ndarray
    vocab_size: int
    tokenizer: Tokenizer | None
    fingerprint: str
    # token shards know the bytes of text behind their held-out tokens, not the tokenizer
    tokens_per_byte: float | None = None
    parts: list[TokenData] | None = None  # a mixture's sources, each loaded on its own


def held_out_tokens_per_byte(
    tokenizer: Tokenizer | None, batches: list[tuple[torch.Tensor, torch.Tensor]]
) -> float:
    """Tokens per byte of the text the held-out targets came from: the factor from a loss in
    bits per token to bits per byte (comparable across tokenizers). Bytes are one a token;
    BPE's targets are decoded to the text they encode and its UTF-8 bytes counted. NaN where
    the text is unknown (token files of another tokenizer, synthetic ids)."""
    import torch

    if tokenizer is None:
        return math.nan
    targets = torch.cat([t.reshape(-1) for _, t in batches])
    if tokenizer.kind == "bytes":
        return 1.0
    return targets.numel() / len(tokenizer.decode(targets.tolist()).encode("utf-8"))


def eval_batches(
    tokens: np.ndarray, n_tokens: int, seq_len: int, batch_size: int
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The fixed held-out set: the first `n_tokens` validation tokens as contiguous sequences."""
    import torch

    n_seq = n_tokens // seq_len
    if n_seq < 1 or len(tokens) < n_seq * seq_len + 1:
        raise UserError(
            f"validation split has {len(tokens)} tokens: too few for eval_tokens {n_tokens} at seq_len {seq_len}"
        )
    ids = torch.from_numpy(np.asarray(tokens[: n_seq * seq_len + 1]).astype(np.int64))
    inputs, targets = ids[:-1].view(n_seq, seq_len), ids[1:].view(n_seq, seq_len)
    return [
        (inputs[i : i + batch_size], targets[i : i + batch_size])
        for i in range(0, n_seq, batch_size)
    ]
