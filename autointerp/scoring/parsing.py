"""Text in and out of the explainer and simulator prompts.

Corpus text goes into prompts one token per line, as `token<TAB>value`, between
`<start>` and `<end>` lines (the format of Bills et al. 2023). A token is escaped
so that it can never contain a raw tab or newline: a fragment that holds
"<end>", a tab, or "ignore the above" stays one data line and cannot end the
block or add one. `parse_records` reads a block back, which is
how the tests show that hostile corpus text leaves the structure intact.
"""

from __future__ import annotations

import json
import math
import re
from functools import cache
from importlib import resources

from autointerp.llm.base import TokenLogprob

START, END = "<start>", "<end>"
_ESCAPES = {"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"}
_UNESCAPES = {v[1]: k for k, v in _ESCAPES.items()}
MAX_EXPLANATION_CHARS = 120


class ParseError(ValueError):
    """An answer that cannot be read; its message is the reason recorded for the feature."""


@cache
def template(name: str) -> str:
    """A prompt template from prompts/ (installed as autointerp.prompts)."""
    return resources.files("autointerp.prompts").joinpath(name).read_text("utf-8").rstrip("\n")


@cache
def fewshot_examples() -> tuple[dict, ...]:
    """Few-shot examples: an explanation and fragments of (token, activation 0..10) pairs."""
    return tuple(json.loads(template("fewshot.json")))


def render(text: str, **values) -> str:
    """Fill `{name}` fields in one pass, so that text substituted in (corpus tokens, an
    explanation) is never itself scanned for fields."""
    return re.sub(r"\{(\w+)\}", lambda m: str(values.get(m.group(1), m.group(0))), text)


def escape_token(token: str) -> str:
    """One display line per token: backslash, tab, CR and LF become two-character escapes."""
    return "".join(_ESCAPES.get(c, c) for c in token)


def unescape_token(text: str) -> str:
    out, i = [], 0
    while i < len(text):
        if text[i] == "\\" and i + 1 < len(text) and text[i + 1] in _UNESCAPES:
            out.append(_UNESCAPES[text[i + 1]])
            i += 2
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def scale_activations(activations, max_activation: float, scale_max: int = 10) -> list[int]:
    """Activations as integers 0..scale_max against `max_activation` (Bills et al.: the
    maximum over the fragments shown, so the top token reads scale_max)."""
    if max_activation <= 0:
        return [0 for _ in activations]
    return [min(scale_max, max(0, int(math.floor(scale_max * a / max_activation + 0.5))))
            for a in activations]


def format_records(tokens, values) -> str:
    """A `<start>`..`<end>` block of `escaped_token<TAB>value` lines."""
    lines = [START]
    lines += [f"{escape_token(t)}\t{v}" for t, v in zip(tokens, values, strict=True)]
    lines.append(END)
    return "\n".join(lines)


def format_numbered(tokens) -> str:
    """A `<start>`..`<end>` block of `index<TAB>escaped_token` lines (chat simulator)."""
    return "\n".join([START, *(f"{i}\t{escape_token(t)}" for i, t in enumerate(tokens)), END])


def parse_numbered(block: str) -> list[list[str]]:
    """Every numbered block in `block`, as its tokens (unescaped), checking the numbering."""
    out = []
    for record in parse_records(block, split_first=True):
        if [i for i, _ in record] != [str(k) for k in range(len(record))]:
            raise ParseError("numbered block out of order")
        out.append([t for _, t in record])
    return out


def parse_records(block: str, split_first: bool = False) -> list[list[tuple[str, str]]]:
    """Every `<start>`..`<end>` block in `block`, as (token, value) pairs (unescaped);
    with split_first, (index, token) pairs of numbered blocks."""
    records, current = [], None
    for line in block.split("\n"):
        if line == START:
            if current is not None:
                raise ParseError("nested <start>")
            current = []
        elif line == END:
            if current is None:
                raise ParseError("<end> without <start>")
            records.append(current)
            current = None
        elif current is not None:
            a, sep, b = line.partition("\t") if split_first else line.rpartition("\t")
            if not sep:
                raise ParseError(f"record line without a tab: {line!r}")
            current.append((a, unescape_token(b)) if split_first else (unescape_token(a), b))
    if current is not None:
        raise ParseError("<start> without <end>")
    return records


_PREFIXES = re.compile(
    r"^(explanation( of (feature|neuron) \d+ behavior)?\s*:\s*|(the )?(main )?(thing )?"
    r"(this|the) (feature|neuron)( \d+)? (does is )?(to )?(find|finds|detects?|fires on|"
    r"activates on|responds to|looks for|is looking for|is)\s*:?\s*|"
    r"(it|this) (detects|finds|fires on|looks for)\s+)", re.IGNORECASE)
