"""Training runs as users run them, in real subprocesses: kill -9 and resume, two processes, storage."""

import os
import random
import signal
import subprocess
import sys
import time

import torch
from safetensors import safe_open

from kg2text.artifact import read_prefix

TRAIN = [sys.executable, "-m", "kg2text", "train", "--backbone", "tiny-gpt2", "--max-examples", "96",
         "--batch-size", "4", "--prefix-length", "4", "--mlp-hidden", "32", "--lr", "1e-3", "--log-every", "1"]
ENV = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}


def run(args, **kw):
    return subprocess.run(args, env=ENV, capture_output=True, text=True, timeout=300, **kw)


def prefix_of(run_dir):
    return read_prefix(run_dir)[0]


def _kill_at_checkpoint(command, run_dir, step):
    """Start a training, kill -9 it the moment checkpoint ``step`` is complete."""
    victim = subprocess.Popen(command, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    pointer = run_dir / "latest_checkpoint"
    deadline = time.time() + 120
    while not (pointer.exists() and pointer.read_text().strip() == f"checkpoint-{step}") and time.time() < deadline:
        time.sleep(0.005)
    victim.send_signal(signal.SIGKILL)
    assert victim.wait() == -signal.SIGKILL


def test_kill_9_at_random_steps_then_resume_equals_an_uninterrupted_run(tmp_path):
    # both runs multiply through oneDNN (its choice is otherwise measured per run: the two could differ)
    steps = ["--max-steps", "30", "--checkpoint-every", "2", "--fp32-matmuls", "onednn"]
    done = run(TRAIN + steps + ["--output", str(tmp_path / "straight")])
    assert done.returncode == 0, done.stderr[-2000:]

    run_dir = tmp_path / "killed"
    kill_points = sorted(random.Random(7).sample(range(2, 30, 2), 3))  # three different checkpoints
    _kill_at_checkpoint(TRAIN + steps + ["--output", str(run_dir)], run_dir, kill_points[0])
    resume = [sys.executable, "-m", "kg2text", "train", "--output", str(run_dir), "--resume"]
    for step in kill_points[1:]:
        _kill_at_checkpoint(resume, run_dir, step)
        assert not (run_dir / "prefix.safetensors").exists()
    resumed = run(resume)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"resuming at step {kill_points[-1]}" in resumed.stdout
    assert torch.equal(prefix_of(run_dir), prefix_of(tmp_path / "straight"))
    straight_log = (tmp_path / "straight" / "train_log.jsonl").read_text().splitlines()
    resumed_log = (run_dir / "train_log.jsonl").read_text().splitlines()
    assert [line.split('"tokens"')[0] for line in resumed_log] == [line.split('"tokens"')[0] for line in straight_log]
    assert not list(run_dir.glob("checkpoint-*"))  # cleaned up after the final save


def test_two_processes_match_one_on_the_same_global_batch(tmp_path):
    steps = ["--max-steps", "6", "--checkpoint-every", "0", "--batch-size", "8"]
    single = run(TRAIN + steps + ["--output", str(tmp_path / "one")])
    assert single.returncode == 0, single.stderr[-2000:]
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m"]
    double = run(launch + TRAIN[2:] + steps + ["--output", str(tmp_path / "two")])
    assert double.returncode == 0, double.stderr[-3000:]
    assert "with 2 process(es)" in double.stdout and "with 1 process(es)" in single.stdout
    one, two = prefix_of(tmp_path / "one"), prefix_of(tmp_path / "two")
    assert torch.allclose(one, two, atol=1e-5), (one - two).abs().max()
    assert not torch.equal(one, prefix_of(tmp_path / "one") * 0)


def test_fp16_storage_halves_the_file_and_still_loads(tmp_path):
    result = run(TRAIN + ["--max-steps", "2", "--save-dtype", "float16", "--output", str(tmp_path / "half")])
    assert result.returncode == 0, result.stderr[-2000:]
    with safe_open(tmp_path / "half" / "prefix.safetensors", "pt") as handle:
        assert handle.get_tensor("prefix").dtype == torch.float16
    out = run([sys.executable, "-m", "kg2text", "generate", "--prefix", str(tmp_path / "half"), "--num-beams", "1",
               "--max-new-tokens", "3", "A | b | c"])
    assert out.returncode == 0 and len(out.stdout.splitlines()) == 1


def test_a_second_training_on_the_same_folder_is_refused(tmp_path):
    first = subprocess.Popen(TRAIN + ["--max-steps", "400", "--output", str(tmp_path / "busy")], env=ENV,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        lock = tmp_path / "busy" / ".lock"
        deadline = time.time() + 60
        while not lock.exists() and time.time() < deadline:
            time.sleep(0.05)
        second = run(TRAIN + ["--max-steps", "1", "--output", str(tmp_path / "busy"), "--resume"])
        assert second.returncode == 2 and "in use by another training" in second.stderr
        third = run(TRAIN + ["--max-steps", "1", "--output", str(tmp_path / "busy")])
        assert third.returncode == 2 and "holds an unfinished run" in third.stderr
    finally:
        first.kill()
        first.wait()
