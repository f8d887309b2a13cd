"""A small built-in set of general questions: did fine-tuning on lore make the model forget the world?

Two figures, and `forgetting()` picks the one that means something for this base model:
- **kept**: of the questions the base model answered correctly (it states a reference answer), the
  share the tuned model still answers correctly. Used when the base knew at least MIN_KNOWN answers.
- **agreement** (reference-free): the share where the tuned answer still agrees with the base answer
  (content-word overlap F1 >= a threshold), counted only over base answers that are not mere echoes
  of the question: a base (not instruction-tuned) model often just repeats the question, and a tuned
  model that answers instead would otherwise read as "forgetting". It decides only when the base knew
  too few answers for "kept", and only if the tuned model does not state more reference answers.
"""

from __future__ import annotations

from lorekit.evaluate import metrics

MIN_KNOWN = 5  # base answers needed before "kept" is trusted over "agreement"

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
        "base_echo": repeats_question(base, question, accepted),
        "base_correct": knows(base, accepted),
        "tuned_correct": knows(tuned, accepted),
    }


def repeats_question(reply: str, question: str, accepted: tuple[str, ...] = ()) -> bool:
    """True when the reply is no answer but the question again: it states no accepted answer and has
    every content word of the question (a base model repeats "What is the capital of France?" with
    noise after it), or it has no content word at all."""
    words = set(metrics.content_words(reply))
    if not words:
        return True
    if knows(reply, accepted):
        return False
    return set(metrics.content_words(question)) <= words


def summarize(rows: list[dict]) -> dict:
    n = len(rows)
    answered = [r for r in rows if not r.get("base_echo")]
    return {
        "questions": n,
        "base_echoes": n - len(answered),
        # over the questions the base model answered rather than echoed
        "agreement": metrics.share(sum(r["agree"] for r in answered), len(answered)),
        "base_correct": metrics.share(sum(r["base_correct"] for r in rows), n),
        "tuned_correct": metrics.share(sum(r["tuned_correct"] for r in rows), n),
        # of the questions the base model got right, the share the tuned model still gets right
        "kept": metrics.share(sum(r["tuned_correct"] for r in rows if r["base_correct"]),
                              sum(r["base_correct"] for r in rows)),
    }


def forgetting(summary: dict | None) -> str | None:
    """A sentence when the general questions show forgetting, else None (see the module docstring).

    With a base model that knew fewer than MIN_KNOWN answers (a small base model that mostly echoes),
    low agreement counts only when the tuned model also states fewer reference answers than the base
    did: a tuned model that answers where the base rambled has not forgotten anything."""
    if not summary:
        return None
    known = round((summary.get("base_correct") or 0) * summary["questions"])
    kept = summary.get("kept")
    if known >= MIN_KNOWN and kept is not None:
        if kept < 0.6:
            return (f"of the {known} general questions the base model answered correctly, the tuned model "
                    f"still answers only {kept:.0%}")
        return None
    agreement = summary.get("agreement")
    if agreement is not None and agreement < 0.5 and (summary.get("tuned_correct") or 0) <= (
            summary.get("base_correct") or 0):
        return f"the tuned model agrees with the base model on only {agreement:.0%} of general questions"
    return None
