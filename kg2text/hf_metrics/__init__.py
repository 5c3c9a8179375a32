"""kg2text's metrics as Hugging Face ``evaluate`` modules that load offline from the installed package.

    import evaluate, kg2text
    bleu = evaluate.load(kg2text.metric_path("webnlg_bleu"))
    bleu.compute(predictions=[...], references=[[...], ...], seen=[True, ...])

``webnlg_bleu``: the WebNLG 2017 challenge's BLEU (all / seen / unseen) beside sacrebleu's;
``entity_coverage``: share of triple subjects/objects found in the output (``inputs=`` the triples);
``slot_error_rate``: E2E slot values missing from the output (``inputs=`` the MRs). All take the same
``predictions``/``references`` and ignore the keyword arguments of the others, so ``evaluate.combine``
joins them. The computing is kg2text's own (``kg2text.metrics``); these files only adapt it.
"""

from __future__ import annotations

from pathlib import Path

METRICS = ("webnlg_bleu", "entity_coverage", "slot_error_rate")


def metric_info(description: str, inputs: str, citation: str = ""):
    """The ``evaluate.MetricInfo`` all our modules share: sentences as predictions, reference lists as references."""
    import datasets
    import evaluate

    features = datasets.Features({"predictions": datasets.Value("string"),
                                  "references": datasets.Sequence(datasets.Value("string"))})
    return evaluate.MetricInfo(description=description, citation=citation, inputs_description=inputs,
                               features=features)


def metric_path(name: str) -> str:
    """The folder ``evaluate.load`` takes for one of kg2text's metrics (no Hub needed)."""
    if name not in METRICS:
        from kg2text.errors import UserError

        raise UserError(f"unknown kg2text metric {name!r}; choose one of: {', '.join(METRICS)}")
    return str(Path(__file__).resolve().parent / name)
