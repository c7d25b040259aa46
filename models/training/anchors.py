"""The anchors a fine-tune brings itself: what a model already knew, as captions (and, for
mmr-mini, pictures), for a collection that holds little or nothing of its old vocabulary.

A fine-tune keeps the learning heads' outputs on anchors where the current heads put them
(:mod:`models.training.finetune`), and checks retrieval on other anchors before and after.
Stored items of the collection are the first anchors (the job finds them); when there are
too few, the job adds these, encoded by the model's frozen towers at job time:

- ``mmr-mini``: captions of its own generated world, and for the check, generated scenes
  with their captions and renders, and which render each caption describes (exact labels);
- any other model: a general English caption list shipped in the package, what people write
  about photos (:func:`photo_captions`) and about sounds (the sound-caption corpus the audio
  bridge is trained on), texts only.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
from PIL import Image

from models.synth.captions.sound_captions import SHIPPED_CAPTIONS
from models.synth.world.images import caption_scene, render_scene, sample_scene
from models.synth.world.vocabulary import describes

MINI = "mmr-mini"


def is_mini(model_id: str) -> bool:
    """Whether a model id names mmr-mini (shipped weights or a local copy of them)."""
    return model_id.split("@", 1)[0] == MINI


def anchor_captions(model_id: str, n: int, *, seed: int = 0) -> list[str]:
    """``n`` distinct captions of what the model knows (fewer when its corpus is smaller),
    the same for the same arguments."""
    if n <= 0:
        return []
    if is_mini(model_id):
        rng = np.random.default_rng([seed, 1])
        found: dict[str, None] = {}
        for _ in range(50 * n):  # the world has a few thousand distinct captions
            found.setdefault(caption_scene(sample_scene(rng), rng).text)
            if len(found) == n:
                break
        return list(found)
    corpus = general_captions()
    # In the permutation's order: any prefix is a sample of the whole list (photos and sounds).
    picked = np.random.default_rng([seed, 2]).permutation(len(corpus))[:n]
    return [corpus[i] for i in picked]


def general_captions() -> list[str]:
    """The shipped general caption list: photo captions, then sound captions."""
    sounds = SHIPPED_CAPTIONS.read_text(encoding="utf-8").splitlines()
    return photo_captions() + [line for line in sounds if line.strip()]


@dataclass(frozen=True)
class Scenes:
    """Generated scenes as a retrieval check: ``relevant[i, j]`` when caption i describes
    render j."""

    captions: list[str]
    images: list[Image.Image]
    relevant: np.ndarray


def mini_scenes(n: int, *, seed: int = 0) -> Scenes:
    """``n`` scenes of mmr-mini's world, each captioned and rendered (a style the model was
    trained on), with every caption's relevant renders."""
    rng = np.random.default_rng([seed, 3])
    scenes = [sample_scene(rng) for _ in range(n)]
    captions = [caption_scene(scene, rng) for scene in scenes]
    images = [
        render_scene(scene, np.random.default_rng([seed, 4, i])) for i, scene in enumerate(scenes)
    ]
    relevant = np.array(
        [[describes(c.mentions, s.objects) for s in scenes] for c in captions], dtype=bool
    )
    return Scenes([c.text for c in captions], images, relevant)


# -- the general photo captions ---------------------------------------------------------------

