"""Streaming conversion: audio in blocks of a few tens of milliseconds, converted audio out with a fixed latency.

    stream = vc.load_model("checkpoints/stream.pt").stream("target.wav")
    for block in blocks:                      # float32 at 16 kHz, a multiple of `stream.block_size` long
        out = stream.process(block)           # as long as `block`, `stream.latency` seconds behind it
    tail = stream.flush()

Only a causal model streams (`ModelConfig.causal`, `VocoderConfig.causal`): each layer's output depends on past
frames and on a bounded look-ahead, so every layer keeps the last few frames of its input and computes only the new
ones. A model whose norms are per frame (`ModelConfig.norm` "channel", `recipes/stream10.yaml`) or over a causal
window (`ModelConfig.norm_window`) streams exactly what its networks compute offline; for one trained with whole-clip
instance norm the stream takes the statistics of all frames so far. The source's pitch register and the output's mean spectrum for the timbre match also come from
the audio so far, so the streamed output differs from the offline conversion at the start and converges to it.

Blocks are whole hops of the model's frames. The latency is the block plus half an analysis window plus the content
encoder's look-ahead (the synthesis overlap hides inside them): for the shipped stream.pt (10-ms hops, a 20-ms window,
20 ms of look-ahead: recipes/stream10-teacher.yaml) 40 ms with 10-ms blocks and 50 ms with the default 20-ms ones;
75 ms with 25-ms blocks for the default audio settings (a 50-ms window, 25 ms of look-ahead).
"""
from __future__ import annotations

import gc
import os
import time
from contextlib import contextmanager
from typing import Iterator

import numpy as np
import torch

from . import pitch, timbre
from .audio import AudioWriter, audio_seconds, log_mel, read_blocks
from .errors import VCError
from .stream_nets import ContentEncoder, Decoder, Vocoder

PRIME_SECONDS = 3.0  # how much the target clips' statistics count for at the start of a stream


class StreamStats:
    """Compute time (seconds) of each call of `Stream.process`: the first, and the last `keep` (in a preallocated
    ring, so that timing a block allocates nothing)."""

    def __init__(self, block_seconds: float, keep: int = 1 << 17):  # 2**17 blocks: 55 minutes of 25-ms blocks
        self.block_seconds = block_seconds
        self.first: float | None = None
        self.times = np.zeros(keep)
        self.count = 0  # blocks timed after the first

    def add(self, seconds: float) -> None:
        if self.first is None:
            self.first = seconds
        else:
            self.times[self.count % len(self.times)] = seconds
            self.count += 1

    @property
    def last(self) -> float:
        return float(self.times[(self.count - 1) % len(self.times)]) if self.count else (self.first or 0.0)

    def kept(self) -> np.ndarray:
        """A copy of the kept compute times after the first block, oldest first (cheap: take it under a lock and
        summarize outside it)."""
        n, keep = self.count, len(self.times)
        return self.times[:n].copy() if n <= keep else np.roll(self.times, -(n % keep))

    def summary(self, kept: np.ndarray | None = None) -> dict:
        """Mean, percentiles (50, 95, 99, 99.9) and maximum in ms over the blocks after the first (which pays for
        warm-up), and the mean as a share of the block's duration. `kept`: a copy taken earlier by `kept()`."""
        c = self.kept() if kept is None else kept
        if len(c) == 0:
            c = np.asarray([self.first or 0.0])
        p50, p95, p99, p999 = np.percentile(c, [50, 95, 99, 99.9])
        return {"blocks": self.count + (self.first is not None), "first_ms": 1e3 * (self.first or 0.0),
                "mean_ms": 1e3 * float(c.mean()), "p50_ms": 1e3 * p50, "p95_ms": 1e3 * p95, "p99_ms": 1e3 * p99,
                "p999_ms": 1e3 * p999, "max_ms": 1e3 * float(c.max()), "real_time_share": float(c.mean())
                / self.block_seconds}


