"""Load test of ``kg2text serve`` on 127.0.0.1: concurrent clients with good and bad requests, every answer
checked against the CLI's output for the same input; then one client at a time for comparison; and a
screenshot of the page in Debian's chromium. Writes results/serve/load.json, load.md and page.png.

    python scripts/load_test.py --prefix runs/main-job            # 16 clients x 25 requests, about 5 minutes
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from kg2text.data import read_records  # noqa: E402
from kg2text.hardware import cpu_info  # noqa: E402
from kg2text.linearize import format_triples  # noqa: E402

BAD = [({"inputs": ["Harry_Potter | education"]}, 400), ({"inputs": ["A | b | c"], "colour": "red"}, 422),
       ({"inputs": []}, 422), ({"inputs": ["A | b | c"], "task": "nope"}, 400)]


def post(port: int, body: dict) -> tuple[int, dict, float]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/generate", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=600) as response:
            status, answer = response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        status, answer = err.code, json.loads(err.read())
    return status, answer, time.perf_counter() - started


def cli_sentences(run: str, lines: list[str], decode: list[str]) -> dict[str, str]:
    """What ``kg2text generate`` prints for each input: the reference every served answer must equal."""
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as handle:
        handle.write("\n".join(lines) + "\n")
    out = subprocess.run([sys.executable, "-m", "kg2text", "generate", "--prefix", run, "--input", handle.name,
                          *decode], capture_output=True, text=True, check=True).stdout.splitlines()
    return dict(zip(lines, out, strict=True))


def start_server(run: str, port: int, decode: list[str]) -> subprocess.Popen:
    server = subprocess.Popen([sys.executable, "-m", "kg2text", "serve", "--prefix", run, "--port", str(port),
                               *decode], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    for _ in range(1200):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1)
            return server
        except OSError:
            time.sleep(0.1)
    raise SystemExit("the server did not start")


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def summary(outcomes: list[tuple[str, float, int]], elapsed: float, sent: int) -> dict:
    latencies = [latency for _, latency, _ in outcomes]
    return {"requests": sent, "answered": len(outcomes), "lost": sent - len(outcomes),
            "wrong": sum(kind == "wrong" for kind, _, _ in outcomes), "seconds": round(elapsed, 1),
            "sentences_per_s": round(sum(n for _, _, n in outcomes) / elapsed, 2),
            "p50_latency_s": round(statistics.median(latencies), 2),
            "p95_latency_s": round(percentile(latencies, .95), 2)}


def screenshot(port: int, path: Path) -> str:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=shutil.which("chromium"), args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        page = browser.new_page(viewport={"width": 900, "height": 520})
        page.goto(f"http://127.0.0.1:{port}/")
        page.wait_for_selector("#task option", state="attached")
        page.fill("#input", "Harry_Potter | education | Hogwarts")
        page.click("#generate")
        page.wait_for_function("document.getElementById('linearized').textContent.length > 0", timeout=120_000)
        sentence = page.inner_text("#sentence")
        page.screenshot(path=str(path))
        browser.close()
    return sentence


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prefix", default="runs/main-job", help="run folder to serve (default: runs/main-job)")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests", type=int, default=25, help="per client (default: 25)")
    parser.add_argument("--sequential", type=int, default=40, help="requests sent one at a time (default: 40)")
    parser.add_argument("--max-new-tokens", type=int, default=40)
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "serve")
    args = parser.parse_args()
    decode = ["--num-beams", "1", "--max-new-tokens", str(args.max_new_tokens)]
    records = read_records("webnlg", "test")
    lines = [format_triples(records[i * len(records) // 60].items) for i in range(60)]
    rng = random.Random(7)
    plans: list[list[dict]] = [[] for _ in range(args.clients)]  # "_status": the answer's expected status
    for plan in plans:
        for _ in range(args.requests):
            if rng.random() < 0.2:
                body, status = rng.choice(BAD)
                plan.append({**body, "_status": status})
            else:
                plan.append({"inputs": rng.sample(lines, rng.choice([1, 1, 2])), "_status": 200})
    expected = cli_sentences(args.prefix, lines, decode)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = start_server(args.prefix, port, decode)
    try:
        together = run_clients(port, plans, expected)
        alone = run_clients(port, [[body for plan in plans for body in plan if body["_status"] == 200]
                                   [: args.sequential]], expected)
        args.out.mkdir(parents=True, exist_ok=True)
        page_sentence = screenshot(port, args.out / "page.png") if shutil.which("chromium") else None
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=120)
    data = {"cpu": cpu_info(), "prefix": args.prefix, "decode": decode, "clients": args.clients,
            "requests_per_client": args.requests, "concurrent": together, "one_at_a_time": alone,
            "page_sentence": page_sentence, "command": "python scripts/load_test.py " + " ".join(sys.argv[1:]),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    (args.out / "load.json").write_text(json.dumps(data, indent=2) + "\n")
    (args.out / "load.md").write_text(markdown(data))
    print(markdown(data))
    return 0 if together["lost"] == together["wrong"] == alone["lost"] == alone["wrong"] == 0 else 1


def run_clients(port: int, plans: list[list[dict]], expected: dict[str, str]) -> dict:
    """One thread per plan, all at once, each sending its requests one after the other; every answer checked
    (its ``_status`` is the expected status, not sent; a 200 must carry the CLI's sentences)."""
    outcomes: list[tuple[str, float, int]] = []
    lock = threading.Lock()

    def client(plan: list[dict]) -> None:
        for body in plan:
            want = body["_status"]
            sent = {k: v for k, v in body.items() if k != "_status"}
            status, answer, latency = post(port, sent)
            good = status == want and (want != 200 or answer["sentences"] == [expected[i] for i in sent["inputs"]])
            with lock:
                outcomes.append(("ok" if good else "wrong", latency, len(sent["inputs"]) if want == 200 else 0))

    started = time.perf_counter()
    threads = [threading.Thread(target=client, args=(plan,)) for plan in plans]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return summary(outcomes, time.perf_counter() - started, sum(len(plan) for plan in plans))


def markdown(data: dict) -> str:
    rows = "\n".join(f"| {name} | {r['requests']} | {r['lost']} | {r['wrong']} | {r['p50_latency_s']} | "
                     f"{r['p95_latency_s']} | {r['sentences_per_s']} |"
                     for name, r in (("16 clients at once" if data["clients"] == 16 else f"{data['clients']} clients",
                                      data["concurrent"]), ("one client, one request at a time",
                                                            data["one_at_a_time"])))
    return f"""# kg2text serve under load (127.0.0.1)

CPU: {data['cpu']['model']} ({data['cpu']['cores']} cores). Prefix `{data['prefix']}`,
decoding `{' '.join(data['decode'])}`.
{data['clients']} clients × {data['requests_per_client']} requests, about 20% of them bad (a malformed triple, an
unknown field, no inputs, an unknown task: each must get its 4xx); good requests carry 1-2 WebNLG test
inputs and must get exactly the sentences `kg2text generate` prints for them. Date: {data['date']}.

| load | requests | lost | wrong | p50 latency s | p95 latency s | sentences/s |
|---|---:|---:|---:|---:|---:|---:|
{rows}

The page (`page.png`) in Debian's chromium, Harry Potter example: "{data['page_sentence']}"

Command: `{data['command']}`
"""


if __name__ == "__main__":
    sys.exit(main())
