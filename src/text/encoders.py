"""Text encoders: captions -> fixed-size float embeddings, the conditioning of text-to-image models.

Each encoder is built from its config alone (`conf/text/*.yaml`, stored in every checkpoint), so a
trained model can encode new prompts without its data set:

- `BagOfNgrams` (text=builtin): built in, nothing to download or fit; the embedded default.
- `SentenceTransformerEncoder` (text=sentence_transformers): a sentence-transformers model named by
  hub id or local folder (the optional extra `text`).
- `PrecomputedEmbeddings` (text=precomputed): the char-CNN-RNN embeddings shipped with the StackGAN
  release of CUB-200 / Oxford-102; it encodes only the data set's own captions.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import math
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from src.errors import ConfigError, DataError, DataNotFoundError

log = logging.getLogger(__name__)


class TextEncoder:
    """Base: `dim` and `encode(texts) -> (len(texts), dim)` float32 on the CPU."""

    dim: int

    def encode(self, texts: Sequence[str]) -> Tensor:
        raise NotImplementedError

    def identity(self) -> dict[str, Any]:
        """What makes two encoders give the same embeddings (compared across stages and checkpoints)."""
        return {"type": type(self).__name__, "dim": self.dim}


def identity_of(config: Any) -> dict[str, Any]:
    """The identity of the encoder a config builds (an encoder config stored in a checkpoint)."""
    from hydra.utils import instantiate

    if not config:
        return {}
    try:
        return instantiate(config).identity()
    except Exception:  # e.g. a local model folder that is not on this machine: compare what the config says
        name = str(config.get("_target_", "")).rsplit(".", 1)[-1]
        return {"type": name, "dim": int(config.get("dim", -1))}


def encode_captions(encoder: TextEncoder, captions: Sequence[Sequence[str]]) -> Tensor:
    """(N, K, dim) embeddings of N images' K captions each; every distinct caption is encoded once."""
    if not captions:
        return torch.zeros(0, 0, encoder.dim)
    k = len(captions[0])
    if any(len(c) != k for c in captions):
        raise DataError(f"every image needs the same number of captions ({k}); some have another number")
    unique = sorted({t for c in captions for t in c})
    index = {t: i for i, t in enumerate(unique)}
    table = encoder.encode(unique)
    flat = torch.tensor([index[t] for c in captions for t in c])
    return table[flat].reshape(len(captions), k, encoder.dim)


def tokens(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


class BagOfNgrams(TextEncoder):
    """Normalised counts of word n-grams (1..`ngrams`) times a fixed random projection to `dim`.

    The projection's column for an n-gram is drawn from a generator seeded by a hash of the n-gram and
    `seed`: an unbounded vocabulary with nothing to fit or store, so the config alone rebuilds the
    encoder. Distinct n-grams get nearly orthogonal directions; entries are about N(0, 1). Unigrams
    carry the attributes, bigrams some of the word order ("red circle above" vs "red circle below").
    """

    def __init__(self, dim: int = 256, ngrams: int = 2, seed: int = 0):
        if dim < 1 or ngrams < 1:
            raise ConfigError(f"text: dim and ngrams must be >= 1, got dim={dim}, ngrams={ngrams}")
        self.dim, self.ngrams, self.seed = int(dim), int(ngrams), int(seed)
        self._columns: dict[str, Tensor] = {}

    def identity(self) -> dict[str, Any]:
        return {**super().identity(), "ngrams": self.ngrams, "seed": self.seed}

    def features(self, text: str) -> Counter:
        words = tokens(text)
        return Counter(
            " ".join(words[i : i + n]) for n in range(1, self.ngrams + 1) for i in range(len(words) - n + 1)
        )

    def column(self, feature: str) -> Tensor:
        if feature not in self._columns:
            digest = hashlib.blake2b(f"{self.seed}\0{feature}".encode(), digest_size=8).digest()
            gen = torch.Generator().manual_seed(int.from_bytes(digest, "little") >> 1)
            self._columns[feature] = torch.randn(self.dim, generator=gen)
        return self._columns[feature]

    def encode(self, texts: Sequence[str]) -> Tensor:
        counts = [self.features(t) for t in texts]
        vocab = sorted(set().union(*counts))
        if not vocab:
            return torch.zeros(len(texts), self.dim)
        col = {f: i for i, f in enumerate(vocab)}
        rows = [r for r, c in enumerate(counts) for _ in c]
        cols = [col[f] for c in counts for f in c]
        vals = [float(v) for c in counts for v in c.values()]
        x = torch.zeros(len(texts), len(vocab))
        x[rows, cols] = torch.tensor(vals)
        x = x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)
        return x @ torch.stack([self.column(f) for f in vocab])


_LOADED: dict[tuple[str, str], Any] = {}  # one copy of a sentence-transformers model per process


