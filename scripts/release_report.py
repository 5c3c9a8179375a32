"""Write results/release/report.json and report.md from the scored runs of scripts/release.sh."""

import sys
from pathlib import Path

from kg2text.report import write_release_report

if __name__ == "__main__":
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "results/release")
    report = write_release_report(out)
    print(f"wrote {out}/report.json, report.md ({len(report['exploration'])} exploration rows)")
