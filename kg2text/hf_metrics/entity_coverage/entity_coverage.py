"""Share (%) of the input triples' subjects and objects that appear (normalised) in the output sentence."""

import evaluate

from kg2text.data import Record
from kg2text.hf_metrics import metric_info
from kg2text.metrics import webnlg_coverage


class EntityCoverage(evaluate.Metric):
    def _info(self):
        return metric_info(__doc__, "predictions: sentences; references: reference sentences (unused); "
                           "inputs: the triples of each entry, [[subject, predicate, object], ...]")

    def _compute(self, predictions, references, inputs=None, **_others):
        if inputs is None or len(inputs) != len(predictions):
            raise ValueError("entity_coverage needs inputs=[[[s, p, o], ...], ...], one triple list per prediction")
        records = [Record(tuple(tuple(t) for t in triples), ()) for triples in inputs]
        return {"entity_coverage": webnlg_coverage(records, list(predictions))}
