"""The labelled headlines, the shipped head, and `gateway sentiment train|evaluate`
(gateway/news/sentiment_training.py, gateway/data/sentiment/).

The data checks read only the files; the evaluation loads the embedded model once (cached per
test process) and scores the held-out set, as `gateway sentiment evaluate` does.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from pathlib import Path

import pytest

from gateway.cli import main
from gateway.news.sentiment_model import HEAD_PATH, LABELS, Head
from gateway.news.sentiment_training import (
    HELDOUT_PATH,
    TRAIN_PATH,
    Example,
    read_examples,
    score_report,
)


def words(text: str) -> set[str]:
    return set(re.findall(r"[a-z0-9$]+", text.lower()))


def jaccard(a: set[str], b: set[str]) -> float:
    return len(a & b) / len(a | b)


def test_the_sets_are_big_and_balanced_enough() -> None:
    for path, least in ((TRAIN_PATH, 600), (HELDOUT_PATH, 150)):
        examples = read_examples(path)
        counts = Counter(e.label for e in examples)
        assert len(examples) >= least
        assert set(counts) == set(LABELS)
        assert all(0.28 <= n / len(examples) <= 0.38 for n in counts.values()), counts


def test_no_headline_is_repeated_or_nearly_repeated_across_the_split() -> None:
    train, heldout = read_examples(TRAIN_PATH), read_examples(HELDOUT_PATH)
    texts = [e.text.lower() for e in train + heldout]
    assert len(texts) == len(set(texts))
    train_words = [words(e.text) for e in train]
    for example in heldout:
        own = words(example.text)
        closest = max(jaccard(own, other) for other in train_words)
        assert closest < 0.45, example.text


def test_the_shipped_head_was_trained_on_the_shipped_training_set() -> None:
    head = Head.load(HEAD_PATH, 384)
    assert head.meta["trained_on"] == TRAIN_PATH.name
    assert head.meta["trained_on_sha256"] == hashlib.sha256(TRAIN_PATH.read_bytes()).hexdigest()
    assert head.meta["examples"] == dict(Counter(e.label for e in read_examples(TRAIN_PATH)))


def test_a_malformed_line_is_named(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "ok", "label": "BULLISH"}\n{"text": "x", "label": "UP"}\n')
    with pytest.raises(ValueError, match=r"bad\.jsonl:2"):
        read_examples(path)


def test_the_report_counts_per_class() -> None:
    truth = ["BULLISH", "BULLISH", "BEARISH", "NEUTRAL"]
    predicted = ["BULLISH", "NEUTRAL", "BEARISH", "NEUTRAL"]
    report = score_report(predicted, truth)
    assert report.accuracy == 0.75
    assert report.recall == {"BEARISH": 1.0, "NEUTRAL": 1.0, "BULLISH": 0.5}
    assert report.precision == {"BEARISH": 1.0, "NEUTRAL": 0.5, "BULLISH": 1.0}
    assert report.confusion == [[1, 0, 0], [0, 1, 0], [0, 1, 1]]
    assert round(report.macro_f1, 4) == round((1 + 2 / 3 + 2 / 3) / 3, 4)


def test_evaluate_reports_the_held_out_figures(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sentiment", "evaluate", "--model", "embedded"]) == 0
    out = capsys.readouterr().out
    macro = float(re.search(r"macro-F1: ([0-9.]+)", out).group(1))  # type: ignore[union-attr]
    assert macro >= 0.70
    for label in LABELS:
        assert re.search(rf"^{label}\s+[0-9.]+\s+[0-9.]+\s+[0-9.]+\s+\d+$", out, re.M), out
    assert "target macro-F1 >= 0.70: met" in out


def test_evaluate_without_a_model_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sentiment", "evaluate", "--model", "off"]) == 1
    assert "sentiment scoring is off" in capsys.readouterr().err


def test_train_writes_a_head_that_evaluates(tmp_path: Path) -> None:
    """Training on a small slice is quick and gives a head the model loads."""
    examples = read_examples(TRAIN_PATH)
    picked: list[Example] = []
    for label in LABELS:
        picked += [e for e in examples if e.label == label][:20]
    small = tmp_path / "small.jsonl"
    small.write_text("".join(json.dumps({"text": e.text, "label": e.label}) + "\n" for e in picked))
    out = tmp_path / "head.json"
    assert main(["sentiment", "train", "--train", str(small), "--out", str(out)]) == 0
    head = Head.load(out, 384)
    assert head.meta["trained_on"] == "small.jsonl"
    assert head.meta["examples"] == {label: 20 for label in LABELS}
