import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

import vc
from vc.cli import main

from conftest import synth_speech


def test_convert_round_trip(tiny_checkpoint, clips, tmp_path, capsys):
    out = tmp_path / "out" / "converted.flac"
    rc = main(["convert", str(clips["source"]), "--target", str(clips["target"]), "--target", str(clips["source"]),
               "--output", str(out), "--checkpoint", str(tiny_checkpoint)])
    assert rc == 0
    wav, sr = sf.read(out)
    src, _ = sf.read(clips["source"])
    assert sr == 16000
    assert abs(len(wav) - len(src)) <= vc.AudioConfig().hop_length
    assert np.sqrt(np.mean(wav ** 2)) > 0.01  # not silence
    assert str(out) in capsys.readouterr().out


def test_export_from_training_checkpoint(tiny_checkpoint, tmp_path, clips):
    out = tmp_path / "exported.pt"
    assert main(["export", str(tiny_checkpoint.parent / "last.pt"), str(out)]) == 0
    assert out.stat().st_size < (tiny_checkpoint.parent / "last.pt").stat().st_size
    assert len(vc.load_model(out).convert(clips["source"], clips["target"])) > 0


def test_train_vocoder_then_bundle_and_convert_with_pitch_options(tiny_checkpoint, train_dir, clips, tmp_path):
    run = tmp_path / "voc"
    assert main(["train-vocoder", "--data", str(train_dir), "--out", str(run), "--steps", "2"]) == 0
    bundled = tmp_path / "bundled.pt"
    assert main(["export", str(tiny_checkpoint), str(bundled), "--vocoder-ckpt", str(run / "vocoder.pt")]) == 0
    assert vc.load_model(bundled).vocoder_name == "vocos"
    outs = {}
    for name, extra in {"plain": [], "shifted": ["--pitch-shift", "-5", "--no-match-pitch"]}.items():
        outs[name] = tmp_path / f"{name}.wav"
        assert main(["convert", str(clips["source"]), "-t", str(clips["target"]), "-o", str(outs[name]),
                     "--checkpoint", str(bundled), *extra]) == 0
    assert not np.allclose(sf.read(outs["plain"])[0], sf.read(outs["shifted"])[0])
    assert main(["export", str(tiny_checkpoint), str(tmp_path / "x.pt"), "--vocoder-ckpt", str(tiny_checkpoint)]) == 1


@pytest.mark.parametrize("kind", ["missing", "empty", "text", "short", "silent"])
@pytest.mark.parametrize("role", ["source", "target"])
def test_bad_input_is_one_line_and_nonzero(tiny_checkpoint, clips, tmp_path, capsys, kind, role):
    bad = tmp_path / f"{kind}.wav"
    if kind == "empty":
        bad.write_bytes(b"")
    elif kind == "text":
        bad.write_text("hello")
    elif kind == "short":
        sf.write(bad, synth_speech(150, 0.1)[3200:8000], 16000)
    elif kind == "silent":
        sf.write(bad, np.zeros(16000, np.float32), 16000)
    args = {"source": str(clips["source"]), "target": str(clips["target"]), role: str(bad)}
    rc = main(["convert", args["source"], "--target", args["target"], "--output", str(tmp_path / "o.wav"),
               "--checkpoint", str(tiny_checkpoint)])
    err = capsys.readouterr().err.strip()
    assert rc == 1
    assert len(err.splitlines()) == 1 and str(bad) in err
    assert not (tmp_path / "o.wav").exists()


def test_console_script_error_has_no_traceback(tiny_checkpoint, clips, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "vc", "convert", str(tmp_path / "missing.wav"), "--target",
                           str(clips["target"]), "--output", str(tmp_path / "o.wav"), "--checkpoint",
                           str(tiny_checkpoint)], capture_output=True, text=True)
    assert proc.returncode == 1
    assert proc.stderr.strip() == f"error: {tmp_path / 'missing.wav'}: file not found"


@pytest.mark.parametrize("argv,option", [
    (["convert", "a.wav", "-t", "b.wav", "-o", "c.wav", "--sample-rate", "7999"], "--sample-rate"),
    (["convert", "a.wav", "-t", "b.wav", "-o", "c.wav", "--pitch-shift", "-24.5"], "--pitch-shift"),
    (["convert", "a.wav", "-t", "b.wav", "-o", "c.wav", "--timbre-match", "1.01"], "--timbre-match"),
    (["stream", "a.wav", "-t", "b.wav", "-o", "c.wav", "--timbre-match", "nan"], "--timbre-match"),
    (["adapt", "c.pt", "--data", "d", "--out", "o", "--steps", "1.5"], "--steps"),
    (["train-vocoder", "--data", "d", "--out", "o", "--lr", "0"], "--lr"),
    (["bench", "--threads", "1", "0"], "--threads"),
    (["prepare", "folder", "s", "--out", "o", "--max-extract-ratio", "0.5"], "--max-extract-ratio")])
def test_bad_option_values_fail_at_parse_time_on_one_line(argv, option, capsys):
    with pytest.raises(SystemExit) as stop:
        main(argv)
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.count("\n") == 1 and err.startswith("error: ") and option in err


@pytest.mark.parametrize("value,ok", [("8000", True), ("192000", True), ("44100.0", False), ("1e9", False)])
def test_sample_rate_range(value, ok):
    from argparse import ArgumentTypeError

    from vc.options import SAMPLE_RATE

    if ok:
        assert SAMPLE_RATE(value) == int(value)
    else:
        with pytest.raises(ArgumentTypeError):
            SAMPLE_RATE(value)


@pytest.mark.parametrize("raised,code,says", [(RuntimeError("boom\nsecond line"), 1, "unexpected RuntimeError: boom"),
                                              (KeyboardInterrupt(), 130, "interrupted"),
                                              (PermissionError(13, "Permission denied", "/x/y.wav"), 1,
                                               "/x/y.wav: permission denied")])
def test_main_turns_any_exception_into_one_line(monkeypatch, capsys, clips, tmp_path, raised, code, says):
    def explode(*args, **kwargs):
        raise raised

    monkeypatch.setattr("vc.runner.run", explode)
    monkeypatch.delenv("VC_DEBUG", raising=False)
    argv = ["convert", str(clips["source"]), "-t", str(clips["target"]), "-o", str(tmp_path / "o.wav")]
    assert main(argv) == code
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and says in err and "Traceback" not in err
    monkeypatch.setenv("VC_DEBUG", "1")
    main(argv)
    assert ("Traceback" in capsys.readouterr().err) == (code == 1 and isinstance(raised, RuntimeError))
