"""--average-last: the saved prefix is the mean of the trained tensor at every AVERAGE_EVERY-th step of the end."""

import math

import pytest
import torch
from safetensors.torch import load_file

import kg2text.checkpoint
import kg2text.training as training
from kg2text.artifact import read_prefix
from kg2text.backbones import load_backbone
from kg2text.errors import UserError
from kg2text.methods import build_tuner
from kg2text.training import TailAverage, TrainConfig, train


def _config(out, **overrides) -> TrainConfig:
    settings = dict(output=str(out), backbone="tiny-gpt2", max_steps=20, max_examples=40, batch_size=2,
                    prefix_length=2, mlp_hidden=8, lr=1e-2, checkpoint_every=5, log_every=1, average_last=0.5)
    return TrainConfig(**settings | overrides)


def _trained_tensor(run, step: int) -> torch.Tensor:
    """The trained tensor at a checkpoint's step, rebuilt from its module state alone."""
    config = TrainConfig.from_run(run)
    tuner, _ = build_tuner("prefix", load_backbone(config.backbone), config.prefix_length, config.mlp_hidden, None,
                           config.seed)
    tuner.load_state_dict(load_file(run / f"checkpoint-{step}" / "module.safetensors"))
    with torch.no_grad():
        return tuner()


def test_the_saved_prefix_is_the_mean_at_every_5th_step_of_the_last_half_and_the_last_step_is_beside_it(
        tmp_path, monkeypatch):
    monkeypatch.setattr(training, "AVERAGE_EVERY", 5)
    monkeypatch.setattr(kg2text.checkpoint, "KEEP", 100)  # every checkpoint stays, to rebuild the tensors from
    monkeypatch.setattr(training, "remove_checkpoints", lambda run_dir: None)
    run = tmp_path / "run"
    train(_config(run))
    averaged, header = read_prefix(run)
    last, last_header = read_prefix(run / "last-step")
    expected = torch.stack([_trained_tensor(run, 10), _trained_tensor(run, 15), last]).mean(0)  # steps 10, 15, 20
    assert torch.allclose(averaged, expected, atol=1e-6)
    assert (averaged - last).abs().max() > 1e-3  # lr 1e-2 still moves the tensor at steps 10-20
    assert header["averaged"] == {"every": 5, "tensors": 3} and "averaged" not in last_header
    assert header["train_config"]["average_last"] == 0.5


def test_an_interrupted_and_resumed_averaging_run_equals_an_uninterrupted_one(tmp_path, monkeypatch):
    monkeypatch.setattr(training, "AVERAGE_EVERY", 5)
    train(_config(tmp_path / "straight"))
    real_log = training._log

    def interrupt_at_step_17(path, progress, *args):  # after the checkpoint at 15, which holds 2 of the 3 tensors
        real_log(path, progress, *args)
        if progress["step"] == 17:
            raise KeyboardInterrupt

    monkeypatch.setattr(training, "_log", interrupt_at_step_17)
    with pytest.raises(KeyboardInterrupt):
        train(_config(tmp_path / "resumed"))
    monkeypatch.setattr(training, "_log", real_log)
    train(TrainConfig.from_run(tmp_path / "resumed"), resume=True)
    for sub in (".", "last-step"):
        assert torch.equal(read_prefix(tmp_path / "resumed" / sub)[0], read_prefix(tmp_path / "straight" / sub)[0])


def test_a_run_too_short_for_a_tensor_in_its_last_part_saves_its_last_step(tmp_path, capsys):
    run = tmp_path / "short"
    train(_config(run, max_steps=8, average_last=0.3))  # the default AVERAGE_EVERY (50) never comes
    assert "no 50th step fell in that part of the run" in capsys.readouterr().err
    averaged, header = read_prefix(run)
    assert torch.equal(averaged, read_prefix(run / "last-step")[0]) and "averaged" not in header


@pytest.mark.parametrize("step, elapsed_s, total_steps, minutes, due", [
    (50, 1800.0, math.inf, 60, True),  # half of 60 minutes gone: the last half has begun
    (50, 1799.0, math.inf, 60, False),
    (51, 3000.0, math.inf, 60, False),  # not a 50th step
    (100, 5.0, 200, None, True),  # without a time budget: the last half of 200 steps
    (50, 5.0, 200, None, False),
])
def test_a_tensor_is_taken_at_every_50th_step_in_the_last_part_of_the_time_or_the_steps(step, elapsed_s,
                                                                                       total_steps, minutes, due):
    assert TailAverage(0.5).due({"step": step, "elapsed_s": elapsed_s}, total_steps, minutes) is due


@pytest.mark.parametrize("overrides, message", [
    ({"average_last": 1.0}, "at least 0 \\(off\\) and below 1"),
    ({"average_last": -0.1}, "at least 0 \\(off\\) and below 1"),
    ({"dev_file": __file__}, "--dev-file keeps the step with the best dev loss"),
])
def test_bad_average_settings_are_refused_by_name(tmp_path, overrides, message):
    with pytest.raises(UserError, match=message):
        _config(tmp_path / "r", **overrides).validate()


def test_the_peft_trainer_refuses_averaging_by_name(tmp_path, capsys):
    from kg2text.cli import main

    code = main(["train", "--trainer", "peft", "--average-last", "0.3", "--backbone", "tiny-gpt2", "--max-steps", "1",
                 "--output", str(tmp_path / "peft")])
    assert code == 2 and "--average-last is kg2text's own loop" in capsys.readouterr().err
    assert not (tmp_path / "peft").exists()
