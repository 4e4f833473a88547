"""A JACK client for tests/test_live_jack.py: plays a clip and records what comes back, through PortAudio.

    python tests/jack_rig.py CLIP.npy RECORDING.npy TAIL_SAMPLES

Opens one duplex PortAudio stream (mono, 16 kHz, 400-sample blocks) on the JACK server of $JACK_DEFAULT_SERVER,
prints `ready` and its own latency as PortAudio reports it (its output's buffers delay the clip too), and waits for
a line on stdin (the test connects the ports meanwhile). Then it plays the clip and records its input from the same
callback, so that sample i of the recording is heard when sample i of the clip is played: the recording's delay is
the round trip through whatever the test connected. It stops `TAIL_SAMPLES` after the clip and saves the recording.
"""
import sys
import threading

import numpy as np
import sounddevice as sd

clip, path, tail = np.load(sys.argv[1]).astype(np.float32), sys.argv[2], int(sys.argv[3])
played, recorded, go, done = [0], [], threading.Event(), threading.Event()


def callback(indata, outdata, frames, when, status):
    outdata.fill(0)
    if not go.is_set() or done.is_set():
        return
    p = played[0]
    chunk = clip[p:p + frames]
    outdata[:len(chunk), 0] = chunk
    recorded.append(indata[:, 0].copy())
    played[0] = p + frames
    if played[0] >= len(clip) + tail:
        done.set()


with sd.Stream(samplerate=16000, blocksize=400, channels=1, dtype="float32", latency="low", callback=callback) as io:
    print(f"ready; latency {1e3 * io.latency[0]:.1f} ms (input) + {1e3 * io.latency[1]:.1f} ms (output)", flush=True)
    sys.stdin.readline()
    go.set()
    if not done.wait(timeout=4 * (len(clip) + tail) / 16000 + 5):
        sys.exit("the JACK server stopped calling back")
np.save(path, np.concatenate(recorded))
