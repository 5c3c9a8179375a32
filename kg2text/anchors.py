"""The PEFT anchors kg2text is compared with, and the check that they really use their adapter.

An upstream release can make PEFT decode without its prefix and say nothing (transformers 5.24.0 with
PEFT 0.21: generation ignores the prefix cache PEFT passes). A benchmark row scored that way compares
kg2text with the bare backbone, a wrong number, so every PEFT model is probed before it is scored.
"""

from __future__ import annotations

import torch

from kg2text.backbones import Backbone
from kg2text.errors import UserError

PROBE = " | Harry Potter : education : Hogwarts"


def peft_model(method: str, backbone: Backbone, length: int, mlp_hidden: int, seed: int):
    """PEFT's prefix tuning (MLP reparametrization on, as Li & Liang) or prompt tuning (sampled vocabulary)."""
    import peft

    if method == "peft-prefix":
        config = peft.PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=length,
                                         prefix_projection=True, encoder_hidden_size=mlp_hidden)
    else:
        config = peft.PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=length,
                                         prompt_tuning_init=peft.PromptTuningInit.SAMPLE_VOCAB)
    torch.manual_seed(seed)
    return peft.get_peft_model(backbone.model, config)


def generate_with(model):
    """A ``generate_batch`` for ``decode_batched`` that calls the model's own ``generate`` (PEFT or plain)."""

    def generate_batch(batch, ids, mask, config):
        out = model.generate(input_ids=ids, attention_mask=mask, generation_config=config)
        has_prompt = out.shape[1] > ids.shape[1] and torch.equal(out[:, : ids.shape[1]], ids)
        return out[:, ids.shape[1]:] if has_prompt else out

    return generate_batch


def _generate_and_forward(model, backbone: Backbone, steps: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """Greedy next-token scores from ``generate`` and, for the same tokens, logits from one full ``forward``."""
    inputs = backbone.tokenizer(PROBE + " " + backbone.separator, return_tensors="pt", add_special_tokens=False)
    inputs = inputs.to(backbone.model.device)
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=steps, do_sample=False, output_scores=True,
                             return_dict_in_generate=True, pad_token_id=backbone.tokenizer.pad_token_id)
        generated = torch.stack(out.scores)[:, 0].float()
        logits = model(input_ids=out.sequences, attention_mask=torch.ones_like(out.sequences)).logits[0]
    return generated, logits[-len(out.scores) - 1: -1].float()


def require_adapter_effect(model, backbone: Backbone) -> None:
    """Stop unless PEFT's ``generate`` uses the adapter at every step.

    Two probes: the scores ``generate`` gives must equal the logits of PEFT's own forward on the same tokens
    (the training path, which keeps the adapter), and must differ from those with the adapter disabled.
    transformers 5.24.0 broke the first: PEFT's prefix reached the first step only.
    """
    generated, forward = _generate_and_forward(model, backbone)
    with model.disable_adapter():
        without, _ = _generate_and_forward(model, backbone)
    steps = min(len(generated), len(without))
    lost = not torch.allclose(generated, forward, rtol=0, atol=1e-3)
    no_effect = torch.allclose(generated[:steps], without[:steps], rtol=0, atol=1e-3)
    if lost or no_effect:
        import peft
        import transformers

        reason = "its generate disagrees with its own forward" if lost else "its scores equal the bare backbone's"
        raise UserError(f"PEFT {peft.__version__} with transformers {transformers.__version__} decodes without its "
                        f"adapter ({reason}), so any PEFT figure would be the bare backbone's; install the tested "
                        "set: pip install -c constraints.txt -e '.[bench]'")
