"""`vc prepare`: turn a corpus into the `utterances.tsv` layout that `vc train` and `vc adapt` read.

Layouts (`LAYOUTS`):
  folder       one folder of clips per speaker (any format soundfile reads, any rate); an optional NAME.txt or
               NAME.lab beside a clip holds its transcript
  vctk         wav48_silence_trimmed/pXXX/pXXX_YYY_mic1.flac (0.92) or wav48/pXXX/pXXX_YYY.wav (0.80), with
               txt/pXXX/pXXX_YYY.txt and speaker-info.txt
  libritts     SPEAKER/CHAPTER/SPEAKER_CHAPTER_*.wav with *.normalized.txt (or *.original.txt) beside each clip
  librispeech  SPEAKER/CHAPTER/SPEAKER-CHAPTER-NNNN.flac with SPEAKER-CHAPTER.trans.txt, and SPEAKERS.TXT

The source is a folder, an archive (.tar, .tar.gz, .tgz, .tar.bz2, .tar.xz, .zip; extracted under OUT/extracted),
or a URL of one (http, https or file; downloaded to OUT/downloads, resuming a partial download).
"""
from __future__ import annotations

import csv
import io
import os
import re
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from .config import AUDIO_EXTENSIONS, LAYOUTS, AudioConfig
from .datacheck import DROP, Finding, advice, check
from .errors import VCError, reason
from .files import describe, write_text

ARCHIVES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz", ".zip")
COLUMNS = ("path", "corpus", "speaker", "gender", "dur_s", "text", "source")


@dataclass
class Clip:
    path: Path
    speaker: str
    text: str = ""
    gender: str = ""


def is_url(src: str) -> bool:
    return urllib.parse.urlparse(src).scheme in ("http", "https", "file", "ftp")


def download(url: str, folder: Path) -> Path:
    """Fetch `url` into `folder` (kept as NAME.part until complete; a second call resumes it or skips)."""
    name = Path(urllib.parse.unquote(urllib.parse.urlparse(url).path)).name or "download"
    dest, part = folder / name, folder / f"{name}.part"
    if dest.is_file():
        print(f"{dest}: already downloaded")
        return dest
    folder.mkdir(parents=True, exist_ok=True)
    have = part.stat().st_size if part.is_file() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        with urllib.request.urlopen(request, timeout=60) as r:
            resumed = have and getattr(r, "status", 200) == 206
            total = r.headers.get("Content-Length")
            total = int(total) + (have if resumed else 0) if total else None
            with part.open("ab" if resumed else "wb") as f, tqdm(total=total, initial=have if resumed else 0,
                                                                  unit="B", unit_scale=True, desc=name) as bar:
                while chunk := r.read(1 << 20):
                    f.write(chunk)
                    bar.update(len(chunk))
    except urllib.error.HTTPError as e:
        if e.code != 416 or not have:  # 416: the range starts at the end, so the partial file is complete
            raise VCError(f"{url}: download failed (HTTP {e.code} {e.reason})") from None
    except (urllib.error.URLError, OSError, ValueError) as e:
        raise VCError(f"{url}: download failed ({reason(getattr(e, 'reason', e))}); run again to resume") from None
    os.replace(part, dest)
    return dest


@dataclass(frozen=True)
class ExtractLimits:
    """How much an archive may unpack to: at most `ratio` times its own size (audio hardly compresses: real corpora
    unpack to 1 to 3 times their archive; an archive bomb to thousands), never less than `floor_bytes` (small archives
    of text), and at most `max_bytes`, and what the disk has free."""
    ratio: float = 100.0
    max_bytes: float = 500e9
    floor_bytes: float = 64e6

    def cap(self, archive: Path, folder: Path) -> float:
        free = shutil.disk_usage(folder).free
        return min(self.max_bytes, max(self.floor_bytes, self.ratio * archive.stat().st_size), free)


