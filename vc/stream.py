"""Streaming conversion: audio in blocks of a few tens of milliseconds, converted audio out with a fixed latency.

    stream = vc.load_model("checkpoints/stream.pt").stream("target.wav")
    for block in blocks:                      # float32 at 16 kHz, a multiple of `stream.block_size` long
        out = stream.process(block)           # as long as `block`, `stream.latency` seconds behind it
    tail = stream.flush()

Only a causal model streams (`ModelConfig.causal`, `VocoderConfig.causal`): each layer's output depends on past
frames and on a bounded look-ahead, so every layer keeps the last few frames of its input and computes only the new
ones. Instance norm's statistics, which offline come from the whole utterance, come from all frames so far; so do
the source's pitch register and the output's mean spectrum for the timbre match. The streamed output therefore
differs from the offline conversion at the start and converges to it as the statistics settle.
"""
from __future__ import annotations

import math
import os
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from . import pitch
from .audio import AudioWriter, _window, audio_seconds, log_mel, stream_wav
from .errors import VCError
from .model import CausalConv1d, _act, window_norm

EPS = 1e-5  # as in `instance_norm`
PRIME_SECONDS = 3.0  # how much the target clips' statistics count for at the start of a stream


class _Conv:
    """A `CausalConv1d` (or a pointwise conv) on a stream: keeps the input frames its next outputs need (zeros before
    the start), and computes the new outputs as one matrix product (on a few frames, much faster than conv1d)."""

    def __init__(self, conv: torch.nn.Conv1d, dtype: torch.dtype = torch.float32):
        self.k, self.s, self.groups = conv.kernel_size[0], conv.stride[0], conv.groups
        self.cout = conv.out_channels
        self.left = conv.left if isinstance(conv, CausalConv1d) else 0
        w = conv.weight.detach().float()
        # (k * cin, cout), rows ordered frame by frame; depthwise: (k, C)
        w = w[:, 0].T if self.groups > 1 else w.permute(2, 1, 0).reshape(-1, self.cout)
        self.w = w.to(dtype).contiguous()
        self.b = (conv.bias.detach() if conv.bias is not None else torch.zeros(self.cout)).to(dtype)
        self.buf: torch.Tensor | None = None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """(1, C, n) -> (1, cout, outputs now complete)."""
        x = x[0].T.to(self.w.dtype)  # (n, C)
        if self.buf is None:
            self.buf = x.new_zeros(self.left, x.shape[1])
        x = torch.cat([self.buf, x]) if self.left else x
        n = (x.shape[0] - self.k) // self.s + 1 if x.shape[0] >= self.k else 0
        self.buf = x[n * self.s:]
        if n == 0:
            return x.new_zeros(1, self.cout, 0)
        u = x.unfold(0, self.k, self.s)[:n]  # (n, C, k)
        if self.groups > 1:
            y = torch.einsum("nck,kc->nc", u, self.w) + self.b
        else:
            y = torch.addmm(self.b, u.transpose(1, 2).reshape(n, -1), self.w)
        return y.T[None].float()


class _Halve:
    """The causal `_halve` on a stream: frame j is the mean of input frames 2j - 1 and 2j."""

    def __init__(self):
        self.buf: torch.Tensor | None = None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.buf is None:
            self.buf = x.new_zeros(1, x.shape[1], 1)
        x = torch.cat([self.buf, x], dim=2)
        n = (x.shape[2] - 2) // 2 + 1 if x.shape[2] >= 2 else 0
        self.buf = x[:, :, 2 * n:]
        return 0.5 * (x[:, :, 0:2 * n:2] + x[:, :, 1:2 * n:2])


class _Norm:
    """Instance norm on a stream: each frame normalized with the statistics of the frames up to and including it,
    the last `window` of them (`vc.model.window_norm`), or all of them where the model was trained with whole-clip
    statistics (window 0: the stream's estimate of them)."""

    def __init__(self, window: int = 0):
        self.window = window
        self.n, self.sum, self.sq = 0, 0.0, 0.0
        self.buf: torch.Tensor | None = None  # the last window - 1 frames (float64)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[2] == 0:
            return x.float()
        d = x.double()
        if self.window > 0:
            if self.buf is None:
                self.buf = d[:, :, :0]
            k, d = self.buf.shape[2], torch.cat([self.buf, d], dim=2)  # the buffer holds every frame a window needs
            self.buf = d[:, :, max(0, d.shape[2] - (self.window - 1)):]
            return window_norm(d, self.window)[:, :, k:]
        s = self.sum + torch.cumsum(d, dim=2)
        q = self.sq + torch.cumsum(d * d, dim=2)
        n = self.n + torch.arange(1, x.shape[2] + 1, dtype=torch.float64)
        mean = s / n
        var = (q / n - mean * mean).clamp(min=0)
        self.n, self.sum, self.sq = float(n[-1]), s[:, :, -1:], q[:, :, -1:]
        return ((d - mean) / (var + EPS).sqrt()).float()


