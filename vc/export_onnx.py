"""`vc export CHECKPOINT OUT_DIR --onnx`: the four networks as ONNX graphs for onnxruntime, checked against torch.

Writes `content_encoder.onnx`, `speaker_encoder.onnx`, `decoder.onnx`, `vocoder.onnx` and `vc-onnx.json` (the audio
config, the tensor names and shapes). Every time axis is dynamic; instance norm stays per utterance over the whole
time axis, as in torch. All graphs take log-mel as `vc.log_mel` returns it (they normalize inside) and compute in
float32:

    content_encoder: log_mel (B, n_mels, T) -> content (B, content_dim, ceil(T / 2))
    speaker_encoder: log_mel (B, n_mels, T) -> embedding (B, speaker_dim)
    decoder:         content, embedding, pitch (B, 2, T) (`vc.pitch.features`) -> log_mel (B, n_mels, T)
    vocoder:         log_mel (B, n_mels, T) -> log_magnitude, phase (B, n_fft // 2 + 1, T)

The inverse STFT stays outside the vocoder graph: `synthesize` does it in torch, with the framing of `log_mel`
(ONNX has no inverse STFT). Needs `pip install -e ".[export]"` (onnx, onnxruntime). Models with whisper content
features are refused with one line, for now: their content graph would take the waveform and hold Whisper's log-mel
front end and encoder, which nobody has yet exported and checked against torch.
"""
from __future__ import annotations

import json
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .audio import hann_window
from .checkpoint import build_model, load_checkpoint, with_vocoder
from .config import AudioConfig
from .errors import VCError
from .model import VoiceConverterNet
from .vocoder import Vocos, build_vocoder

GRAPHS = ("content_encoder", "speaker_encoder", "decoder", "vocoder")


class _ContentEncoder(nn.Module):
    def __init__(self, net: VoiceConverterNet):
        super().__init__()
        self.net = net

    def forward(self, log_mel: torch.Tensor) -> torch.Tensor:
        return self.net.content_encoder(self.net.normalize(log_mel))


class _SpeakerEncoder(_ContentEncoder):
    def forward(self, log_mel: torch.Tensor) -> torch.Tensor:
        return self.net.speaker_encoder(self.net.normalize(log_mel))


class _Decoder(_ContentEncoder):
    """Without pitch conditioning the decoder gives 2 * content frames: crop to the source's frames outside."""

    def __init__(self, net: VoiceConverterNet, clamp: float):
        super().__init__(net)
        self.clamp = clamp

    def forward(self, content: torch.Tensor, embedding: torch.Tensor, pitch: torch.Tensor | None = None
                ) -> torch.Tensor:
        frames = pitch.shape[2] if pitch is not None else 2 * content.shape[2]
        out = self.net.decoder(content, embedding, frames, pitch)
        return self.net.denormalize(out, clamp=self.clamp)