def _refuse(archive: Path, total: float, cap: float, limits: ExtractLimits) -> VCError:
    return VCError(f"{archive}: would unpack to more than {cap / 1e6:.0f} MB ({total / 1e6:.0f} MB so far; the "
                   f"limit is {limits.ratio:g} times the archive, at most {limits.max_bytes / 1e9:g} GB and the free "
                   "space): an archive bomb, or raise --max-extract-ratio / --max-extract-gb")


def _unzip(archive: Path, tmp: Path, cap: float, limits: ExtractLimits) -> None:
    with zipfile.ZipFile(archive) as z:
        members = z.infolist()
        for m in members:
            if Path(m.filename).is_absolute() or ".." in Path(m.filename).parts:
                raise VCError(f"{archive}: unsafe path in archive: {m.filename}")
        declared = sum(m.file_size for m in members)
        if declared > cap:
            raise _refuse(archive, declared, cap, limits)
        total = 0
        for m in members:  # the sizes a zip declares can lie: count what really comes out
            dest = tmp / m.filename
            if m.is_dir():
                dest.mkdir(parents=True, exist_ok=True)
                continue
            dest.parent.mkdir(parents=True, exist_ok=True)
            with z.open(m) as src, open(dest, "wb") as out:
                while chunk := src.read(1 << 20):
                    total += len(chunk)
                    if total > cap:
                        raise _refuse(archive, total, cap, limits)
                    out.write(chunk)


def _untar(archive: Path, tmp: Path, cap: float, limits: ExtractLimits) -> None:
    total = 0

    def counted(member: tarfile.TarInfo, path: str) -> tarfile.TarInfo | None:
        nonlocal total
        member = tarfile.data_filter(member, path)  # refuses absolute paths, '..', and links leading outside
        total += member.size if member.isfile() else 0  # a tar's sizes are exact: the data follows each header
        if total > cap:
            raise _refuse(archive, total, cap, limits)
        return member

    with tarfile.open(archive) as t:
        t.extractall(tmp, filter=counted)


def extract(archive: Path, folder: Path, limits: ExtractLimits | None = None) -> Path:
    """Unpack `archive` into folder/NAME (once: a finished extraction is reused); refuse members that would land
    outside it, and an archive that would unpack to more than `limits` allow. Raises VCError naming the archive."""
    limits = limits or ExtractLimits()
    stem = archive.name
    for ext in sorted(ARCHIVES, key=len, reverse=True):
        if stem.lower().endswith(ext):
            stem = stem[: -len(ext)]
            break
    dest = folder / stem
    if (dest / ".extracted").is_file():
        print(f"{dest}: already extracted")
        return dest
    folder.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{stem}.", dir=folder))
    try:
        cap = limits.cap(archive, folder)
        (_unzip if zipfile.is_zipfile(archive) else _untar)(archive, tmp, cap, limits)
    except VCError:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, ValueError) as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise VCError(f"{archive}: not a readable archive ({reason(e)[:160]})") from None
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise VCError(f"{archive}: could not unpack ({describe(e)[:200]})") from None
    (tmp / ".extracted").touch()
    shutil.rmtree(dest, ignore_errors=True)
    os.replace(tmp, dest)
    return dest


def fetch(src: str | os.PathLike, out: Path, limits: ExtractLimits | None = None) -> Path:
    """The folder to scan: `src` itself, or the extraction of the archive it is or that its URL points to."""
    text = str(src)
    if is_url(text):
        src = download(text, out / "downloads")
    path = Path(src)
    if path.is_dir():
        return path
    if not path.exists():
        raise VCError(f"{path}: not found")
    if not path.name.lower().endswith(ARCHIVES) and not zipfile.is_zipfile(path) and not _is_tar(path):
        raise VCError(f"{path}: not a folder or an archive ({', '.join(ARCHIVES)})")
    return extract(path, out / "extracted", limits)


def _is_tar(path: Path) -> bool:
    try:
        return tarfile.is_tarfile(path)
    except OSError:
        return False


