"""kg2text's own decoding loop: greedy and beam search over a preallocated KV cache.

Why not ``model.generate``: with a prefix, transformers' cache grows by concatenation and the prefix
is concatenated in front of it in every layer at every step; beam search reorders (copies) the whole
cache each step, and every row keeps computing until the slowest row of the batch is done. Here:

* ``KVCache`` preallocates, per layer, ``[prefix slots | token slots]`` for every row. The prefix is
  written once per batch into the first P slots (each row its task's prefix), so a step only writes
  one token's key/value and attends over a view of the buffer: no concatenation at all.
* The cache is driven through the same registered attention function as the prefix
  (``kg2text.prefix.prefix_attention``): while a cache is attached to the injector, attention writes
  into it and reads from it, so the model's own ``forward`` runs unchanged.
* Rows that are done leave the batch (greedy: at their end token; beam search: when the input has
  ``num_beams`` finished hypotheses), so a batch costs what its rows need, not what its longest needs.
  Their places are filled from the end of the batch, and a beam that continues its source beam keeps that
  beam's row, so a step copies the cache of few rows (the forks), not of all.
* Beam search follows transformers' (``early_stopping=True``): the top ``2 * num_beams`` candidates by
  summed log-probability, finished ones scored with ``length ** length_penalty``, an input done when
  ``num_beams`` hypotheses are finished. The prompt is prefilled once per input, not once per beam.
* An ensemble of ``members`` prefixes (runs trained apart, one backbone) decodes each input in ``members`` rows,
  member ``k``'s prefix in row ``k`` of the input's (or beam's) group, and chooses tokens by the members' mean
  next-token probability (``ensemble_logits``): the rows step, fork and finish together, one forward for all.
* It runs under ``torch.inference_mode``, not just ``no_grad``: tensors then keep no version counter or view
  history, which takes a share off every op, and one-row decoding is bound by the count of small ops, not by the
  weights (results/speed/speed.md).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from kg2text import llama_forward
from kg2text.hardware import PACKED_KERNEL_MAX_ROWS, ScreenedHead
from kg2text.model import TunedLM
from kg2text.prefix import PrefixShape, grouped_attention

PREFILL_CHUNK_ROWS = 8
NEG = -1.0e9  # transformers' "impossible" score, kept so that ties break the same way


class CacheMemory:
    """One block of memory that the caches of successive batches reuse.

    Why: a batch's cache is large (32 inputs x 5 beams of SmolLM2: over 1 GB in fp32), and fresh memory costs a
    page fault at the first write of every page, which at batch 32 and beam 5 was a visible share of a step.
    """

    def __init__(self):
        self.block: torch.Tensor | None = None

    def take(self, numel: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        block = self.block
        if block is None or block.numel() < numel or block.dtype != dtype or block.device != device:
            self.block = None  # let the old block go before the new one is allocated
            self.block = block = torch.empty(numel, dtype=dtype, device=device)
        return block[:numel]


class KVCache:
    """Keys/values of every layer for up to ``capacity`` rows: ``P`` prefix slots, then the token slots.

    ``rows`` are in use; ``select`` keeps, reorders or repeats them. One prefix for all rows is written
    into every row once and never moved again; per-row task prefixes move with their rows.
    """

    def __init__(self, shape: tuple[int, int, int, int, int], prefix_length: int, rows: int, dtype: torch.dtype,
                 device: torch.device, memory: CacheMemory | None = None):
        layers, capacity, kv_heads, slots, head_dim = shape
        size = layers * capacity * kv_heads * slots * head_dim
        block = (memory or CacheMemory()).take(2 * size, dtype, device)
        self.keys, self.values = block[:size].view(shape), block[size:].view(shape)
        self.valid = torch.zeros(capacity, slots, dtype=torch.bool, device=device)
        self.valid[:, :prefix_length] = True
        self.prefix_length, self.rows, self.used = prefix_length, rows, prefix_length
        self.prefix_moves = False
        # the forward in flight (``begin``): its mask (None: every slot open), rows and first slot, and per layer
        # the slots it writes and the slots it reads
        self.mask: torch.Tensor | None = None
        self.span: tuple[slice, int] = (slice(0, rows), self.used)
        self.written: tuple[torch.Tensor, torch.Tensor] | None = None
        self.visible: tuple[torch.Tensor, torch.Tensor] | None = None
        self.lean: llama_forward.Plan | None = None  # the decode's lean forward, where the model has one

    def write_prefix(self, prefix: torch.Tensor, task_of_row: torch.Tensor | None) -> None:
        """``prefix``: ``(layers, 2, kv_heads, P, head_dim)`` for all rows, or a task stack ``(T, ...)`` with the
        task of each row in use."""
        if task_of_row is None:
            self.keys[:, :, :, : self.prefix_length] = prefix[:, 0, None]
            self.values[:, :, :, : self.prefix_length] = prefix[:, 1, None]
            return
        per_row = prefix[task_of_row]  # (rows, layers, 2, kv_heads, P, head_dim)
        self.keys[:, : self.rows, :, : self.prefix_length] = per_row[:, :, 0].transpose(0, 1)
        self.values[:, : self.rows, :, : self.prefix_length] = per_row[:, :, 1].transpose(0, 1)
        self.prefix_moves = True

    def begin(self, attention_mask: torch.Tensor, rows: slice | None = None, start: int | None = None) -> None:
        """Prepare a forward over new tokens whose padding mask is ``attention_mask`` ``(rows, n)``: by default
        for all rows in use, written after the last slot used. The slots it writes and reads are sliced here once
        for all layers, and a mask that opens every slot is dropped (``None``): at one row a layer's attention is a
        handful of small ops, each with a fixed cost, so what can be done once per forward is not done per layer."""
        rows = slice(0, self.rows) if rows is None else rows
        n, start = attention_mask.shape[1], self.used if start is None else start
        self.span = rows, start
        self.valid[rows, start: start + n] = attention_mask.bool()
        self.written = (self.keys[:, rows, :, start: start + n], self.values[:, rows, :, start: start + n])
        self.visible = (self.keys[:, rows, :, : start + n], self.values[:, rows, :, : start + n])
        keys = self.valid[rows, : start + n]
        if n == 1:
            self.mask = None if bool(keys.all()) else keys[:, None, None, :]
            return
        query = torch.arange(n, device=keys.device)[:, None] + start
        key = torch.arange(start + n, device=keys.device)[None]
        self.mask = (keys[:, None, None, :] & (key <= query)) | (key == query)  # a padding query sees itself: no NaN

    def forget(self, slots: int) -> None:
        """Drop the last ``slots`` tokens written (draft tokens that verification rejected)."""
        self.used -= slots

    def end(self) -> None:
        self.used = self.span[1] + self.written[0].shape[3]  # the slots written: the tokens fed
        self.mask = self.written = self.visible = None

    def pad(self, rows: slice, start: int, end: int) -> None:
        """Slots ``start:end`` of ``rows`` hold no token: zeros, never attended to (a masked slot still enters the
        matmuls, with weight 0, so it must not hold NaN or inf)."""
        self.keys[:, rows, :, start:end] = 0
        self.values[:, rows, :, start:end] = 0

    def attend(self, module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, **kwargs):
        """An attention function's call (``prefix.prefix_attention``, transformers' forward): ``attend_layer``."""
        scaling = kwargs.get("scaling") or query.shape[-1] ** -0.5
        out = self.attend_layer(module.layer_idx, query.to(self.keys.dtype), key, value, scaling)
        return out.to(query.dtype), None

    def attend_layer(self, layer: int, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                     scaling: float) -> torch.Tensor:
        """The attention of one layer: store the new keys/values (in the cache's dtype), attend over everything stored
        so far; ``query`` in the cache's dtype."""
        self.written[0][layer].copy_(key)
        self.written[1][layer].copy_(value)
        return grouped_attention(query, self.visible[0][layer], self.visible[1][layer], self.mask, scaling)


    def select(self, source: torch.Tensor, shared_until: int = 0) -> None:
        """New row ``i`` is old row ``source[i]``: drop finished rows, reorder or repeat beams.

        Slots before ``shared_until`` are the same in a row and its source (beams of one input share the
        prompt), so only the slots after it are copied. Rows are copied one by one: a row's block is a plain
        strided copy, where indexing the cache with a row tensor took several times longer (160 beams of SmolLM2).
        """
        rows, used = len(source), self.used
        moved = (source != torch.arange(rows, device=source.device)).nonzero().squeeze(1)  # most rows stay put
        self.rows = rows
        if len(moved) == 0:
            return
        first = max(shared_until, 0 if self.prefix_moves else self.prefix_length)
        targets, sources = moved.tolist(), source[moved].tolist()
        overwritten = set(targets)
        staged = {row: (self.keys[:, row, :, first:used].clone(), self.values[:, row, :, first:used].clone())
                  for row in set(sources) if row in overwritten}  # read before another row overwrites it
        for target, row in zip(targets, sources, strict=True):
            keys, values = staged.get(row) or (self.keys[:, row, :, first:used], self.values[:, row, :, first:used])
            self.keys[:, target, :, first:used] = keys
            self.values[:, target, :, first:used] = values
        self.valid[moved, first:used] = self.valid[source[moved], first:used]


def compaction_order(keep: torch.Tensor) -> torch.Tensor:
    """The rows to keep (``keep``: a bool per row), ordered so that few move: kept rows stay where they are
    and the last kept rows fill the places of dropped ones (dropping row 0 of 32 moves one row, not 31)."""
    kept = keep.nonzero().squeeze(1)
    count = len(kept)
    order = torch.arange(count, device=keep.device)
    holes = (~keep[:count]).nonzero().squeeze(1)
    order[holes] = kept[kept >= count]
    return order


def _new_cache(lm: TunedLM, capacity: int, rows: int, prompt_width: int, max_new_tokens: int,
               memory: CacheMemory | None) -> KVCache:
    """A cache for ``rows`` prompts growing to ``capacity`` rows (beams), holding the prefix in use."""
    model, prefix, tasks = lm.backbone.model, lm.injector.prefix, lm.injector.rows
    shape = PrefixShape.of(model)
    length = 0 if prefix is None else prefix.shape[-2]
    slots = length + prompt_width + max_new_tokens
    dtype = torch.float32 if model.device.type == "cpu" else model.dtype  # CPU: small bf16 matmuls are slower
    cache = KVCache((shape.layers, capacity, shape.kv_heads, slots, shape.head_dim), length, rows, dtype, model.device,
                    memory)
    if prefix is not None:
        cache.write_prefix(prefix.to(dtype), None if tasks is None else tasks.to(torch.long))
    cache.lean = llama_forward.Plan(model) if llama_forward.supports(model) else None
    return cache


def _forward(lm: TunedLM, cache: KVCache, inputs: dict, mask: torch.Tensor, every_position: bool = False,
             rows: slice | None = None, start: int | None = None) -> torch.Tensor:
    """One forward through the cache (``KVCache.begin``'s ``rows`` and ``start``); returns the last layer's normed
    hidden states of each row's last position ``(rows, d)`` (or of every position fed), for ``_logits`` or
    ``_greedy_tokens``."""
    model = lm.backbone.model
    lm.injector.cache = cache
    cache.begin(mask, rows, start)
    try:
        hidden = llama_forward.hidden_states(model, cache, **inputs) if cache.lean is not None \
            else model.base_model(**inputs, use_cache=False).last_hidden_state
    finally:
        cache.end()
        lm.injector.cache = None
    return hidden if every_position else hidden[:, -1]


def _logits(lm: TunedLM, hidden: torch.Tensor) -> torch.Tensor:
    """Next-token logits (fp32) of ``_forward``'s hidden states."""
    return lm.backbone.model.get_output_embeddings()(hidden).float()


def _greedy_tokens(lm: TunedLM, hidden: torch.Tensor, banned: torch.Tensor, members: int = 1) -> torch.Tensor:
    """Greedy's next token of each input (``hidden``: ``(inputs * members, d)``, see ``ensemble_logits``): at a few
    rows through the fp32 head's fp16 screen where it has one (``hardware.ScreenedHead``), else from all logits."""
    head = lm.backbone.model.get_output_embeddings()
    if members == 1 and isinstance(head, ScreenedHead) and len(hidden) < PACKED_KERNEL_MAX_ROWS:
        return head.argmax(hidden, banned)
    logits = ensemble_logits(_logits(lm, hidden), members)
    logits[:, banned] = -float("inf")
    return logits.argmax(-1)


def _prefill(lm: TunedLM, ids: torch.Tensor, mask: torch.Tensor, cache: KVCache) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the (left-padded) prompts; returns their last positions' hidden states (``_forward``'s) and each row's
    next position.

    Rows run in chunks where that saves padding (``prefill_chunks``), each chunk padded to its own longest
    prompt and written into the cache right-aligned with the others, so the steps see one batch."""
    first, hidden, positions = cache.used, [], []
    for rows, width in prefill_chunks(mask, PREFILL_CHUNK_ROWS):
        inputs = lm.model_inputs(ids[rows, -width:], mask[rows, -width:])
        chunk_mask = inputs.pop("attention_mask")
        start = first + ids.shape[1] - width
        cache.pad(rows, first, start)
        hidden.append(_forward(lm, cache, inputs, chunk_mask, rows=rows, start=start))
        positions.append(inputs["position_ids"][:, -1] + 1)
    return torch.cat(hidden), torch.cat(positions)


def prefill_chunks(mask: torch.Tensor, chunk_rows: int) -> list[tuple[slice, int]]:
    """Row ranges of ``chunk_rows`` and the width each needs (its longest prompt), or one range of all rows at
    full width where chunks would save under a tenth of the tokens.

    Why: at batch 32 a batch's prompt tokens are more work than its sentences, and in a small set
    ``decode_batched``'s batch of the longest prompts spans from tens of tokens to a hundred, so padding every row
    to the longest can nearly double the prefill's work.
    """
    rows, width = mask.shape
    lengths = mask.sum(1).tolist()
    chunks = [(slice(r, min(r + chunk_rows, rows)), max(lengths[r: r + chunk_rows]))
              for r in range(0, rows, chunk_rows)]
    chunked = sum((c.stop - c.start) * w for c, w in chunks)
    return chunks if chunked < 0.9 * rows * width else [(slice(0, rows), width)]


def ensemble_logits(logits: torch.Tensor, members: int) -> torch.Tensor:
    """Rows ``(inputs * members, vocab)``, an input's members side by side -> ``(inputs, vocab)``: the log of the
    members' mean next-token probability (as fairseq ensembles translation models). One member: ``logits`` as they
    are, so a plain decode is untouched."""
    if members == 1:
        return logits
    log_probs = F.log_softmax(logits, dim=-1).unflatten(0, (-1, members))
    return log_probs.logsumexp(1) - math.log(members)


def per_member(tensor: torch.Tensor, members: int) -> torch.Tensor:
    """Each row of ``tensor`` repeated for its ``members`` rows, side by side (as is for one member: no copy on a
    plain decode's steps)."""
    return tensor if members == 1 else tensor.repeat_interleave(members, 0)


def member_rows(rows: torch.Tensor, members: int) -> torch.Tensor:
    """Cache rows of the given inputs (or beams) when each has ``members`` rows side by side."""
    if members == 1:
        return rows
    return (rows[:, None] * members + torch.arange(members, device=rows.device)).reshape(-1)


def _step(lm: TunedLM, cache: KVCache, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    ones = torch.ones(len(tokens), 1, dtype=torch.long, device=tokens.device)
    return _forward(lm, cache, {"input_ids": tokens[:, None], "position_ids": positions[:, None]}, ones)


@torch.inference_mode()
def greedy(lm: TunedLM, ids: torch.Tensor, mask: torch.Tensor, max_new_tokens: int, eos: int,
           banned: torch.Tensor, draft_tokens: int = 0, memory: CacheMemory | None = None,
           members: int = 1) -> list[list[int]]:
    """Greedy decoding; each row stops at its end token (kept out of the output) or after ``max_new_tokens``.

    One row with ``draft_tokens`` > 0 decodes by prompt lookup (``greedy_lookup``): the same tokens, fewer forwards.
    With ``members`` > 1 each input decodes in that many rows, one per ensemble member (the injector's rows).
    """
    rows = ids.shape[0]
    if rows == 1 and draft_tokens > 0 and members == 1:
        return [greedy_lookup(lm, ids, mask, max_new_tokens, eos, banned, draft_tokens, memory)]
    ids, mask = per_member(ids, members), per_member(mask, members)
    cache = _new_cache(lm, len(ids), len(ids), _prompt_width(lm, ids), max_new_tokens, memory)
    hidden, positions = _prefill(lm, ids, mask, cache)
    positions = positions[::members]  # an input's members share its positions
    outputs: list[list[int]] = [[] for _ in range(rows)]
    alive = torch.arange(rows, device=ids.device)
    for step in range(max_new_tokens):
        tokens = _greedy_tokens(lm, hidden, banned, members)
        finished = tokens == eos
        for row, token, done in zip(alive.tolist(), tokens.tolist(), finished.tolist(), strict=True):
            if not done:
                outputs[row].append(token)
        keep = compaction_order(~finished)
        if len(keep) == 0 or step == max_new_tokens - 1:
            break
        if len(keep) < len(alive):
            cache.select(member_rows(keep, members))
            alive, tokens, positions = alive[keep], tokens[keep], positions[keep]
        hidden = _step(lm, cache, per_member(tokens, members), per_member(positions, members))
        positions = positions + 1
    return outputs


def lookup_draft(sequence: list[int], max_tokens: int, max_ngram: int = 3) -> list[int]:
    """Prompt lookup (Saxena 2023): the tokens that followed the latest earlier occurrence of the sequence's last
    n-gram, the longest n first. Data-to-text copies entity names from its input, so these are often right."""
    for n in range(min(max_ngram, len(sequence) - 1), 0, -1):
        tail = sequence[-n:]
        for start in range(len(sequence) - n - 1, -1, -1):
            if sequence[start: start + n] == tail:
                return sequence[start + n: start + n + max_tokens]
    return []


@torch.inference_mode()
def greedy_lookup(lm: TunedLM, ids: torch.Tensor, mask: torch.Tensor, max_new_tokens: int, eos: int,
                  banned: torch.Tensor, draft_tokens: int, memory: CacheMemory | None = None) -> list[int]:
    """Greedy decoding of one row with drafts from its own prompt and output, verified in one forward.

    Each forward feeds the last token and up to ``draft_tokens`` drafted ones; the greedy token predicted at each
    position is kept while it equals the draft that follows, so the output is greedy's, token for token (up to
    the rounding of a many-row matmul against a one-row one). One-row decoding is bound by reading the weights
    and by per-forward overhead, both the same for one token as for nine: every accepted draft is a forward saved.
    """
    cache = _new_cache(lm, 1, 1, _prompt_width(lm, ids), max_new_tokens, memory)
    hidden, positions = _prefill(lm, ids, mask, cache)
    prompt, position = ids[0][mask[0].bool()].tolist(), int(positions[0])
    output = [int(_greedy_tokens(lm, hidden, banned))]
    while output[-1] != eos and len(output) < max_new_tokens:
        draft = lookup_draft(prompt + output, min(draft_tokens, max_new_tokens - len(output) - 1))
        fed = torch.tensor([output[-1:] + draft], device=ids.device)
        places = (position + torch.arange(fed.shape[1], device=ids.device))[None]
        hidden = _forward(lm, cache, {"input_ids": fed, "position_ids": places}, torch.ones_like(fed),
                          every_position=True)[0]
        for index, token in enumerate(_greedy_tokens(lm, hidden, banned).tolist()):
            output.append(token)
            if token == eos or len(output) == max_new_tokens or index == len(draft) or draft[index] != token:
                break
        cache.forget(fed.shape[1] - index - 1)
        position += index + 1
    return output[:-1] if output[-1] == eos else output


@torch.inference_mode()
def beam_search(lm: TunedLM, ids: torch.Tensor, mask: torch.Tensor, num_beams: int, max_new_tokens: int, eos: int,
                banned: torch.Tensor, length_penalty: float = 1.0, memory: CacheMemory | None = None,
                members: int = 1) -> list[list[list[int]]]:
    """Beam search with transformers' semantics (``early_stopping=True``): each input's ``num_beams`` finished
    hypotheses, best first (as ``generate``'s ``num_return_sequences=num_beams``). With ``members`` > 1 each beam
    runs in that many rows, one per ensemble member, and is scored by their mean probability."""
    n, beams, keep_k = ids.shape[0], num_beams, 2 * num_beams
    device = ids.device
    ids, mask = per_member(ids, members), per_member(mask, members)
    cache = _new_cache(lm, n * beams * members, len(ids), _prompt_width(lm, ids), max_new_tokens, memory)
    hidden, positions = _prefill(lm, ids, mask, cache)
    positions = positions[::members]
    prompt_end = cache.used  # token slots before this hold the prompt, the same for all beams of an input
    running_scores = torch.zeros(n, 1, device=device)  # one live beam per input until the first step
    running = torch.zeros(n, 1, 0, dtype=torch.long, device=device)
    finished_scores = torch.full((n, beams), NEG, device=device)
    finished_done = torch.zeros(n, beams, dtype=torch.bool, device=device)
    finished = torch.full((n, beams, max_new_tokens), eos, dtype=torch.long, device=device)
    results: list[list[list[int]]] = [[] for _ in range(n)]
    alive = torch.arange(n, device=device)
    for step in range(max_new_tokens):
        live = running_scores.shape[1]
        log_probs = F.log_softmax(ensemble_logits(_logits(lm, hidden), members), dim=-1)
        log_probs[:, banned] = -float("inf")
        vocab = log_probs.shape[-1]
        total = (log_probs.view(len(alive), live, vocab) + running_scores[:, :, None]).view(len(alive), -1)
        cand_scores, cand_index = total.topk(keep_k, dim=1)
        cand_beam, cand_token = cand_index // vocab, cand_index % vocab
        cand_seq = torch.cat([running.gather(1, cand_beam[:, :, None].expand(-1, -1, step)), cand_token[:, :, None]], 2)
        hits = (cand_token == eos) | (step + 1 == max_new_tokens)
        # finished hypotheses: only the best num_beams candidates may finish (as in transformers)
        new_scores = cand_scores / ((step + 1) ** length_penalty) + NEG * ~(hits & (torch.arange(keep_k, device=device)
                                                                                  < beams))
        padded = torch.full((len(alive), keep_k, max_new_tokens), eos, dtype=torch.long, device=device)
        padded[:, :, : step + 1] = cand_seq
        merged_scores = torch.cat([finished_scores, new_scores], 1)
        order = merged_scores.topk(beams, dim=1)[1]
        finished_scores = merged_scores.gather(1, order)
        finished_done = torch.cat([finished_done, hits & (torch.arange(keep_k, device=device) < beams)], 1).gather(
            1, order)
        finished = torch.cat([finished, padded], 1).gather(1, order[:, :, None].expand(-1, -1, max_new_tokens))
        # running beams: the best num_beams candidates that did not finish
        next_order = (cand_scores + NEG * hits).topk(beams, dim=1)[1]
        next_order = next_order.gather(1, stay_put_order(cand_beam.gather(1, next_order), beams))
        running_scores = (cand_scores + NEG * hits).gather(1, next_order)
        running = cand_seq.gather(1, next_order[:, :, None].expand(-1, -1, step + 1))
        source_beam = cand_beam.gather(1, next_order)
        done = finished_done.all(1) | (step + 1 == max_new_tokens)
        for index in done.nonzero().squeeze(1).tolist():
            results[int(alive[index])] = [_until_eos(tokens, eos) for tokens in finished[index].tolist()]
        if bool(done.all()):
            break
        keep = compaction_order(~done)
        source_rows = member_rows((keep[:, None] * live + source_beam[keep]).reshape(-1), members)
        same_inputs = step > 0 and len(keep) == len(alive)  # a pure reorder among each input's beams
        cache.select(source_rows, shared_until=prompt_end if same_inputs else 0)
        positions = positions.view(len(alive), -1)[keep, :1].expand(-1, beams).reshape(-1)
        alive, running, running_scores = alive[keep], running[keep], running_scores[keep]
        finished, finished_scores, finished_done = finished[keep], finished_scores[keep], finished_done[keep]
        hidden = _step(lm, cache, per_member(running[:, :, -1].reshape(-1), members), per_member(positions, members))
        positions = positions + 1
    return results


def stay_put_order(source_beam: torch.Tensor, beams: int) -> torch.Tensor:
    """For each input, an order of its new beams in which a beam keeps its source beam's row where it can.

    Beam search does not depend on the order of the running beams (ties aside); the cache does: a beam in its
    source's row has nothing to copy, so only the forks move (``KVCache.select``)."""
    orders = []
    for sources in source_beam.tolist():
        slot: list[int | None] = [None] * beams
        forks = []
        for beam, source in enumerate(sources):
            if slot[source] is None:
                slot[source] = beam
            else:
                forks.append(beam)
        free = (row for row in range(beams) if slot[row] is None)
        for row, beam in zip(free, forks, strict=True):
            slot[row] = beam
        orders.append(slot)
    return torch.tensor(orders, dtype=torch.long, device=source_beam.device)


def _until_eos(tokens: list[int], eos: int) -> list[int]:
    return tokens[: tokens.index(eos)] if eos in tokens else tokens


def _prompt_width(lm: TunedLM, ids: torch.Tensor) -> int:
    """Token slots the prompt takes in the cache (a soft prompt adds its own P)."""
    return ids.shape[1] + (0 if lm.soft_prompt is None else lm.soft_prompt.shape[0])
