"""The simulator: an LLM predicts a feature's activation on every token from an explanation.

Modes, best first (Bills et al. 2023):

- all-at-once: one raw prompt per fragment with `token<TAB>unknown` lines; at each
  `unknown` slot the prompt logprobs over the tokens "0".."10" give the expected
  activation, in one forward pass (in-process exactly, vLLM prompt_logprobs,
  llama.cpp echo);
- logprobs: a chat model writes a JSON array of integers; each number's expected
  value is read from the top logprobs over digit tokens at its position;
- json: the same array, its plain integers, for endpoints without logprobs.

A tokenizer that writes "10" as two tokens ("1", "0": SmolLM2, Llama 2) would make
P("1") mean both 1 and 10, so there the scale is 0..9 (recorded in `note`).
Misaligned or unparseable output is retried a bounded number of times, sampling with
a new sample_index; then SimulationFailed(reason). Nothing is scored silently.
"""

from __future__ import annotations

import asyncio
import json

from autointerp.errors import BadInputError
from autointerp.llm.base import Completion, CompletionRequest, LLMCallError, LLMClient
from autointerp.scoring.explain import records_block
from autointerp.scoring.ledger import note
from autointerp.scoring.parsing import (
    ParseError,
    expected_value,
    fewshot_examples,
    format_numbered,
    format_records,
    parse_int_array,
    render,
    scale_activations,
    template,
    token_starts,
)
from autointerp.scoring.safety import drop_unsafe, parse_own_array
from autointerp.scoring.scorers.draws import draw_settings, score_draws, simulation_draw
from autointerp.types import Fragment, Simulation, SimulationFailed

MODES = ("all-at-once", "logprobs", "json")
PLACEHOLDER = "unknown"
PROBE_DIGITS = "0 1 2 3 4 5 6 7 8 9 10"


def check_mode(mode: str) -> str:
    if mode not in ("auto", *MODES):
        raise BadInputError(f"unknown simulator mode {mode!r}; choose auto, {', '.join(MODES)}")
    return mode


def _examples(scale_max: int) -> list[tuple[str, list[Fragment]]]:
    return [(ex["explanation"], [Fragment(tuple(t for t, _ in f), tuple(float(a) for _, a in f))
                                 for f in ex["fragments"]]) for ex in fewshot_examples()]


def _one_line(explanation: str) -> str:
    return " ".join(explanation.split())


def all_at_once_prompt(explanation: str, tokens, scale_max: int = 10) -> str:
    examples = _examples(scale_max)
    blocks = [render(template("simulator_example.txt"), index=i, explanation=text,
                     records=records_block(frags, scale_max))
              for i, (text, frags) in enumerate(examples, start=1)]
    return render(template("simulator_all_at_once.txt"), scale_max=scale_max,
                  examples="\n\n".join(blocks), index=len(examples) + 1,
                  explanation=_one_line(explanation),
                  records=format_records(tokens, [PLACEHOLDER] * len(tokens)))


def chat_messages(explanation: str, tokens, scale_max: int = 10) -> tuple[tuple[str, str], ...]:
    user = template("simulator_chat_user.txt")
    messages = [("system", render(template("simulator_chat_system.txt"), scale_max=scale_max))]
    for text, frags in _examples(scale_max):
        for f in frags:
            top = max(f.activations)
            messages.append(("user", render(user, explanation=text, n_tokens=len(f.tokens),
                                            records=format_numbered(f.tokens))))
            messages.append(("assistant", json.dumps(scale_activations(f.activations, top,
                                                                       scale_max))))
    messages.append(("user", render(user, explanation=_one_line(explanation),
                                    n_tokens=len(tokens), records=format_numbered(tokens))))
    return tuple(messages)


def slot_positions(prompt_tokens) -> list[int]:
    """Indices of prompt tokens that begin an `unknown` placeholder right after a tab.
    Corpus tokens never hold a raw tab (they are escaped), so only slots match."""
    out, prev = [], ""
    for i, t in enumerate(prompt_tokens):
        tok = t.token
        if prev.endswith("\t") and tok and (tok.startswith(PLACEHOLDER) or PLACEHOLDER.startswith(tok)):
            out.append(i)
        prev = tok or prev
    return out


