"""The streaming engine: exact against the causal network run offline, converging to the offline conversion, its
latency accounting, `vc stream`, and `vc live` where there is no audio device."""
import gc
import re

import numpy as np
import pytest
import soundfile as sf
import torch

import vc.model
import vc.pitch
import vc.stream
from vc.api import Voice, VoiceConverter, load_model
from vc.checkpoint import export_inference
from vc.cli import main
from vc.config import AudioConfig, Config, ModelConfig, PitchConfig, VocoderConfig
from vc.errors import VCError
from vc.model import VoiceConverterNet
from vc.vocoder import Vocos, harmonic_phase, vocoder_weights

from conftest import synth_speech


TEN_MS = AudioConfig(hop_length=160, win_length=320, n_fft=512)  # recipes/stream10.yaml's audio


def tiny_causal(seed: int = 0, norm_window: int = 32, audio: AudioConfig = AudioConfig(), norm: str = "instance",
                code_norm: bool = True, decoder_norm: str = "") -> VoiceConverter:
    torch.manual_seed(seed)
    # a pitch window that has all arrived when its mel frame is decoded, as in recipes/stream10.yaml (1024 for the
    # default audio config, whose look-ahead is longer)
    pitch = PitchConfig(frame_length=1024 if audio == AudioConfig() else 4 * audio.hop_length)
    model = ModelConfig(causal=True, norm_window=norm_window, channels=48, content_dim=8, speaker_dim=32,
                        classifier_channels=16, norm=norm, code_norm=code_norm, decoder_norm=decoder_norm)
    cfg = Config(audio=audio, pitch=pitch, model=model,
                 vocoder=VocoderConfig(causal=True, dim=48, intermediate=96, layers=2))
    vocoder = Vocos(cfg.audio, cfg.vocoder)
    return VoiceConverter(VoiceConverterNet(cfg.model, cfg.audio.n_mels), cfg,
                          vocoder_weights=vocoder_weights(vocoder))


def run(stream, wav: np.ndarray) -> np.ndarray:
    """Feed `wav` block by block; return the output lined up with the input (the stream's delay cut)."""
    n = len(wav) - len(wav) % stream.block_size
    out = np.concatenate([stream.process(wav[i:i + stream.block_size]) for i in range(0, n, stream.block_size)]
                         + [stream.flush()])
    assert len(out) == n + stream.delay
    return out[stream.delay:stream.delay + n]


def offline(model: VoiceConverter, wav: np.ndarray, voice: Voice) -> np.ndarray:
    """The same networks on the whole clip at once, no edge padding, vocoder in float32, its voiced frames with the
    harmonics' phase below `convert.harmonic_phase`."""
    net, voc = model.net, model.vocoder.net
    with torch.inference_mode():
        mel = model.mel(wav)
        p = model.source_pitch(wav, match_pitch=False)[None]
        out = net.decoder(net.content_encoder(mel), voice.embedding[None], mel.shape[2], p)
        log_mag, phase = voc.spectrum(net.denormalize(out.clamp(max=4.0)))
        phase = harmonic_phase(phase[0], vc.pitch.hz(p[0], model.cfg.pitch), voc.audio,
                               model.cfg.convert.harmonic_phase)[None]
        return voc.synthesize(log_mag, phase, len(wav))[0].numpy()


