"""--share-prompts: the sentences of one input share one pass over its prompt, with the plain loss."""

import json

import pytest
import torch

from kg2text.backbones import load_backbone
from kg2text.batching import collate, collate_shared, encode_examples, shared_prompt_batches
from kg2text.data import Record
from kg2text.errors import UserError
from kg2text.linearize import FORMATS
from kg2text.model import IGNORE_INDEX, TunedLM
from kg2text.prefix import PrefixShape
from kg2text.training import TrainConfig, train

X = IGNORE_INDEX  # a label that is not one
RECORDS = [
    Record((("Harry_Potter", "education", "Hogwarts"),),
           ("Harry Potter studied at Hogwarts.", "Harry Potter went to Hogwarts.", "Hogwarts taught Harry Potter.")),
    Record((("Alan_Bean", "nationality", "United_States"), ("Alan_Bean", "occupation", "Test_pilot")),
           ("Alan Bean is an American test pilot.",)),
    Record((("Aarhus", "country", "Denmark"),), ("Aarhus is in Denmark.", "Aarhus is a Danish city.")),
]


def _examples(backbone):
    """The records' (input, sentence) examples, those of one input next to each other."""
    pairs = [(record, sentence) for record in RECORDS for sentence in record.references]
    return list(encode_examples(pairs, FORMATS["webnlg"], backbone, 200))


@pytest.mark.parametrize("name, method", [("tiny-gpt2", "prefix"), ("tiny-llama", "prefix"),
                                          ("tiny-llama", "prefix-hidden")])
def test_shared_prompts_give_the_plain_loss_and_gradient_on_fewer_tokens(name, method):
    backbone = load_backbone(name)
    examples = _examples(backbone)
    pad = backbone.tokenizer.pad_token_id
    plain, shared = collate(examples, pad), collate_shared(examples, pad)
    assert shared["input_ids"].numel() < plain["input_ids"].numel()
    assert int(shared["tokens"]) == int(plain["attention_mask"].sum())
    torch.manual_seed(0)
    shape = PrefixShape.of(backbone.model)
    prefix = (torch.randn(shape.layers, 2, shape.kv_heads, 3, shape.head_dim) * 0.5).requires_grad_()
    lm = TunedLM(backbone)
    results = []
    for batch in (plain, shared):
        lm.use(method, prefix)
        loss, count = lm.target_loss(batch["input_ids"], batch["attention_mask"], batch["labels"],
                                     positions=batch.get("position_ids"))
        (grad,) = torch.autograd.grad(loss, prefix)
        results.append((loss.item(), count, grad))
    (plain_loss, plain_count, plain_grad), (shared_loss, shared_count, shared_grad) = results
    assert shared_count == plain_count == sum(sum(label != X for label in row["labels"]) for row in examples)
    assert shared_loss == pytest.approx(plain_loss, rel=1e-5)
    assert torch.allclose(shared_grad, plain_grad, rtol=1e-4, atol=1e-6)


def test_collate_shared_lays_out_each_input_as_a_block_of_shared_prompt_and_segments():
    rows = [  # input 0: prompt 1 2 3, sentences "10 11" and "12"; input 1: prompt 4 5, sentence "13 14 15"
        {"input_ids": [1, 2, 3, 10, 11], "labels": [X, X, X, 10, 11], "input": 0},
        {"input_ids": [1, 2, 3, 12], "labels": [X, X, X, 12], "input": 0},
        {"input_ids": [4, 5, 13, 14, 15], "labels": [X, X, 13, 14, 15], "input": 1},
    ]
    batch = collate_shared(rows, pad_id=0)
    # one row of 12 beats two of 7 (2 x 7 tokens, 2 padding); each segment starts with its prompt's last token
    assert batch["input_ids"].tolist() == [[1, 2, 3, 10, 11, 3, 12, 4, 5, 13, 14, 15]]
    assert batch["labels"].tolist() == [[X, X, X, 10, 11, X, 12, X, X, 13, 14, 15]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 3, 4, 2, 3, 0, 1, 2, 3, 4]]
    assert int(batch["tokens"]) == 14
    mask = batch["attention_mask"][0, 0]
    assert mask.shape == (12, 12) and mask.dtype == torch.bool
    assert torch.nonzero(mask[5]).flatten().tolist() == [0, 1, 5]  # the second sentence: shared tokens, itself
    assert torch.nonzero(mask[6]).flatten().tolist() == [0, 1, 5, 6]
    assert torch.nonzero(mask[4]).flatten().tolist() == [0, 1, 2, 3, 4]
    assert torch.nonzero(mask[9]).flatten().tolist() == [7, 8, 9]  # the other input's block only
    padded = collate_shared(rows, pad_id=0, multiple=8)  # widths in steps of 8: two rows of 8 beat one of 16
    assert padded["input_ids"].tolist() == [[1, 2, 3, 10, 11, 3, 12, 0], [4, 5, 13, 14, 15, 0, 0, 0]]
    assert (padded["labels"][1, 5:] == X).all()
    assert torch.nonzero(padded["attention_mask"][1, 0, 6]).flatten().tolist() == [6]  # padding: itself, no NaN


