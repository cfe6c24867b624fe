"""Deterministic varied sentences for the accuracy gates: lengths from two words to a
paragraph, several topics, punctuation, numbers, and words from other languages."""

from __future__ import annotations

import random

_TOPICS = {
    "food": "bread cheese soup recipe oven garlic pasta spicy breakfast market bakery",
    "sport": "football match goal referee stadium marathon tennis coach season league",
    "tech": "computer network database server kernel compiler battery screen robot cloud",
    "nature": "forest river mountain storm ocean desert glacier flower sunrise wolves",
    "finance": "bank loan interest stock market inflation budget invoice tax salary",
    "health": "doctor hospital fever vaccine sleep exercise diet patient nurse clinic",
    "travel": "train airport ticket hotel passport beach museum luggage border map",
    "music": "guitar concert album melody drummer orchestra lyrics violin choir song",
}
_VERBS = (
    "likes", "needs", "found", "bought", "lost", "visited", "fixed", "built", "sold",
    "watched", "cooked", "wrote",
)  # fmt: skip
_SUBJECTS = (
    "my sister", "the old man", "our team", "a student", "the company", "everyone", "she",
    "they",
)  # fmt: skip
_FOREIGN = (
    "Bonjour le monde", "Wie geht es dir?", "¿Dónde está la estación?", "Grazie mille",
    "東京は大きい都市です", "Привет, как дела?", "café au lait", "naïve façade",
    "Straße und Brücke", "São Paulo é enorme",
)  # fmt: skip
_PUNCT = (".", "!", "?", "...", ";", " :)", "")


def varied_sentences(count: int = 256, seed: int = 16) -> list[str]:
    """``count`` different sentences, the same on every run."""
    rng = random.Random(seed)
    topics = list(_TOPICS)
    out: list[str] = []
    while len(out) < count:
        words = _TOPICS[topics[len(out) % len(topics)]].split()
        shape = len(out) % 6
        if shape == 0:
            text = " ".join(rng.sample(words, 2))
        elif shape == 1:
            text = f"{rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} the {rng.choice(words)}"
        elif shape == 2:
            text = (
                f"In {rng.randint(1900, 2030)}, {rng.randint(2, 999)} people {rng.choice(_VERBS)}"
                f" {rng.randint(1, 50)}.{rng.randint(0, 99)}% of the {rng.choice(words)}"
            )
        elif shape == 3:
            text = f"{rng.choice(_FOREIGN)} - {rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} it"
        elif shape == 4:
            text = ", ".join(
                f"{rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} a {rng.choice(words)}"
                for _ in range(rng.randint(3, 9))
            )
        else:
            text = f'"{rng.choice(words).upper()}" (#{rng.randint(1, 9999)}) {rng.choice(words)}'
        text = text[0].upper() + text[1:] + rng.choice(_PUNCT)
        if text not in out:
            out.append(text)
    return out