def _audio(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS and p.is_file())


def _find_dir(root: Path, names: tuple[str, ...]) -> Path | None:
    """The first folder named one of `names` at or below `root` (shallowest first)."""
    for depth in range(4):
        for name in names:
            hits = sorted(root.glob("/".join(["*"] * depth + [name])))
            if hits and hits[0].is_dir():
                return hits[0]
    return None


def _read_text(path: Path) -> str:
    return " ".join(path.read_text(encoding="utf-8", errors="replace").split())


def scan_folder(root: Path) -> tuple[list[Clip], list[Finding]]:
    speakers = [d for d in sorted(root.iterdir()) if d.is_dir() and not d.name.startswith(".")]
    clips = []
    for d in speakers:
        for p in _audio(d):
            side = next((p.with_suffix(s) for s in (".txt", ".lab") if p.with_suffix(s).is_file()), None)
            clips.append(Clip(p, d.name, _read_text(side) if side else ""))
    if not clips and _audio(root):
        raise VCError(f"{root}: audio files lie directly in the folder; put each speaker's clips in a sub-folder "
                      "named after the speaker")
    return clips, []


def scan_vctk(root: Path) -> tuple[list[Clip], list[Finding]]:
    wavs = _find_dir(root, ("wav48_silence_trimmed", "wav48"))
    if wavs is None:
        raise VCError(f"{root}: not a VCTK corpus (no wav48_silence_trimmed/ or wav48/ folder)")
    txt = wavs.parent / "txt"
    genders = {}
    info = wavs.parent / "speaker-info.txt"
    if info.is_file():
        for line in info.read_text(errors="replace").splitlines()[1:]:
            f = line.split()
            if len(f) >= 3 and f[2] in ("F", "M"):
                genders[f[0] if f[0].startswith("p") else f"p{f[0]}"] = f[2]
    clips, findings = [], []
    for p in _audio(wavs):
        if p.name.endswith("_mic2.flac"):  # 0.92 has two microphones per sentence; mic1 is the one usually used
            continue
        speaker, utt = p.parent.name, re.sub(r"_mic\d$", "", p.stem)
        t = txt / speaker / f"{utt}.txt"
        if not t.is_file():
            findings.append(Finding(str(p), "no transcript", f"{t} is missing"))
        clips.append(Clip(p, speaker, _read_text(t) if t.is_file() else "", genders.get(speaker, "")))
    return clips, findings


def _libri_genders(root: Path) -> dict[str, str]:
    """SPEAKERS.TXT (LibriSpeech: 'ID | SEX | ...') or speakers.tsv (LibriTTS), near `root`."""
    genders = {}
    names = ("SPEAKERS.TXT", "SPEAKERS.txt", "speakers.tsv")
    below = [f for depth in range(3) for n in names for f in root.glob("/".join(["*"] * depth + [n]))]
    for f in [folder / n for folder in list(root.parents)[:2] for n in names] + below:
        if f.is_file():
            for line in f.read_text(errors="replace").splitlines():
                parts = [x.strip() for x in re.split(r"[|\t]", line)]
                if len(parts) >= 2 and parts[0].isdigit() and parts[1].upper() in ("F", "M"):
                    genders[parts[0]] = parts[1].upper()
    return genders


def _libri_clips(root: Path) -> list[Path]:
    """Audio at SPEAKER/CHAPTER/FILE, both numeric folder names, anywhere below `root`."""
    return [p for p in _audio(root) if p.parent.name.isdigit() and p.parent.parent.name.isdigit()]


