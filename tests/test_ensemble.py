"""Decoding with an ensemble of prefixes (``--ensemble``): each token by the members' mean next-token probability."""

import json

import pytest
import torch
import torch.nn.functional as F
from fastapi.testclient import TestClient

from kg2text.api import Verbalizer
from kg2text.artifact import read_prefix, write_prefix
from kg2text.backbones import load_backbone
from kg2text.cli import main
from kg2text.errors import UserError
from kg2text.generate import DecodeConfig, decode_prompts, generate_sentences, load_for_generation, newline_token_ids
from kg2text.methods import build_tuner
from kg2text.model import TunedLM
from kg2text.serve import ServeLimits, create_app

PROMPTS = [" | Harry Potter : education : Hogwarts | Harry Potter : house : Gryffindor <|endoftext|>",
           " | Alan Bean : nationality : United States <|endoftext|>",
           " | A : b : c <|endoftext|>",
           " | Hogwarts : location : Scotland | Hogwarts : founder : Godric Gryffindor <|endoftext|>",
           " | Ron Weasley : house : Gryffindor <|endoftext|>"]
TRIPLES = [(("Harry_Potter", "education", "Hogwarts"),), (("Alan_Bean", "nationality", "United_States"),)]


@pytest.fixture(scope="module", params=["tiny-gpt2", "tiny-llama"])
def backbone(request):
    return load_backbone(request.param)


def tuned(backbone, seed):
    tuner, _ = build_tuner("prefix", backbone, 5, 32, None, seed=seed)
    with torch.no_grad():
        prefix = tuner() * 20  # a random prefix strong enough that two seeds say different things
    lm = TunedLM(backbone)
    lm.use("prefix", prefix)
    return lm


def ensemble(*members):
    lm = TunedLM(members[0].backbone)
    lm.use("prefix", torch.stack([m.prefix for m in members]), rows=torch.zeros(1, dtype=torch.long))
    return lm


@torch.inference_mode()
def reference_greedy(members, prompt, max_new_tokens):
    """Greedy by the members' mean probability, each member's forward over the whole text at every step, no cache."""
    tokenizer = members[0].backbone.tokenizer
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    banned, output = list(newline_token_ids(tokenizer)), []
    for _ in range(max_new_tokens):
        ids = torch.tensor([prompt_ids + output])
        probs = torch.stack([F.softmax(m.logits(ids, torch.ones_like(ids))[0, -1].float(), -1) for m in members])
        mean = probs.mean(0)
        mean[banned] = 0
        token = int(mean.argmax())
        if token == tokenizer.eos_token_id:
            break
        output.append(token)
    return " ".join(tokenizer.decode(output, skip_special_tokens=True).split())


def test_ensemble_greedy_chooses_each_token_by_the_members_mean_probability(backbone):
    first, second = tuned(backbone, 0), tuned(backbone, 7)
    decode = DecodeConfig(num_beams=1, max_new_tokens=10, batch_size=3)
    ours = decode_prompts(ensemble(first, second), PROMPTS, decode, members=2)
    assert ours == [reference_greedy([first, second], prompt, 10) for prompt in PROMPTS]
    alone = [decode_prompts(lm, PROMPTS, decode) for lm in (first, second)]
    assert ours not in alone  # the mean says something neither member says alone
    single = DecodeConfig(num_beams=1, max_new_tokens=10, batch_size=1)  # one row: not prompt lookup
    assert decode_prompts(ensemble(first, second), PROMPTS[:2], single, members=2) == ours[:2]


@pytest.mark.parametrize("beams", [1, 3])
def test_an_ensemble_of_one_prefix_twice_decodes_as_that_prefix_alone(backbone, beams):
    lm = tuned(backbone, 3)
    decode = DecodeConfig(num_beams=beams, max_new_tokens=10, batch_size=3)
    assert decode_prompts(ensemble(lm, lm), PROMPTS, decode, members=2) == decode_prompts(lm, PROMPTS, decode)


def test_ensemble_beam_search_is_the_same_in_any_member_order_and_batch(backbone):
    first, second, third = tuned(backbone, 0), tuned(backbone, 7), tuned(backbone, 11)
    decode = DecodeConfig(num_beams=3, max_new_tokens=10, batch_size=5)
    ours = decode_prompts(ensemble(first, second, third), PROMPTS, decode, members=3)
    assert decode_prompts(ensemble(third, first, second), PROMPTS, decode, members=3) == ours
    one_by_one = DecodeConfig(num_beams=3, max_new_tokens=10, batch_size=1)
    assert decode_prompts(ensemble(first, second, third), PROMPTS, one_by_one, members=3) == ours
    assert all(decode_prompts(lm, PROMPTS, decode) != ours for lm in (first, second, third))