def _lacks_logprobs(request: CompletionRequest, c: Completion) -> bool:
    return bool((request.top_logprobs and not c.tokens)
                or (request.prompt_logprobs and not c.prompt_tokens))


def read_all_at_once(c: Completion, n_tokens: int, scale_max: int) -> list[float]:
    if not c.prompt_tokens:
        raise SimulationFailed("the endpoint returned no prompt logprobs for all-at-once mode")
    slots = slot_positions(c.prompt_tokens)
    if len(slots) != n_tokens:
        raise SimulationFailed(f"found {len(slots)} activation slots in the scored prompt for "
                               f"{n_tokens} tokens (does the tokenizer merge tab and placeholder?)")
    values = [expected_value(c.prompt_tokens[i], scale_max, exact=True) for i in slots]
    # An endpoint that returns only its top-k alternatives (llama.cpp echo) can leave every
    # digit out at a slot: that is no evidence of activation, read as 0 and counted, and the
    # feature fails only when the share shows the model ignores the format (check_format).
    return [0.0 if v is None else v for v in values], sum(v is None for v in values)


MAX_NO_DIGIT_SHARE = 0.5
"""A feature fails when more than this share of its slots held no digit among the top-k
alternatives: the model is then not answering in the format, and zeros would be invented."""


def check_format(n_no_digit: int, n_slots: int, what: str = "digit") -> None:
    if n_slots and n_no_digit / n_slots > MAX_NO_DIGIT_SHARE:
        raise SimulationFailed(f"the model ignores the answer format: no {what} among the "
                               f"logprob alternatives at {n_no_digit} of {n_slots} slots")


def read_logprobs(c: Completion, values: list[int], offsets: list[int], scale_max: int
                  ) -> list[float]:
    """Expected value at each written number's first token; the written integer where the
    token does not hold the whole number or no digit is among its alternatives."""
    if not c.tokens:
        raise SimulationFailed("the endpoint returned no token logprobs; use --simulator-mode json")
    joined = "".join(t.token for t in c.tokens)
    shift = joined.find(c.text) if c.text else 0
    if shift < 0:
        raise SimulationFailed("the returned tokens do not spell the answer text")
    starts = token_starts(c.tokens)
    out, i = [], 0
    for value, offset in zip(values, offsets, strict=True):
        o = offset + shift
        while i + 1 < len(starts) and starts[i + 1] <= o:
            i += 1
        whole = o + len(str(value)) <= starts[i] + len(c.tokens[i].token)
        ev = expected_value(c.tokens[i], scale_max) if whole else None
        out.append(float(value) if ev is None else ev)
    return out


