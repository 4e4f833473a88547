"""`vc live`: microphone in, converted voice out, through PortAudio (the `sounddevice` library)."""
from __future__ import annotations

import os
import sys
import threading
import time

import numpy as np

from .errors import VCError


def _sounddevice():
    """The sounddevice module, or a clear VCError where there is no PortAudio or no device at all."""
    try:
        import sounddevice as sd
    except ImportError:
        raise VCError("vc live needs the sounddevice library: pip install -e \".[live]\"") from None
    except OSError as e:  # the wheel is there but the PortAudio library is not (Linux: apt install libportaudio2)
        raise VCError(f"no audio device: {e} (on Debian or Ubuntu: apt install libportaudio2)") from None
    try:
        devices = sd.query_devices()
    except Exception as e:  # PortAudio raises its own error types
        raise VCError(f"no audio device: {e}") from None
    if not any(d["max_input_channels"] > 0 for d in devices) or not any(d["max_output_channels"] > 0
                                                                        for d in devices):
        raise VCError("no audio device: this machine has no microphone and speaker that PortAudio can open "
                      "(use `vc stream INPUT --output OUT` to convert a file the same way)")
    return sd


def list_devices() -> str:
    return str(_sounddevice().query_devices())


def _device(sd, name: str | None, kind: str):
    if name is None:
        return None
    try:
        return sd.query_devices(int(name) if name.isdigit() else name, kind)["index"]
    except (ValueError, sd.PortAudioError) as e:
        raise VCError(f"{kind} device '{name}': {e} (see `vc live --list-devices`)") from None


def realtime_priority() -> bool:
    """Give the calling thread (the audio callback's) real-time priority, as JACK and PipeWire give theirs, where the
    OS allows it (Linux, with CAP_SYS_NICE or an RLIMIT_RTPRIO): other processes then no longer preempt a block. On a
    busy 2-core machine the blocks over half a block fell from 60 % to 5 % and p99 from 27 to 17 ms
    (benchmarks/stream_jitter.py --variants none all+rt); the block leaves the CPU to others most of the time."""
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(min(20, os.sched_get_priority_max(os.SCHED_FIFO))))
        return True
    except (AttributeError, OSError):  # not Linux, or not allowed
        return False


def run_live(stream, *, input_device: str | None = None, output_device: str | None = None,
             seconds: float | None = None, out=sys.stderr) -> None:
    """Run `stream` (a `vc.stream.Stream`) between the input and output devices until Ctrl-C (or `seconds`).

    The devices run at the model's rate (PortAudio or the host resamples where the hardware differs); every second a
    line shows the latency (the stream's own plus the devices' buffers, as PortAudio reports them) and the compute
    time per block. Torch runs on one thread (`vc.stream.one_thread`).
    """
    from .stream import one_thread

    sd = _sounddevice()
    rate, block = stream.cfg.sample_rate, stream.block_size
    errors = {"overflow": 0, "underflow": 0, "late": 0}
    lock = threading.Lock()
    realtime: list[bool] = []  # whether the callback's thread runs at real-time priority (decided on its first call)

    def callback(indata, outdata, frames, when, status):
        if not realtime:
            realtime.append(realtime_priority())
        if status.input_overflow:
            errors["overflow"] += 1
        if status.output_underflow:
            errors["underflow"] += 1
        with lock:
            y = stream.process(indata[:, 0].copy())
        if stream.stats.last > block / rate:
            errors["late"] += 1
        outdata[:, 0] = np.clip(y, -1, 1)

    try:
        io = sd.Stream(samplerate=rate, blocksize=block, channels=1, dtype="float32", latency="low",
                       device=(_device(sd, input_device, "input"), _device(sd, output_device, "output")),
                       callback=callback)
    except sd.PortAudioError as e:
        raise VCError(f"cannot open the audio devices at {rate} Hz: {e}") from None
    start = time.monotonic()
    with one_thread(interop=True), io:
        device_ms = 1e3 * (io.latency[0] + io.latency[1])
        print(f"live: {1e3 * block / rate:.1f} ms blocks; latency {1e3 * stream.latency:.1f} ms (conversion) + "
              f"{device_ms:.1f} ms (devices) = {1e3 * stream.latency + device_ms:.1f} ms. Ctrl-C stops.", file=out)
        try:
            while seconds is None or time.monotonic() - start < seconds:
                time.sleep(1.0)
                with lock:  # a copy under the lock (microseconds), the percentiles outside it
                    kept = stream.stats.kept()
                s = stream.stats.summary(kept)
                print(f"\rcompute per block: mean {s['mean_ms']:.1f} ms, p99 {s['p99_ms']:.1f} ms, "
                      f"max {s['max_ms']:.1f} ms "
                      f"({100 * s['real_time_share']:.0f}% of real time); late blocks {errors['late']}, "
                      f"dropouts {errors['underflow'] + errors['overflow']}; audio thread at "
                      f"{'real-time' if any(realtime) else 'normal'} priority   ", end="", file=out, flush=True)
        except KeyboardInterrupt:
            pass
    print(file=out)
