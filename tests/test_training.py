import torch

from kg2text.backbones import load_backbone
from kg2text.batching import collate, encode_examples
from kg2text.data import Record
from kg2text.generate import DecodeConfig, decode_prompts
from kg2text.linearize import FORMATS, model_prompt
from kg2text.model import TunedLM
from kg2text.prefix import PrefixConfig, PrefixEncoder, PrefixShape

RECORDS = [
    Record((("Harry_Potter", "education", "Hogwarts"),), ("Harry Potter studied at Hogwarts.",)),
    Record((("Alan_Bean", "nationality", "United_States"),), ("Alan Bean is American.",)),
]


def test_prefix_overfits_a_handful_of_examples_and_greedy_reproduces_them():
    torch.manual_seed(0)
    backbone = load_backbone("tiny-gpt2")
    lm = TunedLM(backbone)
    examples = encode_examples([(r, r.references[0]) for r in RECORDS], FORMATS["webnlg"], backbone, 200)
    batch = collate(list(examples), backbone.tokenizer.pad_token_id)
    encoder = PrefixEncoder(PrefixConfig(8, 64), PrefixShape.of(backbone.model), 64)
    optimizer = torch.optim.AdamW(encoder.parameters(), lr=1e-2)
    losses = []
    for _ in range(120):
        lm.use("prefix", encoder())
        loss, _ = lm.target_loss(**batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < 0.25 * losses[0], losses[::20]
    with torch.no_grad():
        lm.use("prefix", encoder())
    prompts = [model_prompt(FORMATS["webnlg"].linearize(r.items), backbone.separator) for r in RECORDS]
    greedy = decode_prompts(lm, prompts, DecodeConfig(num_beams=1, max_new_tokens=20))
    beam = decode_prompts(lm, prompts, DecodeConfig(num_beams=3, max_new_tokens=20))
    assert greedy == ["Harry Potter studied at Hogwarts.", "Alan Bean is American."]
    assert beam == greedy
