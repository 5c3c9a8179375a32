"""The WebNLG 2017 challenge's BLEU (lower-cased multi-bleu over at most 3 references, after the challenge's
preprocessing) and sacrebleu's BLEU over all references, for all entries and, given ``seen``, seen/unseen."""

import evaluate

from kg2text.api import evaluate as kg2text_evaluate
from kg2text.hf_metrics import metric_info


class WebnlgBleu(evaluate.Metric):
    def _info(self):
        return metric_info(__doc__, "predictions: sentences; references: list of reference sentences per entry; "
                           "seen (optional): whether each entry's category was seen in training",
                           citation="Gardent et al. 2017, The WebNLG Challenge")

    def _compute(self, predictions, references, seen=None, **_others):
        scores = kg2text_evaluate(predictions, references, seen)
        return {"bleu_challenge": scores["bleu_challenge"], "sacrebleu": scores["bleu"]}
