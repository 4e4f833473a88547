"""The networks of a causal model run on a stream, block by block (`vc.stream`).

Each layer keeps the frames of its input that its next outputs need (zeros before the start) and computes only the new
outputs, so a block costs the same however long the stream has run. Instance norm runs on statistics so far.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from .audio import hann_window
from .model import CausalConv1d, _act, channel_norm
from .vocoder import f0_phase, harmonic_phase

EPS = 1e-5  # as in `instance_norm`


class Conv:
    """A `CausalConv1d` (or a pointwise conv) on a stream: keeps the input frames its next outputs need (zeros before
    the start), and computes the new outputs as one matrix product (on a few frames, much faster than conv1d)."""

    def __init__(self, conv: torch.nn.Conv1d, dtype: torch.dtype = torch.float32):
        self.k, self.s, self.groups = conv.kernel_size[0], conv.stride[0], conv.groups
        self.cout = conv.out_channels
        self.left = conv.left if isinstance(conv, CausalConv1d) else 0
        w = conv.weight.detach().float()
        # (cin * k, cout), rows in the order of `unfold`'s (n, cin, k) windows flattened; depthwise: (C, k)
        w = w[:, 0] if self.groups > 1 else w.reshape(self.cout, -1).T
        self.w = w.to(dtype).contiguous()
        self.b = (conv.bias.detach() if conv.bias is not None else torch.zeros(self.cout)).to(dtype)
        self.buf: torch.Tensor | None = None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """(1, C, n) -> (1, cout, outputs now complete)."""
        return self.rows(x[0].T.to(self.w.dtype)).T[None].float()

    def rows(self, x: torch.Tensor) -> torch.Tensor:
        """The same on frames as rows, in the weights' precision: (n, C) -> (outputs now complete, cout)."""
        if self.buf is None:
            self.buf = x.new_zeros(self.left, x.shape[1])
        x = torch.cat([self.buf, x]) if self.left else x
        n = (x.shape[0] - self.k) // self.s + 1 if x.shape[0] >= self.k else 0
        self.buf = x[n * self.s:]
        if n == 0:
            return x.new_zeros(0, self.cout)
        u = x.unfold(0, self.k, self.s)[:n]  # (n, C, k)
        if self.groups > 1:
            return (u * self.w).sum(dim=2) + self.b
        return torch.addmm(self.b, u.reshape(n, -1), self.w)


class Halve:
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


def _normalized(d: torch.Tensor, s: torch.Tensor, q: torch.Tensor, n) -> torch.Tensor:
    """Frames `d` (float64) normalized with the mean and variance of running sums `s` and `q` over `n` frames."""
    mean = s / n
    return ((d - mean) / ((q / n - mean * mean).clamp(min=0) + EPS).sqrt()).float()


class Norm:
    """Instance norm on a stream: each frame normalized with the statistics of the frames up to and including it,
    the last `window` of them (`vc.model.window_norm`), or all of them where the model was trained with whole-clip
    statistics (window 0: the stream's estimate of them)."""

    def __init__(self, window: int = 0, kind: str = "instance"):
        self.window, self.kind = window, kind
        self.n, self.sum, self.sq = 0, 0.0, 0.0
        self.buf: torch.Tensor | None = None  # a ring of the last `window` frames (float64; zeros before the start)
        self.pos = 0  # where in the ring the oldest frame is

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[2] == 0:
            return x.float()
        if self.kind == "channel":  # each frame by itself: nothing to carry
            return channel_norm(x)
        if self.kind == "none":  # a content code without a norm (`model.code_norm`)
            return x.float()
        d = x.double()
        if self.window > 0:  # running sums over the window: a frame in, the frame `window` before it out
            if self.buf is None:
                self.buf = d.new_zeros(d.shape[0], d.shape[1], self.window)
            k, w = d.shape[2], self.window
            if k == 1:  # a one-hop block (the same figures as below, fewer ops)
                out = self.buf[:, :, self.pos:self.pos + 1].clone()
                self.buf[:, :, self.pos:self.pos + 1] = d
                self.pos = (self.pos + 1) % w
                self.sum, self.sq = self.sum + (d - out), self.sq + (d * d - out * out)
                self.n += 1
                return _normalized(d, self.sum, self.sq, min(self.n, w))
            if k <= w:  # the frames that leave the window as each new one enters (zeros at first) make way in the ring
                ring = self.pos + k <= w
                at = slice(self.pos, self.pos + k) if ring else (self.pos + torch.arange(k)) % w
                out = self.buf[:, :, at].clone()
                self.buf[:, :, at] = d
                self.pos = (self.pos + k) % w
            else:
                z = torch.cat([self.buf[:, :, self.pos:], self.buf[:, :, :self.pos], d], dim=2)
                out, self.buf, self.pos = z[:, :, :k], z[:, :, k:].contiguous(), 0
            s = self.sum + torch.cumsum(d - out, dim=2)
            q = self.sq + torch.cumsum(d * d - out * out, dim=2)
            n = torch.clamp(self.n + torch.arange(1, k + 1, dtype=torch.float64), max=w)
            self.n, self.sum, self.sq = self.n + k, s[:, :, -1:], q[:, :, -1:]
            return _normalized(d, s, q, n)
        if x.shape[2] == 1:  # a one-hop block: the running sums take the frame as it is (the same figures, fewer ops)
            self.n += 1
            self.sum, self.sq = self.sum + d, self.sq + d * d
            return _normalized(d, self.sum, self.sq, self.n)
        s = self.sum + torch.cumsum(d, dim=2)
        q = self.sq + torch.cumsum(d * d, dim=2)
        n = self.n + torch.arange(1, x.shape[2] + 1, dtype=torch.float64)
        self.n, self.sum, self.sq = float(n[-1]), s[:, :, -1:], q[:, :, -1:]
        return _normalized(d, s, q, n)


