"""Loading sentiment models (gateway/news/sentiment_model.py): the embedded default with the
network off, a configured sequence-classification model from a directory, and every way a
model is refused (labels it cannot map, a head that does not fit, files that are missing).

The configured-model tests build a tiny BERT classifier in tmp_path (random weights, the
embedded model's tokenizer files), so they need no download and take well under a second.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from gateway.news.sentiment_model import (
    EMBEDDED,
    HEAD_PATH,
    LABELS,
    Head,
    ModelLoadError,
    embedded_model_dir,
    load_model,
    map_labels,
    sentiment_from_probabilities,
)

REPO = Path(__file__).resolve().parents[2]


def tiny_classifier(path: Path, id2label: dict[int, str]) -> Path:
    """A 1-layer BERT sequence classifier with these labels, saved in `path`."""
    from transformers import BertConfig, BertForSequenceClassification

    source = embedded_model_dir()
    vocab = (source / "vocab.txt").read_text(encoding="utf-8").splitlines()
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        num_labels=len(id2label),
        id2label=id2label,
        label2id={v: k for k, v in id2label.items()},
    )
    BertForSequenceClassification(config).save_pretrained(path)
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(source / name, path / name)
    return path


def test_the_embedded_model_loads_and_scores_with_the_network_off() -> None:
    """A fresh interpreter with HF_HUB_OFFLINE=1 and every socket connection refused."""
    script = textwrap.dedent(
        """
        import socket, sys

        def refuse(*args, **kwargs):
            raise OSError("network is off in this test")

        socket.socket.connect = refuse
        socket.create_connection = refuse
        socket.getaddrinfo = refuse
        from gateway.news.sentiment_model import load_model
        model = load_model("embedded", 1)
        verdict = model.predict(["Bitcoin price skyrockets to a new record high"])[0]
        print(verdict.label, verdict.model)
        """
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["BULLISH", "all-MiniLM-L6-v2+head"]


def test_probabilities_become_label_score_and_confidence() -> None:
    verdict = sentiment_from_probabilities([0.1, 0.2, 0.7], "m")
    assert verdict is not None
    assert (verdict.label, verdict.model) == ("BULLISH", "m")
    assert math.isclose(verdict.score, 0.6) and math.isclose(verdict.confidence, 0.7)
    bearish = sentiment_from_probabilities([0.8, 0.15, 0.05], "m")
    assert bearish is not None and bearish.label == "BEARISH" and bearish.score < 0
    assert sentiment_from_probabilities([math.nan, 0.5, 0.5], "m") is None
    assert sentiment_from_probabilities([0.0, 0.0, 0.0], "m") is None


@pytest.mark.parametrize(
    ("id2label", "order"),
    [
        ({0: "negative", 1: "neutral", 2: "positive"}, [0, 1, 2]),
        ({0: "Bullish", 1: "Bearish", 2: "Neutral"}, [1, 2, 0]),
        ({0: "POS", 1: "NEG", 2: "NEU"}, [1, 2, 0]),
    ],
)
def test_labels_are_mapped_by_name(id2label: dict[int, str], order: list[int]) -> None:
    assert map_labels(id2label) == order


@pytest.mark.parametrize(
    "id2label",
    [
        {0: "LABEL_0", 1: "LABEL_1", 2: "LABEL_2"},  # says nothing: never guessed
        {0: "negative", 1: "positive"},  # no neutral
        {0: "negative", 1: "bearish", 2: "neutral", 3: "positive"},  # two mean BEARISH
    ],
)
def test_labels_that_cannot_be_mapped_are_refused(id2label: dict[int, str]) -> None:
    with pytest.raises(ModelLoadError):
        map_labels(id2label)


def test_a_configured_classifier_directory_loads_and_scores(tmp_path: Path) -> None:
    path = tiny_classifier(tmp_path / "tiny", {0: "negative", 1: "neutral", 2: "positive"})
    model = load_model(str(path), 1)
    verdicts = model.predict(["Bitcoin rallies", "Ether slumps", "A guide to wallets"])
    assert model.name == str(path)
    assert len(verdicts) == 3
    for verdict in verdicts:
        assert verdict.label in LABELS and verdict.model == str(path)
        assert -1.0 <= verdict.score <= 1.0 and 0.0 < verdict.confidence <= 1.0


def test_a_classifier_with_unmappable_labels_is_refused(tmp_path: Path) -> None:
    path = tiny_classifier(tmp_path / "opaque", {0: "LABEL_0", 1: "LABEL_1", 2: "LABEL_2"})
    with pytest.raises(ModelLoadError, match="do not name BEARISH, NEUTRAL, BULLISH"):
        load_model(str(path), 1)


def test_off_and_missing_models_are_refused_with_a_reason(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="off"):
        load_model("off", 1)
    with pytest.raises(ModelLoadError, match="cannot load the sentiment model"):
        load_model(str(tmp_path / "nothing-here"), 1)


def test_a_head_that_does_not_fit_is_refused(tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text("{not json", encoding="utf-8")
    with pytest.raises(ModelLoadError, match="cannot be read"):
        Head.load(broken, 384)
    body = json.loads(HEAD_PATH.read_text(encoding="utf-8"))
    with pytest.raises(ModelLoadError, match="not trained on"):
        Head.load(HEAD_PATH, 768)
    body["labels"] = ["NEGATIVE", "NEUTRAL", "POSITIVE"]
    relabelled = tmp_path / "relabelled.json"
    relabelled.write_text(json.dumps(body), encoding="utf-8")
    with pytest.raises(ModelLoadError, match="not for the labels"):
        Head.load(relabelled, 384)
    with pytest.raises(ModelLoadError, match="cannot be read"):
        load_model(EMBEDDED, 1, head_path=tmp_path / "missing.json")


def test_the_head_round_trips_through_its_file(tmp_path: Path) -> None:
    head = Head.load(HEAD_PATH, 384)
    copy = tmp_path / "head.json"
    head.save(copy)
    again = Head.load(copy, 384)
    assert again.labels == LABELS and again.meta == head.meta
    assert all(
        math.isclose(a, b, abs_tol=1e-6)
        for row, other in zip(head.weights, again.weights, strict=True)
        for a, b in zip(row, other, strict=True)
    )
