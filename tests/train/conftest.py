"""Shared fixtures of the training tests: tiny starting files, a tiny dataset, one thread.

PyTorch's default of one thread per core makes tiny matrix products ten times slower on a busy
two-core machine (the threads wait for each other), so these tests run single-threaded; the
subprocess runs get OMP_NUM_THREADS=1 too, which also keeps their results bit-comparable.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from llamavid.runtime.api import load_llm_tokenizer
from tests.support import train_data


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_init(tiny_checkpoint: Path) -> Path:
    """A previous stage's output to start a run from (``--init``): the session's tiny checkpoint in the
    released layout (tests/support/fixtures.py). Runs read it and write their output elsewhere."""
    return tiny_checkpoint


@pytest.fixture(scope="session")
def components(tmp_path_factory) -> dict[str, Path]:
    return train_data.write_components(tmp_path_factory.mktemp("components"))


@pytest.fixture(scope="session")
def dataset(tmp_path_factory) -> dict[str, Path]:
    return train_data.write_dataset(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="session")
def tokenizer(components):
    return load_llm_tokenizer(components["llm"])
