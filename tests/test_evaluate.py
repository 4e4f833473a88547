"""`vc evaluate`, its judges and the WORLD baseline, on short synthetic voices (no model weights but resemblyzer's)."""
import importlib.util
import json
import math

import pytest
import soundfile as sf

from vc.cli import main
from vc.evaluate import evaluate, read_rows, summarize
from vc.judges import error_rates, mcd, mean_log_f0, mel_cepstrum, normalize_text, world_f0

from conftest import ROOT, synth_speech

# The judges' tests need the eval extra; the test of the message shown without it runs everywhere.
needs_eval = pytest.mark.skipif(not all(importlib.util.find_spec(m) for m in ("pyworld", "pysptk")),
                                reason='the eval extra is not installed (pip install -e ".[eval]")')


@pytest.fixture(scope="module")
def voices(tmp_path_factory) -> dict:
    """Clips of synthetic voices at 100, 200 and 150 Hz, one second each, and their waveforms."""
    root = tmp_path_factory.mktemp("voices")
    wavs = {"low": synth_speech(100, 1.0, seed=1), "high": synth_speech(200, 1.0, seed=2),
            "high2": synth_speech(200, 1.0, seed=3), "mid": synth_speech(150, 1.0, seed=4)}
    for name, wav in wavs.items():
        sf.write(root / f"{name}.wav", wav, 16000)
    return {"root": root, "wavs": wavs}


@needs_eval
def test_mcd_is_zero_to_itself_and_larger_to_another_voice(voices):
    a, b = voices["wavs"]["low"], voices["wavs"]["high"]
    mc_a, mc_b = mel_cepstrum(a, world_f0(a)), mel_cepstrum(b, world_f0(b))
    assert mcd(mc_a, mc_a) < 1e-6
    assert mcd(mc_a, mc_a, align=False) < 1e-6
    assert mcd(mc_a, mc_b) > 1.0


@needs_eval
def test_pitch_gap_closed(voices):
    root = voices["root"]
    rows = [{"converted": root / out, "source": root / "low.wav", "target": root / "high.wav"}
            for out in ("high2.wav", "low.wav", "mid.wav")]
    to_target, unchanged, midway = evaluate(rows, judges=["pitch"])["rows"]
    assert to_target["pitch_gap_closed"] == pytest.approx(1.0, abs=0.1)
    assert to_target["f0_dist_st"] < 1.0
    assert unchanged["pitch_gap_closed"] == pytest.approx(0.0, abs=1e-6)
    assert unchanged["f0_dist_st"] == pytest.approx(12.0, abs=1.0)
    assert midway["pitch_gap_closed"] == pytest.approx(math.log(1.5) / math.log(2), abs=0.1)


@needs_eval
def test_missing_file_fails_its_row_only(voices, capsys):
    tsv = voices["root"] / "list.tsv"
    tsv.write_text("converted\tsource\ttarget\nhigh2.wav\tlow.wav\thigh.wav\nmissing.wav\tlow.wav\thigh.wav\n")
    result = evaluate(read_rows(tsv), judges=["pitch"])
    ok, failed = result["rows"]
    assert "f0_out" in ok and "error" not in ok
    assert "missing.wav" in failed["error"]
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "missing.wav" in err
    assert result["summary"]["rows"] == 2 and result["summary"]["failed"] == 1


@needs_eval
def test_cli_writes_json(voices, capsys):
    pytest.importorskip("resemblyzer")
    root = voices["root"]
    tsv = root / "cli.tsv"
    tsv.write_text("converted\tsource\ttarget\tparallel\tother\tseconds\n"
                   f"high2.wav\tlow.wav\thigh.wav\thigh.wav\t{root / 'high2.wav'}\t0.5\n")
    out = root / "out" / "scores.json"
    assert main(["evaluate", str(tsv), "--no-asr", "--no-dnsmos", "--json", str(out), "--quiet"]) == 0
    result = json.loads(out.read_text())
    row, summary = result["rows"][0], result["summary"]
    assert {"cos_out_ref", "cos_out_src", "closer_to_target", "gap_closed", "mcd", "pitch_gap_closed"} <= set(row)
    assert summary["rtf"] == pytest.approx(0.5 / row["duration_s"])
    assert result["judges"] == ["speaker", "mcd", "pitch"]
    assert "| cos_out_ref |" in capsys.readouterr().out


def test_cli_without_the_eval_extra_says_how_to_install(voices, monkeypatch, capsys):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "pysptk" else find_spec(name, *a))
    tsv = voices["root"] / "extra.tsv"
    tsv.write_text("converted\tsource\ttarget\nhigh2.wav\tlow.wav\thigh.wav\n")
    assert main(["evaluate", str(tsv), "--no-asr", "--no-dnsmos", "--no-speaker"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and 'pip install -e ".[eval]"' in err


def test_text_is_normalized_before_scoring():
    pytest.importorskip("jiwer")
    assert normalize_text("  Don't STOP, 'now'! ") == "don't stop now"
    assert error_rates("Hello, world.", "hello world") == {"cer": 0.0, "wer": 0.0, "ref_chars": 11}
    assert error_rates("hello world", "hello")["wer"] == pytest.approx(0.5)


def test_pooled_cer_weighs_rows_by_their_reference_characters():
    # a two-word clip read wholly wrong, and a long one read right: the mean over rows says half the characters
    # are lost, the corpus-level rate one in fifty
    rows = [{"cer": 1.0, "src_cer": 0.0, "ref_chars": 2}, {"cer": 0.0, "src_cer": 0.01, "ref_chars": 98},
            {"cer": 0.5}]  # no reference length: not pooled
    summary = summarize(rows)
    assert summary["cer"] == pytest.approx(0.5)
    assert summary["cer_pooled"] == pytest.approx(0.02)
    assert summary["src_cer_pooled"] == pytest.approx(0.0098)


@needs_eval
def test_world_baseline_moves_f0_toward_the_reference(voices):
    spec = importlib.util.spec_from_file_location("world_vc", ROOT / "benchmarks" / "world_vc.py")
    world_vc = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(world_vc)
    src, ref = voices["wavs"]["low"], voices["wavs"]["high"]
    out = world_vc.world_convert(src, ref, 16000)
    assert out.dtype.name == "float32" and len(out) == len(src)
    semitones = 12 * (mean_log_f0(world_f0(out)) - mean_log_f0(world_f0(ref))) / math.log(2)
    assert abs(semitones) < 1.0


def test_asr_judge_is_chosen_and_an_unknown_one_is_refused(voices, capsys):
    pytest.importorskip("jiwer")
    from vc.evaluate import Scorer
    from vc.errors import VCError

    with pytest.raises(VCError, match="unknown ASR judge 'large'"):
        Scorer(["asr"], asr="large")
    # the default judge is Whisper base: it shares no weights with the converter's Whisper tiny.en content features
    assert Scorer([]).asr == "base"
    tsv = voices["root"] / "asr.tsv"
    tsv.write_text("converted\tsource\ttarget\nhigh2.wav\tlow.wav\thigh.wav\n")
    with pytest.raises(SystemExit) as exit_:
        main(["evaluate", str(tsv), "--asr", "large"])
    assert exit_.value.code == 2
    assert "invalid choice: 'large'" in capsys.readouterr().err
