"""`vc bench` on the tiny checkpoint and short synthetic clips: fresh worker processes and the table."""
import soundfile as sf

from vc.bench import STAGES, bench, format_table, make_clips
from vc.cli import main

from conftest import synth_speech


def test_bench_measures_and_prints(tiny_checkpoint, tmp_path):
    src, tgt = tmp_path / "src.flac", tmp_path / "tgt.wav"
    sf.write(src, synth_speech(120, 3.0, seed=1), 16000)
    sf.write(tgt, synth_speech(220, 2.0, seed=2), 16000)
    result = bench(src, tgt, checkpoint=str(tiny_checkpoint), threads=(1,), vocoders=("griffin-lim",), runs=1,
                   cold_starts=1, progress=False)
    row, = result["rows"]
    assert row["vocoder"] == "griffin-lim" and row["threads"] == 1 and row["rtf"] > 0 and row["peak_rss_mb"] > 50
    assert set(row["stages_s"]) == set(STAGES) and all(v >= 0 for v in row["stages_s"].values())
    assert len(result["cold_start_s"]) == 1 and result["machine"]["cores"] >= 1
    table = format_table(result)
    assert "| griffin-lim | 1 |" in table and "cold start" in table and "streaming" in table


def test_default_clips_without_shared_data_are_synthetic(tmp_path):
    source, target, what = make_clips(tmp_path, 3.0, data=tmp_path / "absent")
    assert "SYNTHETIC" in what and sf.info(source).duration == 3.0 and target.is_file()


def test_bench_cli_needs_both_clips(tmp_path, capsys):
    assert main(["bench", "--input", str(tmp_path / "a.wav")]) == 1
    assert "--target" in capsys.readouterr().err
