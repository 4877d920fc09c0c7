"""Corpus text that must not steer the judge (delphi #179: text inside the examples was
parsed as the judge's answer).

Two defences, beside the escaping every prompt form shares (parsing.escape_token, one
line per example or token):

- a fragment or example that cannot be shown safely is dropped, and each drop is
  counted in the run's ledger with its reason: chat-template control tokens (a server
  that parses special tokens in prompt text would read them as turn boundaries) and
  tokens too long to be a token (a prompt blown past the context window is truncated,
  silently, by some servers);
- an answer is read only where the judge wrote it: an array that also occurs in the
  examples shown (after removing white space) is a copy of corpus text, not a verdict,
  and fails to parse like any unusable answer. Answer-format text, fake slot markers,
  "Explanation:" lines and lists of 1s are shown (escaped, on their example's line),
  since only the parse could be fooled by them, and it is not.
"""

from __future__ import annotations

import re

from autointerp.scoring.ledger import note
from autointerp.scoring.parsing import ParseError

MAX_TOKEN_CHARS = 64
"""A longer 'token' is not a real token of any tokenizer's vocabulary: dropped."""
CONTROL = re.compile(r"<\|[A-Za-z0-9_ .-]{1,40}\|>|<(?:start|end)_of_turn>|\[/?INST\]|"
                     r"</?s>|<(?:bos|eos|pad)>|<\|?(?:im_start|im_end|endoftext)\|?>")
"""Chat-template control tokens of the common families (ChatML, Llama, Gemma, Mistral)."""


def unsafe_reason(tokens) -> str | None:
    """Why a run of tokens cannot be shown in a prompt safely, or None."""
    for t in tokens:
        if len(t) > MAX_TOKEN_CHARS:
            return f"a token longer than {MAX_TOKEN_CHARS} characters"
    if CONTROL.search("".join(tokens)):
        return "a chat-template control token"
    return None


def drop_unsafe(items, tokens_of=lambda x: x.tokens) -> list:
    """The items that can be shown; each one dropped is noted in the ledger with its reason."""
    kept = []
    for item in items:
        reason = unsafe_reason(tokens_of(item))
        if reason is None:
            kept.append(item)
        else:
            note("dropped", reason)
    return kept


def _squash(text: str) -> str:
    return re.sub(r"\s+", "", text)


def own_answer_start(text: str, shown: str) -> int:
    """Where the judge's own answer starts: the first array in `text` that is not a copy of
    text in the examples shown (an echo of corpus text is skipped, never read as verdicts).
    ParseError when every array is such a copy; 0 when there is no array (the parse says so)."""
    squashed, start, copied = _squash(shown), text.find("["), False
    while start >= 0:
        end = text.find("]", start + 1)
        if end < 0:
            break
        array = _squash(text[start:end + 1])
        if len(array) <= 2 or array not in squashed:
            return start
        copied, start = True, text.find("[", end + 1)
    if copied:
        raise ParseError("the answer's only array is copied from example text")
    return 0


def parse_own_array(parse, text: str, shown: str, *args) -> tuple[list[int], list[int]]:
    """`parse(text, *args)` (parsing.parse_int_array) on the judge's own answer only, with
    offsets into the whole text (the logprob readers index the completion by them)."""
    k = own_answer_start(text, shown)
    values, offsets = parse(text[k:], *args)
    return values, [o + k for o in offsets]
