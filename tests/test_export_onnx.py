"""ONNX export of the four networks, checked against torch under onnxruntime on a tiny checkpoint."""
import json

import numpy as np
import pytest
import torch

from vc.cli import main

pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def bundled(tiny_checkpoint, tmp_path_factory):
    """The tiny converter with a small (untrained) neural vocoder inside."""
    from vc.checkpoint import build_model, export_inference, load_checkpoint
    from vc.config import VocoderConfig
    from vc.vocoder import Vocos, vocoder_weights

    net, cfg = build_model(load_checkpoint(tiny_checkpoint))
    cfg = cfg.replace(vocoder=vars(VocoderConfig(dim=32, layers=2, intermediate=64)))
    voc = vocoder_weights(Vocos(cfg.audio, cfg.vocoder))
    return export_inference(tmp_path_factory.mktemp("onnx") / "bundled.pt", net, cfg, vocoder=voc)


def test_export_onnx_matches_torch_at_two_lengths(bundled, tmp_path, capsys):
    from vc.export_onnx import GRAPHS, export_onnx

    out = tmp_path / "onnx"
    report = export_onnx(bundled, out, check_frames=(37, 150), time_frames=100, repeats=1)
    assert set(report["graphs"]) == set(GRAPHS)
    for name, g in report["graphs"].items():
        assert (out / g["file"]).is_file()
        assert g["max_abs_diff"] < 1e-3, name
    meta = json.loads((out / "vc-onnx.json").read_text())
    assert meta["audio"]["hop_length"] == 200 and meta["graphs"]["decoder"]["inputs"] == ["content", "embedding",
                                                                                            "pitch"]


def test_onnx_graphs_chain_to_audio(bundled, tmp_path, clips):
    """The graphs chained by hand (content, speaker, decoder, vocoder, inverse STFT) give audio of the source's length;
    the content code's length follows any input length (dynamic axes, per-utterance instance norm)."""
    import vc
    from vc import pitch
    from vc.export_onnx import synthesize

    assert main(["export", str(bundled), str(tmp_path / "onnx"), "--onnx"]) == 0
    model = vc.load_model(bundled)
    src, tgt = model.load(clips["source"], trim=False), model.load(clips["target"])
    run = {n: ort.InferenceSession(str(tmp_path / "onnx" / f"{n}.onnx")).run
           for n in ("content_encoder", "speaker_encoder", "decoder", "vocoder")}
    mel = vc.log_mel(src)[None].numpy()
    content, = run["content_encoder"](None, {"log_mel": mel})
    assert content.shape[2] == (mel.shape[2] + 1) // 2
    with torch.inference_mode():
        torch_content = model.net.content_encoder(model.net.normalize(torch.from_numpy(mel)))
    np.testing.assert_allclose(content, torch_content.numpy(), atol=1e-3)
    embedding, = run["speaker_encoder"](None, {"log_mel": vc.log_mel(tgt)[None].numpy()})
    p = pitch.features(pitch.track(src)[0])[None].numpy()
    out, = run["decoder"](None, {"content": content, "embedding": embedding, "pitch": p})
    log_mag, phase = run["vocoder"](None, {"log_mel": out})
    wav = synthesize(log_mag, phase, model.cfg.audio, len(src))
    assert wav.shape == (1, len(src)) and np.isfinite(wav).all()


@pytest.mark.parametrize("norm_window,hop,norm", [(0, 200, "instance"), (32, 160, "instance"), (0, 160, "channel")])
def test_export_onnx_of_a_causal_model_keeps_dynamic_lengths(tmp_path, norm_window, hop, norm):
    # the streaming model's causal convolutions pad on one side; odd and even lengths must both come out right; with
    # a causal norm window and a 10-ms hop (recipes/stream10.yaml) as well, and with per-frame norms and a code
    # without a norm (the shipped stream.pt, recipes/stream10-teacher.yaml)
    from vc.checkpoint import export_inference
    from vc.config import AudioConfig, Config, ModelConfig, VocoderConfig
    from vc.export_onnx import export_onnx
    from vc.model import VoiceConverterNet
    from vc.vocoder import Vocos, vocoder_weights

    torch.manual_seed(0)
    audio = AudioConfig(hop_length=hop, win_length=2 * hop if hop == 160 else 800, n_fft=512 if hop == 160 else 1024)
    cfg = Config(audio=audio, model=ModelConfig(causal=True, norm_window=norm_window, channels=32, content_dim=8,
                                                speaker_dim=16, classifier_channels=16, norm=norm,
                                                code_norm=norm == "instance"),
                 vocoder=VocoderConfig(causal=True, dim=32, layers=2, intermediate=64))
    voc = vocoder_weights(Vocos(cfg.audio, cfg.vocoder))
    ckpt = export_inference(tmp_path / "causal.pt", VoiceConverterNet(cfg.model, 80), cfg, vocoder=voc)
    report = export_onnx(ckpt, tmp_path / "onnx", check_frames=(37, 150), time_frames=50, repeats=1)
    assert all(g["max_abs_diff"] < 1e-3 for g in report["graphs"].values())
