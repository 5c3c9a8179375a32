"""``kg2text serve``: answers equal the CLI's, batching, limits and bad requests, the token, the bind refusal,
SIGTERM during a request, and the page in a real browser (Debian's chromium, driven by Playwright)."""

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

import kg2text.serve as serving
from kg2text.api import Verbalizer
from kg2text.cli import main
from kg2text.generate import DecodeConfig
from kg2text.serve import ServeLimits, create_app

DECODE = {"num_beams": 1, "max_new_tokens": 6}
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def verbalizer(trained_run):
    return Verbalizer.load(trained_run, **DECODE)


@pytest.fixture()
def client(verbalizer):
    with TestClient(create_app(verbalizer, ServeLimits(max_inputs=4, max_input_chars=80))) as test_client:
        yield test_client


def test_generate_answers_what_the_cli_prints(client, trained_run, capsys):
    inputs = ["Harry_Potter | education | Hogwarts", ["Harry Potter", "house", "Gryffindor"],
              {"triples": [["A", "b", "c"], ["D", "e", "f"]]}]
    response = client.post("/generate", json={"inputs": inputs})
    assert response.status_code == 200
    body = response.json()
    main(["generate", "--prefix", str(trained_run), "--num-beams", "1", "--max-new-tokens", "6",
          "Harry_Potter | education | Hogwarts", "Harry Potter | house | Gryffindor", "A | b | c ; D | e | f"])
    assert body["sentences"] == capsys.readouterr().out.splitlines()
    assert body["linearized"] == ["| Harry Potter : education : Hogwarts", "| Harry Potter : house : Gryffindor",
                                  "| A : b : c | D : e : f"]
    info = client.get("/info").json()
    assert info["backbone"] == "tiny-gpt2" and info["tasks"]["webnlg"]["format"] == "webnlg"
    assert info["decoding"]["num_beams"] == 1 and info["limits"]["max_inputs"] == 4 and info["categories"] == []
    assert info["ensemble"] == []
    assert client.get("/health").json() == {"status": "ok"}


@pytest.mark.parametrize("body, status, message", [
    ({"inputs": ["A | b | c"] * 5}, 413, "inputs: 5 inputs, more than the limit of 4"),
    ({"inputs": ["A | b | " + "c" * 100]}, 413, "input 1 has 108 characters, more than the limit of 80"),
    ({"inputs": ["A | b"]}, 400, "inputs: input 1: triple 1 'A | b' has 2 field(s)"),
    ({"inputs": ["A | b | c"], "colour": "red"}, 422, "colour: Extra inputs are not permitted"),
    ({"inputs": []}, 422, "inputs: List should have at least 1 item"),
    ({"inputs": ["A | b | c"], "num_beams": 0}, 422, "num_beams: Input should be greater than or equal to 1"),
    ({"inputs": ["A | b | c"], "task": "e2e"}, 400, "task 'e2e' is not loaded; name one of: webnlg"),
    ({"inputs": ["A | b | c"], "category": "Food"}, 400,
     "category: 'Food' chooses a control prefix; the loaded prefix has none"),
    ("{not json", 422, "body is not valid JSON (at character 1)"),
])
def test_a_bad_request_is_one_clear_4xx_and_the_server_goes_on(client, body, status, message):
    response = client.post("/generate", **({"content": body, "headers": {"Content-Type": "application/json"}}
                                           if isinstance(body, str) else {"json": body}))
    assert response.status_code == status
    assert message in response.json()["detail"], response.json()
    assert client.post("/generate", json={"inputs": ["A | b | c"]}).status_code == 200


def test_requests_that_arrive_together_are_decoded_as_one_batch(verbalizer, monkeypatch):
    calls = []
    real = serving.generate_sentences

    def counted(loaded, rows, decode, categories):
        calls.append(len(rows))
        return real(loaded, rows, decode, categories=categories)

    monkeypatch.setattr(serving, "generate_sentences", counted)
    batcher = serving.Batcher(verbalizer, ServeLimits(batch_window_s=0.2))
    requests = [["Harry_Potter | education | Hogwarts"], ["A | b | c", "D | e | f"], ["Luna | house | Ravenclaw"]]
    decode = DecodeConfig(**DECODE)

    async def together():
        worker = asyncio.create_task(batcher.run())
        answers = await asyncio.gather(*(batcher.decode(verbalizer.parse(r), decode) for r in requests))
        worker.cancel()
        return answers

    answers = asyncio.run(together())
    assert calls[0] == 4  # one batch of all four inputs
    assert answers == [verbalizer.generate(r) for r in requests]  # each exactly what it gets alone