class SentenceTransformerEncoder(TextEncoder):
    """A sentence-transformers model (`model`: a hub id such as sentence-transformers/all-MiniLM-L6-v2,
    or a local folder, which works offline). Embeddings are L2-normalised and scaled to norm sqrt(dim),
    so entries are about unit size like the built-in encoder's. The model loads on first use."""

    def __init__(self, model: str, dim: int, device: str = "cpu", batch_size: int = 256):
        if importlib.util.find_spec("sentence_transformers") is None:
            raise ConfigError(
                "text=sentence_transformers needs the sentence-transformers package: "
                "pip install -e '.[text]' (or pip install sentence-transformers), or use text=builtin"
            )
        self.model, self.dim, self.device, self.batch_size = str(model), int(dim), device, batch_size
        path = Path(self.model).expanduser()
        self.local = path if path.exists() else None
        if self.local is None and self.model.startswith(("/", "./", "../", "~")):
            raise DataNotFoundError(
                f"text.model={self.model}: no such folder. Give the folder of a saved sentence-transformers "
                "model (SentenceTransformer(...).save(folder) on a machine with internet), or a hub id."
            )

    def identity(self) -> dict[str, Any]:
        # A local copy of a hub model is the same model: compare by folder or id name.
        return {**super().identity(), "model": Path(self.model).name}

    def load(self) -> Any:
        key = (str(self.local or self.model), self.device)
        if key not in _LOADED:
            from sentence_transformers import SentenceTransformer

            try:
                _LOADED[key] = SentenceTransformer(key[0], device=self.device)
            except Exception as e:  # offline hub miss, a folder that is not a model, a partial download
                cause = " ".join(str(e).split())[:300]
                raise DataNotFoundError(
                    f"text.model={self.model}: cannot load this sentence-transformers model ({type(e).__name__}: "
                    f"{cause}). Offline, use a local folder: on a machine with internet run "
                    f"`python -c \"from sentence_transformers import SentenceTransformer as S; S('{self.model}')"
                    ".save('models/minilm')\"`, copy the folder here and set text.model=models/minilm"
                ) from None
        st = _LOADED[key]
        found = st.get_embedding_dimension() if hasattr(st, "get_embedding_dimension") else None
        found = found or st.get_sentence_embedding_dimension()
        if found != self.dim:
            raise ConfigError(f"text.model={self.model} gives {found}-d embeddings but text.dim={self.dim}")
        return st

    def encode(self, texts: Sequence[str]) -> Tensor:
        if not texts:
            return torch.zeros(0, self.dim)
        out = self.load().encode(
            list(texts),
            batch_size=self.batch_size,
            convert_to_tensor=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        )
        return out.float().cpu() * math.sqrt(self.dim)


def normalise(text: str) -> str:
    return " ".join(tokens(text))


class PrecomputedEmbeddings(TextEncoder):
    """The per-caption embeddings of a StackGAN release (`<root>/<split>/<file>`, shape (N, captions, dim)).

    No text model ships with them, so `encode` looks the text up among the release's own captions
    (`text_paths`, compared case- and punctuation-insensitively) and fails clearly for anything else.
    """

    def __init__(
        self,
        root: str,
        dim: int = 1024,
        file: str = "char-CNN-RNN-embeddings.pickle",
        text_paths: Sequence[str] = ("{root}/text_c10/{key}.txt", "{root}/text/{key}.txt"),
        splits: Sequence[str] = ("train", "test"),
    ):
        self.root, self.dim, self.file = str(root), int(dim), file
        self.text_paths, self.splits = list(text_paths), list(splits)
        self._index: dict[str, tuple[str, int, int]] | None = None
        self._release: Any = None

    def identity(self) -> dict[str, Any]:
        return {**super().identity(), "file": self.file}

    @property
    def release(self) -> Any:
        if self._release is None:
            from src.data.release import StackGANRelease

            self._release = StackGANRelease(self.root, self.text_paths)
        return self._release

    def embeddings(self, split: str) -> Tensor:
        emb = torch.from_numpy(self.release.embeddings(split, self.file)).float()
        if emb.dim() != 3 or emb.shape[2] != self.dim:
            raise DataError(
                f"{self.release.split_dir(split) / self.file} holds embeddings of shape {list(emb.shape)}; "
                f"expected (images, captions, {self.dim}) (text.dim={self.dim})"
            )
        return emb

    def encode(self, texts: Sequence[str]) -> Tensor:
        if self._index is None:
            self._index = {}
            for split in self.splits:
                for i, caps in enumerate(self.release.captions(split)):
                    for k, cap in enumerate(caps):
                        self._index.setdefault(normalise(cap), (split, i, k))
        out = torch.zeros(len(texts), self.dim)
        tables: dict[str, Tensor] = {}
        for row, text in enumerate(texts):
            hit = self._index.get(normalise(text))
            if hit is None:
                example = next(iter(self._index), "")
                raise ConfigError(
                    f"{text!r} is not a caption of the StackGAN release in {self.root}: text=precomputed "
                    "(the release's char-CNN-RNN embeddings) encodes only the data set's own captions, "
                    f"e.g. {example!r}. For free text, train with text=sentence_transformers or text=builtin."
                )
            split, i, k = hit
            if split not in tables:
                tables[split] = self.embeddings(split)
            out[row] = tables[split][i, k]
        return out