def test_control_prefixes_get_one_input_a_row():
    rows = [{"input_ids": [1, 2, 10], "labels": [X, X, 10], "input": 0, "control": 3},
            {"input_ids": [4, 5, 11], "labels": [X, X, 11], "input": 1, "control": 7}]
    batch = collate_shared(rows, pad_id=0)
    assert batch["input_ids"].tolist() == [[1, 2, 10], [4, 5, 11]]
    assert batch["control"].tolist() == [3, 7]


def test_shared_prompt_batches_keep_an_inputs_examples_together_and_cover_the_epoch():
    inputs = [n for n in range(40) for _ in range(1 + n % 4)]  # 1 to 4 sentences an input, 100 examples
    lengths = [10 + i % 7 for i in range(len(inputs))]
    batches = shared_prompt_batches(inputs, lengths, 8, seed=1, epoch=0, group=2)
    assert sorted(i for batch in batches for i in batch) == list(range(len(inputs)))
    assert [len(batch) for batch in batches].count(8) == len(batches) - 1 and min(map(len, batches)) == 100 % 8
    for batch in batches:  # an input's examples are neighbours in a batch
        keys = [inputs[i] for i in batch]
        for key in keys:
            where = [j for j, other in enumerate(keys) if other == key]
            assert where == list(range(where[0], where[-1] + 1)), keys
    assert all(sum(any(inputs[i] == key for i in batch) for batch in batches) <= 2 for key in range(40))
    assert shared_prompt_batches(inputs, lengths, 8, seed=1, epoch=0, group=2) == batches
    assert shared_prompt_batches(inputs, lengths, 8, seed=1, epoch=1, group=2) != batches


def test_training_with_shared_prompts_counts_the_examples_tokens_and_refuses_soft_prompts(tmp_path):
    from kg2text.training import load_training_set

    config = TrainConfig(output=str(tmp_path / "run"), backbone="tiny-gpt2", max_steps=4, batch_size=8,
                         max_examples=40, prefix_length=4, mlp_hidden=32, lr=1e-3, log_every=4, checkpoint_every=0,
                         share_prompts=True, method="control")
    train(config)
    examples = load_training_set(config, load_backbone("tiny-gpt2"))
    lengths = [len(ids) for ids in examples["input_ids"]]
    batches = shared_prompt_batches(examples["input"], lengths, 8, config.seed, 0)
    log = [json.loads(line) for line in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    assert log[-1]["step"] == 4 and log[-1]["tokens"] == sum(lengths[i] for batch in batches[:4] for i in batch)
    assert json.loads((tmp_path / "run" / "config.json").read_text())["share_prompts"] is True
    with pytest.raises(UserError, match="--share-prompts is for the prefix methods"):
        TrainConfig(output=str(tmp_path / "p"), method="prompt", share_prompts=True).validate()


def test_the_peft_trainer_refuses_shared_prompts_by_name(tmp_path, capsys):
    from kg2text.cli import main

    code = main(["train", "--trainer", "peft", "--share-prompts", "--backbone", "tiny-gpt2", "--max-steps", "1",
                 "--output", str(tmp_path / "peft")])
    assert code == 2 and "--share-prompts is kg2text's own batching" in capsys.readouterr().err
    assert not (tmp_path / "peft").exists()
