"""How ``dsctl`` answers a command line it cannot take: one line saying what is wrong, as kubectl's
(``error: unknown command "aply" for "dsctl"; did you mean "apply"?``), never the whole usage; exit 2.

Also the text of ``dsctl --help``'s epilog (the logging settings of ``engine/runtime/logs.py``), and
the rewrite of kubectl's deprecated bare ``--dry-run`` (read as ``--dry-run=client``, with a warning).
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Collection, Sequence
from typing import TextIO

from engine.core.arguments import BARE_DRY_RUN, did_you_mean

EPILOG = """\
objects: TYPE NAME..., TYPE/NAME... or TYPE,TYPE (daemonsets|ds, pods|po, nodes|no), as kubectl.

logging (engine/runtime/logs.py; docs/deploy.md "Metrics and logs"):
  DSCTL_LOG_LEVEL   debug|info|warning|error: the least severe log line written. Default info for the
                    processes (up, engine, executor, ingest); one-shot commands print only errors
                    unless it is set.
  DSCTL_LOG_FORMAT  json|console: JSON lines (for log collectors) or a readable console. Default
                    console on a terminal, json otherwise; `dsctl up` always writes JSON to --log-file.

shell completion: source <(dsctl completion bash)   (zsh: source <(dsctl completion zsh))
"""

_INVALID_CHOICE = re.compile(r"argument ([^:]+): invalid choice: '([^']*)' \(choose from (.*)\)$")


def one_line(prog: str, message: str, verbs: Sequence[str]) -> str:
    """argparse's ``message`` for ``prog`` as one line; an unknown command (``verbs``: the top level's
    commands) or action (``rollout staus``) gets a "did you mean"."""
    invalid = _INVALID_CHOICE.search(message)
    if invalid and invalid.group(1) == "COMMAND" and verbs:
        return unknown_command(invalid.group(2), verbs)
    if invalid:
        what, word = invalid.group(1), invalid.group(2)
        choices = re.findall(r"'([^']*)'", invalid.group(3))
        close = did_you_mean(word, choices)
        hint = f'did you mean "{close}"?' if close else f"one of {', '.join(choices)}"
        return f'error: invalid {what} "{word}" for "{prog}"; {hint}'
    return f"error: {message}; see {prog} --help"


def unknown_command(word: str, verbs: Sequence[str]) -> str:
    close = did_you_mean(word, verbs)
    hint = f'did you mean "{close}"?' if close else "see dsctl --help"
    return f'error: unknown command "{word}" for "dsctl"; {hint}'


def flags_of(parser: argparse.ArgumentParser) -> list[str]:
    return [flag for action in parser._actions for flag in action.option_strings]


def verb_parser(parser: argparse.ArgumentParser, verb: str) -> argparse.ArgumentParser:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) and verb in action.choices:
            found: argparse.ArgumentParser = action.choices[verb]
            return found
    return parser


def intermix(args: argparse.Namespace, extra: list[str], parser: argparse.ArgumentParser) -> list[str]:
    """Words argparse left over because they came after a flag (``get ds -o wide NAME``), put back into
    the verb's list of objects as kubectl takes them; returns what is still left (unknown flags, or
    words for a verb whose positionals are full)."""
    listed = [a for a in parser._actions if not a.option_strings and a.nargs in ("*", "+")]
    if not listed or any(w.startswith("-") and w != "-" for w in extra):
        return extra
    dest = listed[-1].dest
    setattr(args, dest, [*(getattr(args, dest, None) or []), *extra])
    return []


def unexpected(verb: str, extra: Sequence[str], parser: argparse.ArgumentParser) -> str:
    """The first word ``parser`` (``verb``'s) could not place: an unknown flag (with the verb's closest
    flag), else an argument too many."""
    for word in extra:
        if word.startswith("-") and word != "-":
            flag = word.split("=", 1)[0]
            known = [f for f in flags_of(parser) if f.startswith("--")] if flag.startswith("--") else []
            close = did_you_mean(flag, known) if known else None
            hint = f"did you mean {close}?" if close else f"see dsctl {verb} --help"
            return f"error: unknown flag: {flag}; {hint}"
    return f'error: unexpected argument "{extra[0]}" for "dsctl {verb}"; see dsctl {verb} --help'


def bare_dry_run(words: list[str], verbs: Collection[str], err: TextIO) -> list[str]:
    """kubectl's deprecated ``--dry-run`` without a value means ``--dry-run=client``: rewritten so, with
    a warning, for the verbs that take ``--dry-run=...`` (a bare flag never takes the next word as its
    value, as kubectl's does not). Words after ``--`` are left alone."""
    verb = next((w for w in words if w in verbs), None)
    if verb is None:
        return words
    out: list[str] = []
    for i, word in enumerate(words):
        if word == "--":
            return [*out, *words[i:]]
        if word == "--dry-run":
            print(
                f"warning: --dry-run without a value is deprecated and means --dry-run={BARE_DRY_RUN}; "
                f"write --dry-run={BARE_DRY_RUN}",
                file=err,
            )
            word = f"--dry-run={BARE_DRY_RUN}"
        out.append(word)
    return out
