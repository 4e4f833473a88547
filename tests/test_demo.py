"""The demo, driven the way people and scripts use it: a real browser, gradio_client, and bad uploads."""
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from conftest import ROOT, synth_speech

pytest.importorskip("gradio", reason="the demo extra is not installed")
from gradio_client import Client, handle_file  # noqa: E402

EXAMPLES = ROOT / "examples"
ARTIFACTS = ROOT / "tests" / "artifacts"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
MAX_SECONDS = 12


@pytest.fixture(scope="module")
def server():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    proc = subprocess.Popen([sys.executable, str(ROOT / "demo.py"), "--port", str(port), "--max-seconds",
                             str(MAX_SECONDS), "--max-file-size", "1mb"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    deadline = time.time() + 120
    for line in proc.stdout:
        if "Running on" in line:
            break
        assert time.time() < deadline, "the demo did not start"
    assert proc.poll() is None, "the demo exited"
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(timeout=30)


def test_client_converts_like_a_script(server):
    client = Client(server, verbose=False)
    audio, mels, f0, space, similarity = client.predict(
        handle_file(str(EXAMPLES / "m_TM1.flac")), handle_file(str(EXAMPLES / "f_SF1.flac")), None, 0.0,
        api_name="/convert")
    wav, sr = sf.read(audio)
    src = sf.info(EXAMPLES / "m_TM1.flac")
    assert sr == 16000 and abs(len(wav) / sr - src.duration) < 0.02
    assert np.sqrt(np.mean(wav ** 2)) > 0.02
    for plot in (mels, f0, space, similarity):
        assert plot["type"] == "matplotlib" and plot["plot"].startswith("data:image")


def test_voice_mixing_moves_the_output_toward_the_second_voice(server):
    # The mix slider blends the second target in: the further it goes, the closer the output's speaker embedding
    # (the model's own encoder, which is what the mix acts on) comes to the second target's.
    import torch

    import vc

    client = Client(server, verbose=False)
    model = vc.load_model()
    second = model.embed(EXAMPLES / "m_1334.flac").embedding
    closeness = []
    for mix in (0.0, 1.0):
        audio, *_ = client.predict(handle_file(str(EXAMPLES / "m_TM1.flac")),
                                   handle_file(str(EXAMPLES / "f_SF1.flac")),
                                   handle_file(str(EXAMPLES / "m_1334.flac")), mix, api_name="/convert")
        assert abs(sf.info(audio).duration - sf.info(EXAMPLES / "m_TM1.flac").duration) < 0.02
        out = model.embed(audio).embedding
        closeness.append(float(torch.nn.functional.cosine_similarity(out, second, dim=0)))
    assert closeness[1] > closeness[0] + 0.02


@pytest.mark.parametrize("kind,message", [("empty", "file is empty"), ("silent", "silent"),
                                          ("short", "too short"), ("text", "not a readable audio file"),
                                          ("long", f"up to {MAX_SECONDS} s")])
def test_bad_uploads_get_a_message(server, tmp_path, kind, message):
    bad = tmp_path / f"{kind}.wav"
    if kind == "empty":
        bad.write_bytes(b"")
    elif kind == "silent":
        sf.write(bad, np.zeros(32000, np.float32), 16000)
    elif kind == "short":
        sf.write(bad, synth_speech(150, 0.1)[3200:8000], 16000)
    elif kind == "text":
        bad.write_text("not audio at all\n" * 50)
    else:
        sf.write(bad, synth_speech(150, MAX_SECONDS + 2.0), 16000)
    client = Client(server, verbose=False)
    with pytest.raises(Exception) as err:
        client.predict(handle_file(str(bad)), handle_file(str(EXAMPLES / "f_SF1.flac")), None, 0.0,
                       api_name="/convert")
    assert message in str(err.value) and "source clip" in str(err.value) and "Traceback" not in str(err.value)
    # and the app is still up
    audio, *_ = client.predict(handle_file(str(EXAMPLES / "f_1069.flac")), handle_file(str(EXAMPLES / "m_TM1.flac")),
                               None, 0.0, api_name="/convert")
    assert Path(audio).is_file()


def test_two_users_at_once_both_get_their_result(server):
    from concurrent.futures import ThreadPoolExecutor

    def one(pair):
        return Client(server, verbose=False).predict(handle_file(str(EXAMPLES / pair[0])),
                                                     handle_file(str(EXAMPLES / pair[1])), None, 0.0,
                                                     api_name="/convert")[0]

    with ThreadPoolExecutor(2) as pool:
        outputs = list(pool.map(one, [("m_TM1.flac", "f_SF1.flac"), ("f_1069.flac", "m_1334.flac")]))
    assert abs(sf.info(outputs[0]).duration - sf.info(EXAMPLES / "m_TM1.flac").duration) < 0.02
    assert abs(sf.info(outputs[1]).duration - sf.info(EXAMPLES / "f_1069.flac").duration) < 0.02


def test_oversized_upload_is_refused(server, tmp_path):
    big = tmp_path / "big.wav"
    sf.write(big, np.tile(synth_speech(150, 5.0), 8), 16000)  # 40 s of 16-bit audio: about 1.3 MB
    with pytest.raises(Exception) as err:  # noqa: B017 (gradio_client raises a plain httpx error here)
        Client(server, verbose=False).predict(handle_file(str(big)), handle_file(str(EXAMPLES / "f_SF1.flac")),
                                              None, 0.0, api_name="/convert")
    assert "maximum file size" in str(err.value)


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (see the README's set-up command)")
def test_browser_upload_convert_and_screenshot(server):
    playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync"])
        page = browser.new_page(viewport={"width": 1300, "height": 1800})
        page.goto(server)
        page.locator("#source-audio input[type=file]").set_input_files(str(EXAMPLES / "m_TM1.flac"))
        page.locator("#target-audio input[type=file]").set_input_files(str(EXAMPLES / "f_SF1.flac"))
        page.locator("#target-audio audio, #target-audio [data-testid=waveform-Target]").first.wait_for(
            state="attached", timeout=30000)
        page.get_by_role("button", name="Convert").click()
        link = page.locator("#output-audio a[download]")
        link.wait_for(timeout=120000)
        body = page.request.get(link.get_attribute("href")).body()
        ARTIFACTS.mkdir(exist_ok=True)
        (ARTIFACTS / "demo-output.wav").write_bytes(body)
        page.wait_for_timeout(1000)
        page.screenshot(path=str(ARTIFACTS / "demo.png"), full_page=True)
        browser.close()
    wav, sr = sf.read(ARTIFACTS / "demo-output.wav")
    assert abs(len(wav) / sr - sf.info(EXAMPLES / "m_TM1.flac").duration) < 0.05
    assert np.sqrt(np.mean(wav ** 2)) > 0.02
    assert (ARTIFACTS / "demo.png").stat().st_size > 10000