_SUBJECTS = {
    "people": (
        "a man",
        "a woman",
        "a child",
        "a baby",
        "an old man",
        "an old woman",
        "a boy",
        "a girl",
        "two friends",
        "a family",
        "a group of people",
        "a crowd",
        "a runner",
        "a cyclist",
        "a surfer",
        "a skier",
        "a chef",
        "a musician",
        "a soldier",
        "a doctor",
        "a couple",
        "a street vendor",
        "a fisherman",
        "a farmer",
        "a police officer",
        "a dancer",
    ),
    "animals": (
        "a dog",
        "a puppy",
        "a cat",
        "a kitten",
        "a horse",
        "a cow",
        "a sheep",
        "a goat",
        "a pig",
        "a chicken",
        "a duck",
        "a swan",
        "a pigeon",
        "a parrot",
        "an owl",
        "an eagle",
        "a fox",
        "a deer",
        "a bear",
        "an elephant",
        "a giraffe",
        "a zebra",
        "a lion",
        "a tiger",
        "a monkey",
        "a rabbit",
        "a squirrel",
        "a turtle",
        "a frog",
        "a fish",
        "a butterfly",
        "a bee",
        "a spider",
        "a snake",
        "a dolphin",
        "a whale",
    ),
    "things": (
        "a bicycle",
        "a motorcycle",
        "a car",
        "a red car",
        "a bus",
        "a truck",
        "a train",
        "a boat",
        "a sailboat",
        "an airplane",
        "a helicopter",
        "a bench",
        "a chair",
        "a table",
        "a sofa",
        "a bed",
        "a lamp",
        "a clock",
        "a laptop",
        "a phone",
        "a television",
        "a book",
        "a pile of books",
        "a guitar",
        "a piano",
        "a camera",
        "an umbrella",
        "a backpack",
        "a suitcase",
        "a kite",
        "a ball",
        "a teddy bear",
        "a vase of flowers",
        "a cup of coffee",
        "a bottle of wine",
        "a bowl of fruit",
        "a pizza",
        "a sandwich",
        "a cake",
        "a plate of pasta",
        "a basket of apples",
        "a loaf of bread",
        "a bicycle helmet",
        "a pair of shoes",
        "a hat",
        "a wooden door",
        "a window",
        "a street sign",
        "a traffic light",
        "a fire hydrant",
        "a mailbox",
        "a lighthouse",
        "a bridge",
        "a tower",
        "a castle",
        "a church",
        "a windmill",
        "a tent",
        "a campfire",
    ),
    "places": (
        "a beach",
        "a mountain",
        "a forest",
        "a lake",
        "a river",
        "a waterfall",
        "a desert",
        "a field of flowers",
        "a snowy street",
        "a city street",
        "a market",
        "a park",
        "a playground",
        "a garden",
        "a kitchen",
        "a living room",
        "a bedroom",
        "an office",
        "a classroom",
        "a library",
        "a restaurant",
        "a cafe",
        "a train station",
        "an airport",
        "a harbour",
        "a farm",
        "a village",
        "a skyline",
        "a highway",
        "a parking lot",
        "a stadium",
        "a museum",
        "a supermarket",
        "a bakery",
        "a hospital corridor",
    ),
}
_DOING = {
    "people": (
        "walking",
        "running",
        "sitting",
        "standing",
        "smiling",
        "laughing",
        "reading",
        "eating",
        "cooking",
        "talking on the phone",
        "playing football",
        "riding a bike",
        "taking a photo",
        "holding an umbrella",
        "waiting for a bus",
        "playing the guitar",
        "swimming",
        "sleeping",
        "dancing",
        "working on a laptop",
    ),
    "animals": (
        "sleeping",
        "running",
        "sitting",
        "eating",
        "drinking water",
        "playing",
        "jumping",
        "lying in the grass",
        "looking at the camera",
        "swimming",
        "flying",
        "hiding",
    ),
    "things": (
        "parked",
        "left alone",
        "in the rain",
        "covered in snow",
        "in the sun",
        "next to a wall",
        "on display",
        "in the shade",
    ),
}
_WHERE = (
    "on a beach",
    "in a park",
    "on a city street",
    "in a field",
    "in the snow",
    "in the rain",
    "at night",
    "at sunset",
    "in a kitchen",
    "on a sofa",
    "in the forest",
    "by a lake",
    "on a mountain path",
    "in a garden",
    "indoors",
    "on a wooden table",
    "near the sea",
    "in front of a house",
    "on a busy road",
    "under a tree",
)
_FRAMES = ("a photo of {}", "{}", "a close-up of {}", "a picture of {}", "an old photo of {}")
_SCENES = (
    "{} on a sunny day",
    "{} at dusk",
    "{} in winter",
    "{} seen from above",
    "{} at night",
    "an empty {}",
    "a crowded {}",
    "a quiet {}",
)


def photo_captions() -> list[str]:
    """General English photo captions (about 4,000): people, animals and things doing
    something somewhere, and places, in a few framings; a fixed list, in a fixed order."""
    out: list[str] = []
    for kind in ("people", "animals", "things"):
        for subject, doing in itertools.product(_SUBJECTS[kind], _DOING[kind]):
            out.append(f"{subject} {doing}")
        for subject, where in itertools.product(_SUBJECTS[kind], _WHERE):
            out.append(f"{subject} {where}")
    for place, frame in itertools.product(_SUBJECTS["places"], _SCENES):
        bare = place.split(" ", 1)[1]  # "a beach" -> "beach", for "an empty beach"
        out.append(frame.format(place if frame.startswith("{}") else bare))
    framed = [_FRAMES[i % len(_FRAMES)].format(c) for i, c in enumerate(out)]
    return list(dict.fromkeys(framed))
