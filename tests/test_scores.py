"""ui/scores.py: the judge's confidences, computed once per judge file version and images."""
from __future__ import annotations

import os

import numpy as np
import pytest
import streamlit as st
import torch

from tests.test_classifier import block_dataset
from ui import scores
from vae.classifier import save_classifier, train_classifier


@pytest.fixture(autouse=True)
def fresh_caches():
    st.cache_resource.clear()
    yield
    st.cache_resource.clear()


@pytest.fixture(scope="module")
def judge_file(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("judge") / "classifier-blocks.safetensors"
    save_classifier(train_classifier(block_dataset(), epochs=2, batch_size=32, channels=(4, 8)), path)
    return path


def frames(seed: int) -> np.ndarray:
    images = block_dataset().test.images[seed * 5:(seed + 1) * 5].float() / 255.0
    return images.permute(0, 2, 3, 1).numpy()  # [M, H, W, C], as the pages hold them


def test_confidences_are_the_judges_and_are_computed_once_per_images(judge_file, monkeypatch):
    judge = scores.load_judge(str(judge_file), judge_file.stat().st_mtime_ns)
    expected = judge.probs(torch.from_numpy(frames(0)).permute(0, 3, 1, 2)).max(dim=1).values.double().numpy()
    first = scores.judge_confidence(judge, frames(0))
    np.testing.assert_allclose(first, expected)
    assert not first.flags.writeable  # shared by every visitor
    calls = []
    monkeypatch.setattr(scores, "_confidence", lambda j, x: calls.append(len(x)) or np.zeros(len(x)))
    assert scores.judge_confidence(judge, frames(0)) is first and not calls  # the same frames: cached
    assert list(scores.judge_confidence(judge, frames(1))) == [0.0] * 5 and calls == [5]  # new frames: asked


def test_a_retrained_judge_file_is_asked_again(judge_file, monkeypatch):
    old = scores.judge_confidence(scores.load_judge(str(judge_file), judge_file.stat().st_mtime_ns), frames(0))
    stat = judge_file.stat()
    os.utime(judge_file, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))  # the file replaced
    monkeypatch.setattr(scores, "_confidence", lambda j, x: np.full(len(x), 0.5))
    new = scores.judge_confidence(scores.load_judge(str(judge_file), judge_file.stat().st_mtime_ns), frames(0))
    assert list(new) == [0.5] * 5 and not np.array_equal(new, old)