class ContentEncoder:
    def __init__(self, enc, dtype: torch.dtype, window: int, kind: str = "instance"):
        w = window
        self.conv_in, self.norm_in = Conv(enc.conv_in, dtype), Norm(w, kind)
        self.blocks = [(Conv(b, dtype), Norm(w if i == 0 else w // 2, kind), Halve() if b.stride[0] == 2 else None)
                       for i, b in enumerate(enc.blocks)]
        self.conv_out = Conv(enc.conv_out, dtype)
        self.norm_out = Norm(w // 2, kind if enc.code_norm else "none")

    def __call__(self, mel: torch.Tensor) -> torch.Tensor:
        x = _act(self.norm_in(self.conv_in(mel)))
        for conv, norm, halve in self.blocks:
            h = _act(norm(conv(x)))
            x = (halve(x) if halve is not None else x) + h
        return self.norm_out(self.conv_out(x))

    def norms(self) -> list:
        return [self.norm_in] + [norm for _, norm, _ in self.blocks] + [self.norm_out]


class Decoder:
    """The decoder on a stream. `push` runs the layers at the content rate on new content frames and queues the mel-rate
    frames they give (two each, with their pitch); `pull` runs the mel-rate layers on queued frames, all or a few, so
    that a stream of one-hop blocks can spread a content frame's two mel frames over two blocks."""

    def __init__(self, dec, spk: torch.Tensor, dtype: torch.dtype):
        self.dec = dec
        self.conv_in = Conv(dec.conv_in, dtype)
        self.convs = [Conv(c, dtype) for c in dec.convs]
        self.norms = [Norm(n.window, n.kind) for n in dec.norms]
        self.affine = [(1 + gamma, beta) for gamma, beta in (n.affine(spk[None]).unsqueeze(2).chunk(2, dim=1)
                                                             for n in dec.norms)]  # AdaIN's scale and shift
        self.pitch = [Conv(p, dtype) for p in dec.pitch] if dec.pitch is not None else None
        self.halve = Halve()
        self.conv_out = Conv(dec.conv_out, dtype)
        self.queue: tuple[torch.Tensor, torch.Tensor | None] | None = None  # mel-rate frames and their pitch

    def _layer(self, i: int, x: torch.Tensor, p: torch.Tensor | None) -> torch.Tensor:
        scale, beta = self.affine[i]
        h = self.norms[i](self.convs[i](x)) * scale + beta
        if self.pitch is not None:
            h = h + self.pitch[i](p)
        return x + _act(h)

    def push(self, content: torch.Tensor, p: torch.Tensor | None) -> None:
        """Content frames (1, C, m) and the pitch of the 2m mel frames they cover (1, 2, 2m; None without pitch)."""
        p_low = self.halve(p) if self.pitch is not None else None
        x = self.conv_in(content)
        for i in range(self.dec.low):
            x = self._layer(i, x, p_low)
        x = x.repeat_interleave(2, dim=2)
        if self.queue is not None:
            x = torch.cat([self.queue[0], x], dim=2)
            p = torch.cat([self.queue[1], p], dim=2) if p is not None else None
        self.queue = (x, p)

    def pull(self, limit: int | None = None) -> torch.Tensor:
        """The next queued frames, all or at most `limit`, through the mel-rate layers -> (1, n_mels, n)."""
        if self.queue is None:
            return torch.zeros(1, self.conv_out.cout, 0)
        x, p = self.queue
        n = x.shape[2] if limit is None else max(0, min(limit, x.shape[2]))
        self.queue = (x[:, :, n:], p[:, :, n:] if p is not None else None)
        x, p = x[:, :, :n], (p[:, :, :n] if p is not None else None)
        for i in range(self.dec.low, len(self.convs)):
            x = self._layer(i, x, p)
        return self.conv_out(x)

    def __call__(self, content: torch.Tensor, p: torch.Tensor | None) -> torch.Tensor:
        """Content frames (1, C, m) and the pitch of their 2m mel frames (1, 2, 2m) -> (1, n_mels, 2m)."""
        self.push(content, p)
        return self.pull()


class Vocoder:
    """The causal Vocos on a stream, with an overlap-add inverse STFT that releases each sample once no later frame
    can touch it.

    Frames run as rows (n, channels) from the mel to the spectrum, so that nothing is transposed between layers, and
    what is constant is folded into the weights once: each LayerNorm's scale and shift into the linear layer after
    it, and each block's layer scale into its second linear layer (the same function to float rounding, in about two
    thirds of the time a one-frame block took with the modules' own layers)."""

    def __init__(self, net, dtype: torch.dtype, cutoff: float = 0.0):
        """`cutoff` (Hz): below it, voiced frames take the phase of their F0's harmonics (`vc.vocoder.harmonic_phase`,
        the fundamental's phase carried from block to block); 0: the network's phase everywhere."""
        self.dtype, self.dim = dtype, net.cfg.dim
        self.audio, self.cutoff = net.audio, cutoff
        self.f0_last, self.phase_last = 0.0, 0.0  # the last frame's F0 (Hz) and its fundamental's phase
        self.mel_mean, self.mel_std = float(net.mel_mean), float(net.mel_std)
        self.embed = Conv(net.embed)  # float32: its output is summed into the residual stream
        self.norm = (net.norm.weight.detach().float(), net.norm.bias.detach().float(), net.norm.eps)
        # the matrix products in the stream's precision, as under autocast: bf16 weights halve the weight traffic,
        # which is what a block of a few frames is bound by; norms and sums stay in float32

        def folded(norm: torch.nn.LayerNorm | None, layer: torch.nn.Linear, scale: torch.Tensor | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor]:
            """`layer(norm(x)) * scale` as one linear layer on the unscaled, unshifted norm of x."""
            w, b = layer.weight.detach().float(), layer.bias.detach().float()
            if norm is not None:
                w, b = w * norm.weight.detach().float()[None], b + w @ norm.bias.detach().float()
            if scale is not None:
                w, b = w * scale.detach().float()[:, None], b * scale.detach().float()
            return w.to(dtype).contiguous(), b.to(dtype)

        self.blocks = [(Conv(b.dwconv), b.norm.eps, folded(b.norm, b.pwconv1), folded(None, b.pwconv2, b.gamma))
                       for b in net.blocks]
        self.head = folded(net.final_norm, net.head)
        self.final_eps = net.final_norm.eps
        a = net.audio
        self.hop, self.n_fft = a.hop_length, a.n_fft
        win = hann_window(a.win_length)
        pad = (a.n_fft - a.win_length) // 2
        self.window = F.pad(win, (pad, a.n_fft - a.win_length - pad))
        # A frame t covers samples t * hop - n_fft / 2 .. + n_fft (torch.istft's centred framing), of which the
        # first `edge` are zero by the window. acc[0] is the first sample the next frame's window reaches.
        self.edge = pad
        self.window = self.window[pad:]
        self.acc = torch.zeros(a.n_fft)
        self.env = torch.zeros(a.n_fft)
        self.skip = a.n_fft // 2 - pad  # samples before time 0

    def __call__(self, mel: torch.Tensor, f0: torch.Tensor | None = None) -> np.ndarray:
        """Log-mel frames (1, n_mels, n) and, with a cutoff, their F0 (n,) in Hz -> the waveform samples that no
        later frame changes."""
        dt, dim = self.dtype, (self.dim,)
        x = self.embed.rows(((mel - self.mel_mean) / self.mel_std)[0].T)  # (n, dim)
        x = F.layer_norm(x, dim, *self.norm)
        for dw, eps, one, two in self.blocks:
            y = F.layer_norm(dw.rows(x), dim, None, None, eps)
            x = x + F.linear(F.gelu(F.linear(y.to(dt), *one)), *two).float()
        x = F.linear(F.layer_norm(x, dim, None, None, self.final_eps).to(dt), *self.head).float()  # (n, 2 * bins)
        log_mag, phase = x.chunk(2, dim=1)
        if self.cutoff > 0 and f0 is not None and len(f0):
            f0 = F.pad(f0.double()[:phase.shape[0]], (0, max(0, phase.shape[0] - len(f0))))  # 0 Hz: unvoiced
            f0 = torch.cat([f0.new_full((1,), self.f0_last), f0])
            fundamental = f0_phase(f0, self.audio, self.phase_last)[1:]
            phase = harmonic_phase(phase.T, f0[1:], self.audio, self.cutoff, fundamental).T
            self.f0_last, self.phase_last = float(f0[-1]), float(fundamental[-1])
        spec = torch.polar(torch.exp(log_mag.clamp(max=math.log(100.0))), phase)
        frames = torch.fft.irfft(spec, self.n_fft)[:, self.edge:] * self.window  # (n, n_fft - edge)
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
