"""A frozen backbone driven by a tuned prefix or soft prompt: one forward for training and decoding.

Positions always come from the attention mask, so left padding never shifts a row. With a prefix
they start after the prefix (as when the prefix sits in the KV cache in Li & Liang's code and in
PEFT); with a soft prompt the prompt itself takes the first positions.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers.modeling_layers import GradientCheckpointingLayer

from kg2text.backbones import Backbone
from kg2text.errors import UserError
from kg2text.prefix import PrefixInjector
from kg2text.prompt import drop_soft_prompt, insert_soft_prompt

IGNORE_INDEX = -100
HEAD_CHUNK_ROWS = 64  # bf16 training: the LM head and its loss run on this many target rows at a time
COMPILED_BLOCKS = ("MLP", "RMSNorm")  # --compile: the backbone's modules whose elementwise ops inductor fuses
METHODS = ("prefix", "prompt", "prefix-hidden", "control")
PREFIX_METHODS = ("prefix", "prefix-hidden", "control")  # all give keys/values for every layer


def position_ids(attention_mask: torch.Tensor, offset: int | torch.Tensor = 0) -> torch.Tensor:
    """Each real token's position counted from its row's first real token, plus ``offset``."""
    positions = attention_mask.long().cumsum(-1) - 1
    return positions.clamp(min=0) + offset


def check_fits(backbone: Backbone, virtual_tokens: int, tokens: int) -> None:
    """Refuse inputs that would run past the backbone's position table (GPT-2: 1024) once the prefix counts."""
    if virtual_tokens + tokens > backbone.max_positions:
        raise UserError(f"input needs {tokens} positions plus {virtual_tokens} virtual tokens, more than "
                        f"{backbone.name}'s {backbone.max_positions}; shorten the input (fewer triples) "
                        "or lower --max-new-tokens")


def compile_elementwise_blocks(model: torch.nn.Module) -> int:
    """``torch.compile`` a frozen backbone's MLPs and RMSNorms (``COMPILED_BLOCKS``, ``--compile``); returns how many.

    Why: in a profile of a bf16 training step on an AMX CPU much of the time outside the GEMMs is elementwise ops
    (RMSNorm's upcasts, SiLU, their backwards), each a memory pass that inductor fuses (``kg2text benchmark --speed``
    measures the loop with and without it). Only these blocks: a whole compiled decoder layer recompiled for each
    layer index (the prefix is looked up by it) and took minutes; compiled attention was slower than eager. One
    compiled graph serves every layer's block (dynamic shapes: batch widths vary)."""
    blocks = [m for m in model.modules() if type(m).__name__.endswith(COMPILED_BLOCKS)]
    for block in blocks:
        block.compile(dynamic=True)
    return len(blocks)


class ChunkedHeadLoss(torch.autograd.Function):
    """Summed cross-entropy of a frozen bf16 LM head's logits, ``HEAD_CHUNK_ROWS`` target rows at a time.

    Why: the whole ``(targets, vocab)`` logits (and their fp32 copy, log-softmax and gradient, 50-100 MB each)
    were allocated afresh at every step; their page faults and memory passes were a visible share of a bf16
    step in a profile. Chunks keep them small, and fixed-size chunks give oneDNN one LM-head shape, where a shape per
    target count made it slow down over a run (see ``batching.width_multiple``). The gradient for the rows is
    computed in the forward (softmax minus one-hot, times the head), so no logits are kept for the backward."""

    @staticmethod
    def forward(ctx, rows: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, targets: torch.Tensor,
                need_grad: bool) -> torch.Tensor:
        total = torch.zeros((), dtype=torch.float32, device=rows.device)
        grad = torch.empty_like(rows) if need_grad else None
        size = HEAD_CHUNK_ROWS
        for start in range(0, len(rows), size):
            chunk, chunk_targets = rows[start: start + size], targets[start: start + size]
            count = len(chunk)
            chunk, chunk_targets = F.pad(chunk, (0, 0, 0, size - count)), F.pad(chunk_targets, (0, size - count))
            logits = F.linear(chunk, weight, bias).float()
            log_norm = logits.logsumexp(-1)
            picked = logits.gather(1, chunk_targets[:, None]).squeeze(1)
            total += (log_norm - picked)[:count].sum()
            if need_grad:
                probs = logits.sub_(log_norm[:, None]).exp_()
                probs[torch.arange(size, device=rows.device), chunk_targets] -= 1
                grad[start: start + count] = (probs.to(weight.dtype) @ weight)[:count]
        ctx.save_for_backward(grad)
        return total

    @staticmethod
    def backward(ctx, grad_total: torch.Tensor):
        (grad,) = ctx.saved_tensors
        return grad * grad_total.to(grad.dtype), None, None, None, None