def test_the_token_guards_every_api_request_but_not_the_page(verbalizer):
    with TestClient(create_app(verbalizer, token="s3cret")) as guarded:
        assert guarded.get("/info").status_code == 401
        refused = guarded.post("/generate", json={"inputs": ["A | b | c"]},
                               headers={"Authorization": "Bearer wrong"})
        assert refused.status_code == 401 and "Authorization: Bearer TOKEN" in refused.json()["detail"]
        ok = guarded.post("/generate", json={"inputs": ["A | b | c"]}, headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200 and len(ok.json()["sentences"]) == 1
        assert guarded.get("/").status_code == 200 and "<textarea" in guarded.get("/").text


def test_a_public_bind_without_a_token_is_refused(trained_run, capsys, monkeypatch):
    monkeypatch.delenv(serving.TOKEN_ENV, raising=False)
    code = main(["serve", "--prefix", str(trained_run), "--host", "0.0.0.0"])
    err = capsys.readouterr().err
    assert code == 2 and "--host 0.0.0.0 would let any machine" in err and "--token" in err
    serving.check_bind("0.0.0.0", "a-token")  # with a token it may
    serving.check_bind("127.0.0.1", None)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _start_server(run: Path, port: int, *extra: str) -> subprocess.Popen:
    """A real ``kg2text serve`` process, started as nohup would (SIGINT ignored); waits until it answers."""
    server = subprocess.Popen(
        [sys.executable, "-m", "kg2text", "serve", "--prefix", str(run), "--port", str(port), *extra],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
        env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
    for _ in range(600):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1)
            return server
        except OSError:
            if server.poll() is not None:
                raise AssertionError(server.stdout.read()) from None
            time.sleep(0.1)
    server.kill()
    raise AssertionError("the server did not start")


def _post(port: int, body: dict, timeout: float = 120) -> tuple[int, dict]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/generate", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_sigterm_finishes_the_request_in_flight_then_refuses_new_ones(trained_run, verbalizer):
    port = _free_port()
    server = _start_server(trained_run, port, "--num-beams", "3", "--max-new-tokens", "100")
    inputs = [f"Entity_{i} | relation | Value_{i}" for i in range(24)]
    answer = {}

    def ask() -> None:
        answer["status"], answer["body"] = _post(port, {"inputs": inputs})

    request = threading.Thread(target=ask)
    request.start()
    time.sleep(0.3)  # the request is being decoded
    assert request.is_alive(), "the request finished before SIGTERM: make it longer"
    server.send_signal(signal.SIGTERM)
    request.join(timeout=120)
    assert answer["status"] == 200 and len(answer["body"]["sentences"]) == 24
    assert answer["body"]["sentences"] == verbalizer.generate(inputs, num_beams=3, max_new_tokens=100)
    assert server.wait(timeout=60) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal once it has finished
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (.ci/run installs it)")
@pytest.mark.parametrize("run_name, with_itself", [("trained_run", False), ("control_run", False),
                                                   ("trained_run", True)])
def test_the_page_in_a_real_browser_shows_the_sentence_and_the_model_input(run_name, with_itself, request, tmp_path):
    """A plain prefix's page hides the category choice; a control run's lists its categories and sends the one
    chosen; an ensemble's (the run with itself: the same sentence as the run alone) names its other run."""
    from playwright.sync_api import sync_playwright

    run = request.getfixturevalue(run_name)
    verbalizer = Verbalizer.load(run, **DECODE)
    category = verbalizer.loaded.categories[-1] if verbalizer.loaded.categories else ""
    port = _free_port()
    ensemble = [f"--ensemble={run}"] if with_itself else []
    server = _start_server(run, port, *[f"--{k.replace('_', '-')}={v}" for k, v in DECODE.items()], *ensemble)
    sent = []
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=[
                "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync"])
            page = browser.new_page()
            page.on("request", lambda r: sent.append(r.post_data_json) if r.url.endswith("/generate") else None)
            page.goto(f"http://127.0.0.1:{port}/")
            page.wait_for_selector("#task option", state="attached")
            shown = page.is_visible("#category-row")
            loaded = page.inner_text("#loaded")
            if category:
                page.select_option("#category", category)
            page.fill("#input", "Harry_Potter | education | Hogwarts")
            page.click("#generate")
            page.wait_for_function("document.getElementById('linearized').textContent.length > 0")
            sentence = page.inner_text("#sentence")
            linearized = page.inner_text("#linearized")
            page.screenshot(path=str(tmp_path / "page.png"))
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=60)
    assert shown == bool(category)
    assert [body["category"] for body in sent] == [category]
    assert sentence == verbalizer("Harry_Potter | education | Hogwarts", category=category)
    assert linearized == "model input: | Harry Potter : education : Hogwarts"
    together = f", an ensemble of 2 prefixes (with {run.name})" if with_itself else ""
    assert loaded == f"backbone tiny-gpt2, beam 1{together}"
    assert (tmp_path / "page.png").stat().st_size > 1000


def test_a_request_past_the_decoding_timeout_gets_504_and_the_server_goes_on(verbalizer):
    with TestClient(create_app(verbalizer, ServeLimits(timeout_s=0.001))) as slow:
        response = slow.post("/generate", json={"inputs": ["A | b | c"] * 8, "max_new_tokens": 60})
        assert response.status_code == 504 and "decoding took longer than" in response.json()["detail"]
        assert slow.get("/health").json() == {"status": "ok"}


def test_two_tasks_on_one_backbone_each_answer_as_its_own_prefix_alone(trained_run, e2e_run):
    both = Verbalizer.load({"webnlg": trained_run, "e2e": e2e_run}, **DECODE)
    with TestClient(create_app(both)) as client:
        webnlg = client.post("/generate", json={"inputs": ["Harry_Potter | education | Hogwarts"], "task": "webnlg"})
        e2e = client.post("/generate", json={"inputs": [{"mr": "name[Alimentum], area[city centre]"}],
                                             "task": "e2e"})
        missing = client.post("/generate", json={"inputs": ["A | b | c"]})
    assert webnlg.json()["sentences"] == Verbalizer.load(trained_run, **DECODE).generate(
        ["Harry_Potter | education | Hogwarts"])
    alone = Verbalizer.load(e2e_run, **DECODE).generate(["name[Alimentum], area[city centre]"])
    assert e2e.json()["sentences"] == alone
    assert e2e.json()["linearized"] == ["name : Alimentum | area : city centre"]
    assert missing.status_code == 400 and "name its task, one of: webnlg, e2e" in missing.json()["detail"]
