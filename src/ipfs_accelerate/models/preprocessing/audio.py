"""Audio input for Whisper: reading, downmixing, resampling and the log-mel spectrogram.

* :func:`load_audio` reads WAV/FLAC (anything libsndfile reads) through ``soundfile``, or
  takes a numpy array with its sampling rate. Documented handling of what Whisper cannot take
  directly: several channels are **downmixed** by averaging them; another sampling rate is
  **resampled** to 16 kHz with a windowed-sinc (Kaiser) low-pass resampler; integer samples
  are scaled to [-1, 1]. Empty audio, NaN/inf samples, an array without its sampling rate and
  undecodable files raise PreprocessingError, and so does audio outside the bounds (sampling
  rate 1 Hz..384 kHz, a sample count, optionally a duration), checked from a file's header
  before its samples are read and before resampling allocates.
* :class:`WhisperFeatureExtractor` computes Whisper's log-mel spectrogram in numpy, matching
  Hugging Face's ``WhisperFeatureExtractor``: audio zero-padded (or cut) to 30 s, STFT with a
  periodic Hann window (n_fft 400, hop 160, centred with reflect padding), power spectrum,
  Slaney-normalised mel filters (80 or 128 bins, 0-8 kHz), ``log10`` clamped at 1e-10,
  dynamic range limited to 8 (decades) below the maximum, then ``(x + 4) / 4``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from ipfs_accelerate.errors import CheckpointError, PreprocessingError

__all__ = [
    "DEFAULT_MAX_SAMPLES",
    "MAX_SAMPLING_RATE",
    "MIN_SAMPLING_RATE",
    "WhisperFeatureExtractor",
    "load_audio",
    "mel_filter_bank",
    "read_audio",
    "resample",
]

Array = np.ndarray[Any, Any]

SAMPLING_RATE = 16000

#: the sampling rates accepted (a file's, an array's, a target): 1 Hz to 384 kHz, the highest
#: rate audio hardware records at
MIN_SAMPLING_RATE = 1
MAX_SAMPLING_RATE = 384_000

#: default bound on decoded samples (frames x channels) and on resampled samples: 2**28 samples
#: are 1 GiB of float32, 4.6 hours at 16 kHz
DEFAULT_MAX_SAMPLES = 1 << 28

#: more than this many "channels" means the array is (channels, samples), not (samples, channels)
_MAX_CHANNELS = 8


def load_audio(
    source: Any,
    sampling_rate: int | None = None,
    *,
    target_rate: int = SAMPLING_RATE,
    max_seconds: float | None = None,
    max_samples: int = DEFAULT_MAX_SAMPLES,
) -> Array:
    """``source`` as mono float32 samples at ``target_rate``.

    ``source`` is a path to an audio file, a numpy array (``sampling_rate`` required) of shape
    (samples,) or (samples, channels), a ``(array, sampling_rate)`` tuple, or a dict with
    ``"array"``/``"raw"`` and ``"sampling_rate"`` (the Hugging Face datasets layout).

    Bounds, checked before reading or resampling allocates (PreprocessingError naming the
    size): every sampling rate (a file's, an array's, ``target_rate``) within
    :data:`MIN_SAMPLING_RATE`..:data:`MAX_SAMPLING_RATE` Hz; at most ``max_seconds`` of audio
    (no bound when None); at most ``max_samples`` decoded samples (frames x channels) and as
    many resampled samples.
    """
    _check_rate(target_rate, "load_audio()", "target_rate")
    _check_bounds(max_seconds, max_samples)
    if isinstance(source, tuple) and len(source) == 2:
        source, sampling_rate = source
    elif isinstance(source, Mapping):
        data = source.get("array", source.get("raw"))
        if data is None or "sampling_rate" not in source:
            raise PreprocessingError("audio dict needs 'array' (or 'raw') and 'sampling_rate'")
        source, sampling_rate = data, source["sampling_rate"]
    if isinstance(source, str | os.PathLike):
        samples, rate = read_audio(Path(source), max_seconds=max_seconds, max_samples=max_samples)
        name = str(source)
    elif isinstance(source, np.ndarray):
        if sampling_rate is None:
            raise PreprocessingError(
                "audio array given without its sampling rate; pass sampling_rate=... (Whisper "
                "needs 16000 Hz audio "
                "and resamples anything else)"
            )
        samples, rate, name = source, sampling_rate, "audio array"
        _check_rate(rate, name, "sampling rate")
        frames = samples.shape[0] if samples.ndim else 1
        _check_length(name, frames, samples.size, int(rate), max_seconds, max_samples)
    else:
        raise PreprocessingError(
            f"audio must be a file path or a numpy array, got {type(source).__name__}"
        )
    mono = _to_mono_float(samples, name)
    resampled = math.ceil(len(mono) * target_rate / int(rate))
    if resampled > max_samples:
        raise PreprocessingError(
            f"{name}: resampling {len(mono)} samples from {int(rate)} Hz to {target_rate} Hz "
            f"makes {resampled} samples, over the bound of {max_samples} (max_samples)"
        )
    return resample(mono, int(rate), target_rate)


def read_audio(
    source: Path | BinaryIO,
    *,
    name: str | None = None,
    max_seconds: float | None = None,
    max_samples: int = DEFAULT_MAX_SAMPLES,
    sampling_rates: tuple[int, int] = (MIN_SAMPLING_RATE, MAX_SAMPLING_RATE),
) -> tuple[Array, int]:
    """An audio file (a path or a binary file object; anything libsndfile reads) as float32
    samples (frames, channels) and its sampling rate. The header's rate must lie in
    ``sampling_rates`` and its length within ``max_seconds`` and ``max_samples`` (frames x
    channels) before the samples are read (PreprocessingError otherwise)."""
    try:
        import soundfile
    except ImportError as exc:  # pragma: no cover - in the models extra
        raise PreprocessingError("reading audio files needs the soundfile package") from exc
    _check_bounds(max_seconds, max_samples)
    is_path = isinstance(source, Path)
    label = name or (repr(str(source)) if is_path else "the audio file")
    if isinstance(source, Path) and not source.exists():
        raise PreprocessingError(f"audio file {str(source)!r} does not exist")
    try:
        with soundfile.SoundFile(str(source) if is_path else source) as sound:
            rate, frames, channels = int(sound.samplerate), int(sound.frames), sound.channels
            _check_rate(rate, label, "sampling rate", sampling_rates)
            _check_length(label, frames, frames * channels, rate, max_seconds, max_samples)
            data = sound.read(dtype="float32", always_2d=True)
    except PreprocessingError:
        raise
    except Exception as exc:  # soundfile raises LibsndfileError/RuntimeError/TypeError on bad data
        # a file object's own repr would name this process's objects: only paths are echoed
        detail = f": {exc}" if is_path else ""
        raise PreprocessingError(
            f"cannot decode audio file {label} (it could not be decoded as WAV, FLAC, OGG or "
            f"MP3{detail})"
        ) from None
    return data, rate


def _check_rate(
    rate: Any,
    name: str,
    what: str,
    allowed: tuple[int, int] = (MIN_SAMPLING_RATE, MAX_SAMPLING_RATE),
) -> None:
    if isinstance(rate, bool) or not isinstance(rate, int | np.integer) or rate <= 0:
        raise PreprocessingError(f"{name}: {what} must be a positive int, got {rate!r}")
    low, high = allowed
    if not low <= rate <= high:
        raise PreprocessingError(
            f"{name}: {what} {int(rate)} Hz is outside the supported range {low}..{high} Hz"
        )


def _check_bounds(max_seconds: float | None, max_samples: int) -> None:
    if max_seconds is not None and (
        isinstance(max_seconds, bool)
        or not isinstance(max_seconds, int | float)
        or not max_seconds > 0
    ):
        raise PreprocessingError(f"max_seconds must be a positive number, got {max_seconds!r}")
    if isinstance(max_samples, bool) or not isinstance(max_samples, int) or max_samples < 1:
        raise PreprocessingError(f"max_samples must be a positive int, got {max_samples!r}")


def _check_length(
    name: str,
    frames: int,
    samples: int,
    rate: int,
    max_seconds: float | None,
    max_samples: int,
) -> None:
    if max_seconds is not None and frames > max_seconds * rate:
        raise PreprocessingError(
            f"{name}: {frames / rate:.1f} s of audio ({frames} frames at {rate} Hz) is longer "
            f"than the bound of {max_seconds:g} s"
        )
    if samples > max_samples:
        raise PreprocessingError(
            f"{name}: {samples} samples (frames x channels) exceed the bound of {max_samples} "
            "(max_samples)"
        )


def _to_mono_float(samples: Array, name: str) -> Array:
    array = np.asarray(samples)
    if array.ndim == 2:
        if array.shape[1] > _MAX_CHANNELS:
            raise PreprocessingError(
                f"{name}: shape {array.shape} reads as {array.shape[1]} channels; 2-D audio must "
                "be "
                "(samples, channels): transpose a (channels, samples) array"
            )
        array = (
            array.mean(axis=1, dtype=np.float64)
            if array.dtype.kind == "f"
            else _scale_int(array, name).mean(axis=1)
        )
    elif array.ndim != 1:
        raise PreprocessingError(
            f"{name}: audio must be 1-D (samples) or 2-D (samples, channels), got shape "
            f"{array.shape}"
        )
    if array.dtype.kind in "iu":
        array = _scale_int(array, name)
    elif array.dtype.kind != "f":
        raise PreprocessingError(f"{name}: unsupported sample dtype {array.dtype}")
    if array.size == 0:
        raise PreprocessingError(f"{name}: the audio is empty")
    if not np.isfinite(array).all():
        raise PreprocessingError(f"{name}: the audio contains NaN or infinite samples")
    return array.astype(np.float32, copy=False)


def _scale_int(array: Array, name: str) -> Array:
    if array.dtype.kind == "u":
        info = np.iinfo(array.dtype)
        middle = (int(info.max) + 1) / 2
        return (array.astype(np.float64) - middle) / middle
    if array.dtype.kind == "i":
        return array.astype(np.float64) / float(-np.iinfo(array.dtype).min)
    raise PreprocessingError(f"{name}: unsupported sample dtype {array.dtype}")  # pragma: no cover


# ----------------------------------------------------------------------------- resampling

_ZERO_CROSSINGS = 16
_KAISER_BETA = 8.6
#: elements of the (outputs x taps) window gathered at once: bounds the working memory
_WINDOW_ELEMENTS = 1 << 21
#: at most this many filter phases, and at most this many table entries (phases x taps), are
#: tabulated; finer phases are rounded to the nearest tabulated one (a timing error under
#: 4e-4 of an input sample, far below what a 16-zero-crossing Kaiser filter resolves), so an
#: awkward rate pair (383,999 -> 16,000 Hz: 16,000 exact phases of 769 taps) costs a small
#: table instead of a gigabyte
_MAX_PHASES = 4096
_TABLE_ELEMENTS = 1 << 20


def resample(samples: Array, orig_rate: int, target_rate: int) -> Array:
    """Band-limited resampling of mono ``samples`` from ``orig_rate`` to ``target_rate`` Hz.

    Each output sample is a windowed-sinc (Kaiser, 16 zero crossings) interpolation of the
    input at its rational position (exact for the usual rate pairs, such as 44.1/48/8 kHz to
    16 kHz; for pairs with thousands of phases rounded to a fine tabulated one); when downsampling
    the sinc's cutoff is the new Nyquist frequency, so content above it is filtered out
    instead of aliasing. The output has ``ceil(len * target / orig)`` samples. Working memory
    is bounded whatever the rates: the filter table and one block of windows.
    """
    _check_rate(orig_rate, "resample()", "orig_rate")
    _check_rate(target_rate, "resample()", "target_rate")
    if orig_rate == target_rate:
        return samples
    g = math.gcd(orig_rate, target_rate)
    up, down = target_rate // g, orig_rate // g
    cutoff = min(1.0, up / down)  # in units of the input Nyquist frequency
    half = math.ceil(_ZERO_CROSSINGS / cutoff)
    taps = np.arange(-half, half + 1, dtype=np.float64)
    phase_count = min(up, _MAX_PHASES, max(64, _TABLE_ELEMENTS // len(taps)))
    # phase p: the output sample sits p/phase_count of an input sample after its left neighbour
    phases = np.arange(phase_count, dtype=np.float64)[:, None] / phase_count
    weights = _kaiser_weights(taps[None, :] - phases, half, cutoff)
    weights /= weights.sum(axis=1, keepdims=True)  # unit gain at DC for every phase
    count = math.ceil(len(samples) * up / down)
    # float32 like the input (a second float64 copy of a long recording would double it);
    # each block's window is widened to float64 by the product with the weights
    padded = np.concatenate(
        [np.zeros(half, np.float32), samples.astype(np.float32), np.zeros(half + 2, np.float32)]
    )
    gather = (taps.astype(np.int64) + half)[None, :]
    block = max(256, _WINDOW_ELEMENTS // len(taps))
    out = np.empty(count, dtype=np.float32)
    for start in range(0, count, block):
        n = np.arange(start, min(start + block, count), dtype=np.int64)
        left, rest = np.divmod(n * down, up)
        if phase_count == up:
            phase = rest
        else:  # the nearest tabulated phase; the last one rounds up to the next sample
            phase = (rest * phase_count + up // 2) // up
            left = left + phase // phase_count
            phase %= phase_count
        window = padded[left[:, None] + gather]
        out[start : start + len(n)] = np.einsum(
            "ij,ij->i", window, weights[phase], dtype=np.float64
        )
    return out


def _kaiser_weights(offsets: Array, half: int, cutoff: float) -> Array:
    """Kaiser-windowed sinc at fractional ``offsets`` (input samples) within +-(half + 1)."""
    ratio = np.clip(offsets / (half + 1), -1.0, 1.0)
    window = np.i0(_KAISER_BETA * np.sqrt(1.0 - ratio**2)) / np.i0(_KAISER_BETA)
    result: Array = cutoff * np.sinc(cutoff * offsets) * window
    return result


# ----------------------------------------------------------------------------- log-mel features


def _hertz_to_mel(freq: Array) -> Array:
    """Slaney's mel scale: linear below 1 kHz, logarithmic above."""
    freq = np.asarray(freq, dtype=np.float64)
    mels = 3.0 * freq / 200.0
    logstep = 27.0 / np.log(6.4)
    above = freq >= 1000.0
    mels = np.where(above, 15.0 + np.log(np.maximum(freq, 1e-10) / 1000.0) * logstep, mels)
    return mels


