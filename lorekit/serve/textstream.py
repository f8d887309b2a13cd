"""Turning a stream of generated text pieces into what a game may see.

`StopScanner` holds back text that could be the start of a stop marker (`<end_of_turn>`, the next
`<start_of_turn>`), so markup never reaches the player. `SentenceSplitter` cuts whole sentences as
soon as they end, so a game can start speech or subtitles before the reply is complete.
"""

from __future__ import annotations

import re


class StopScanner:
    def __init__(self, stops: list[str] | tuple[str, ...]):
        self.stops = [s for s in stops if s]
        self.buffer = ""
        self.stopped = False

    def feed(self, text: str) -> str:
        """Add generated text; return the part that is certainly not (the start of) a stop marker."""
        if self.stopped:
            return ""
        self.buffer += text
        cut = min((i for i in (self.buffer.find(s) for s in self.stops) if i >= 0), default=-1)
        if cut >= 0:
            out, self.buffer, self.stopped = self.buffer[:cut], "", True
            return out
        keep = self._held_back()
        out, self.buffer = self.buffer[: len(self.buffer) - keep], self.buffer[len(self.buffer) - keep :]
        return out

    def finish(self) -> str:
        out, self.buffer = ("" if self.stopped else self.buffer), ""
        return out

    def _held_back(self) -> int:
        """Length of the longest buffer suffix that is a proper prefix of a stop marker."""
        best = 0
        for stop in self.stops:
            for n in range(min(len(stop) - 1, len(self.buffer)), best, -1):
                if self.buffer.endswith(stop[:n]):
                    best = n
                    break
        return best


# End of a sentence: . ! ? or … (repeated), optional closing quotes/brackets, then whitespace.
_SENTENCE_END = re.compile(r"[.!?…]+[\"'”’)\]»]*(?=\s)")
# Abbreviations whose dot does not end a sentence.
_ABBREV = re.compile(r"(?:^|\s)(?:Mr|Mrs|Ms|Dr|St|Mt|Sr|Jr|vs|e\.g|i\.e|etc)\.$", re.I)


class SentenceSplitter:
    def __init__(self) -> None:
        self.buffer = ""
        self.count = 0

    def feed(self, text: str) -> list[str]:
        self.buffer += text
        out = []
        start = 0
        for m in _SENTENCE_END.finditer(self.buffer):
            if _ABBREV.search(self.buffer[start : m.end()]):
                continue
            sentence = self.buffer[start : m.end()].strip()
            start = m.end()
            if sentence:
                out.append(sentence)
        self.buffer = self.buffer[start:]
        self.count += len(out)
        return out

    def flush(self) -> list[str]:
        rest, self.buffer = self.buffer.strip(), ""
        if rest:
            self.count += 1
            return [rest]
        return []
