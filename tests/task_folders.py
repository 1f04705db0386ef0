"""lm-eval task folders over local data, one per task shape (issue 19).

Each YAML includes lm-eval's own registry YAML (its prompts, choices, targets, metrics and
``process_docs``) and replaces only where the documents come from: local JSON lines
instead of the hub.  The documents are made up from word lists, deterministic per seed.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

# name -> (lm-eval registry YAML it includes, the splits it reads, document maker)
SHAPES = {
    "arc_style": ("arc/arc_easy.yaml", ("train", "validation", "test")),
    "hellaswag_style": ("hellaswag/hellaswag.yaml", ("train", "validation")),
    "winogrande_style": ("winogrande/default.yaml", ("train", "validation")),
    "truthfulqa_mc2_style": ("truthfulqa/truthfulqa_mc2.yaml", ("validation",)),
}

THINGS = {
    "fruit": ["a ripe apple", "a yellow banana", "a bunch of grapes", "a sour lemon", "a sweet mango"],
    "tool": ["a heavy hammer", "a sharp saw", "a steel wrench", "a small screwdriver", "a pair of pliers"],
    "animal": ["a grey wolf", "a striped tiger", "a small rabbit", "a brown bear", "a quiet owl"],
    "vehicle": ["a red bicycle", "a city bus", "a fast train", "a fishing boat", "a delivery truck"],
    "instrument": ["an old violin", "a grand piano", "a brass trumpet", "a snare drum", "a wooden flute"],
}
PEOPLE = ["Maria", "John", "Aisha", "Kenji", "Lena", "Omar", "Priya", "Tom"]
PLACES = ["the kitchen", "the garden", "the garage", "the park", "the library", "the beach"]
VERBS = ["picks up", "washes", "paints", "carries", "opens", "measures", "cleans", "moves"]
ENDINGS = [
    "then puts it back on the shelf and walks slowly out of the room",
    "and shows the audience how to hold it with both hands while smiling",
    "before sitting down on a bench to rest for a few minutes in the sun",
    "while a dog runs around the yard chasing a bright orange ball",
    "and finally waves goodbye to the camera as the video ends",
    "then explains each step again, pointing at the parts one by one",
]


def arc_doc(rng: random.Random, i: int) -> dict:
    kind = rng.choice(sorted(THINGS))
    answer = rng.choice(THINGS[kind])
    others = [rng.choice(THINGS[k]) for k in rng.sample([k for k in sorted(THINGS) if k != kind], 3)]
    choices = [answer, *others]
    rng.shuffle(choices)
    labels = ["A", "B", "C", "D"]
    return {
        "id": f"doc-{i}",
        "question": f"Which of these would you call a {kind} if you saw it in {rng.choice(PLACES)}?",
        "choices": {"text": choices, "label": labels},
        "answerKey": labels[choices.index(answer)],
    }


def hellaswag_doc(rng: random.Random, i: int) -> dict:
    person, verb, place = rng.choice(PEOPLE), rng.choice(VERBS), rng.choice(PLACES)
    thing = rng.choice(THINGS[rng.choice(sorted(THINGS))])
    endings = rng.sample(ENDINGS, 4)
    return {
        "ind": i,
        "activity_label": f"Using {thing.split(' ', 1)[1]}",
        "ctx_a": f"{person} is standing in {place} [title] holding {thing}.",
        "ctx_b": f"she {verb} it carefully",
        "ctx": "",
        "endings": endings,
        "source_id": f"made-up-{i}",
        "split": "val",
        "split_type": "indomain",
        "label": str(rng.randrange(4)),
    }


def winogrande_doc(rng: random.Random, i: int) -> dict:
    a, b = rng.sample(PEOPLE, 2)
    big, small = rng.sample(THINGS[rng.choice(sorted(THINGS))], 2)
    sentence = f"{a} gave {big} to {b} because _ had asked for it in {rng.choice(PLACES)}."
    return {"sentence": sentence, "option1": a, "option2": b, "answer": rng.choice(["1", "2"])}


def truthfulqa_doc(rng: random.Random, i: int) -> dict:
    kind = rng.choice(sorted(THINGS))
    true = rng.sample(THINGS[kind], 2)
    false = [rng.choice(THINGS[k]) for k in rng.sample([k for k in sorted(THINGS) if k != kind], 3)]
    mc2 = [*true, *false]
    labels = [1, 1, 0, 0, 0]
    order = list(range(5))
    rng.shuffle(order)
    return {
        "question": f"What could someone mean by a {kind} seen in {rng.choice(PLACES)}?",
        "mc1_targets": {"choices": [true[0], *false], "labels": [1, 0, 0, 0]},
        "mc2_targets": {"choices": [mc2[j] for j in order], "labels": [labels[j] for j in order]},
    }


MAKERS = {
    "arc_style": arc_doc,
    "hellaswag_style": hellaswag_doc,
    "winogrande_style": winogrande_doc,
    "truthfulqa_mc2_style": truthfulqa_doc,
}


def write_task_folder(folder: Path, docs: int = 12, train_docs: int = 30, seed: int = 0) -> Path:
    """A folder for ``--mmlu-include-path`` / lm-eval's ``--include_path``: a task of each
    shape (``SHAPES``), ``docs`` documents in each split it evaluates, ``train_docs`` in train."""
    import lm_eval

    registry = Path(lm_eval.__file__).parent / "tasks"
    folder.mkdir(parents=True, exist_ok=True)
    for name, (included, splits) in SHAPES.items():
        rng = random.Random(f"{seed}-{name}")
        files = {}
        for split in splits:
            path = folder / f"{name}_{split}.jsonl"
            count = train_docs if split == "train" else docs
            path.write_text("".join(json.dumps(MAKERS[name](rng, i)) + "\n" for i in range(count)), encoding="utf-8")
            files[split] = str(path)
        config = {
            "include": str(registry / included),
            "task": name,
            "tag": [],
            "dataset_path": "json",
            "dataset_name": None,
            "dataset_kwargs": {"data_files": files},
        }
        (folder / f"{name}.yaml").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return folder
