"""Decoding: prefixed prompts in, one clean sentence per input out (greedy or beam search).

Inputs are left-padded and their positions come from the mask, so a row decodes the same in any
batch. The prefix is set once per loaded model and broadcast to rows and beams by the attention
hook; the KV cache holds only real tokens. Newline tokens are banned (as in Li & Liang).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm
from transformers import GenerationConfig

from kg2text.artifact import check_compatible, read_prefix
from kg2text.backbones import Backbone, load_backbone
from kg2text.linearize import Format, Item, get_format, model_prompt
from kg2text.model import PrefixedLM, check_fits, position_ids


@dataclass(frozen=True)
class DecodeConfig:
    """Search settings; defaults follow Li & Liang's table-to-text decoding (beam 5)."""

    num_beams: int = 5
    length_penalty: float = 1.0
    no_repeat_ngram_size: int = 0
    max_new_tokens: int = 100
    batch_size: int = 16


@dataclass
class LoadedPrefix:
    """A frozen backbone with a trained prefix set on it, ready to decode."""

    lm: PrefixedLM
    format: Format
    header: dict

    @property
    def backbone(self) -> Backbone:
        return self.lm.backbone


def load_for_generation(run: Path, backbone: Backbone | None = None) -> LoadedPrefix:
    """Load a run's prefix onto its backbone (loaded by the name in the header unless given)."""
    prefix, header = read_prefix(Path(run))
    backbone = backbone or load_backbone(header["backbone"])
    check_compatible(header, backbone, Path(run))
    lm = PrefixedLM(backbone)
    lm.injector.set(prefix.to(backbone.model.dtype))
    return LoadedPrefix(lm, get_format(header["format"]), header)


@functools.cache
def _newline_token_ids(tokenizer) -> tuple[int, ...]:
    vocab = tokenizer.get_vocab()
    return tuple(i for token, i in vocab.items() if "\n" in tokenizer.convert_tokens_to_string([token]))


def _generation_config(backbone: Backbone, decode: DecodeConfig) -> GenerationConfig:
    tokenizer = backbone.tokenizer
    banned = [[i] for i in _newline_token_ids(tokenizer)]
    return GenerationConfig(
        do_sample=False, num_beams=decode.num_beams, length_penalty=decode.length_penalty,
        no_repeat_ngram_size=decode.no_repeat_ngram_size, max_new_tokens=decode.max_new_tokens,
        early_stopping=decode.num_beams > 1 or None, bad_words_ids=banned or None,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )


def decode_prompts(lm: PrefixedLM, prompts: list[str], decode: DecodeConfig, progress: bool = False) -> list[str]:
    """Generate a sentence for each model prompt, batched by length, returned in input order."""
    tokenizer, model = lm.backbone.tokenizer, lm.backbone.model
    encoded = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    for ids in encoded:
        check_fits(lm.backbone, lm.injector.length, len(ids) + decode.max_new_tokens)
    order = sorted(range(len(prompts)), key=lambda i: len(encoded[i]))
    config = _generation_config(lm.backbone, decode)
    outputs: list[str] = [""] * len(prompts)
    batches = [order[i: i + decode.batch_size] for i in range(0, len(order), decode.batch_size)]
    for batch in tqdm(batches, desc="decoding", unit="batch", disable=not progress):
        width = max(len(encoded[i]) for i in batch)
        ids = torch.full((len(batch), width), tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, i in enumerate(batch):
            ids[row, width - len(encoded[i]):], mask[row, width - len(encoded[i]):] = torch.tensor(encoded[i]), 1
        ids, mask = ids.to(model.device), mask.to(model.device)
        with torch.no_grad():
            out = model.generate(input_ids=ids, attention_mask=mask, generation_config=config,
                                 position_ids=position_ids(mask, lm.injector.length))
        for row, text in zip(batch, tokenizer.batch_decode(out[:, width:], skip_special_tokens=True), strict=True):
            outputs[row] = " ".join(text.split())
    return outputs


def generate_sentences(loaded: LoadedPrefix, inputs: list[tuple[Item, ...]], decode: DecodeConfig,
                       progress: bool = False) -> list[str]:
    """Parsed inputs (triples or MR slots) -> sentences."""
    separator = loaded.backbone.separator
    prompts = [model_prompt(loaded.format.linearize(items), separator) for items in inputs]
    return decode_prompts(loaded.lm, prompts, decode, progress)
