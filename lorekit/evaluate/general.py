"""A small built-in set of general questions: did fine-tuning on lore make the model forget the world?

The headline figure is reference-free: the share of questions where the tuned model's answer still
agrees with the base model's answer (content-word overlap F1 >= a threshold). Each question also
carries accepted reference answers, reported beside it so a reader can see whether the base model
knew the answer in the first place (a 270M base model often does not).
"""

from __future__ import annotations

from lorekit.evaluate import metrics

# (question, accepted answers)
QUESTIONS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("What is the capital of France?", ("Paris",)),
    ("What is the capital of Japan?", ("Tokyo",)),
    ("How many days are in a week?", ("seven", "7")),
    ("What color is the sky on a clear day?", ("blue",)),
    ("What is two plus two?", ("four", "4")),
    ("What is the largest ocean on Earth?", ("Pacific",)),
    ("What do bees make?", ("honey",)),
    ("What is frozen water called?", ("ice",)),
    ("Which planet do we live on?", ("Earth",)),
    ("How many legs does a spider have?", ("eight", "8")),
    ("What is the opposite of hot?", ("cold",)),
    ("Which animal is known as the king of the jungle?", ("lion",)),
    ("What gas do people need to breathe?", ("oxygen",)),
    ("How many hours are in a day?", ("24", "twenty-four")),
    ("What is the boiling point of water in degrees Celsius?", ("100",)),
    ("Who wrote Romeo and Juliet?", ("Shakespeare",)),
    ("What is the chemical symbol for gold?", ("Au",)),
    ("Which star is at the centre of our solar system?", ("Sun",)),
    ("How many months are in a year?", ("twelve", "12")),
    ("What do you call a baby cat?", ("kitten",)),
)


def messages(question: str) -> list[dict[str, str]]:
    """General questions are asked as a plain user turn, without an NPC persona."""
    return [{"role": "user", "content": question}]


def knows(reply: str, accepted: tuple[str, ...]) -> bool:
    return any(metrics.mentions(reply, a) for a in accepted)


def score(question: str, accepted: tuple[str, ...], base: str, tuned: str, threshold: float) -> dict:
    f1 = metrics.overlap_f1(base, tuned)
    return {
        "question": question,
        "reference": list(accepted),
        "base": base,
        "tuned": tuned,
        "f1": round(f1, 3),
        "agree": f1 >= threshold,
        "base_correct": knows(base, accepted),
        "tuned_correct": knows(tuned, accepted),
    }


def summarize(rows: list[dict]) -> dict:
    n = len(rows)
    return {
        "questions": n,
        "agreement": metrics.share(sum(r["agree"] for r in rows), n),
        "base_correct": metrics.share(sum(r["base_correct"] for r in rows), n),
        "tuned_correct": metrics.share(sum(r["tuned_correct"] for r in rows), n),
        # of the questions the base model got right, the share the tuned model still gets right
        "kept": metrics.share(sum(r["tuned_correct"] for r in rows if r["base_correct"]),
                              sum(r["base_correct"] for r in rows)),
    }
