"""E2E slot error rate (%): values of the meaning representation missing from the output sentence."""

import evaluate

from kg2text.data import Record
from kg2text.hf_metrics import metric_info
from kg2text.linearize import parse_mr
from kg2text.metrics import e2e_slot_error_rate


class SlotErrorRate(evaluate.Metric):
    def _info(self):
        return metric_info(__doc__, "predictions: sentences; references: reference sentences (unused); "
                           "inputs: the E2E meaning representation of each entry, 'name[X], area[Y]'")

    def _compute(self, predictions, references, inputs=None, **_others):
        if inputs is None or len(inputs) != len(predictions):
            raise ValueError("slot_error_rate needs inputs=['name[X], area[Y]', ...], one MR per prediction")
        records = [Record(parse_mr(mr), ()) for mr in inputs]
        return {"slot_error_rate": e2e_slot_error_rate(records, list(predictions))}
