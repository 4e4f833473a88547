"""The Gradio demo: two clips in, the converted voice out, and pictures of what happened.

    python demo.py [--checkpoint PATH] [--port 7860] [--share] [--max-seconds 300]

It stays thin: everything it shows comes from the public `vc` API (`load_model`, `embed`, `convert`).
"""
from __future__ import annotations

import argparse
import os
import warnings
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # offline: no analytics calls home

import gradio as gr  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

import vc  # noqa: E402
from vc.audio import audio_seconds  # noqa: E402

EXAMPLES = Path(__file__).resolve().parent / "examples"
DEFAULT_MAX_SECONDS = 300.0


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a, b, dim=0))


def converter(model: vc.VoiceConverter, max_seconds: float, example_speakers: dict[str, torch.Tensor]):
    """The Convert button's function: the clips in; the converted audio and four figures out (`build_app`'s
    outputs, in order). Bad input raises `gr.Error` naming the clip by its role; warnings show and never block."""
    from vc import plots

    def check(path: str | None, role: str) -> str:
        if not path:
            raise gr.Error(f"Please upload or record a {role} clip.")
        seconds = audio_seconds(path)
        if seconds > max_seconds:
            raise gr.Error(f"The {role} clip is {seconds:.0f} s long; this demo takes up to {max_seconds:.0f} s.")
        return path

    def named(message: str, source, target, target2) -> str:
        """A message naming each clip by its role, not by its temporary upload path."""
        for path, role in ((source, "source"), (target, "target"), (target2, "second target")):
            if path:
                message = message.replace(str(path), f"{role} clip ({Path(path).name})")
        return message

    def convert(source, target, target2, mix, pitch_shift=0.0, match_pitch=True, timbre_match=None, dereverb=False):
        plots.plt.close("all")
        try:
            with warnings.catch_warnings(record=True) as caught:  # shown, never blocking (e.g. the input check)
                warnings.simplefilter("always", vc.VCWarning)
                check(source, "source")
                check(target, "target")
                voice = first = model.embed(target)
                if target2 and mix > 0:
                    check(target2, "second target")
                    voice = first.mix(model.embed(target2), mix)
                out = model.convert(source, voice, pitch_shift=float(pitch_shift or 0),
                                    match_pitch=bool(match_pitch), timbre_match=float(timbre_match),
                                    dereverb=bool(dereverb))
            for w in caught:
                if issubclass(w.category, vc.VCWarning):
                    gr.Warning(named(str(w.message), source, target, target2))
            clips = {"source": model.load(source), "target": model.load(target), "output": vc.audio.prepare(
                out, model.sample_rate, model.cfg.audio)}
        except vc.VCError as e:
            raise gr.Error(named(str(e), source, target, target2)) from None
        e_src, e_out = model.embed(clips["source"]).embedding, model.embed(clips["output"]).embedding
        points = {"source": e_src, "target": first.embedding}
        if target2 and mix > 0:
            points["target 2"] = model.embed(target2).embedding
        points["output"] = e_out
        sims = {"output ~ target": _cos(e_out, voice.embedding), "output ~ source": _cos(e_out, e_src)}
        audio = (model.sample_rate, (np.clip(out, -1, 1) * 32767).astype(np.int16))
        return (audio, plots.mel_figure(clips, model.cfg.audio),
                plots.f0_figure({k: clips[k] for k in ("source", "output", "target")}, model.sample_rate),
                plots.speaker_map(example_speakers, points), plots.similarity_figure(sims))

    return convert


