"""A deterministic generator of natural English sound captions, and the shipped corpus.

Captions are composed from the hand-written tables in ``models.synth.captions.phrases``: a
source ("a dog", "heavy rain", "someone"), a verb phrase conjugated to fit it ("barks",
"barking", "is typing on a keyboard"), optional adverbs ("twice", "in short bursts"),
settings ("on a busy street", "at night", "echoing in a large hall") and two-source
combinations ("X while Y", "X followed by Y", "X with Y in the background").

The shipped file ``sound_captions.txt`` is ``build_sound_captions()`` (n=3000, seed=0),
one caption a line. Regenerate it with:

    python -m models.synth.captions.sound_captions
"""

from __future__ import annotations

import random
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from models.synth.captions import phrases as V
from models.synth.captions.phrases import SOURCES, Noun, Source

SHIPPED_CAPTIONS = Path(__file__).with_name("sound_captions.txt")
MIN_WORDS, MAX_WORDS = 3, 20

_DOUBLED = frozenset({"unzip"})  # stressed final syllable: doubles despite two vowel groups
_IRREGULAR = {"have": ("has", "having"), "mimic": ("mimics", "mimicking")}
_VOWELS = "aeiou"

# Single-source templates and their weights; two-source templates are drawn uniformly.
SINGLE_TEMPLATES = {
    "gerund": 18, "present": 15, "progressive": 7, "heard": 4, "sound_of": 9, "fronted": 10,
    "attributive": 8, "label": 12, "phrase": 8, "agentless": 8,
}  # fmt: skip
COMBINATION_TEMPLATES = ("while", "followed_by", "background", "and", "as", "then", "over")
_FORM_OF = {"gerund": "ger", "present": "pres", "progressive": "prog"}


@dataclass(frozen=True)
class Caption:
    """A generated caption with the sources, families and template that made it."""

    text: str
    sources: tuple[str, ...]
    families: tuple[str, ...]
    template: str


@dataclass(frozen=True)
class _NounPhrase:
    text: str  # with its determiner: "a small dog", "heavy rain", "someone"
    bare: str  # without one: "small dog"
    number: str  # s (singular), p (plural), m (mass), n (fixed singular phrase)
    noun: Noun


def indefinite_article(word: str) -> str:
    """``a`` or ``an`` for the word that follows it (by sound, for the common cases)."""
    word = word.lower()
    if word.startswith(("uni", "use", "usu", "uk", "one", "eu", "ewe")):
        return "a"
    if word.startswith(("hour", "honest", "heir", "honor")):
        return "an"
    return "an" if word[:1] in _VOWELS else "a"


def third_person(verb: str) -> str:
    """The third-person singular present of a base-form verb: bark → barks, buzz → buzzes."""
    if verb in _IRREGULAR:
        return _IRREGULAR[verb][0]
    if verb.endswith(("s", "sh", "ch", "x", "z")) or (
        verb.endswith("o") and verb[-2:-1] not in _VOWELS
    ):
        return verb + "es"
    if verb.endswith("y") and verb[-2:-1] not in _VOWELS:
        return verb[:-1] + "ies"
    return verb + "s"


def _vowel_groups(word: str) -> int:
    groups, previous = 0, False
    for char in word:
        vowel = char in _VOWELS
        groups += vowel and not previous
        previous = vowel
    return groups


def gerund(verb: str) -> str:
    """The ``-ing`` form of a base-form verb: bark → barking, hum → humming, idle → idling."""
    if verb in _IRREGULAR:
        return _IRREGULAR[verb][1]
    if verb.endswith("ie"):
        return verb[:-2] + "ying"
    if verb.endswith("e") and not verb.endswith(("ee", "ye", "oe")) and len(verb) > 2:
        return verb[:-1] + "ing"
    cvc = (
        len(verb) >= 3
        and verb[-1] not in _VOWELS + "wxy"
        and verb[-2] in _VOWELS
        and verb[-3] not in _VOWELS
    )
    if verb in _DOUBLED or (cvc and _vowel_groups(verb) == 1):
        return verb + verb[-1] + "ing"
    return verb + "ing"


