"""Spoken keywords synthesised with espeak-ng: an offline Speech Commands-style data set.

Each clip is one second at 16 kHz: a word spoken by one of several espeak-ng voices at several
speeds and pitches, placed at a random time, over background noise cut from real recordings
(or Gaussian noise where none are given, said so in the report). Files are named
`<voice>_nohash_<n>.wav` as in Speech Commands, so splits can keep each voice in one split.
"""

import os
import shutil
import subprocess
import tempfile

import numpy as np
import tensorflow as tf

from tfcourse import UserError
from tfcourse.data import audio

WORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
VOICES = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-us+f3", "en-gb+f4")
SPEEDS = (120, 160, 200)  # words per minute
PITCHES = (30, 50, 70)  # espeak-ng's 0-99 scale
CLIP_SAMPLES = audio.SAMPLE_RATE
BACKGROUND = "_background_"  # noise with no word, as Speech Commands' _silence_: lets a detector say "nothing"


def speak(word, voice, speed, pitch):
    """espeak-ng's rendering of `word` as a 16 kHz float waveform."""
    if shutil.which("espeak-ng") is None:
        raise UserError("espeak-ng is not installed; install it (Debian/Ubuntu: apt-get install espeak-ng).")
    with tempfile.TemporaryDirectory() as folder:  # --stdout writes a header without the length
        path = os.path.join(folder, "word.wav")
        subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", path, word],
                       check=True, capture_output=True)
        decoded = tf.audio.decode_wav(tf.io.read_file(path))
    return audio.resample(decoded.audio[:, 0], int(decoded.sample_rate)).numpy()


class NoiseSource:
    """Random stretches of real recordings, or Gaussian noise where there are none."""

    def __init__(self, noise_files, rng):
        self.rng = rng
        self.recordings = [np.asarray(audio.load_clip(f)) for f in noise_files]

    def __call__(self, samples):
        if not self.recordings:
            return self.rng.normal(0, 1, samples).astype("float32")
        recording = self.recordings[self.rng.integers(len(self.recordings))]
        start = self.rng.integers(0, max(1, len(recording) - samples))
        piece = np.resize(recording[start : start + samples], samples)
        return piece / (np.std(piece) + 1e-6)


def mix(speech, noise, snr_db):
    """speech + noise scaled to the signal-to-noise ratio `snr_db` (by RMS)."""
    speech_rms = np.sqrt(np.mean(speech**2)) + 1e-9
    return np.clip(speech + noise * speech_rms / 10 ** (snr_db / 20) / (np.sqrt(np.mean(noise**2)) + 1e-9), -1, 1)


def synthesize_keywords(root, noise_files=(), words=WORDS, voices=VOICES, speeds=SPEEDS, pitches=PITCHES,
                        snr_db=(5.0, 20.0), seed=0):
    """Writes root/<word>/<voice>_nohash_<n>.wav for every word, voice, speed and pitch, and as many
    noise-only clips per voice in root/_background_; returns root."""
    rng = np.random.default_rng(seed)
    noise = NoiseSource(noise_files, rng)
    for word in (BACKGROUND, *words):
        os.makedirs(os.path.join(root, word), exist_ok=True)
        n = 0
        for voice in voices:
            for speed in speeds:
                for pitch in pitches:
                    spoken = np.zeros(0, "float32") if word == BACKGROUND else speak(word, voice, speed, pitch)[:CLIP_SAMPLES]
                    clip = np.zeros(CLIP_SAMPLES, "float32")
                    start = rng.integers(0, CLIP_SAMPLES - len(spoken) + 1)
                    clip[start : start + len(spoken)] = spoken
                    clip = 0.1 * noise(CLIP_SAMPLES) if word == BACKGROUND else mix(clip, noise(CLIP_SAMPLES), rng.uniform(*snr_db))
                    name = f"{voice.replace('+', '-')}_nohash_{n}.wav"
                    tf.io.write_file(os.path.join(root, word, name), tf.audio.encode_wav(clip[:, None].astype("float32"), audio.SAMPLE_RATE))
                    n += 1
    return root


def long_recording(words, voice, noise_files=(), seconds_between=(0.6, 1.5), snr_db=15.0, seed=0):
    """A recording of `words` spoken one after another by `voice`, over noise.

    Returns (waveform, [(start seconds, end seconds, word)]): the ground truth for streaming.
    """
    rng = np.random.default_rng(seed)
    pieces, truth, position = [np.zeros(int(0.5 * audio.SAMPLE_RATE), "float32")], [], 0.5
    for word in words:
        spoken = speak(word, voice, 160, 50)
        truth.append((position, position + len(spoken) / audio.SAMPLE_RATE, word))
        gap = np.zeros(int(rng.uniform(*seconds_between) * audio.SAMPLE_RATE), "float32")
        pieces += [spoken, gap]
        position += (len(spoken) + len(gap)) / audio.SAMPLE_RATE
    speech = np.concatenate(pieces)
    return mix(speech, NoiseSource(noise_files, rng)(len(speech)), snr_db).astype("float32"), truth