class _Vocoder(nn.Module):
    def __init__(self, net: Vocos):
        super().__init__()
        self.net = net

    def forward(self, log_mel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.net.spectrum(log_mel)


def synthesize(log_magnitude: np.ndarray, phase: np.ndarray, audio: AudioConfig, length: int | None = None
               ) -> np.ndarray:
    """The vocoder graph's outputs (B, n_fft // 2 + 1, T) -> waveform (B, length): the inverse STFT, in torch."""
    spec = torch.polar(torch.exp(torch.from_numpy(log_magnitude)), torch.from_numpy(phase))
    length = length or (spec.shape[-1] - 1) * audio.hop_length
    return torch.istft(spec, audio.n_fft, audio.hop_length, audio.win_length, hann_window(audio.win_length),
                       center=True, length=length).numpy()


def _graphs(net: VoiceConverterNet, vocoder: Vocos | None, frames: int, clamp: float
            ) -> dict[str, tuple[nn.Module, dict]]:
    """name -> (module, example inputs by name) for `frames` mel frames of random log-mel."""
    cfg = net.cfg
    gen = torch.Generator().manual_seed(0)
    log_mel = net.mel_mean[:, None] + net.mel_std[:, None] * torch.randn(1, len(net.mel_mean), frames, generator=gen)
    content = net.content_encoder(net.normalize(log_mel))
    embedding = net.speaker_encoder(net.normalize(log_mel))
    dec_inputs = {"content": content, "embedding": embedding}
    if cfg.pitch:
        voiced = (torch.rand(1, 1, frames, generator=gen) > 0.4).float()
        dec_inputs["pitch"] = torch.cat([voiced * torch.randn(1, 1, frames, generator=gen), voiced], dim=1)
    graphs = {"content_encoder": (_ContentEncoder(net), {"log_mel": log_mel}),
              "speaker_encoder": (_SpeakerEncoder(net), {"log_mel": log_mel}),
              "decoder": (_Decoder(net, clamp), dec_inputs)}
    if vocoder is not None:
        graphs["vocoder"] = (_Vocoder(vocoder), {"log_mel": log_mel})
    return graphs


OUTPUTS = {"content_encoder": ["content"], "speaker_encoder": ["embedding"], "decoder": ["log_mel"],
           "vocoder": ["log_magnitude", "phase"]}
AXES = {"log_mel": {0: "batch", 2: "frames"}, "content": {0: "batch", 2: "content_frames"},
        "embedding": {0: "batch"}, "pitch": {0: "batch", 2: "frames"}, "log_magnitude": {0: "batch", 2: "frames"},
        "phase": {0: "batch", 2: "frames"}}


def _session(path: Path, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _seconds(repeats: int, fn, *args) -> float:
    fn(*args)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - start)
    return min(times)


def _shipped(module: nn.Module, *args: torch.Tensor):
    """As `vc` runs the networks: under bf16 autocast where that is fast."""
    from .runtime import fast_bf16

    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=fast_bf16()):
        return module(*args)


