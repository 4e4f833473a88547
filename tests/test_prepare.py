"""`vc prepare`: each layout on generated data in its own layout, archives and downloads, and the data checker."""
import csv
import io
import json
import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import soxr
import pytest
import soundfile as sf

from vc.cli import main
from vc.datacheck import inspect
from vc.errors import VCError
from vc.prepare import prepare

from conftest import ROOT, synth_speech


def _clip(path: Path, f0: float = 150, seconds: float = 1.5, sr: int = 16000, seed: int = 0, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    wav = synth_speech(f0, seconds, sr=sr, seed=seed)
    sf.write(path, wav, sr, **kw)
    return path


def _rows(out: Path) -> list[dict]:
    with (out / "utterances.tsv").open(newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def _vctk(root: Path) -> Path:
    """VCTK 0.92: wav48_silence_trimmed/pXXX/pXXX_YYY_mic{1,2}.flac at 48 kHz, txt/, speaker-info.txt."""
    corpus = root / "VCTK-Corpus-0.92"
    (corpus / "speaker-info.txt").parent.mkdir(parents=True, exist_ok=True)
    (corpus / "speaker-info.txt").write_text("ID  AGE  GENDER  ACCENTS  REGION\np225  23  F  English  Southern\n"
                                             "p226  22  M  English  Surrey\n")
    for s, spk in enumerate(("p225", "p226")):
        for u in range(1, 4):
            for mic in (1, 2):
                _clip(corpus / "wav48_silence_trimmed" / spk / f"{spk}_{u:03d}_mic{mic}.flac", 120 + 80 * s,
                      sr=48000, seed=u)
            if (spk, u) != ("p226", 3):  # one transcript missing, as p315's are in the real corpus
                (corpus / "txt" / spk).mkdir(parents=True, exist_ok=True)
                (corpus / "txt" / spk / f"{spk}_{u:03d}.txt").write_text(f"Sentence {u} of {spk}.\n")
    return corpus


def test_vctk_tarball_by_url_downloads_extracts_and_reads_transcripts(tmp_path):
    corpus = _vctk(tmp_path / "src")
    archive = tmp_path / "VCTK-Corpus-0.92.tar.gz"
    with tarfile.open(archive, "w:gz") as t:
        t.add(corpus, arcname=corpus.name)
    out = tmp_path / "prepared"
    prepare("vctk", archive.as_uri(), out, min_speaker_seconds=2)
    rows = _rows(out)
    assert len(rows) == 6  # mic1 only
    assert {r["speaker"] for r in rows} == {"p225", "p226"}
    assert {r["gender"] for r in rows if r["speaker"] == "p226"} == {"M"}
    assert next(r for r in rows if r["path"].endswith("p225_002_mic1.flac"))["text"] == "Sentence 2 of p225."
    assert (out / "downloads" / archive.name).is_file() and (out / "extracted" / "VCTK-Corpus-0.92").is_dir()
    report = (out / "report.txt").read_text()
    assert "no transcript: 1 clip(s), kept" in report and "txt/p226/p226_003.txt is missing" in report
    assert "48000 Hz: 6" in report
    assert all((out / r["path"]).is_file() for r in rows)  # paths are relative to the prepared folder
    before = (out / "utterances.tsv").stat().st_mtime_ns
    prepare("vctk", archive.as_uri(), out, min_speaker_seconds=2)  # again: download and extraction are reused
    assert _rows(out) == rows and (out / "utterances.tsv").stat().st_mtime_ns >= before


def test_vctk_080_layout_with_wav48(tmp_path):
    for u in range(1, 3):
        _clip(tmp_path / "VCTK-Corpus" / "wav48" / "p227" / f"p227_{u:03d}.wav", 110, sr=48000, seed=u)
        (tmp_path / "VCTK-Corpus" / "txt" / "p227").mkdir(parents=True, exist_ok=True)
        (tmp_path / "VCTK-Corpus" / "txt" / "p227" / f"p227_{u:03d}.txt").write_text("Hello there.")
    prepare("vctk", tmp_path / "VCTK-Corpus", tmp_path / "out", min_speaker_seconds=1)
    assert [r["text"] for r in _rows(tmp_path / "out")] == ["Hello there."] * 2


def test_librispeech_tar_with_transcripts_and_speakers_file(tmp_path):
    root = tmp_path / "LibriSpeech"
    (root / "SPEAKERS.TXT").parent.mkdir(parents=True)
    (root / "SPEAKERS.TXT").write_text(";ID  |SEX| SUBSET           |MINUTES| NAME\n"
                                       "19   | F | train-clean-100  | 25.19 | Kara\n"
                                       "32   | F | train-clean-100  | 25.13 | Sam\n")
    for spk, chapter in (("19", "198"), ("32", "21625")):
        chap = root / "dev-clean" / spk / chapter
        lines = []
        for u in range(3):
            _clip(chap / f"{spk}-{chapter}-{u:04d}.flac", 200 if spk == "19" else 230, seed=u)
            lines.append(f"{spk}-{chapter}-{u:04d} WORDS OF UTTERANCE {u}")
        if spk == "19":
            (chap / f"{spk}-{chapter}.trans.txt").write_text("\n".join(lines) + "\n")
    archive = tmp_path / "dev-clean.tar"
    with tarfile.open(archive, "w") as t:
        t.add(root, arcname="LibriSpeech")
    out = tmp_path / "out"
    main(["prepare", "librispeech", str(archive), "--out", str(out), "--min-speaker-seconds", "2"])
    rows = _rows(out)
    assert len(rows) == 6 and {r["gender"] for r in rows} == {"F"}
    assert next(r for r in rows if r["path"].endswith("19-198-0001.flac"))["text"] == "WORDS OF UTTERANCE 1"
    report = (out / "report.txt").read_text()
    assert "no transcript: 3 clip(s), kept" in report and "32-21625.trans.txt is missing" in report
    # with --require-text the clips without a transcript are dropped
    prepare("librispeech", archive, out, min_speaker_seconds=0, require_text=True)
    assert {r["speaker"] for r in _rows(out)} == {"19"}


def test_libritts_zip(tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(tmp_path / "LibriTTS.zip", "w") as z:
        for spk in ("84", "174"):
            for u in range(2):
                name = f"LibriTTS/dev-clean/{spk}/121123/{spk}_121123_{u:06d}_000000"
                buf = io.BytesIO()
                sf.write(buf, synth_speech(130 if spk == "84" else 210, 1.5, sr=24000, seed=u), 24000, format="WAV")
                z.writestr(f"{name}.wav", buf.getvalue())
                z.writestr(f"{name}.normalized.txt", f"Normalized text {u}.")
                z.writestr(f"{name}.original.txt", f"Original text {u}.")
        z.writestr("LibriTTS/speakers.tsv", "READER\tGENDER\tSUBSET\tNAME\n84\tF\tdev-clean\tChristie\n")
    prepare("libritts", tmp_path / "LibriTTS.zip", tmp_path / "out", min_speaker_seconds=1)
    rows = _rows(tmp_path / "out")
    assert len(rows) == 4
    assert {r["text"] for r in rows} == {"Normalized text 0.", "Normalized text 1."}
    assert {r["speaker"]: r["gender"] for r in rows} == {"84": "F", "174": ""}


def test_checker_findings_on_a_speaker_folder(tmp_path):
    data = tmp_path / "voices"
    for u in range(3):
        _clip(data / "alice" / f"a{u}.wav", 220, sr=44100, seed=u)
        _clip(data / "bob" / f"b{u}.flac", 110, sr=22050, seed=u)
    _clip(data / "alice" / "narrow.ogg", 220, sr=8000, format="OGG", subtype="VORBIS")
    (data / "alice" / "a0.txt").write_text("hello from alice")
    (data / "bob" / "notes.wav").write_text("not audio at all")
    sf.write(data / "bob" / "silent.wav", np.zeros(16000, np.float32), 16000)
    _clip(data / "bob" / "blip.wav", 110, seconds=0.1)
    sf.write(data / "bob" / "loud.wav", np.clip(6 * synth_speech(110, 1.5), -1, 1), 16000)
    out = tmp_path / "out"
    prepare("folder", data, out, min_speaker_seconds=2)
    findings = {(Path(f["path"]).name, f["kind"]) for f in json.loads((out / "report.json").read_text())["findings"]}
    assert findings == {("notes.wav", "not audio"), ("silent.wav", "silent"), ("blip.wav", "too short"),
                        ("loud.wav", "clipped"), ("narrow.ogg", "low sample rate")}
    rows = _rows(out)
    names = {Path(r["path"]).name for r in rows}
    assert names == {"a0.wav", "a1.wav", "a2.wav", "narrow.ogg", "b0.flac", "b1.flac", "b2.flac", "loud.wav"}
    assert next(r for r in rows if r["path"].endswith("a0.wav"))["text"] == "hello from alice"
    speakers = json.loads((out / "report.json").read_text())["speakers"]
    assert speakers["bob"]["clips"] == 7 and speakers["bob"]["kept"] == 4
    assert "minutes" in (out / "report.txt").read_text()


def test_inspect_flags_what_load_wav_refuses(tmp_path):
    info, findings = inspect(_clip(tmp_path / "lecture.flac", 150, seconds=61))
    assert info is not None and [f.kind for f in findings] == ["long"]
    info, findings = inspect(_clip(tmp_path / "ok.wav", 150, seconds=1.0))
    assert info is not None and findings == [] and 1.0 < info.seconds < 1.6
    (tmp_path / "empty.wav").write_bytes(b"")
    info, findings = inspect(tmp_path / "empty.wav")
    assert info is None and findings[0].kind == "not audio" and "empty" in findings[0].detail
    sf.write(tmp_path / "dc.wav", np.full(32000, 0.4, np.float32), 16000)
    assert [f.kind for f in inspect(tmp_path / "dc.wav")[1]] == ["silent"]  # load_wav refuses it too
    cut = _clip(tmp_path / "cut.wav", 150, seconds=3.0)
    cut.write_bytes(cut.read_bytes()[:40000])
    assert [f.kind for f in inspect(cut)[1]] == ["truncated"]
    phone = soxr.resample(synth_speech(150, 2.0, sr=8000), 8000, 16000)  # at 16 kHz, with a telephone's band
    sf.write(tmp_path / "phone.wav", phone, 16000)
    assert [f.kind for f in inspect(tmp_path / "phone.wav")[1]] == ["band-limited"]


def test_speaker_with_one_short_clip_stops_with_advice(tmp_path):
    _clip(tmp_path / "data" / "alice" / "a.wav", 220, seconds=3)
    _clip(tmp_path / "data" / "alice" / "b.wav", 220, seconds=3, seed=1)
    _clip(tmp_path / "data" / "bob" / "only.wav", 110, seconds=0.8)
    with pytest.raises(VCError, match=r"too little speech for 1 speaker\(s\): bob .*Record more"):
        prepare("folder", tmp_path / "data", tmp_path / "out", min_speaker_seconds=4)
    assert (tmp_path / "out" / "report.txt").is_file() and not (tmp_path / "out" / "utterances.tsv").exists()


@pytest.mark.parametrize("make, message", [
    (lambda p: (p / "spk").mkdir(parents=True) or (p / "spk" / "x.wav").write_text("text"), "no usable audio"),
    (lambda p: p.mkdir(), "no audio found"),
    (lambda p: _clip(p / "loose.wav"), "put each speaker's clips in a sub-folder"),
])
def test_bad_folders_get_one_line_errors(tmp_path, capsys, make, message):
    make(tmp_path / "data")
    assert main(["prepare", "folder", str(tmp_path / "data"), "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err


def test_unreadable_archive_and_failed_download(tmp_path, capsys):
    (tmp_path / "corpus.tar.gz").write_bytes(b"\x1f\x8b this is not gzip data at all")
    assert main(["prepare", "vctk", str(tmp_path / "corpus.tar.gz"), "--out", str(tmp_path / "out")]) == 1
    assert "corpus.tar.gz: not a readable archive" in capsys.readouterr().err
    assert not list((tmp_path / "out" / "extracted").iterdir())  # no half-extracted leftovers
    missing = (tmp_path / "nowhere.tar.gz").as_uri()
    assert main(["prepare", "vctk", missing, "--out", str(tmp_path / "out")]) == 1
    assert "download failed" in capsys.readouterr().err
    assert main(["prepare", "vctk", str(tmp_path), "--out", str(tmp_path / "out2")]) == 1
    assert "not a VCTK corpus" in capsys.readouterr().err


def test_prepare_recipe_script(tmp_path):
    corpus = _vctk(tmp_path / "src")
    archive = tmp_path / "vctk.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for p in corpus.rglob("*"):
            z.write(p, p.relative_to(corpus.parent))
    out = tmp_path / "data"
    proc = subprocess.run(["bash", str(ROOT / "recipes" / "prepare.sh"), "vctk", archive.as_uri(), str(out),
                           "--min-speaker-seconds", "2"], capture_output=True, text=True, cwd=ROOT, timeout=120,
                          env={**os.environ, "PYTHON": sys.executable})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert len(_rows(out)) == 6


@pytest.mark.parametrize("kind", ["zip", "tar.gz"])
def test_archive_bombs_are_refused_by_ratio_and_size(tmp_path, kind):
    from vc.prepare import ExtractLimits, extract

    archive = tmp_path / f"bomb.{kind}"
    payload = tmp_path / "zeros.wav"
    payload.write_bytes(bytes(5_000_000))  # compresses about 1000-fold
    if kind == "zip":
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as z:
            z.write(payload, "spk/zeros.wav")
    else:
        with tarfile.open(archive, "w:gz") as t:
            t.add(payload, "spk/zeros.wav")
    with pytest.raises(VCError, match=rf"{archive}: would unpack to more than"):
        extract(archive, tmp_path / "x", ExtractLimits(ratio=100, floor_bytes=1e6))
    with pytest.raises(VCError, match="at most 0.001 GB"):
        extract(archive, tmp_path / "x", ExtractLimits(ratio=1e6, max_bytes=1e6))
    assert not [p for p in (tmp_path / "x").rglob("*") if p.is_file()]  # nothing left half-extracted
    assert (extract(archive, tmp_path / "x", ExtractLimits(ratio=1e6)) / "spk" / "zeros.wav").stat().st_size == 5e6
