import numpy as np
import pytest
import torch

from vc.training.data import SegmentSampler, list_utterances
from vc.errors import VCError
from vc.pitch import features

from conftest import write_speakers


def test_folder_per_speaker_layout(tmp_path):
    write_speakers(tmp_path, n_speakers=2, n_clips=2)
    (tmp_path / "spk1" / "nested").mkdir()
    (tmp_path / "spk1" / "clip0.wav").rename(tmp_path / "spk1" / "nested" / "clip0.wav")
    (tmp_path / "spk0" / "notes.txt").write_text("ignored")
    utts = list_utterances(tmp_path)
    assert sorted((u.speaker, u.path.split("/")[-1]) for u in utts) == [
        ("spk0", "clip0.wav"), ("spk0", "clip1.wav"), ("spk1", "clip0.wav"), ("spk1", "clip1.wav")]


def test_utterances_tsv_layout(tmp_path):
    (tmp_path / "utterances.tsv").write_text("path\tspeaker\tgender\na/1.flac\tA\tF\nb/2.flac\tB\tM\n")
    utts = list_utterances(tmp_path)
    assert [(u.speaker, u.path) for u in utts] == [("A", str(tmp_path / "a/1.flac")), ("B", str(tmp_path / "b/2.flac"))]


def test_tsv_without_speaker_column(tmp_path):
    (tmp_path / "utterances.tsv").write_text("file\tname\nx.wav\tA\n")
    with pytest.raises(VCError, match="'path' and 'speaker'"):
        list_utterances(tmp_path)


def test_sampler_is_deterministic_and_takes_references_from_other_utterances():
    mels = [torch.full((4, 50), float(i)) for i in range(4)]
    f0s = [torch.full((50,), 100.0 * (i + 1)) for i in range(4)]
    sampler = SegmentSampler(mels, [0, 0, 1, 1], segment=20, seed=3, f0s=f0s)
    a, b = sampler.batch(7, 16), sampler.batch(7, 16)
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y)
    seg, ref, ids, pitch = a
    assert seg.shape == ref.shape == (16, 4, 20)
    # the pitch features are those of the segment's own utterance: log-F0 and a voiced flag
    assert pitch.shape == (16, 2, 20)
    torch.testing.assert_close(pitch[:, 0, 0], features(100.0 * (seg[:, 0, 0] + 1))[0])
    assert torch.all(pitch[:, 1] == 1)
    # the reference comes from the other utterance of the same speaker, never from the segment's own
    assert np.all(seg[:, 0, 0].numpy() != ref[:, 0, 0].numpy())
    assert np.all((seg[:, 0, 0] // 2).numpy() == ids.numpy())


def test_speaker_balance_draws_every_speaker_alike():
    # speaker 0 holds one long utterance, speakers 1 and 2 a short one each: by length speaker 0 takes most draws
    mels = [torch.zeros(4, 1000), torch.zeros(4, 100), torch.zeros(4, 100)]
    share = {}
    for balance in (0.0, 1.0):
        sampler = SegmentSampler(mels, [0, 1, 2], segment=50, seed=0, speaker_balance=balance)
        ids = torch.cat([sampler.batch(step, 64)[2] for step in range(50)])
        share[balance] = torch.bincount(ids, minlength=3).float() / len(ids)
    assert share[0.0][0] > 0.75
    assert torch.allclose(share[1.0], torch.full((3,), 1 / 3), atol=0.04)
