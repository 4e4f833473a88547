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
    assert "| griffin-lim | 1 |" in table and "cold start" in table
    assert "streaming" not in row and "not measured (only Griffin-Lim rows" in table  # Griffin-Lim cannot stream
    assert "| 25 ms |" not in table


def test_table_shows_the_streaming_figures_it_is_given():
    figures = {"latency_ms": 75.0, "mean_ms": 6.21, "p95_ms": 7.17, "max_ms": 100.7, "real_time_share": 0.248,
               "rtf": 0.25}
    row = {"vocoder": "vocos", "threads": 1, "rtf": 0.0118, "wall_s": [0.354], "audio_s": 30.0,
           "first_conversion_s": 0.45, "peak_rss_mb": 414.0, "stages_s": {s: 0.1 for s in STAGES},
           "streaming": {"25": figures}}
    result = {"machine": {"cpu": "test", "cores": 2, "isa": "AVX512", "torch": "2", "bf16": True,
                          "load_average": 1.3}, "clip": "a clip", "cold_start_s": [1.7], "rows": [row]}
    table = format_table(result)
    assert "| 1 | 25 ms | 75.0 ms | 6.21 ms | 7.17 ms | - | - | 100.70 ms | - | 25 % | 0.250 |" in table  # older JSON
    assert "not measured" not in table
    figures.update(p99_ms=9.5, p999_ms=41.25, blocks=1200)
    table = format_table(result)
    assert "| 1 | 25 ms | 75.0 ms | 6.21 ms | 7.17 ms | 9.50 ms | 41.25 ms | 100.70 ms | 1200 | 25 % | 0.250 |" in table
    assert "| threads | block | latency | compute per block: mean | p95 | p99 | p99.9 | max | blocks |" in table


def test_default_clips_without_shared_data_are_synthetic(tmp_path):
    source, target, what = make_clips(tmp_path, 3.0, data=tmp_path / "absent")
    assert "SYNTHETIC" in what and sf.info(source).duration == 3.0 and target.is_file()


def test_bench_cli_needs_both_clips(tmp_path, capsys):
    assert main(["bench", "--input", str(tmp_path / "a.wav")]) == 1
    assert "--target" in capsys.readouterr().err