def scan_libritts(root: Path) -> tuple[list[Clip], list[Finding]]:
    genders, clips, findings = _libri_genders(root), [], []
    for p in _libri_clips(root):
        norm, orig = p.with_suffix(".normalized.txt"), p.with_suffix(".original.txt")
        t = norm if norm.is_file() else orig if orig.is_file() else None
        if t is None:
            findings.append(Finding(str(p), "no transcript", f"{norm} is missing"))
        speaker = p.parent.parent.name
        clips.append(Clip(p, speaker, _read_text(t) if t else "", genders.get(speaker, "")))
    if not clips:
        raise VCError(f"{root}: not a LibriTTS corpus (no SPEAKER/CHAPTER/*.wav)")
    return clips, findings


def scan_librispeech(root: Path) -> tuple[list[Clip], list[Finding]]:
    genders, clips, findings = _libri_genders(root), [], []
    transcripts: dict[Path, dict[str, str] | None] = {}
    for p in _libri_clips(root):
        speaker, chapter = p.parent.parent.name, p.parent.name
        trans = p.parent / f"{speaker}-{chapter}.trans.txt"
        if trans not in transcripts:
            transcripts[trans] = None
            if trans.is_file():
                lines = (line.split(" ", 1) for line in trans.read_text(errors="replace").splitlines() if line)
                transcripts[trans] = {x[0]: x[1].strip() if len(x) > 1 else "" for x in lines}
        table = transcripts[trans]
        if table is None:
            findings.append(Finding(str(p), "no transcript", f"{trans} is missing"))
        elif p.stem not in table:
            findings.append(Finding(str(p), "no transcript", f"no line for {p.stem} in {trans.name}"))
        clips.append(Clip(p, speaker, (table or {}).get(p.stem, ""), genders.get(speaker, "")))
    if not clips:
        raise VCError(f"{root}: not a LibriSpeech corpus (no SPEAKER/CHAPTER/*.flac)")
    return clips, findings


SCANNERS = {"folder": scan_folder, "vctk": scan_vctk, "libritts": scan_libritts, "librispeech": scan_librispeech}


def prepare(layout: str, src: str | os.PathLike, out: str | os.PathLike, *, min_speaker_seconds: float = 30.0,
            require_text: bool = False, jobs: int = 1, cfg: AudioConfig | None = None,
            limits: ExtractLimits | None = None) -> Path:
    """Fetch and scan `src` in `layout`, check every clip, and write OUT/utterances.tsv with the usable ones, plus
    OUT/report.txt and OUT/report.json. Raises VCError (after writing the report) when a speaker has too little."""
    if layout not in SCANNERS:
        raise VCError(f"unknown layout '{layout}' (choose from: {', '.join(LAYOUTS)})")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    root = fetch(src, out, limits)
    clips, findings = SCANNERS[layout](root)
    if not clips:
        raise VCError(f"{root}: no audio found for the '{layout}' layout ({', '.join(sorted(AUDIO_EXTENSIONS))})")
    report = check([str(c.path) for c in clips], [c.speaker for c in clips], cfg, jobs=jobs)
    report.findings += findings
    report.base = str(root)
    if require_text:
        report.drop = DROP + ("no transcript",)
    write_text(out / "report.txt", report.text(cfg) + "\n")
    write_text(out / "report.json", report.to_json())
    print(report.text(cfg))
    problem = advice(report, min_speaker_seconds, str(out))
    if problem:
        (out / "utterances.tsv").unlink(missing_ok=True)  # a table from an earlier run would no longer be true
        raise VCError(problem)
    rows = []
    for i in report.kept():
        c, info = clips[i], report.infos[i]
        rel = os.path.relpath(c.path.resolve(), out.resolve())
        path = rel if not rel.startswith("..") else str(c.path.resolve())
        rows.append([path, layout, c.speaker, c.gender, f"{info.seconds:.2f}", c.text, str(src)])
    buf = io.StringIO()
    w = csv.writer(buf, delimiter="\t", lineterminator="\n")
    w.writerow(COLUMNS)
    w.writerows(rows)
    table = write_text(out / "utterances.tsv", buf.getvalue())
    print(f"wrote {table}: {len(rows)} clips of {len({r[2] for r in rows})} speakers")
    return table
