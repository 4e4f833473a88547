"""Time from pressing Convert to having the result, in the demo, for a clip of about 10 s (not a test).

    python benchmarks/demo_latency.py [--source CLIP] [--target CLIP] [--runs 3]

Starts `demo.py` on a free port, then calls its /convert endpoint through gradio_client, as the page does: the figure
includes upload, conversion, the pictures and the transfer of the result.
"""
from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import soundfile as sf
from gradio_client import Client, handle_file

ROOT = Path(__file__).resolve().parents[1]
DEV = ROOT.parent / "shared" / "data" / "dev"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--source", default=str(DEV / "librispeech_trainclean5/460/460-172359-0010.flac"))
    p.add_argument("--target", default=str(ROOT / "examples" / "f_SF1.flac"))
    p.add_argument("--runs", type=int, default=3)
    args = p.parse_args()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, str(ROOT / "demo.py"), "--port", str(port)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        for line in proc.stdout:
            if "Running on" in line:
                break
        client = Client(f"http://127.0.0.1:{port}", verbose=False)
        seconds = sf.info(args.source).duration
        times = []
        for _ in range(args.runs):
            start = time.perf_counter()
            client.predict(handle_file(args.source), handle_file(args.target), None, 0.0, api_name="/convert")
            times.append(time.perf_counter() - start)
        print(f"{seconds:.1f}-s source: Convert to result {min(times):.2f} s best, "
              f"{sum(times) / len(times):.2f} s mean of {len(times)} (first {times[0]:.2f} s)")
    finally:
        proc.terminate()


if __name__ == "__main__":
    main()
