"""Does PEFT's own ``generate`` say what kg2text's decoder said for a PEFT-trained prefix?

The release report decodes the PEFT anchor's prefix with kg2text's decoder, so that both rows share one
decoding code path and settings. This decodes a slice of the same entries with PEFT's ``generate`` (its
saved ``adapter/``, beam 5, the same limits) and counts identical sentences.

    python scripts/check_peft_decode.py runs/release/peft-webnlg results/release/peft-webnlg --limit 16
    (scripts/release.sh runs it for each PEFT WebNLG run it scores)
"""

import argparse
import json
from pathlib import Path

import peft

from kg2text.anchors import generate_with, require_adapter_effect
from kg2text.artifact import atomic_write_text, read_prefix
from kg2text.backbones import load_backbone
from kg2text.data import evenly_spaced, read_records
from kg2text.generate import DecodeConfig, decode_batched
from kg2text.linearize import get_format, model_prompt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="a 'kg2text train --trainer peft' run folder (with adapter/)")
    parser.add_argument("scored", type=Path, help="its 'kg2text evaluate' folder (scores.json, hypotheses.txt)")
    parser.add_argument("--limit", type=int, default=16)
    args = parser.parse_args()
    scores = json.loads((args.scored / "scores.json").read_text())
    _, header = read_prefix(args.run)
    backbone = load_backbone(header["backbone"])
    model = peft.PeftModel.from_pretrained(backbone.model, str(args.run / "adapter"))
    require_adapter_effect(model, backbone)
    records = read_records(scores["dataset"], scores["split"])
    picked = evenly_spaced(list(range(len(records))), args.limit)
    fmt = get_format(header["format"])
    prompts = [model_prompt(fmt.linearize(records[i].items), backbone.separator) for i in picked]
    decode = scores["decode"]
    config = DecodeConfig(decode["num_beams"], decode["length_penalty"], decode["no_repeat_ngram_size"],
                          decode["max_new_tokens"], batch_size=len(prompts))
    theirs = decode_batched(backbone, prompts, config, generate_with(model), header["shape"][-2], progress=True)
    ours = (args.scored / "hypotheses.txt").read_text().splitlines()
    pairs = [{"entry": i, "kg2text": ours[i], "peft_generate": t} for i, t in zip(picked, theirs, strict=True)]
    same = sum(p["kg2text"] == p["peft_generate"] for p in pairs)
    result = {"entries": len(pairs), "identical": same, "num_beams": config.num_beams,
              "differing": [p for p in pairs if p["kg2text"] != p["peft_generate"]],
              "command": f"python scripts/check_peft_decode.py {args.run} {args.scored} --limit {args.limit}"}
    atomic_write_text(args.scored / "peft_decode_check.json", json.dumps(result, indent=1) + "\n")
    print(f"{same} of {len(pairs)} sentences identical (PEFT generate vs kg2text, beam {config.num_beams})")


if __name__ == "__main__":
    main()