def export_onnx(checkpoint: str | Path, out_dir: str | Path, *, vocoder_ckpt: str | Path | None = None,
                check_frames: tuple[int, ...] = (237, 2401), time_frames: int = 2401, repeats: int = 3,
                opset: int = 17) -> dict:
    """Export the graphs of `checkpoint` into `out_dir`, run each under onnxruntime and torch (float32) on random
    log-mel of each of `check_frames` lengths (2401 frames: 30 s) and return, per graph, the largest absolute
    (`vocoder_ckpt`: a `vc train-vocoder` file whose vocoder replaces the checkpoint's, as with `vc export`)
    difference of its outputs and the best-of-`repeats` seconds of each runtime on `time_frames` frames (torch also
    as `vc` runs it: bf16 autocast where `fast_bf16`)."""
    try:
        import onnx  # noqa: F401  (torch.onnx.export needs it)
        import onnxruntime  # noqa: F401
    except ImportError:
        raise VCError('ONNX export needs onnx and onnxruntime: pip install -e ".[export]"') from None
    ckpt = load_checkpoint(checkpoint)
    net, cfg = build_model(ckpt, checkpoint)
    if net.features is not None:  # refused, not exported: see the module's docstring
        raise VCError(f"{checkpoint}: ONNX export of models with whisper content features is not supported yet "
                      "(export a mel model)")
    if vocoder_ckpt is not None:
        cfg, weights = with_vocoder(cfg, vocoder_ckpt)
    else:
        weights = ckpt.get("vocoder")
    vocoder = build_vocoder(weights, cfg) if weights is not None else None
    clamp = cfg.convert.mel_clamp
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    threads = torch.get_num_threads()
    report: dict = {"threads": threads, "check_frames": list(check_frames), "time_frames": time_frames, "graphs": {}}
    with torch.no_grad():
        for name, (module, inputs) in _graphs(net, vocoder, check_frames[0], clamp).items():
            path = out / f"{name}.onnx"
            with warnings.catch_warnings():  # the TorchScript exporter's deprecation notice
                warnings.simplefilter("ignore")
                torch.onnx.export(module.eval(), tuple(inputs.values()), str(path), input_names=list(inputs),
                                  output_names=OUTPUTS[name], dynamic_axes={k: AXES[k] for k in
                                                                            [*inputs, *OUTPUTS[name]]},
                                  opset_version=opset, dynamo=False)
            session = _session(path, threads)
            diff = 0.0
            for frames in check_frames:
                _, inputs = _graphs(net, vocoder, frames, clamp)[name]
                ours = module(*inputs.values())
                ours = ours if isinstance(ours, tuple) else (ours,)
                theirs = session.run(None, {k: v.numpy() for k, v in inputs.items()})
                diff = max(diff, *(float(np.abs(a.numpy() - b).max()) for a, b in zip(ours, theirs)))
            _, inputs = _graphs(net, vocoder, time_frames, clamp)[name]
            feed = {k: v.numpy() for k, v in inputs.items()}
            args = tuple(inputs.values())

            report["graphs"][name] = {
                "file": path.name, "mb": path.stat().st_size / 1e6, "max_abs_diff": diff,
                "onnxruntime_s": _seconds(repeats, session.run, None, feed),
                "torch_fp32_s": _seconds(repeats, module, *args),
                "torch_shipped_s": _seconds(repeats, _shipped, module, *args)}
    a = cfg.audio
    meta = {"format": "vc-onnx", "version": 1, "checkpoint": str(checkpoint), "opset": opset,
            "audio": {k: getattr(a, k) for k in ("sample_rate", "n_fft", "win_length", "hop_length", "n_mels",
                                                 "fmin", "fmax")},
            "log_mel": "natural log of the mel magnitude (Slaney filterbank, centered STFT with zero padding, "
                       "hann window), floored at 1e-5: vc.log_mel",
            "pitch": "vc.pitch.features: normalized log-F0 (0 where unvoiced) and voicing" if cfg.model.pitch
                     else None,
            "inverse_stft": "vocoder outputs -> torch.istft(exp(log_magnitude) * exp(i phase), n_fft, hop_length, "
                            "win_length, hann window, center=True): vc.export_onnx.synthesize",
            "harmonic_phase_hz": cfg.convert.harmonic_phase,
            "harmonic_phase": "before the inverse STFT, voiced frames take the phase of their F0's harmonics below "
                              "harmonic_phase_hz (F0 from the decoder's pitch input: vc.pitch.hz; "
                              "vc.vocoder.harmonic_phase); 0: the vocoder's phase as it is",
            "mel_contrast": cfg.convert.mel_contrast,
            "contrast": "the decoder's log-mel, once the timbre is matched, has its departures from its speech "
                        "spectrum scaled by mel_contrast before the vocoder (vc.timbre.contrast); 1: as decoded",
            "graphs": {n: {"inputs": list(g[1]), "outputs": OUTPUTS[n]}
                       for n, g in _graphs(net, vocoder, 8, clamp).items()}}
    (out / "vc-onnx.json").write_text(json.dumps(meta, indent=1))
    return report


def format_report(report: dict) -> str:
    """The figures of `export_onnx` as a markdown table."""
    lines = [f"onnxruntime against torch (float32), random log-mel of {report['check_frames']} frames; times: best "
             f"of 3 on {report['time_frames']} frames ({report['time_frames'] / 80:.0f} s), "
             f"{report['threads']} thread(s)", "",
             "| graph | MB | max abs difference | onnxruntime (s) | torch fp32 (s) | torch as shipped (s) |",
             "|---|---|---|---|---|---|"]
    for name, g in report["graphs"].items():
        lines.append(f"| {name} | {g['mb']:.1f} | {g['max_abs_diff']:.2e} | {g['onnxruntime_s']:.3f} | "
                     f"{g['torch_fp32_s']:.3f} | {g['torch_shipped_s']:.3f} |")
    return "\n".join(lines)
