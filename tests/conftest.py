import pytest
import torch

from kg2text.backbones import load_backbone
from kg2text.training import TrainConfig, train

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def tiny_gpt2():
    return load_backbone("tiny-gpt2")


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    """A tiny-gpt2 WebNLG run folder, trained for a few steps (shared by CLI and artifact tests)."""
    out = tmp_path_factory.mktemp("runs") / "webnlg"
    train(TrainConfig(output=str(out), backbone="tiny-gpt2", max_steps=4, max_examples=32, batch_size=8,
                      prefix_length=4, mlp_hidden=32, lr=1e-3, log_every=2))
    return out


@pytest.fixture(scope="session")
def control_run(tmp_path_factory):
    """A tiny-gpt2 ``--method control`` WebNLG run (control and serve tests)."""
    out = tmp_path_factory.mktemp("runs") / "control"
    train(TrainConfig(output=str(out), backbone="tiny-gpt2", method="control", max_steps=3, max_examples=40,
                      batch_size=8, prefix_length=4, control_length=2, mlp_hidden=32, lr=1e-3, log_every=1,
                      checkpoint_every=0))
    return out


@pytest.fixture(scope="session")
def e2e_run(tmp_path_factory):
    """A tiny-gpt2 E2E run (trained on the shipped dev split), for multi-task tests."""
    out = tmp_path_factory.mktemp("runs") / "e2e"
    train(TrainConfig(output=str(out), backbone="tiny-gpt2", dataset="e2e", split="dev", max_steps=4,
                      max_examples=32, batch_size=8, prefix_length=4, mlp_hidden=32, lr=1e-2, log_every=2))
    return out
