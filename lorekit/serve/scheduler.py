"""Fair turn queue: one deque per client, served in rotation, so a chatty client cannot starve others;
and the queue of work ahead (conversations that just had a turn, personas) for when the model is idle.

Transports submit and cancel (through the runtime core); the worker threads take the next turn (one
thread for the in-process model; `[serve] engine_concurrency` of them in front of a remote engine),
and when there is none, the next job of work ahead. Two turns of one conversation (NPC and session)
never run at once: the second waits until the first has saved its history.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from lorekit.serve.request import Sampling


class Cancel(threading.Event):
    """A turn's cancel flag. `on_set(fn)` has `fn` called when it is set (a remote engine closes its
    stream there, so a cancel does not wait for the next token), or at once if it already is."""

    def __init__(self) -> None:
        super().__init__()
        self._hooks: list[Callable[[], None]] = []
        self._hooks_lock = threading.Lock()

    def set(self) -> None:
        super().set()
        with self._hooks_lock:
            hooks, self._hooks = self._hooks, []
        for fn in hooks:
            fn()

    def on_set(self, fn: Callable[[], None]) -> Callable[[], None]:
        """Call `fn` on cancel; returns the function that takes it back."""
        with self._hooks_lock:
            if not self.is_set():
                self._hooks.append(fn)
                return lambda: self._drop(fn)
        fn()
        return lambda: None

    def _drop(self, fn: Callable[[], None]) -> None:
        with self._hooks_lock:
            if fn in self._hooks:
                self._hooks.remove(fn)


class TurnSink:
    """Where a turn's output goes. Called from the worker thread; implementations hop to the loop."""

    def piece(self, text: str) -> None: ...

    def done(self, result: dict[str, Any]) -> None: ...

    def error(self, code: str, message: str) -> None: ...


@dataclass(eq=False)  # a turn is itself: queues and the running set compare by identity
class Turn:
    client: object  # fairness key: a game connection; for HTTP, the peer address (and `user` field)
    rid: Any  # the request id
    npc: str
    text: str
    sink: TurnSink
    session: str | None = "default"  # None: stateless (HTTP), `messages` is the conversation
    state: dict | None = None
    messages: list[dict] | None = None
    sampling: Sampling = field(default_factory=Sampling)
    cancel: Cancel = field(default_factory=Cancel)
    received: float = field(default_factory=time.perf_counter)

    @property
    def conversation(self) -> tuple | None:
        """What two turns must not run at once for: a server-side history (None over HTTP: stateless)."""
        return (self.npc, self.session) if self.session is not None else None


class Scheduler:
    def __init__(self) -> None:
        self._queues: OrderedDict[object, deque[Turn]] = OrderedDict()
        self._cond = threading.Condition()
        self._closed = False
        self._woken = False
        self.running: set[Turn] = set()
        self._busy: set[tuple] = set()  # conversations with a turn running

    def submit(self, turn: Turn) -> None:
        with self._cond:
            self._queues.setdefault(turn.client, deque()).append(turn)
            self._cond.notify()

    def next(self, timeout: float | None = None) -> Turn | None:
        """The next turn in client rotation; None when closed, woken or after `timeout` seconds. A client
        whose next turn continues a conversation that is running keeps its place and is passed over."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._closed or self._woken or self._ready() is not None, timeout):
                return None
            self._woken = False
            client = None if self._closed else self._ready()
            if client is None:
                return None
            queue = self._queues.pop(client)
            turn = queue.popleft()
            if queue:  # this client goes to the back of the rotation
                self._queues[client] = queue
            self.running.add(turn)
            if turn.conversation is not None:
                self._busy.add(turn.conversation)
            return turn

    def _ready(self) -> object | None:
        return next((client for client, queue in self._queues.items()
                     if queue[0].conversation is None or queue[0].conversation not in self._busy), None)

    def wake(self) -> None:
        """Make a waiting `next()` return now (there is other work: a persona to pre-process)."""
        with self._cond:
            self._woken = True
            self._cond.notify_all()

    def finished(self, turn: Turn) -> None:
        with self._cond:
            if turn in self.running:
                self.running.discard(turn)
                self._busy.discard(turn.conversation)
                self._cond.notify_all()  # a turn of that conversation may be waiting

    def running_turns(self) -> list[Turn]:
        with self._cond:
            return list(self.running)

    def remove(self, turn: Turn) -> bool:
        """Take a queued turn out; False if it is not queued (running or finished)."""
        with self._cond:
            queue = self._queues.get(turn.client)
            if queue is None or turn not in queue:
                return False
            queue.remove(turn)
            if not queue:
                del self._queues[turn.client]
            return True

    def depth(self) -> int:
        with self._cond:
            return sum(len(q) for q in self._queues.values())

    def drain(self, each: Callable[[Turn], None]) -> None:
        with self._cond:
            turns = [t for q in self._queues.values() for t in q]
            self._queues.clear()
        for t in turns:
            each(t)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()


class WarmQueue:
    """What the worker pre-processes when idle: conversations that just had a turn (newest first: that
    player is reading the reply and about to answer), then NPCs' personas, in order (an ordered set)."""

    MAX_TURNS = 32  # conversations remembered for warming; older ones simply get no head start

    def __init__(self, enabled: bool, wake: Callable[[], None]):
        self.enabled, self._wake = enabled, wake
        self._npcs: dict[str, None] = {}
        self._turns: OrderedDict[object, Any] = OrderedDict()  # (npc, session) -> the worker's job
        self._lock = threading.Lock()
        self.warming: object = None  # the NPC (or conversation key) the worker is processing now

    def add(self, npcs, first: bool = False) -> None:
        """Queue NPCs; `first`: ahead of the others (the personas a reload just changed)."""
        if not self.enabled:
            return
        npcs = list(npcs)
        with self._lock:
            if first:  # dicts keep insertion order: rebuild with these in front
                rest = [n for n in self._npcs if n not in npcs]
                self._npcs = dict.fromkeys(npcs + rest)
            else:
                self._npcs.update(dict.fromkeys(npcs))
        self._wake()

    def add_turn(self, key: object, job: Any, replace: bool = True) -> None:
        """Queue a conversation's job (after its turn, or the line being typed): the newest one per
        conversation, unless not `replace`."""
        if not self.enabled:
            return
        with self._lock:
            if key in self._turns and not replace:
                return
            self._turns.pop(key, None)
            self._turns[key] = job
            while len(self._turns) > self.MAX_TURNS:
                self._turns.popitem(last=False)
        self._wake()

    def take(self) -> Any:
        """The next job: a conversation's (the newest first), else an NPC id; it counts as pending
        (`warming`) until `done()`. None when there is nothing to do."""
        with self._lock:
            if self._turns:
                key, job = self._turns.popitem(last=True)
                self.warming = key
                return job
            npc = next(iter(self._npcs), None)
            self._npcs.pop(npc, None)
            self.warming = npc
            return npc

    def done(self) -> None:
        self.warming = None

    def pending(self) -> int:
        with self._lock:
            return len(self._npcs) + len(self._turns) + (self.warming is not None)

    def __bool__(self) -> bool:
        return bool(self._npcs or self._turns)