class _ContentEncoder:
    def __init__(self, enc, dtype: torch.dtype, window: int):
        w = window
        self.conv_in, self.norm_in = _Conv(enc.conv_in, dtype), _Norm(w)
        self.blocks = [(_Conv(b, dtype), _Norm(w if i == 0 else w // 2), _Halve() if b.stride[0] == 2 else None)
                       for i, b in enumerate(enc.blocks)]
        self.conv_out, self.norm_out = _Conv(enc.conv_out, dtype), _Norm(w // 2)

    def __call__(self, mel: torch.Tensor) -> torch.Tensor:
        x = _act(self.norm_in(self.conv_in(mel)))
        for conv, norm, halve in self.blocks:
            h = _act(norm(conv(x)))
            x = (halve(x) if halve is not None else x) + h
        return self.norm_out(self.conv_out(x))

    def norms(self) -> list:
        return [self.norm_in] + [norm for _, norm, _ in self.blocks] + [self.norm_out]


class _Decoder:
    def __init__(self, dec, spk: torch.Tensor, dtype: torch.dtype):
        self.dec = dec
        self.conv_in = _Conv(dec.conv_in, dtype)
        self.convs = [_Conv(c, dtype) for c in dec.convs]
        self.norms = [_Norm(n.window) for n in dec.norms]
        self.affine = [n.affine(spk[None]).unsqueeze(2).chunk(2, dim=1) for n in dec.norms]
        self.pitch = [_Conv(p, dtype) for p in dec.pitch] if dec.pitch is not None else None
        self.halve = _Halve()
        self.conv_out = _Conv(dec.conv_out, dtype)

    def __call__(self, content: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        """Content frames (1, C, m) and the pitch of the 2m mel frames they cover (1, 2, 2m) -> (1, n_mels, 2m)."""
        p_low = self.halve(p) if self.pitch is not None else None
        x = self.conv_in(content)
        for i, (conv, norm) in enumerate(zip(self.convs, self.norms)):
            if i == self.dec.low:
                x = x.repeat_interleave(2, dim=2)
            gamma, beta = self.affine[i]
            h = norm(conv(x)) * (1 + gamma) + beta
            if self.pitch is not None:
                h = h + self.pitch[i](p if i >= self.dec.low else p_low)
            x = x + _act(h)
        return self.conv_out(x)


class _Vocoder:
    """The causal Vocos on a stream, with an overlap-add inverse STFT that releases each sample once no later frame
    can touch it."""

    def __init__(self, net, dtype: torch.dtype):
        self.dtype = dtype
        self.embed = _Conv(net.embed, dtype)
        self.dw = [_Conv(b.dwconv, dtype) for b in net.blocks]
        self.mel_mean, self.mel_std = float(net.mel_mean), float(net.mel_std)
        self.net = net
        # the matrix products in the stream's precision, as under autocast: bf16 weights halve the weight traffic,
        # which is what a block of a few frames is bound by; norms and sums stay in float32

        def linear(layer: torch.nn.Linear) -> tuple[torch.Tensor, torch.Tensor]:
            return layer.weight.detach().to(dtype), layer.bias.detach().to(dtype)

        self.pw = [(linear(b.pwconv1), linear(b.pwconv2)) for b in net.blocks]
        self.head = linear(net.head)
        a = net.audio
        self.hop, self.n_fft = a.hop_length, a.n_fft
        win = _window(a.win_length)
        pad = (a.n_fft - a.win_length) // 2
        self.window = F.pad(win, (pad, a.n_fft - a.win_length - pad))
        # A frame t covers samples t * hop - n_fft / 2 .. + n_fft (torch.istft's centred framing), of which the
        # first `edge` are zero by the window. acc[0] is the first sample the next frame's window reaches.
        self.edge = pad
        self.window = self.window[pad:]
        self.acc = torch.zeros(a.n_fft)
        self.env = torch.zeros(a.n_fft)
        self.skip = a.n_fft // 2 - pad  # samples before time 0

    def __call__(self, mel: torch.Tensor) -> np.ndarray:
        """Log-mel frames (1, n_mels, n) -> the waveform samples that no later frame changes."""
        net, dt = self.net, self.dtype
        x = self.embed((mel - self.mel_mean) / self.mel_std)
        x = net.norm(x.transpose(1, 2)).transpose(1, 2)
        for block, dw, (one, two) in zip(net.blocks, self.dw, self.pw):
            y = block.norm(dw(x).transpose(1, 2)).to(dt)
            y = F.linear(F.gelu(F.linear(y, *one)), *two).float()
            x = x + (block.gamma * y).transpose(1, 2)
        x = F.linear(net.final_norm(x.transpose(1, 2)).to(dt), *self.head).transpose(1, 2).float()
        log_mag, phase = x.chunk(2, dim=1)
        spec = torch.polar(torch.exp(log_mag.clamp(max=math.log(100.0))), phase)[0]
        frames = torch.fft.irfft(spec.T, self.n_fft)[:, self.edge:] * self.window  # (n, n_fft - edge)
        n, hop, width = frames.shape[0], self.hop, frames.shape[1]
        size = (n - 1) * hop + width
        acc = F.pad(self.acc, (0, max(0, size - self.acc.shape[0])))
        env = F.pad(self.env, (0, acc.shape[0] - self.env.shape[0]))
        idx = (torch.arange(n)[:, None] * hop + torch.arange(width)[None]).flatten()
        acc.index_add_(0, idx, frames.flatten())
        env.index_add_(0, idx, (self.window ** 2).repeat(n))
        done = n * hop  # no later frame reaches these
        out = acc[:done] / env[:done].clamp(min=1e-11)
        self.acc, self.env = acc[done:], env[done:]
        skip = min(self.skip, done)
        self.skip -= skip
        return out[skip:].numpy()


@dataclass
class StreamStats:
    """Compute time (seconds) of each call of `Stream.process`: the first, and the last `keep`."""
    block_seconds: float
    keep: int = 20000
    first: float | None = None
    compute: deque = field(default_factory=deque)

    def add(self, seconds: float) -> None:
        if self.first is None:
            self.first = seconds
        else:
            self.compute.append(seconds)
            if len(self.compute) > self.keep:
                self.compute.popleft()

    @property
    def last(self) -> float:
        return self.compute[-1] if self.compute else (self.first or 0.0)

    def summary(self) -> dict:
        """Mean, 95th percentile and maximum in ms over the blocks after the first (which pays for warm-up), and
        the mean as a share of the block's duration."""
        c = np.asarray(self.compute or [self.first or 0.0])
        return {"blocks": len(self.compute) + (self.first is not None), "first_ms": 1e3 * (self.first or 0.0),
                "mean_ms": 1e3 * float(c.mean()), "p95_ms": 1e3 * float(np.percentile(c, 95)),
                "max_ms": 1e3 * float(c.max()), "real_time_share": float(c.mean()) / self.block_seconds}


class Stream:
    """Converts a live signal block by block; made by `VoiceConverter.stream`.

    `process(block)` takes float32 samples at the model's rate (any multiple of `block_size` in length) and returns as
    many converted samples, `latency` seconds behind the input; `flush()` returns the last `latency` seconds.
    """

    def __init__(self, model, voice, *, block_seconds: float = 0.025, pitch_shift: float = 0.0,
                 match_pitch: bool = True, timbre_match: float = 1.0, bf16: bool | None = None,
                 prime: np.ndarray | None = None, prime_seconds: float = PRIME_SECONDS):
        net, cfg = model.net, model.cfg.audio
        if not net.cfg.causal or not getattr(getattr(model.vocoder, "net", None), "cfg", None) \
                or not model.vocoder.net.cfg.causal:
            raise VCError("this model cannot stream: it needs a causal converter and vocoder (checkpoints/stream.pt)")
        self.model, self.voice, self.cfg = model, voice, cfg
        self.hop = cfg.hop_length
        if cfg.win_length != 4 * self.hop or cfg.n_fft < cfg.win_length:
            raise VCError("streaming needs a window of 4 hops (the default audio config)")
        unit = 2 * self.hop  # one content frame
        self.block_size = max(1, round(block_seconds * cfg.sample_rate / unit)) * unit
        self.pitch_shift, self.match_pitch, self.timbre_match = pitch_shift, match_pitch, timbre_match
        self.bf16 = model.vocoder.bf16 if bf16 is None else bf16
        dtype = torch.bfloat16 if self.bf16 else torch.float32
        with torch.inference_mode():
            self.content = _ContentEncoder(net.content_encoder, dtype, net.cfg.norm_window)
            self.decoder = _Decoder(net.decoder, voice.embedding.to(torch.float32), dtype)
            self.vocoder = _Vocoder(model.vocoder.net, dtype)
            if prime is not None and net.cfg.norm_window <= 0:
                self._prime(prime, voice, dtype, prime_seconds)
        self.lookahead = net.cfg.lookahead
        self.delay = 100 * self.block_size - self._ready(100 * self.block_size)
        self.latency = (self.block_size + self.delay) / cfg.sample_rate
        self.audio = np.zeros(0, np.float32)  # input samples from `self.audio_start` on
        self.audio_start = 0
        self.n_in = 0
        self.mel_frames = 0  # mel frames computed
        self.yin = ([], [], [])  # raw YIN (period, depth, level) of frames from `self.yin_start` on
        self.yin_start = 0
        self.max_level = cfg.target_db  # until louder speech comes: frames 45 dB under speech level are silent
        self.pitch_frames = 0  # pitch frames handed to the decoder
        self.src = [0, 0.0, 0.0]  # voiced frames, sum and sum of squares of the source's log-F0
        self.spec = [0, None, -math.inf]  # output speech frames, their log-mel sum, the loudest frame's level
        self.out = np.zeros(self.delay, np.float32)  # converted samples not yet returned (silence first)
        self.stats = StreamStats(self.block_size / cfg.sample_rate)
        log_mel(np.zeros(cfg.win_length, np.float32), cfg)  # the filterbank and FFT plans, before the first block

    def _prime(self, wav: np.ndarray, voice, dtype: torch.dtype, seconds: float) -> None:
        """Start instance norm's running statistics from those of `wav` (speech: the target's clips), weighted as
        `seconds` of frames, instead of from nothing: a model trained with whole-clip statistics otherwise garbles
        the first seconds, while the statistics of a few frames are far from the clip's."""
        net, frames = self.model.net, seconds * self.cfg.sample_rate / self.hop
        mel = net.normalize(log_mel(wav, self.cfg)[None])
        content = _ContentEncoder(net.content_encoder, dtype, 0)
        decoder = _Decoder(net.decoder, voice.embedding.to(torch.float32), dtype)
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
        return (2 * content + 2) * hop - half

    def process(self, block: np.ndarray) -> np.ndarray:
        block = np.asarray(block, np.float32).reshape(-1)
        if len(block) % self.block_size:
            raise VCError(f"a block must be a multiple of {self.block_size} samples, got {len(block)}")
        t0 = time.perf_counter()
        with torch.inference_mode():
            self._push(block)
        self.stats.add(time.perf_counter() - t0)
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
        last_yin = (self.n_in - pitch.FRAME_LENGTH // 2) // hop
        ynew = np.arange(self.yin_start + len(self.yin[0]), last_yin + 1)
        if len(ynew):
            fr = self._windows(ynew, pitch.FRAME_LENGTH)
            for acc, v in zip(self.yin, pitch.yin(fr, self.cfg.sample_rate)):
                acc.extend(v.tolist())
        content = self.content(self.model.net.normalize(mel[None]))
        m = content.shape[2]
        if m == 0:
            return
        f0 = self._pitch(self.pitch_frames, 2 * m)
        self.pitch_frames += 2 * m
        p = self._pitch_features(f0)
        out = self.decoder(content, p[None] if self.decoder.pitch is not None else None)
        mel_out = self._timbre(self.model.net.denormalize(out.clamp(max=4.0))[0])
        self.out = np.concatenate([self.out, self.vocoder(mel_out[None])])
        next_yin = self.yin_start + len(self.yin[0])
        keep = min(self.mel_frames * hop - win // 2, next_yin * hop - pitch.FRAME_LENGTH // 2)  # oldest still needed
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
        """`log_mel` frames (n_mels, n): of a segment starting 2 hops before the first frame's centre, frames 2..
        (whose windows lie inside it) are the wanted ones."""
        seg = self._segment(frames, 2 * self.hop)
        return log_mel(seg, self.cfg)[:, 2:2 + len(frames)]

    def _pitch(self, first: int, n: int) -> torch.Tensor:
        """F0 (Hz) of frames first .. first + n - 1, from the raw YIN frames known now."""
        period, depth, level = (torch.tensor(v) for v in self.yin)
        self.max_level = max(self.max_level, float(level.max()))
        f0, _ = pitch.contour(period, depth, level, self.cfg.sample_rate, self.max_level, open_end=True)
        f0 = f0[first - self.yin_start:first - self.yin_start + n]
        if len(f0) < n:  # the newest frame's analysis window has not all arrived: repeat the last known one
            f0 = torch.cat([f0, f0[-1:].expand(n - len(f0))]) if len(f0) else torch.zeros(n)
        cut = max(0, first + n - 8 - self.yin_start)  # keep a few frames of context for the next call
        self.yin = tuple(v[cut:] for v in self.yin)
        self.yin_start += cut
        return f0

    def _pitch_features(self, f0: torch.Tensor) -> torch.Tensor:
        voiced = f0[f0 > 0]
        if len(voiced):
            lf = torch.log(voiced.double())
            self.src = [self.src[0] + len(lf), self.src[1] + float(lf.sum()), self.src[2] + float((lf * lf).sum())]
        source = None
        n, s, q = self.src
        if n >= 10:
            mean = s / n
            std = math.sqrt(max(q / n - mean * mean, 0.0)) if n > 20 else pitch.DEFAULT_STD
            source = pitch.PitchStats(mean, max(std, 0.03))
        target = self.voice.pitch if self.match_pitch else None
        return pitch.features(pitch.transpose(f0, source if target is not None else None, target, self.pitch_shift))

    def _timbre(self, mel: torch.Tensor) -> torch.Tensor:
        """The timbre match of `VoiceConverter._convert_mel` with the output's mean spectrum so far."""
        if self.timbre_match <= 0 or self.voice.spectrum is None:
            return mel
        level = torch.logsumexp(mel, dim=0)
        self.spec[2] = max(self.spec[2], float(level.max()))
        keep = level > self.spec[2] - 30.0 / 20 * math.log(10)
        if keep.any():
            s = mel[:, keep].sum(dim=1)
            self.spec[0] += int(keep.sum())
            self.spec[1] = s if self.spec[1] is None else self.spec[1] + s
        if self.spec[0] == 0:
            return mel
        delta = self.voice.spectrum - self.spec[1] / self.spec[0]
        return mel + self.timbre_match * (delta - delta.mean())[:, None]


def stream_file(stream: Stream, source: str | os.PathLike, output: str | os.PathLike) -> dict:
    """Feed an audio file through `stream` block by block, as `vc live` feeds a microphone, and write the output
    (lined up with the input: the stream's delay is cut) atomically. Returns the latency, the per-block compute
    statistics and the real-time factor."""
    seconds = audio_seconds(source)
    rate, size = stream.cfg.sample_rate, stream.block_size
    skip, left = stream.delay, round(seconds * rate)
    start = time.perf_counter()
    with AudioWriter(output, rate) as writer:
        def write(y: np.ndarray) -> None:
            nonlocal skip, left
            cut = min(skip, len(y))
            skip -= cut
            y = y[cut:left + cut]
            writer.write(y)
            left -= len(y)

        buf = np.zeros(0, np.float32)
        for block in stream_wav(source, rate):
            buf = np.concatenate([buf, block])
            whole = len(buf) - len(buf) % size
            if whole:
                write(stream.process(buf[:whole]))
                buf = buf[whole:]
        if len(buf):
            write(stream.process(np.pad(buf, (0, size - len(buf)))))
        write(stream.flush())
    elapsed = time.perf_counter() - start
    return {"seconds": seconds, "latency_ms": 1e3 * stream.latency, "block_ms": 1e3 * size / rate,
            "rtf": elapsed / max(seconds, 1e-9), **stream.stats.summary()}
