import shutil

import numpy as np
import pytest

from tfcourse.data import audio, speech

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed (apt-get install espeak-ng)")


@needs_espeak
def test_synthesised_keywords_are_one_second_16k_clips_grouped_by_voice(tmp_path):
    root = speech.synthesize_keywords(str(tmp_path / "kw"), words=("yes", "no"), voices=("en-us", "en-us+f3"),
                                      speeds=(160,), pitches=(40, 60))
    files = audio.scan_audio_folder(root)
    assert files.class_names == ["_background_", "no", "yes"] and len(files.files) == 12 and files.skipped == []
    assert sorted(set(files.groups.tolist())) == ["en-us", "en-us-f3"]
    waveform, rate = audio.read_wav(files.files[0])
    assert rate == 16000 and waveform.shape == (16000,)
    assert np.abs(waveform).max() > 0.05  # a word is in there, not only noise


@needs_espeak
def test_long_recording_truth_marks_where_words_are():
    waveform, truth = speech.long_recording(["go", "stop"], "en-us", seed=1)
    assert [w for _, _, w in truth] == ["go", "stop"]
    for start, end, _ in truth:
        inside = waveform[int(start * 16000) : int(end * 16000)]
        before = waveform[int((start - 0.3) * 16000) : int(start * 16000)]
        assert np.sqrt(np.mean(inside**2)) > 2 * np.sqrt(np.mean(before**2))  # speech is louder than the gap


def test_mix_sets_the_signal_to_noise_ratio():
    rng = np.random.default_rng(0)
    signal, noise = 0.1 * np.sin(np.arange(16000) / 5.0), rng.normal(0, 1, 16000)
    mixed = speech.mix(signal, noise, snr_db=10.0)
    added = mixed - signal
    assert 10 * np.log10(np.mean(signal**2) / np.mean(added**2)) == pytest.approx(10.0, abs=0.01)


def test_missing_espeak_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(Exception, match="espeak-ng is not installed"):
        speech.speak("yes", "en-us", 160, 50)