class TunedLM:
    """A frozen backbone plus the prefix or soft prompt this object uses.

    Several TunedLMs may share one backbone (one base model, many tasks): each sets its own prefix
    on the backbone's shared injector right before it runs.
    """

    def __init__(self, backbone: Backbone):
        self.backbone = backbone
        self.injector = PrefixInjector.of(backbone.model)
        self.prefix: torch.Tensor | None = None
        self.rows: torch.Tensor | None = None
        self.soft_prompt: torch.Tensor | None = None
        self.shifts_positions = True  # prefix: real tokens start at P; prefix-hidden: they keep 0..T-1
        self.method = "prefix"

    def use(self, method: str, tensor: torch.Tensor | None, rows: torch.Tensor | None = None) -> None:
        """Set the trained tensor: a prefix ``(L, 2, H, P, D)`` (or a stack, with ``rows``) or a prompt ``(P, d)``."""
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}")
        self.method = method
        self.prefix, self.rows = (tensor, rows) if method in PREFIX_METHODS else (None, None)
        self.shifts_positions = method != "prefix-hidden"
        self.soft_prompt = tensor if method == "prompt" else None
        self.injector.set(self.prefix, self.rows)

    @property
    def virtual_tokens(self) -> int:
        """Positions the method takes before the real tokens (prefix-hidden takes none)."""
        if self.soft_prompt is not None:
            return self.soft_prompt.shape[0]
        return 0 if self.prefix is None or not self.shifts_positions else self.prefix.shape[-2]

    def model_inputs(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                     positions: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Keyword arguments for the backbone (forward or ``generate``) with the method applied.

        ``positions`` (with a 4-d ``attention_mask``: ``batching.collate_shared``) are the tokens' own positions
        where the mask alone cannot say them; a prefix shifts them as it shifts the mask's.
        """
        self.injector.set(self.prefix, self.rows)
        if positions is not None and self.soft_prompt is not None:
            raise ValueError("a soft prompt needs a 2-d attention mask; shared prompts are for prefixes")
        if self.soft_prompt is None:
            return {"input_ids": input_ids, "attention_mask": attention_mask,
                    "position_ids": position_ids(attention_mask, self.virtual_tokens) if positions is None
                    else positions + self.virtual_tokens}
        embeds = self.backbone.model.get_input_embeddings()(input_ids)
        embeds, mask = insert_soft_prompt(embeds, attention_mask, self.soft_prompt)
        return {"inputs_embeds": embeds, "attention_mask": mask, "position_ids": position_ids(mask)}

    def hidden_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                      positions: torch.Tensor | None = None) -> torch.Tensor:
        """Last-layer hidden states, one per input token (the soft prompt's own are dropped)."""
        body = self.backbone.model.base_model
        hidden = body(**self.model_inputs(input_ids, attention_mask, positions), use_cache=False).last_hidden_state
        if self.soft_prompt is not None:
            hidden = drop_soft_prompt(hidden, attention_mask, self.soft_prompt.shape[0])
        return hidden

    def logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        head = self.backbone.model.get_output_embeddings()
        return head(self.hidden_states(input_ids, attention_mask))

    def target_loss(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor,
                    normaliser: float | None = None, positions: torch.Tensor | None = None) -> tuple[torch.Tensor, int]:
        """Cross-entropy over target tokens; the LM head runs only where a label exists.

        The sum is divided by ``normaliser`` (default: this batch's target count); data-parallel
        training passes the count across all processes, so the result matches one big batch.
        """
        hidden = self.hidden_states(input_ids, attention_mask, positions)[:, :-1]
        targets = labels[:, 1:]
        where = targets != IGNORE_INDEX
        rows, head = hidden[where], self.backbone.model.get_output_embeddings()
        count = len(rows)
        if rows.dtype == torch.bfloat16 and not head.weight.requires_grad:
            total = ChunkedHeadLoss.apply(rows, head.weight, head.bias, targets[where],
                                          torch.is_grad_enabled() and rows.requires_grad)
        else:
            total = F.cross_entropy(head(rows).float(), targets[where], reduction="sum")
        return total / (normaliser or max(count, 1)), count

    def enable_gradient_checkpointing(self) -> None:
        """Recompute each layer in backward instead of storing its activations.

        transformers only checkpoints layers in training mode; we flip that flag on the layers
        themselves, so dropout inside them stays off (the backbone is frozen in eval mode).
        """
        model = self.backbone.model
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        for module in model.modules():
            if isinstance(module, GradientCheckpointingLayer):
                module.training = True
