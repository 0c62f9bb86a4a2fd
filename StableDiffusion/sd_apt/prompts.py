"""The DreamBooth evaluation prompts (google/dreambooth, ``dataset/prompts_and_classes.txt``): 25 templates for
objects and 25 for live subjects (cats and dogs), each "a {identifier} {class} <context>" or a property prompt."""
from __future__ import annotations

SHARED = [
    "a {0} {1} in the jungle", "a {0} {1} in the snow", "a {0} {1} on the beach", "a {0} {1} on a cobblestone street",
    "a {0} {1} on top of pink fabric", "a {0} {1} on top of a wooden floor", "a {0} {1} with a city in the background",
    "a {0} {1} with a mountain in the background", "a {0} {1} with a blue house in the background",
    "a {0} {1} on top of a purple rug in a forest",
]
PROPERTIES = ["a red {0} {1}", "a purple {0} {1}", "a shiny {0} {1}", "a wet {0} {1}", "a cube shaped {0} {1}"]
OBJECT_EXTRA = [
    "a {0} {1} with a wheat field in the background", "a {0} {1} with a tree and autumn leaves in the background",
    "a {0} {1} with the Eiffel Tower in the background", "a {0} {1} floating on top of water",
    "a {0} {1} floating in an ocean of milk", "a {0} {1} on top of green grass with sunflowers around it",
    "a {0} {1} on top of a mirror", "a {0} {1} on top of the sidewalk in a crowded street",
    "a {0} {1} on top of a dirt road", "a {0} {1} on top of a white rug",
]
LIVE_EXTRA = [
    "a {0} {1} wearing a red hat", "a {0} {1} wearing a santa hat", "a {0} {1} wearing a rainbow scarf",
    "a {0} {1} wearing a black top hat and a monocle", "a {0} {1} in a chef outfit",
    "a {0} {1} in a firefighter outfit", "a {0} {1} in a police outfit", "a {0} {1} wearing pink glasses",
    "a {0} {1} wearing a yellow shirt", "a {0} {1} in a purple wizard outfit",
]
OBJECT_TEMPLATES = SHARED + OBJECT_EXTRA + PROPERTIES
LIVE_TEMPLATES = SHARED + LIVE_EXTRA + PROPERTIES
LIVE_CLASSES = ("cat", "dog")


def dreambooth_prompts(identifier: str, class_noun: str, live: bool | None = None) -> list:
    """The 25 prompts for a subject; ``live`` defaults to whether the class is a cat or a dog (as in the dataset)."""
    live = class_noun in LIVE_CLASSES if live is None else live
    return [t.format(identifier, class_noun) for t in (LIVE_TEMPLATES if live else OBJECT_TEMPLATES)]


def drop_identifier(prompt: str, identifier: str) -> str:
    """The prompt without the rare identifier token (an option for CLIP-T)."""
    return " ".join(w for w in prompt.split() if w != identifier)