def build_app(model: vc.VoiceConverter, max_seconds: float = DEFAULT_MAX_SECONDS) -> gr.Blocks:
    examples = sorted(EXAMPLES.glob("*.flac"))
    example_speakers = {p.stem: model.embed(p).embedding for p in examples}  # the map's reference points, computed once
    convert = converter(model, max_seconds, example_speakers)
    with gr.Blocks(title="vc: one-shot voice conversion") as app:
        gr.Markdown("# One-shot voice conversion\nThe **source** gives the words, the **target** gives the voice. "
                    "Neither speaker needs to be known to the model. Runs on the CPU.")
        with gr.Row():
            source = gr.Audio(sources=["upload", "microphone"], type="filepath", label="Source (what is said)",
                              elem_id="source-audio")
            target = gr.Audio(sources=["upload", "microphone"], type="filepath", label="Target (whose voice)",
                              elem_id="target-audio")
        with gr.Accordion("Voice mixing: blend in a second target", open=False):
            target2 = gr.Audio(sources=["upload", "microphone"], type="filepath", label="Second target (optional)")
            mix = gr.Slider(0.0, 1.0, value=0.0, step=0.05, label="Mix: 0 = first target only, 1 = second only")
        with gr.Row():
            match_pitch = gr.Checkbox(value=True, label="Match the target's pitch register",
                                      info="moves the source's melody into the target's range (off: keep the source's)")
            pitch_shift = gr.Slider(-12, 12, value=0, step=1, label="Pitch shift (semitones)")
            timbre_match = gr.Slider(0.0, 1.0, value=model.cfg.convert.timbre_match, step=0.1, label="Timbre match",
                                     info="moves the output's average spectrum toward the target's")
            dereverb = gr.Checkbox(value=False, label="Remove the source's room echo",
                                   info="for a source recorded at a distance in a reverberant room (slower)")
        button = gr.Button("Convert", variant="primary")
        output = gr.Audio(label="Converted", type="numpy", interactive=False, elem_id="output-audio")
        with gr.Row():
            similarity = gr.Plot(label="Speaker similarity of the output (the model's speaker encoder)")
            space = gr.Plot(label="Speaker space: example speakers (grey), this conversion (stars)")
        mels = gr.Plot(label="Mel spectrograms")
        f0 = gr.Plot(label="Pitch (F0) contours")
        if examples:
            names = {p.stem: str(p) for p in examples}
            pairs = [("m_TM1", "f_SF1"), ("f_SF1", "m_TM1"), ("f_1069", "m_1334"), ("m_1723", "f_1263")]
            gr.Examples([[names[a], names[b]] for a, b in pairs if a in names and b in names], inputs=[source, target],
                        label="Examples (source, target)")
        gr.Markdown(f"Clips up to {max_seconds:.0f} s. Example clips: LibriSpeech and VCC 2016 (CC BY 4.0), see "
                    "`examples/README.md`.")
        button.click(convert, [source, target, target2, mix, pitch_shift, match_pitch, timbre_match, dereverb],
                     [output, mels, f0, space, similarity],
                     api_name="convert", concurrency_limit=1)
    return app


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="The vc demo in the browser.")
    p.add_argument("--checkpoint", default=None, help="model checkpoint (default: checkpoints/default.pt)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on")
    p.add_argument("--port", type=int, default=7860, help="port to listen on")
    p.add_argument("--share", action="store_true", help="also make a public gradio.live link (needs the internet)")
    p.add_argument("--max-seconds", type=float, default=DEFAULT_MAX_SECONDS, help="longest clip accepted")
    p.add_argument("--max-file-size", default="25mb", help="largest upload accepted")
    args = p.parse_args(argv)
    try:
        model = vc.load_model(args.checkpoint)
    except vc.VCError as e:
        raise SystemExit(f"error: {e}") from None
    app = build_app(model, args.max_seconds)
    app.queue(max_size=16, default_concurrency_limit=1)  # 2 cores: one conversion at a time, the rest wait in line
    print(f"vc demo on http://{args.host}:{args.port}", flush=True)
    app.launch(server_name=args.host, server_port=args.port, share=args.share, max_file_size=args.max_file_size,
               allowed_paths=[str(EXAMPLES)], show_error=True)


if __name__ == "__main__":
    main()