def _mel_to_hertz(mels: Array) -> Array:
    mels = np.asarray(mels, dtype=np.float64)
    freq = 200.0 * mels / 3.0
    logstep = np.log(6.4) / 27.0
    return np.where(mels >= 15.0, 1000.0 * np.exp(logstep * (mels - 15.0)), freq)


def mel_filter_bank(
    n_mels: int, *, n_fft: int = 400, sampling_rate: int = SAMPLING_RATE, fmax: float = 8000.0
) -> Array:
    """Slaney-style triangular mel filters with area normalisation, (n_fft // 2 + 1, n_mels)."""
    fft_freqs = np.linspace(0, sampling_rate // 2, n_fft // 2 + 1)
    mel_points = np.linspace(
        _hertz_to_mel(np.array(0.0)), _hertz_to_mel(np.array(fmax)), n_mels + 2
    )
    edges = _mel_to_hertz(mel_points)
    widths = np.diff(edges)
    slopes = edges[None, :] - fft_freqs[:, None]
    down = -slopes[:, :-2] / widths[:-1]
    up = slopes[:, 2:] / widths[1:]
    filters = np.maximum(0.0, np.minimum(down, up))
    filters *= (2.0 / (edges[2 : n_mels + 2] - edges[:n_mels]))[None, :]
    return filters


@dataclass
class WhisperFeatureExtractor:
    """Log-mel features of 30 s windows: ``extractor([audio, ...]) -> (B, n_mels, 3000)``."""

    feature_size: int = 80
    sampling_rate: int = SAMPLING_RATE
    hop_length: int = 160
    chunk_length: int = 30
    n_fft: int = 400

    def __post_init__(self) -> None:
        self._filters = mel_filter_bank(
            self.feature_size, n_fft=self.n_fft, sampling_rate=self.sampling_rate
        )
        n = np.arange(self.n_fft, dtype=np.float64)
        self._window = 0.5 - 0.5 * np.cos(2.0 * np.pi * n / self.n_fft)  # periodic Hann

    @classmethod
    def from_dict(
        cls, data: Mapping[str, Any], *, source: str = "preprocessor_config.json"
    ) -> WhisperFeatureExtractor:
        values = {}
        for key in ("feature_size", "sampling_rate", "hop_length", "chunk_length", "n_fft"):
            if data.get(key) is not None:
                value = data[key]
                if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                    raise CheckpointError(f"{source}: {key} must be a positive int, got {value!r}")
                values[key] = value
        return cls(**values)

    @classmethod
    def from_checkpoint(cls, directory: Path) -> WhisperFeatureExtractor:
        from ipfs_accelerate.models.loading import read_json

        path = directory / "preprocessor_config.json"
        if not path.exists():
            raise CheckpointError(
                f"{path}: missing; speech recognition needs the checkpoint's "
                "preprocessor_config.json"
            )
        return cls.from_dict(read_json(path), source=str(path))

    @property
    def n_samples(self) -> int:
        """Samples per window (30 s at 16 kHz: 480000)."""
        return self.chunk_length * self.sampling_rate

    def __call__(self, audio: Array | list[Array]) -> Array:
        """Features (B, feature_size, n_samples // hop_length) float32 of mono 16 kHz audio
        (each at most one window)."""
        batch = [audio] if isinstance(audio, np.ndarray) else list(audio)
        if not batch:
            raise PreprocessingError("WhisperFeatureExtractor: no audio given")
        return np.stack([self._one(np.asarray(a), i) for i, a in enumerate(batch)]).astype(
            np.float32
        )

    def _one(self, samples: Array, index: int) -> Array:
        if samples.ndim != 1:
            raise PreprocessingError(
                f"audio {index}: features need mono samples (1-D), got shape {samples.shape}"
            )
        if len(samples) > self.n_samples:
            raise PreprocessingError(
                f"audio {index}: {len(samples)} samples exceed one {self.chunk_length} s window "
                f"({self.n_samples}); split longer audio into windows first (SpeechRecognizer does)"
            )
        signal = np.zeros(self.n_samples, dtype=np.float64)
        signal[: len(samples)] = samples
        return self._log_mel(signal)

    def whole(self, samples: Array) -> Array:
        """Features (feature_size, len(samples) // hop_length) float32 of mono 16 kHz audio of
        any length, unpadded and normalised over the whole recording, as transformers' extractor
        gives them with ``truncation=False, padding="longest"`` (long-form decoding slices its
        30 s windows out of these)."""
        if samples.ndim != 1:
            raise PreprocessingError(f"features need mono samples (1-D), got shape {samples.shape}")
        if len(samples) <= self.n_fft // 2:
            raise PreprocessingError(
                f"audio of {len(samples)} samples is too short for whole-recording features"
                f" (needs more than {self.n_fft // 2})"
            )
        return self._log_mel(samples.astype(np.float64)).astype(np.float32)

    def _log_mel(self, signal: Array) -> Array:
        half = self.n_fft // 2
        padded = np.pad(signal, half, mode="reflect")
        frames = np.lib.stride_tricks.sliding_window_view(padded, self.n_fft)[:: self.hop_length]
        spectrum = np.fft.rfft(frames * self._window, axis=-1)
        power = spectrum.real**2 + spectrum.imag**2  # (frames + 1, bins)
        mel = (
            self._filters.T @ power[:-1].T
        )  # (n_mels, frames); the last frame is dropped, as Whisper does
        log_spec = np.log10(np.maximum(mel, 1e-10))
        log_spec = np.maximum(log_spec, log_spec.max() - 8.0)
        result: Array = (log_spec + 4.0) / 4.0
        return result