def _conjugate(phrase: str, form: str, number: str, adverb: str = "") -> str:
    """``phrase`` ("knock on a door") as present (``pres``) or ``-ing`` (``ger``) with an adverb."""
    verb, _, rest = phrase.partition(" ")
    if form == "ger":
        verb = gerund(verb)
    elif number != "p":
        verb = third_person(verb)
    if not adverb:
        return f"{verb} {rest}".strip()
    if rest.split(" ", 1)[0] in V.PREPOSITIONS and " " not in adverb:
        return f"{verb} {adverb} {rest}"
    return f"{verb} {rest} {adverb}".replace("  ", " ")


def _placed(phrase: str) -> bool:
    return any(word in V.PLACE_WORDS for word in phrase.split()[1:])


class _Composer:
    """Draws one caption at a time from a seeded ``random.Random``."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.by_family = {f: tuple(s for s in SOURCES if s.family == f) for f in V.FAMILIES}
        self.partners = {s.key: tuple(o for o in SOURCES if _compatible(s, o)) for s in SOURCES}

    def chance(self, p: float) -> bool:
        return self.rng.random() < p

    def source(self) -> Source:
        return self.rng.choice(self.by_family[self.rng.choice(V.FAMILIES)])

    def noun_phrase(self, source: Source, adjective: bool = True) -> _NounPhrase:
        noun = self.rng.choice(source.nouns)
        bare = noun.text
        if (
            adjective
            and noun == source.nouns[0]
            and noun.number != "n"
            and source.family not in V.NO_ADJECTIVE_FAMILIES
            and source.key not in V.NO_ADJECTIVE_SOURCES
            and (source.kind not in "vm" or noun.number == "m")
            and self.chance(0.2)
        ):
            choices = V.ANIMAL_ADJECTIVES if source.family == "animals" else V.ADJECTIVES
            bare = f"{self.rng.choice(choices)} {bare}"
        if noun.number == "s":
            det = "the" if self.chance(0.35) else indefinite_article(bare)
        elif noun.number in "pm" and self.chance(0.15):
            det = "the"
        else:
            det = ""
        return _NounPhrase(f"{det} {bare}".strip(), bare, noun.number, noun)

    def verb(self, source: Source, np: _NounPhrase) -> str:
        words = np.bare.split()
        usable = [v for v in source.verbs if not _echoes(v.split()[0], words)]
        return self.rng.choice(usable or list(source.verbs))

    def adverb(self, source: Source, phrase: str, p: float, progressive: bool = False) -> str:
        if not self.chance(p):
            return ""
        words = phrase.split()
        one_off = (
            words[0] in V.ONE_OFF_VERBS
            or words[-1] in V.ONE_OFF_ENDINGS
            or not V.ONE_OFF_PARTICLES.isdisjoint(words[1:])
        )
        options = [
            a
            for a in (V.MANNER_ADVERBS if one_off else source.adverbs)
            if not set(a.split()) & set(phrase.split())
            and not (progressive and a in V.COUNT_ADVERBS)
        ]
        return self.rng.choice(options) if options else ""

    def setting(self, sources: Sequence[Source], placed: bool = False) -> str:
        pools: list[tuple[float, Sequence[str]]] = []
        shared = set.intersection(*(set(s.envs) for s in sources))
        if not placed and shared:
            env_settings = [x for env in sorted(shared) for x in V.ENV_SETTINGS[env]]
            pools.append((0.5, env_settings))
        far = any("sky" in s.envs for s in sources)
        pools.append((0.2, [d for d in V.DISTANCE_SETTINGS if not (far and d in V.NEAR_SETTINGS)]))
        pools.append((0.15, V.TIME_SETTINGS))
        if all(s.outdoor for s in sources):
            pools.append((0.15, V.OUTDOOR_ACOUSTICS))
        elif all(s.indoor for s in sources):
            pools.append((0.15, V.INDOOR_ACOUSTICS))
        weights = [w for w, _ in pools]
        return self.rng.choice(self.rng.choices(pools, weights)[0][1])

    def clause(self, source: Source, form: str, adverb_p: float = 0.3) -> tuple[str, bool]:
        """A subject and its verb phrase: ("a dog barking twice", placed?)."""
        np = self.noun_phrase(source)
        verb = self.verb(source, np)
        adverb = self.adverb(source, verb, adverb_p, progressive=form == "prog")
        if form == "prog":
            aux = "are" if np.number == "p" else "is"
            return f"{np.text} {aux} {_conjugate(verb, 'ger', np.number, adverb)}", _placed(verb)
        return f"{np.text} {_conjugate(verb, form, np.number, adverb)}", _placed(verb)

    def attributive(self, source: Source) -> str | None:
        """ "a barking dog", "falling rain": a one-word verb in front of a one-word noun."""
        nouns = [n for n in source.nouns if " " not in n.text and n.number != "n"]
        verbs = [v for v in source.verbs if " " not in v and v not in V.NOT_ATTRIBUTIVE]
        if not nouns or not verbs:
            return None
        noun, verb = self.rng.choice(nouns), self.rng.choice(verbs)
        if _echoes(verb, [noun.text]):
            return None
        phrase = f"{gerund(verb)} {noun.text}"
        if noun.number == "s":
            return f"{indefinite_article(phrase)} {phrase}"
        return phrase

    def phrase(self, source: Source) -> str | None:
        """ "footsteps on gravel": a noun and a verbless phrase."""
        if not source.phrases:
            return None
        return f"{self.noun_phrase(source).text} {self.rng.choice(source.phrases)}"

    def background(self, source: Source) -> str | None:
        """What a second source can be in "with ... in the background" or "followed by ..."."""
        pick = self.rng.random()
        if pick < 0.2:
            return self.phrase(source) or self.attributive(source)
        if pick < 0.4:
            np = self.noun_phrase(source, adjective=False)
            if np.number in "pm":
                return np.text
        if pick < 0.55:
            return self.attributive(source)
        return self.clause(source, "ger", adverb_p=0.15)[0]

    def single_text(self, template: str, s: Source) -> tuple[str | None, bool]:
        """One source's caption in ``template``, and whether it already says where."""
        if template in _FORM_OF:
            return self.clause(s, _FORM_OF[template], 0.35 if template == "progressive" else 0.45)
        if template == "attributive":
            return self.attributive(s), False
        if template == "phrase":
            return self.phrase(s), True
        if template == "sound_of":
            words = self.rng.choice(V.SOUND_WORDS)
            if s.phrases and self.chance(0.3):
                return f"{words} {self.phrase(s)}", True
            text, placed = self.clause(s, "ger", 0.3)
            return f"{words} {text}", placed
        if template == "fronted":  # "in the distance, a dog barks"
            text, placed = self.clause(s, "pres", 0.3)
            return f"{self.setting([s], placed)}, {text}", placed
        if template == "heard":
            np = self.noun_phrase(s)
            verb = self.verb(s, np)
            aux = self.rng.choice(("can be", "are" if np.number == "p" else "is"))
            return f"{np.text} {aux} heard {_conjugate(verb, 'ger', np.number)}", _placed(verb)
        if template == "label":  # class-name style, no determiner: "dog barking"
            nouns = [n for n in s.nouns if n.number != "n"]
            if not nouns:
                return None, False
            noun = self.rng.choice(nouns)
            verb = self.verb(s, _NounPhrase(noun.text, noun.text, noun.number, noun))
            adverb = self.adverb(s, verb, 0.3)
            return f"{noun.text} {_conjugate(verb, 'ger', noun.number, adverb)}", _placed(verb)
        # agentless, for sources done by someone: "typing quickly on a keyboard"
        if not any(n.number == "n" for n in s.nouns):
            return None, False
        verb = self.rng.choice(s.verbs)
        return _conjugate(verb, "ger", "n", self.adverb(s, verb, 0.4)), _placed(verb)

    def single(self, source: Source) -> tuple[str | None, str]:
        names, weights = zip(*SINGLE_TEMPLATES.items(), strict=True)
        template = self.rng.choices(names, weights)[0]
        text, placed = self.single_text(template, source)
        if text is None:
            return None, template
        if template != "fronted" and self.chance(0.6 if template != "label" else 0.8):
            setting = self.setting([source], placed)
            text = f"{text} {setting}"
            if not placed and setting not in V.TIME_SETTINGS and self.chance(0.12):
                text = f"{text} {self.rng.choice(V.TIME_SETTINGS)}"
        return text, template

    def combination(self, a: Source, b: Source) -> tuple[str | None, str]:
        template = self.rng.choice(COMBINATION_TEMPLATES)
        second: str | None
        if template == "while":
            first, second = self.clause(a, "ger")[0], self.clause(b, self.rng.choice(_FORMS))[0]
        elif template in ("as", "then"):
            first, second = self.clause(a, "pres")[0], self.clause(b, "pres")[0]
        elif template == "and":
            first, second = self.clause(a, "ger")[0], self.clause(b, "ger", 0.15)[0]
        elif template == "over":
            first, second = self.clause(a, "ger")[0], self.background(b)
            if second is not None and self.chance(0.5):
                second = f"the sound of {second}"
        else:
            first, second = self.clause(a, "ger")[0], self.background(b)
        if second is None:
            return None, template
        joiner = {"followed_by": "followed by", "background": "with", "then": "and then"}
        text = f"{first} {joiner.get(template, template)} {second}"
        if template == "background":
            text += " in the background"
        if self.chance(0.3):
            text = f"{text} {self.setting([a, b], placed=True)}"
        return text, template

    def caption(self) -> Caption | None:
        a = self.source()
        if self.chance(0.25):
            b = self.rng.choice(self.partners[a.key])
            text, template = self.combination(a, b)
            chosen: tuple[Source, ...] = (a, b)
        else:
            (text, template), chosen = self.single(a), (a,)
        if text is None or not _acceptable(text):
            return None
        families = tuple(dict.fromkeys(s.family for s in chosen))
        return Caption(text, tuple(s.key for s in chosen), families, template)