class Stream:
    """Converts a live signal block by block; made by `VoiceConverter.stream`.

    `process(block)` takes float32 samples at the model's rate (any multiple of `block_size` in length) and returns as
    many converted samples, `latency` seconds behind the input; `flush()` returns the last `latency` seconds.
    """

    def __init__(self, model, voice, *, block_seconds: float = 0.02, pitch_shift: float = 0.0,
                 match_pitch: bool = True, timbre_match: float | None = None, bf16: bool = False,
                 prime: np.ndarray | None = None, prime_seconds: float = PRIME_SECONDS):
        """`model`: a causal `VoiceConverter`; `voice`: its `Voice` of the target; the options are `convert`'s."""
        net, cfg, vocoder = model.net, model.cfg.audio, getattr(model.vocoder, "net", None)  # None: Griffin-Lim
        if net.features is not None:  # Whisper attends over the whole clip: nothing causal to run block by block
            raise VCError("this model cannot stream: its content features are Whisper's (use a mel model such as "
                          "checkpoints/stream.pt)")
        if not net.cfg.causal or vocoder is None or not vocoder.cfg.causal:
            raise VCError("this model cannot stream: it needs a causal converter and vocoder (checkpoints/stream.pt)")
        self.model, self.voice, self.cfg = model, voice, cfg
        self.hop = cfg.hop_length
        if cfg.win_length % (2 * self.hop):
            raise VCError("streaming needs a window of a whole even number of hops")
        self.margin = cfg.win_length // (2 * self.hop)  # hops from a mel frame's centre to its window's edge
        # a block is a whole number of hops; a content frame (two hops) is complete every other one-hop block, so
        # `delay` below is the worst over the blocks' phases
        self.block_size = max(1, round(block_seconds * cfg.sample_rate / self.hop)) * self.hop
        self.pitch_cfg, convert = model.cfg.pitch, model.cfg.convert
        self.pitch_shift, self.match_pitch = pitch_shift, match_pitch
        self.timbre_match = convert.timbre_match if timbre_match is None else timbre_match
        self.clamp = convert.mel_clamp
        # float32 unless asked: the products of a block are a frame or two by a weight matrix, where this project's
        # 2-core Xeon (AMX) took 6.5 ms a 10-ms block in bf16 and 5.3 ms in float32 (recipes/stream10.yaml's model)
        self.bf16 = bool(bf16)
        dtype = torch.bfloat16 if self.bf16 else torch.float32
        with torch.inference_mode():
            self.content = ContentEncoder(net.content_encoder, dtype, net.cfg.norm_window, net.cfg.norm)
            self.decoder = Decoder(net.decoder, voice.embedding.to(torch.float32), dtype)
            self.vocoder = Vocoder(model.vocoder.net, dtype, convert.harmonic_phase)
            if prime is not None and net.cfg.norm_window <= 0 and "instance" in (net.cfg.norm, net.cfg.decoder_norm):
                self._prime(prime, voice, dtype, prime_seconds)
        self.lookahead = net.cfg.lookahead
        # Blocks of an odd number of hops would carry one content frame's work (its two mel frames, vocoded) every
        # other block and none in between: they take one mel frame per hop instead, each as soon as the input allows
        # (which costs no latency: the worst phase waits as long either way).
        self.spread = (self.block_size // self.hop) % 2 == 1
        self.decoded = 0  # mel frames decoded
        self.delay = max(n - self._ready(n) for n in range(100 * self.block_size, 102 * self.block_size + 1,
                                                            self.block_size))
        self.latency = (self.block_size + self.delay) / cfg.sample_rate
        self.audio = np.zeros(0, np.float32)  # input samples from `self.audio_start` on
        self.audio_start = 0
        self.n_in = 0
        self.mel_frames = 0  # mel frames computed
        self.yin = ([], [], [])  # raw YIN (period, depth, level) of frames from `self.yin_start` on
        self.yin_start = 0
        self.max_level = cfg.target_db  # until louder speech comes: frames 45 dB under speech level are silent
        self.pitch_frames = 0  # pitch frames handed to the decoder
        self.register = pitch.Register(self.pitch_cfg)  # the source's log-F0 register so far
        self.spectrum = timbre.SpeechSpectrum(convert.speech_frames_db)  # the output's speech spectrum so far
        self.contrast = convert.mel_contrast
        self.matched = timbre.SpeechSpectrum(convert.speech_frames_db)  # the same after the timbre match
        self.out = np.zeros(self.delay, np.float32)  # converted samples not yet returned (silence first)
        self.f0_out = torch.zeros(0, dtype=torch.float64)  # F0 (Hz) of pitch frames not yet decoded: for the vocoder
        self.stats = StreamStats(self.block_size / cfg.sample_rate)
        log_mel(np.zeros(cfg.win_length, np.float32), cfg)  # the filterbank and FFT plans, before the first block
        # Shield the blocks from Python's garbage collector: a full collection walks every tracked object (about
        # 170,000 once torch, librosa and the model are loaded: 150-250 ms on a busy 2-core machine; issue 15).
        # Freezing what set-up made moves it out of the collector's reach for good (a full collection
        # then takes microseconds), and `process` holds automatic collections off while it computes. (Frozen
        # objects that later form cyclic garbage are never collected: a server making streams by the thousand can
        # call `gc.unfreeze()` now and then.)
        self.pause_gc = True
        gc.collect()
        gc.freeze()

    def _prime(self, wav: np.ndarray, voice, dtype: torch.dtype, seconds: float) -> None:
        """Start instance norm's running statistics from those of `wav` (speech: the target's clips), weighted as
        `seconds` of frames, instead of from nothing: a model trained with whole-clip statistics otherwise garbles
        the first seconds, while the statistics of a few frames are far from the clip's."""
        net, frames = self.model.net, seconds * self.cfg.sample_rate / self.hop
        mel = net.normalize(log_mel(wav, self.cfg)[None])
        content = ContentEncoder(net.content_encoder, dtype, 0, net.cfg.norm)
        decoder = Decoder(net.decoder, voice.embedding.to(torch.float32), dtype)
        code = content(mel)
        p = self.model.source_pitch(wav, match_pitch=False)[None, :, :2 * code.shape[2]]
        decoder(code, p if decoder.pitch is not None else None)
        for fresh, primed in zip(self.content.norms() + self.decoder.norms, content.norms() + decoder.norms):
            if primed.n:
                weight = min(1.0, frames / primed.n)  # the prime counts as `frames` frames (at the layer's rate)
                fresh.n, fresh.sum, fresh.sq = primed.n * weight, primed.sum * weight, primed.sq * weight

    def run(self, wav: np.ndarray) -> np.ndarray:
        """Stream a whole signal through, block by block; the output is lined up with it (the delay cut) and as
        long. For files, tests and benchmarks: live use calls `process`."""
        n = len(wav)
        wav = np.pad(np.asarray(wav, np.float32), (0, -n % self.block_size))
        out = [self.process(wav[i:i + self.block_size]) for i in range(0, len(wav), self.block_size)]
        return np.concatenate(out + [self.flush()])[self.delay:self.delay + n]

    def _ready(self, n_in: int) -> int:
        """How many converted samples are final once `n_in` samples have come in: mel frames need half a window
        after their centre, the content encoder's first layer `lookahead` frames more, content frame j gives mel
        frames 2j and 2j + 1, and a sample is final when no later frame's window reaches it."""
        hop, half = self.hop, self.cfg.win_length // 2
        mel = (n_in - half) // hop  # the last mel frame
        content = (mel - self.lookahead) // 2  # the last content frame
        last = mel - self.lookahead if self.spread else 2 * content + 1  # the last mel frame decoded
        return (last + 1) * hop - half

    def process(self, block: np.ndarray) -> np.ndarray:
        block = np.asarray(block, np.float32).reshape(-1)
        if len(block) % self.block_size:
            raise VCError(f"a block must be a multiple of {self.block_size} samples, got {len(block)}")
        t0 = time.perf_counter_ns()
        paused = self.pause_gc and gc.isenabled()
        if paused:
            gc.disable()  # a collection due now runs after the block, on the objects made since set-up
        try:
            with torch.inference_mode():
                self._push(block)
        finally:
            if paused:
                gc.enable()
        self.stats.add(1e-9 * (time.perf_counter_ns() - t0))
        out, self.out = self.out[:len(block)], self.out[len(block):]
        return out

    def flush(self) -> np.ndarray:
        """The converted samples still held back: feeds `latency` seconds of silence."""
        pad = -(-self.delay // self.block_size) * self.block_size
        with torch.inference_mode():
            self._push(np.zeros(pad, np.float32))
        out, self.out = self.out[:self.delay], np.zeros(0, np.float32)
        return out

    def _push(self, block: np.ndarray) -> None:
        hop, win = self.hop, self.cfg.win_length
        self.audio = np.concatenate([self.audio, block])
        self.n_in += len(block)
        # new mel frames: frame t needs samples up to t * hop + win / 2
        last = (self.n_in - win // 2) // hop
        new = np.arange(self.mel_frames, last + 1)
        if len(new) == 0:
            return
        mel = self._mel(new)
        self.mel_frames = last + 1
        # raw F0 of every frame whose whole analysis window has arrived
        frame_length = self.pitch_cfg.frame_length
        last_yin = (self.n_in - frame_length // 2) // hop
        ynew = np.arange(self.yin_start + len(self.yin[0]), last_yin + 1)
        if len(ynew):
            fr = self._windows(ynew, frame_length)
            for acc, v in zip(self.yin, pitch.yin(fr, self.cfg.sample_rate, self.pitch_cfg)):
                acc.extend(v.tolist())
        content = self.content(self.model.net.normalize(mel[None]))
        m = content.shape[2]
        if m:
            f0 = self._pitch(self.pitch_frames, 2 * m)
            self.pitch_frames += 2 * m
            p = self._pitch_features(f0)
            self.decoder.push(content, p[None] if self.decoder.pitch is not None else None)
            self.f0_out = torch.cat([self.f0_out, pitch.hz(p, self.pitch_cfg)])
        out = self.decoder.pull(self.mel_frames - self.lookahead - self.decoded if self.spread else None)
        if out.shape[2] == 0:
            return
        self.decoded += out.shape[2]
        mel_out = self.model.net.denormalize(out, clamp=self.clamp)[0]
        mel_out = timbre.match(mel_out, self.voice.spectrum, self.spectrum.add(mel_out).mean(), self.timbre_match)
        if self.contrast != 1:
            mel_out = timbre.contrast(mel_out, self.matched.add(mel_out), self.contrast)
        f0_out, self.f0_out = self.f0_out[:out.shape[2]], self.f0_out[out.shape[2]:]
        self.out = np.concatenate([self.out, self.vocoder(mel_out[None], f0_out)])
        next_yin = self.yin_start + len(self.yin[0])
        keep = min(self.mel_frames * hop - win // 2, next_yin * hop - frame_length // 2)  # oldest still needed
        drop = max(0, keep - self.audio_start)
        self.audio, self.audio_start = self.audio[drop:], self.audio_start + drop

    def _segment(self, frames: np.ndarray, half: int) -> np.ndarray:
        """The input from `half` samples before the first frame's centre to `half` after the last's (zeros before
        the start of the signal)."""
        start, end = frames[0] * self.hop - half, frames[-1] * self.hop + half
        seg = np.zeros(end - start, np.float32)
        lo, hi = max(start, self.audio_start), min(end, self.audio_start + len(self.audio))
        seg[lo - start:hi - start] = self.audio[lo - self.audio_start:hi - self.audio_start]
        return seg

    def _windows(self, frames: np.ndarray, length: int) -> torch.Tensor:
        """(n, length) analysis windows centred on the given frames."""
        return torch.from_numpy(self._segment(frames, length // 2)).unfold(0, length, self.hop)[:len(frames)]

    def _mel(self, frames: np.ndarray) -> torch.Tensor:
        """`log_mel` frames (n_mels, n): of a segment starting `margin` hops (half a window) before the first frame's
        centre, frames margin.. (whose windows lie inside it) are the wanted ones."""
        m = self.margin
        seg = self._segment(frames, m * self.hop)
        return log_mel(seg, self.cfg)[:, m:m + len(frames)]

    def _pitch(self, first: int, n: int) -> torch.Tensor:
        """F0 (Hz) of frames first .. first + n - 1, from the raw YIN frames known now."""
        if not self.yin[0]:  # no analysis window has all arrived yet (a pitch window longer than the look-ahead)
            return torch.zeros(n)
        period, depth, level = (torch.tensor(v) for v in self.yin)
        self.max_level = max(self.max_level, float(level.max()))
        f0, _ = pitch.contour(period, depth, level, self.cfg.sample_rate, self.max_level, self.pitch_cfg,
                              open_end=True)
        f0 = f0[first - self.yin_start:first - self.yin_start + n]
        if len(f0) < n:  # the newest frame's analysis window has not all arrived: repeat the last known one
            f0 = torch.cat([f0, f0[-1:].expand(n - len(f0))]) if len(f0) else torch.zeros(n)
        cut = max(0, first + n - 8 - self.yin_start)  # keep a few frames of context for the next call
        self.yin = tuple(v[cut:] for v in self.yin)
        self.yin_start += cut
        return f0

    def _pitch_features(self, f0: torch.Tensor) -> torch.Tensor:
        """F0 of new frames -> the decoder's pitch input: moved from the source's register so far to the target's."""
        source = self.register.add(f0).stats()
        target = self.voice.pitch if self.match_pitch else None
        return pitch.features(pitch.transpose(f0, source if target is not None else None, target, self.pitch_shift),
                              self.pitch_cfg)


@contextmanager
def one_thread(interop: bool = False) -> Iterator[None]:
    """Run torch on one thread inside the block, as a stream should (the thread count as it was after): its blocks
    are a few frames, too small to share out, and on a busy 2-core machine the intra-op pool's second thread made
    blocks of 70-700 ms instead of 20 (each op waits for a thread the OS has preempted; benchmarks/stream_jitter.py).
    `interop`: the inter-op pool, which a stream never uses, gets one thread too, for the rest of the process (torch
    allows that only before any inter-op work; it stays as it is otherwise)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    if interop:
        try:
            torch.set_num_interop_threads(1)
        except RuntimeError:
            pass
    try:
        yield
    finally:
        torch.set_num_threads(before)


def stream_file(stream: Stream, source: str | os.PathLike, output: str | os.PathLike) -> dict:
    """Feed an audio file through `stream` block by block, as `vc live` feeds a microphone, and write the output
    (lined up with the input: the stream's delay is cut) atomically, on one torch thread (`one_thread`). Returns the
    latency, the per-block compute statistics and the real-time factor."""
    seconds = audio_seconds(source)
    rate, size = stream.cfg.sample_rate, stream.block_size
    skip, left = stream.delay, round(seconds * rate)
    start = time.perf_counter()
    with AudioWriter(output, rate) as writer, one_thread():
        def write(y: np.ndarray) -> None:
            nonlocal skip, left
            cut = min(skip, len(y))
            skip -= cut
            y = y[cut:left + cut]
            writer.write(y)
            left -= len(y)

        buf = np.zeros(0, np.float32)
        for chunk in read_blocks(source, rate):
            buf = np.concatenate([buf, chunk])
            whole = len(buf) - len(buf) % size
            for i in range(0, whole, size):  # one block at a time, as a sound card delivers them
                write(stream.process(buf[i:i + size]))
            buf = buf[whole:]
        if len(buf):
            write(stream.process(np.pad(buf, (0, size - len(buf)))))
        write(stream.flush())
    elapsed = time.perf_counter() - start
    return {"seconds": seconds, "latency_ms": 1e3 * stream.latency, "block_ms": 1e3 * size / rate,
            "rtf": elapsed / max(seconds, 1e-9), **stream.stats.summary()}