def cumulative_instance_norm(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Instance norm with the statistics of all frames up to each one: what the stream computes for a model trained
    with whole-clip statistics."""
    return vc.model.window_norm(x, x.shape[2], eps)


@pytest.mark.parametrize("block_ms,norm_window,audio,latency_ms,norm,code_norm,decoder_norm", [
    (25, 32, AudioConfig(), 75, "instance", True, ""), (50, 32, AudioConfig(), 100, "instance", True, ""),
    (25, 0, AudioConfig(), 75, "instance", True, ""), (10, 32, TEN_MS, 40, "instance", True, ""),
    (30, 32, TEN_MS, 60, "instance", True, ""), (10, 0, TEN_MS, 40, "channel", True, ""),
    (10, 0, TEN_MS, 40, "channel", False, ""), (10, 32, TEN_MS, 40, "channel", False, "instance")])
def test_stream_equals_the_causal_networks_run_offline(monkeypatch, block_ms, norm_window, audio, latency_ms, norm,
                                                       code_norm, decoder_norm):
    # The stream keeps each layer's state between blocks and overlap-adds the vocoder's frames; it must reproduce the
    # networks run on the whole clip sample by sample. Instance norm over a causal window is the same both ways; for
    # a model trained with whole-clip statistics the stream takes them over the frames so far, so offline does too.
    # A channel norm (each frame over its channels) has no statistics over time to carry; nor has a content code
    # without a norm of its own (`model.code_norm`: a student of a teacher's code). The decoder may have a norm of its
    # own (`model.decoder_norm`): per-frame encoder, causal instance norm in the decoder.
    if norm_window == 0 and norm == "instance":
        monkeypatch.setattr(vc.model, "instance_norm", cumulative_instance_norm)
    # With a 10-ms hop and 20-ms window, 10-ms blocks stream at 40 ms of latency (block 10, half window 10, look-ahead
    # 20), each block decoding one mel frame.
    model = tiny_causal(norm_window=norm_window, audio=audio, norm=norm, code_norm=code_norm, decoder_norm=decoder_norm)
    model.cfg = model.cfg.replace(convert={"mel_contrast": 1.0})  # its centre: the speech spectrum so far or overall
    assert [n.kind for n in model.net.decoder.norms] == [decoder_norm or norm] * len(model.net.decoder.norms)
    wav = synth_speech(140, 1.6, seed=3)
    # The F0 tracker's smoothing (voiced runs of 3 frames, 3-frame median) can look a frame further ahead than a
    # stream has heard, and the harmonics' phase integrates any difference: the stream gets the offline contour here,
    # and the networks and the vocoder must match
    f0 = vc.pitch.track(wav, audio, model.cfg.pitch)[0]
    monkeypatch.setattr(vc.stream.Stream, "_pitch", lambda self, first, n: torch.nn.functional.pad(
        f0[first:first + n], (0, max(0, first + n - len(f0)))))  # unvoiced past the end, as the flush's silence
    voice = Voice(torch.randn(32))
    stream = model.stream(voice, block_seconds=block_ms / 1000, timbre_match=0, match_pitch=False, bf16=False)
    assert stream.block_size == 16 * block_ms
    assert stream.latency == pytest.approx(latency_ms / 1000)
    ref = offline(model, wav, voice)
    decoded = []
    for i in range(0, 16000, stream.block_size):
        stream.process(wav[i:i + stream.block_size])
        decoded.append(stream.decoded)
    per_block = np.diff(decoded[10:])  # mel frames decoded by each block, once the stream has started
    assert set(per_block) == ({block_ms // 10} if stream.spread else {block_ms // 25 * 2})
    out = run(model.stream(voice, block_seconds=block_ms / 1000, timbre_match=0, match_pitch=False, bf16=False), wav)
    body = slice(0, len(out) - 1600)  # the last 0.1 s: offline pads the end with zeros, the stream with silence
    assert np.abs(out[body] - ref[body]).max() < 1e-3 * np.abs(ref).max()


def test_stream_converges_to_the_offline_conversion():
    # Pitch matching and the timbre match take the source's register and the output's mean spectrum over the frames
    # so far, where `convert` takes them over the whole clip: the start differs, the rest converges. (The vocoder's
    # phase is the networks' here: the harmonics' phase integrates F0, which a stream tracks a little differently
    # at its newest frame; the test above feeds both the same contour.)
    model = tiny_causal(1)
    model.cfg = model.cfg.replace(convert={"harmonic_phase": 0.0})
    wav = np.concatenate([synth_speech(120, 1.5, seed=4), synth_speech(125, 1.5, seed=5)])
    voice = model.embed(synth_speech(220, 2.0, seed=6))
    out = run(model.stream(voice, bf16=False), wav)
    ref = model.convert(wav, voice)  # loudness-normalized: compare spectra after a gain fit, in log-mel
    from vc.audio import log_mel

    a, b = log_mel(out[:len(ref)]), log_mel(ref)
    a = a - (a - b).mean()
    err = (a - b).abs().mean(dim=0)  # per frame
    early, late = float(err[:20].mean()), float(err[-120:-10].mean())
    assert late < 0.2 * early
    assert late < 0.05


def test_stream_rejects_a_non_causal_model_and_bad_blocks(tiny_checkpoint):
    with pytest.raises(VCError, match="cannot stream"):
        load_model(tiny_checkpoint, vocoder="griffin-lim").stream(Voice(torch.zeros(128)))
    stream = tiny_causal().stream(Voice(torch.randn(32)), block_seconds=0.03)
    assert stream.block_size == 400  # rounded to whole content frames (25 ms)
    with pytest.raises(VCError, match="multiple of 400"):
        stream.process(np.zeros(300, np.float32))
    stream.process(np.zeros(800, np.float32))
    assert stream.stats.summary()["blocks"] == 1 and stream.stats.last > 0


def stream_blocks(printed: str) -> int:
    return int(re.search(r"(\d+) blocks timed", printed).group(1))


def test_vc_stream_writes_the_converted_file_lined_up_with_the_input(tmp_path, capsys):
    model = tiny_causal()
    ckpt = export_inference(tmp_path / "stream.pt", model.net, model.cfg, {},
                            vocoder=vocoder_weights(model.vocoder.net))
    src, tgt, out = tmp_path / "src.wav", tmp_path / "tgt.wav", tmp_path / "out.flac"
    sf.write(src, synth_speech(130, 1.3, seed=7), 16000)
    sf.write(tgt, synth_speech(210, 1.5, seed=8), 16000)
    assert main(["stream", str(src), "--target", str(tgt), "--output", str(out), "--checkpoint", str(ckpt)]) == 0
    printed = capsys.readouterr().out
    assert "latency 75.0 ms" in printed and "compute per block" in printed and " p99.9 " in printed
    assert stream_blocks(printed) == -(-len(sf.read(src)[0]) // 400)  # every 25-ms block timed on its own
    y, sr = sf.read(out)
    assert sr == 16000 and len(y) == len(sf.read(src)[0]) and np.abs(y).max() > 0


def test_vc_live_without_an_audio_device_says_so(tmp_path, capsys):
    pytest.importorskip("numpy")
    try:
        import sounddevice as sd

        if any(d["max_input_channels"] > 0 for d in sd.query_devices()):
            pytest.skip("this machine has an audio input device")
    except (ImportError, OSError):
        pass  # no library or no PortAudio: what most servers have, and what `vc live` must explain
    tgt = tmp_path / "tgt.wav"
    sf.write(tgt, synth_speech(210, 1.0), 16000)
    assert main(["live", "--target", str(tgt)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and ("audio device" in err[0] or "sounddevice" in err[0])


def test_a_stream_from_target_clips_starts_from_their_statistics():
    model = tiny_causal(2, norm_window=0)  # whole-clip statistics: the stream must estimate them
    target = synth_speech(220, 2.0, seed=9)
    primed, bare = model.stream(target), model.stream(model.embed(target))
    norms = primed.content.norms() + primed.decoder.norms
    assert all(n.n > 0 for n in norms) and all(n.n == 0 for n in bare.content.norms() + bare.decoder.norms)
    # weighted as PRIME_SECONDS of frames at most (the content-rate layers count half as many)
    assert max(n.n for n in norms) <= vc.stream.PRIME_SECONDS * 80 + 1e-6


def test_stream_stats_give_the_tail_of_the_compute_times():
    stats = vc.stream.StreamStats(0.025, keep=1000)
    stats.add(0.5)  # the first block: warm-up, kept apart
    for i in range(1500):  # more than `keep`: the oldest are forgotten
        stats.add(0.100 if i % 500 == 499 else 0.005)
    s = stats.summary()
    assert s["blocks"] == 1501 and s["first_ms"] == 500 and stats.last == 0.100
    assert s["p50_ms"] == pytest.approx(5) and s["p99_ms"] == pytest.approx(5) and s["max_ms"] == pytest.approx(100)
    assert 5 < s["p999_ms"] <= 100  # 2 slow blocks in the 1000 kept
    assert len(stats.kept()) == 1000 and stats.kept()[-1] == 0.100


def test_a_stream_keeps_full_garbage_collections_out_of_its_blocks(monkeypatch):
    # the objects of set-up are frozen (a full collection no longer walks them) and no collection starts in a block
    stream = tiny_causal().stream(Voice(torch.randn(32)))
    assert gc.get_freeze_count() > 0
    seen, push = [], stream._push
    monkeypatch.setattr(stream, "_push", lambda block: (seen.append(gc.isenabled()), push(block)))
    stream.process(np.zeros(stream.block_size, np.float32))
    assert seen == [False] and gc.isenabled()


@pytest.mark.parametrize("window", [5, 0])
def test_a_streamed_window_norm_equals_the_offline_one_in_chunks_of_any_size(window):
    # The ring of the last `window` frames (window 0: the statistics of all frames so far), chunks of one frame (a
    # path of its own), shorter and longer than the window alike.
    from vc.stream_nets import Norm

    x = torch.randn(1, 6, 60, dtype=torch.float64) * 3 + 1
    norm = Norm(window=window)
    cuts = [0, 1, 4, 11, 12, 13, 14, 30, 31, 60]
    out = torch.cat([norm(x[:, :, a:b]) for a, b in zip(cuts, cuts[1:])], dim=2)
    with torch.inference_mode():
        ref = vc.model.window_norm(x, window or x.shape[2])
    assert torch.allclose(out, ref, atol=1e-5)