@pytest.fixture(scope="module")
def other_run(trained_run, tmp_path_factory):
    """A second run like ``trained_run`` (same shape and format), its prefix another one."""
    prefix, header = read_prefix(trained_run)
    out = tmp_path_factory.mktemp("runs") / "other"
    write_prefix(out, prefix.flip(-2) * 3, header)
    return out


def test_load_with_ensemble_decodes_as_the_stacked_prefixes(trained_run, other_run):
    loaded = load_for_generation(trained_run, ensemble=[other_run])
    assert loaded.members == 2 and loaded.lm.prefix.shape[0] == 2
    first = load_for_generation(trained_run)
    second = load_for_generation(other_run, backbone=first.backbone)
    assert torch.equal(loaded.lm.prefix[1], second.lm.prefix)
    decode = DecodeConfig(num_beams=1, max_new_tokens=8)
    expected = [reference_greedy([first.lm, second.lm], prompt, 8) for prompt in model_prompts(first, TRIPLES)]
    assert generate_sentences(loaded, TRIPLES, decode) == expected


def model_prompts(loaded, inputs):
    from kg2text.linearize import model_prompt

    fmt = next(iter(loaded.formats.values()))
    return [model_prompt(fmt.linearize(items), loaded.backbone.separator) for items in inputs]


def test_ensemble_of_a_control_run_with_itself_keeps_each_inputs_category_prefix(control_run):
    from kg2text.artifact import read_header

    categories = read_header(control_run)["method_config"]["categories"]
    loaded = load_for_generation(control_run)
    both = load_for_generation(control_run, backbone=loaded.backbone, ensemble=[control_run])
    assert both.lm.prefix.shape[0] == 2 * len(categories)
    wanted = [categories[1], ""]
    decode = DecodeConfig(num_beams=2, max_new_tokens=8)
    assert generate_sentences(both, TRIPLES, decode, categories=wanted) == \
        generate_sentences(loaded, TRIPLES, decode, categories=wanted)


def test_ensemble_refuses_runs_unlike_the_prefix_run_and_other_decoders(trained_run, control_run, other_run,
                                                                        tmp_path):
    with pytest.raises(UserError, match=r"--ensemble .*control: its method, format, shape \(control"):
        load_for_generation(trained_run, ensemble=[control_run])
    prefix, header = read_prefix(trained_run)
    longer = write_prefix(tmp_path / "longer", torch.cat([prefix, prefix], dim=-2), header).parent
    with pytest.raises(UserError, match=r"longer: its method, format, shape \(prefix, webnlg, \["):
        load_for_generation(trained_run, ensemble=[longer])
    with pytest.raises(UserError, match="one --prefix run, not several tasks"):
        load_for_generation({"a": trained_run, "b": other_run}, ensemble=[other_run])
    loaded = load_for_generation(trained_run, ensemble=[other_run])
    with pytest.raises(UserError, match="own loop: leave out --decoder hf"):
        generate_sentences(loaded, TRIPLES, DecodeConfig(num_beams=2, engine="hf"))


def test_cli_generate_evaluate_and_serve_take_ensemble_runs(trained_run, other_run, tmp_path, capsys):
    args = ["--num-beams", "2", "--max-new-tokens", "8", "--prefix", str(trained_run), "--ensemble", str(other_run)]
    assert main(["generate", *args, "Harry_Potter | education | Hogwarts"]) == 0
    printed = capsys.readouterr().out.strip()
    loaded = load_for_generation(trained_run, ensemble=[other_run])
    assert printed == generate_sentences(loaded, TRIPLES[:1], DecodeConfig(num_beams=2, max_new_tokens=8))[0]
    verbalizer = Verbalizer.load(trained_run, ensemble=[other_run], num_beams=2, max_new_tokens=8)
    assert verbalizer.loaded.members == 2 and verbalizer("Harry_Potter | education | Hogwarts") == printed
    with TestClient(create_app(verbalizer, ServeLimits())) as client:
        assert client.get("/info").json()["ensemble"] == [other_run.name]  # no server paths
        answer = client.post("/generate", json={"inputs": ["Harry_Potter | education | Hogwarts"]}).json()
    assert answer["sentences"] == [printed]
    out = tmp_path / "eval"
    assert main(["evaluate", *args, "--limit", "3", "--output", str(out)]) == 0
    report = json.loads((out / "scores.json").read_text())
    assert report["ensemble"] == [str(other_run)] and report["prefix"] == str(trained_run)
    assert main(["generate", "--prefix", str(trained_run), "--ensemble", str(tmp_path / "missing"), "x | y | z"]) == 2
    assert "no trained prefix at" in capsys.readouterr().err