class LLMSimulator:
    """Simulator protocol (types.py) over any LLMClient. Call `await prepare()` first to
    resolve `auto` and the digit scale (simulate does it too); both probes are cached."""

    def __init__(self, client: LLMClient, mode: str = "auto", *, retries: int = 3,
                 top_logprobs: int = 15, scale_max: int | None = None):
        self.client = client
        self.requested_mode = check_mode(mode)
        self.mode = mode
        self.retries = retries
        self.top_logprobs = top_logprobs
        self.scale_max = scale_max
        self.note = ""
        """How the mode and scale were chosen, recorded with the run."""
        self.long_probe = None
        """auto's timed probe at the run's prompt length (probe.py), when it ran."""
        self.name = f"llm:{client.name}"
        self._prepared = False

    def settings(self) -> dict:
        return {"name": self.name, "mode": self.mode, "requested_mode": self.requested_mode,
                "scale_max": self.scale_max, "top_logprobs": self.top_logprobs,
                "retries": self.retries, "note": self.note, "prompt_version": 1}

    async def prepare(self) -> None:
        if self._prepared:
            return
        if self.requested_mode != "auto" and self.scale_max is not None:
            self.mode, self.note, self._prepared = self.requested_mode, f"mode {self.mode}", True
            return  # nothing left to find out
        probe = getattr(self.client, "probe", None)
        if probe is not None:
            await probe()
        ten = None
        if self.requested_mode in ("auto", "all-at-once"):
            ok, ten = await self._probe_prompt()
            if ok and self.requested_mode == "auto":
                ok = await self._probe_long(ten)
            if ok:
                self.mode = "all-at-once"
            elif self.requested_mode == "all-at-once":
                raise BadInputError(f"{self.client.name} returns no prompt logprobs, which "
                                    "all-at-once mode needs; try --simulator-mode logprobs or json")
        if self.mode in ("auto", "logprobs"):
            ok, ten = await self._probe_chat()
            if not ok and self.requested_mode == "logprobs":
                raise BadInputError(f"{self.client.name} returns no token logprobs, which "
                                    "logprobs mode needs; try --simulator-mode json")
            self.mode, ten = ("logprobs", ten) if ok else ("json", None)
        if self.scale_max is None:
            self.scale_max = 9 if ten is False else 10
        notes = [f"mode {self.mode}" + (" (chosen by auto)" if self.requested_mode == "auto" else "")]
        if self.long_probe is not None and not self.long_probe.ok:
            notes.append("prompt logprobs did not answer in time at the run's prompt length")
        if ten is False and self.scale_max == 9:
            notes.append("'10' is two tokens for this model, so activations use a 0..9 scale")
        self.note = "; ".join(notes)
        self._prepared = True

    async def ask(self, req: CompletionRequest) -> Completion:
        """The answer to `req`, asked again (`retries` times in all) while the logprobs it
        asked for are missing: a flaky endpoint drops them from single answers, and such
        an answer is never cached, so each ask is a new call of the same request."""
        for _ in range(self.retries - 1):
            c = await self.client.complete(req)
            if not _lacks_logprobs(req, c):
                return c
            note("retried", "answer came without the logprobs asked for")
        return await self.client.complete(req)

    async def _probe_prompt(self) -> tuple[bool, bool | None]:
        """Whether prompt logprobs come back, and whether '10' is one token."""
        if self.client.supports("prompt_logprobs") is False:
            return False, None
        req = CompletionRequest(model="", prompt=PROBE_DIGITS, max_tokens=1, prompt_logprobs=1)
        try:
            c = await self.ask(req)
        except LLMCallError:
            return False, None
        if not c.prompt_tokens:
            return False, None
        return True, any(t.token.strip() == "10" for t in c.prompt_tokens)

    async def _probe_long(self, ten: bool | None) -> bool:
        """Whether prompt logprobs answer in time for a prompt as long as the run's."""
        from autointerp.scoring.probe import probe_long, probe_tokens

        scale = self.scale_max if self.scale_max is not None else (9 if ten is False else 10)
        prompt = all_at_once_prompt("the word 'the'", probe_tokens(), scale)
        k = 1 if self.client.supports("candidate_tokens") else self.top_logprobs
        self.long_probe = await probe_long(self.client, prompt, scale, k)
        return self.long_probe.ok

    async def _probe_chat(self) -> tuple[bool, bool | None]:
        """Whether generated tokens come with top logprobs, and whether '10' is one token."""
        if self.client.supports("top_logprobs") is False:
            return False, None
        req = CompletionRequest(model="", messages=(("user", f"Repeat exactly: {PROBE_DIGITS}"),),
                                max_tokens=32, top_logprobs=2)
        try:
            c = await self.ask(req)
        except LLMCallError:
            return False, None
        if not c.tokens or not any(t.top for t in c.tokens):
            return False, None
        toks = [t.token.strip() for t in c.tokens]
        return True, True if "10" in toks else (False if "10" in c.text else None)

    async def simulate(self, explanation: str, fragments: list[Fragment]) -> Simulation:
        await self.prepare()
        one = self._all_at_once if self.mode == "all-at-once" else self._chat
        results = await asyncio.gather(*(one(explanation, f.tokens) for f in fragments),
                                       return_exceptions=True)
        for r in results:
            if isinstance(r, BaseException):
                raise r
        if self.mode != "all-at-once":
            return Simulation(tuple(tuple(r) for r in results), self.name, self.mode)
        n_slots, n_none = sum(len(f.tokens) for f in fragments), sum(n for _, n in results)
        check_format(n_none, n_slots)
        return Simulation(tuple(tuple(r) for r, _ in results), self.name, self.mode,
                          n_slots, n_none)

    def _digits(self) -> tuple[str, ...]:
        return tuple(str(v) for v in range(self.scale_max + 1))

    async def _all_at_once(self, explanation: str, tokens) -> tuple[list[float], int]:
        # Deterministic in the prompt, so a misaligned answer would only repeat: no retry.
        # A backend that reads the digits' logprobs exactly needs no top-k beside them.
        k = 1 if self.client.supports("candidate_tokens") else self.top_logprobs
        req = CompletionRequest(model="", prompt=all_at_once_prompt(explanation, tokens, self.scale_max),
                                max_tokens=1, prompt_logprobs=k, candidate_tokens=self._digits(),
                                prompt_logprobs_after="\t", prompt_logprobs_slots=len(tokens))
        return read_all_at_once(await self.ask(req), len(tokens), self.scale_max)

    async def _chat(self, explanation: str, tokens) -> list[float]:
        messages = chat_messages(explanation, tokens, self.scale_max)
        logprobs = self.mode == "logprobs"
        reasons = []
        for attempt in range(self.retries):
            req = CompletionRequest(
                model="", messages=messages, max_tokens=4 * len(tokens) + 16,
                temperature=0.0 if attempt == 0 else 0.7, sample_index=attempt,
                top_logprobs=self.top_logprobs if logprobs else 0,
                candidate_tokens=self._digits() if logprobs else ())
            c = await self.ask(req)
            try:
                values, offsets = parse_own_array(parse_int_array, c.text, "".join(tokens),
                                                  len(tokens), self.scale_max)
            except ParseError as e:
                reasons.append(str(e))
                note("parse", f"simulation: {e}")
                if attempt + 1 < self.retries:
                    note("retried", "simulation unusable")
                continue
            return read_logprobs(c, values, offsets, self.scale_max) if logprobs else \
                [float(v) for v in values]
        raise SimulationFailed(f"simulator output unusable after {self.retries} tries: {reasons[-1]}")


