"""Reading a final answer out of a model's response: the pieces every verifier shares.

Reasoning models write their thinking before their answer. When a response holds a `</think>`, only
the text after the last one counts as the answer (`final_text`), so an answer drafted and abandoned
while thinking is never scored. Responses without thinking tags are read whole.
"""

from __future__ import annotations

import re

THINK_END = "</think>"

# Bounds that keep extraction linear on adversarial responses (thousands of unclosed `\boxed{`).
MAX_BOXED_CHARS = 4096  # a boxed answer longer than this is not read as one
MAX_BOXED_TRIES = 32  # how many `\boxed` occurrences, from the last, are tried

_BOXED = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])\s*")
_ANSWER_OPEN = re.compile(r"<answer>", re.IGNORECASE)
_ANSWER_CLOSE = re.compile(r"</answer>", re.IGNORECASE)


def final_text(response: str) -> str:
    """The part of `response` that holds its answer: what follows the last `</think>`, if any."""
    _, separator, after = response.rpartition(THINK_END)
    return after if separator else response


def last_boxed(text: str) -> str | None:
    """Content of the last well-formed `\\boxed{...}` (or `\\fbox{...}`, or `\\boxed 5`) in `text`.

    Braces are matched with nesting, so `\\boxed{\\frac{1}{2}}` gives `\\frac{1}{2}`; escaped braces
    (`\\{`, `\\}`) do not count. The brace-less form `\\boxed 5` runs to the next `$` or line end.
    An unclosed `\\boxed{` (a truncated response) is skipped in favour of an earlier complete one.
    """
    for match in list(_BOXED.finditer(text))[::-1][:MAX_BOXED_TRIES]:
        start = match.end()
        if start < len(text) and text[start] == "{":
            content = _braced(text, start)
        else:
            content = _unbraced(text, start)
        if content is not None and content.strip():
            return content.strip()
    return None


def _braced(text: str, open_index: int) -> str | None:
    """The text inside the brace group opening at `open_index`, or None when it never closes."""
    depth = 0
    index = open_index
    end = min(len(text), open_index + MAX_BOXED_CHARS)
    while index < end:
        char = text[index]
        if char == "\\":
            index += 2  # an escaped character, `\{` and `\}` included, never opens or closes
            continue
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return text[open_index + 1 : index]
        index += 1
    return None


def _unbraced(text: str, start: int) -> str | None:
    """`\\boxed 42.` -> `42`: up to the next `$` or line end, without a closing full stop."""
    content = re.split(r"[$\n]", text[start : start + MAX_BOXED_CHARS], maxsplit=1)[0].strip().rstrip(".")
    return content or None


def last_answer_tag(text: str) -> str | None:
    """Content of the last complete `<answer>...</answer>` in `text`, stripped; None if there is none.

    The content runs from the last `<answer>` before the last `</answer>`, so text injected between
    an earlier pair never counts, and the search stays linear however many tags there are.
    """
    closes = list(_ANSWER_CLOSE.finditer(text))
    if not closes:
        return None
    close = closes[-1]
    opens = list(_ANSWER_OPEN.finditer(text, 0, close.start()))
    if not opens:
        return None
    return text[opens[-1].end() : close.start()].strip()


def last_fenced_block(text: str, languages: tuple[str, ...]) -> str | None:
    """Body of the last closed ``` fence whose info string names one of `languages` (any case)."""
    names = "|".join(re.escape(name) for name in languages)
    pattern = re.compile(rf"```[ \t]*(?:{names})[ \t]*\r?\n(.*?)```", re.DOTALL | re.IGNORECASE)
    blocks = pattern.findall(text)
    return blocks[-1] if blocks else None