_FORMS = ("pres", "pres", "prog")


def _echoes(verb: str, words: Sequence[str]) -> bool:
    """True when a verb repeats its own noun: "a blender blends", "a doorbell chimes"."""
    return len(verb) >= 3 and any(verb in w or w.startswith(verb[:4]) for w in words)


def _compatible(a: Source, b: Source) -> bool:
    if a.key == b.key:
        return False
    if set(a.envs) & set(b.envs):
        return True
    sky = "sky" in a.envs or "sky" in b.envs
    return sky and any(e in V.OUTDOOR for e in a.envs) and any(e in V.OUTDOOR for e in b.envs)


def _acceptable(text: str) -> bool:
    words = text.replace(",", "").split()
    if not MIN_WORDS <= len(words) <= MAX_WORDS:
        return False
    vocabulary = set(words)
    if (vocabulary & V.LOUD and vocabulary & V.QUIET) or (
        vocabulary & V.FAR and vocabulary & V.NEAR
    ):
        return False
    content = [w for w in words if len(w) >= 3 and w not in V.REPEATABLE]
    return len(content) == len(set(content))


def build_caption_records(n: int = 3000, seed: int = 0) -> list[Caption]:
    """``n`` distinct captions with their provenance, from ``random.Random(seed)`` alone."""
    composer = _Composer(random.Random(seed))
    seen: set[str] = set()
    records: list[Caption] = []
    for _ in range(200 * max(n, 1)):
        if len(records) == n:
            return records
        record = composer.caption()
        if record is not None and record.text not in seen:
            seen.add(record.text)
            records.append(record)
    if len(records) == n:
        return records
    raise RuntimeError(f"could only compose {len(records)} distinct captions, not {n}")


def build_sound_captions(n: int = 3000, seed: int = 0) -> list[str]:
    """``n`` distinct, lower-case English sound captions; the same list for the same seed."""
    return [record.text for record in build_caption_records(n, seed)]


def load_sound_captions(path: Path | None = None) -> list[str]:
    """The captions in ``path`` (default: the shipped corpus), one a line, blanks skipped."""
    text = (path or SHIPPED_CAPTIONS).read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if line.strip()]


def write_sound_captions(path: Path = SHIPPED_CAPTIONS, n: int = 3000, seed: int = 0) -> Path:
    """Write ``build_sound_captions(n, seed)`` to ``path``, one caption a line."""
    path.write_text("\n".join(build_sound_captions(n, seed)) + "\n", encoding="utf-8")
    return path


def main(argv: Sequence[str] | None = None) -> int:
    """Rewrite the shipped corpus: ``python -m models.synth.captions.sound_captions``."""
    if argv is None:
        argv = sys.argv[1:]
    if argv:
        print("usage: python -m models.synth.captions.sound_captions", file=sys.stderr)
        return 2
    path = write_sound_captions()
    print(f"wrote {len(load_sound_captions(path))} captions to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