class SimulationScorer:
    """The scorer contract over a simulator (LLM or lexical): the explanation simulated on
    the n_shown top and n_shown random scoring fragments, scored by pooled correlation."""

    name = "simulation"

    def __init__(self, simulator, draws: int = 1):
        self.simulator, self.draws = simulator, draws
        """draws: seeded resamples of the scoring fragments per explanation (draws.py)."""

    def settings(self) -> dict:
        # The simulator's settings are the run's; a simulation run id stays as it was
        # unless the scoring fragments are drawn more than once.
        return draw_settings(self.draws)

    async def prepare(self) -> None:
        prepare = getattr(self.simulator, "prepare", None)
        if prepare is not None:
            await prepare()

    async def score(self, explanation: str, ff, n_shown: int):
        scoring = ff.scoring_fragments(n_shown)
        top, rest = drop_unsafe(scoring[:n_shown]), drop_unsafe(scoring[n_shown:])
        if not top or not rest:
            raise SimulationFailed("no top or no random scoring fragment can be shown safely")
        return await score_draws(lambda k: self._score_draw(explanation, *simulation_draw(
            top, rest, ff.feature, k)), self.draws)

    async def _score_draw(self, explanation: str, top: list, rest: list):
        from autointerp.scoring.scorers.base import ScoreRecord
        from autointerp.scoring.stats import score_simulation

        scoring = top + rest
        sim = await self.simulator.simulate(explanation, scoring)
        s = score_simulation(scoring, sim, n_top=len(top))
        details = {"simulations": [list(p) for p in sim.predictions]}
        if sim.n_slots:
            details["no_answer"] = [sim.n_no_digit, sim.n_slots]
        return ScoreRecord(s.all, s.top, s.random, constant=s.constant, details=details)