_QUOTES = "\"'`“”‘’«»"


SENTENCE_END = r"(?<!\be\.g)(?<!\bi\.e)\.\s+(?=[A-Z])"
"""Where clean_explanation ends a rambling answer's first sentence."""
EXPLANATION_DECIDED = rf"\S[^\n]*\n|{SENTENCE_END}"
"""Once an answer's text matches this, clean_explanation's result is fixed whatever
follows: its first non-empty line has ended, or the first sentence of that line has
(tests/test_explain.py checks this at every cut of sample answers)."""


def clean_explanation(text: str, max_chars: int = MAX_EXPLANATION_CHARS) -> str:
    """An explainer's answer as one bounded line: the first non-empty line, with
    restated prompt prose ("This feature detects ..."), wrapping quotes and
    trailing punctuation removed, cut at a word boundary."""
    line = next((s.strip() for s in text.splitlines() if s.strip()), "")
    # One phrase is asked for; a model that rambles on gets its first sentence kept.
    line = re.split(SENTENCE_END, line, maxsplit=1)[0]
    for _ in range(3):  # prefixes can stack: 'Explanation: the main thing ... is find'
        stripped = _PREFIXES.sub("", line, count=1).strip()
        if stripped == line:
            break
        line = stripped
    for _ in range(2):  # '"commas."' -> 'commas', but "the word 'the'" keeps its quotes
        line = line.rstrip(".;:,! ")
        if len(line) >= 2 and line[0] in _QUOTES and line[-1] in _QUOTES:
            line = line[1:-1].strip()
    line = re.sub(r"\s+", " ", line)
    if len(line) > max_chars:
        cut = line[:max_chars].rsplit(" ", 1)[0]
        line = cut if len(cut) >= max_chars // 2 else line[:max_chars]
        line = line.rstrip(".;:,!- ")
    if not line:
        raise ParseError("empty explanation")
    return line


def parse_int_array(text: str, n: int, scale_max: int) -> tuple[list[int], list[int]]:
    """The first JSON array of integers in `text` (prose around it is ignored).
    Returns the values and each value's character offset in `text`."""
    start = text.find("[")
    end = text.find("]", start + 1)
    if start < 0 or end < 0:
        raise ParseError("no JSON array in the answer")
    try:
        raw = json.loads(text[start:end + 1])
    except json.JSONDecodeError:
        raise ParseError("the answer's array is not valid JSON") from None
    if len(raw) != n:
        raise ParseError(f"expected {n} values, got {len(raw)}")
    values = []
    for v in raw:
        if isinstance(v, bool) or not isinstance(v, int | float) or v != int(v):
            raise ParseError(f"value {v!r} is not an integer")
        if not 0 <= v <= scale_max:
            raise ParseError(f"value {v} out of range 0..{scale_max}")
        values.append(int(v))
    offsets = [m.start() + start for m in re.finditer(r"-?\d+(\.\d+)?", text[start:end + 1])]
    return values, offsets


def digit_value(token: str, scale_max: int, exact: bool = False) -> int | None:
    """The integer a token stands for in an answer (' 3', '3', ',3', '[10'), else None.
    `exact`: only the bare digits count (after a tab in the all-at-once format, ' 3'
    would be off-format)."""
    s = token if exact else token.strip().strip("[],").strip()
    if s.isdigit() and s.isascii() and int(s) <= scale_max and (s == "0" or s[0] != "0"):
        return int(s)
    return None


@cache
def _digit_table(scale_max: int, exact: bool) -> dict[str, int | None]:
    """digit_value per token string, filled as tokens are met (a run meets few distinct
    alternatives, and reads them at every slot of every fragment)."""
    return {}


def expected_value(position: TokenLogprob, scale_max: int, exact: bool = False) -> float | None:
    """Expected activation from the alternatives at one position: probabilities of
    the digit tokens, renormalised over the digits present (Bills et al. 2023).
    None when no digit is among the alternatives."""
    mass = [0.0] * (scale_max + 1)
    seen = set()
    table = _digit_table(scale_max, exact)
    for token, logprob in position.top:
        try:
            v = table[token]
        except KeyError:
            v = table[token] = digit_value(token, scale_max, exact)
        if v is not None and token not in seen:
            seen.add(token)
            mass[v] += math.exp(logprob)
    total = sum(mass)
    if total <= 0:
        return None
    return sum(v * p for v, p in enumerate(mass)) / total


def token_starts(tokens) -> list[int]:
    """Character offset where each token's text starts in the concatenated text."""
    starts, pos = [], 0
    for t in tokens:
        starts.append(pos)
        pos += len(t.token)
    return starts
