"""``dsctl completion bash|zsh``: a completion script written from the parser itself, so every verb and
flag the parser has is completed and none it lacks.

It completes the verbs, each verb's flags, the values of flags with a fixed set (``-o``, ``--dry-run``,
``--cascade``...), resource types (also in ``TYPE,TYPE`` lists), verb actions (``rollout status``), and
object names, asked of the cluster with ``dsctl get TYPE -o name`` (so they follow ``-n``, ``NATS_URL``
and the credentials as any command does; nothing is printed when no cluster answers). The script skips
the values of flags that take one when it looks for the verb and the words before the cursor. zsh runs
the same script through ``bashcompinit``.
"""

from __future__ import annotations

import argparse
import shlex

from engine.core.arguments import CASCADE, KINDS

#: the resource types offered for a TYPE argument, most used first
TYPES = ("daemonsets", "ds", "pods", "po", "nodes", "no", "daemonset.apps", "all")
#: which verbs take objects, and how: "objects" (TYPE NAME / TYPE/NAME), "nodes" (nodes NAME, then
#: edits), "node" (NODE names), "ds" (rollout's ds/NAME), "pod" (logs POD)
OBJECT_VERBS = {
    "get": "objects",
    "describe": "objects",
    "delete": "objects",
    "explain": "explain",
    "label": "nodes",
    "taint": "nodes",
    "cordon": "node",
    "uncordon": "node",
    "rollout": "ds",
    "logs": "pod",
}
#: flag values that are not argparse choices but a fixed set all the same
FLAG_VALUES = {
    "--cascade": " ".join(c for c in CASCADE if c not in ("true", "false")),
    "-o": "table wide json yaml name jsonpath= custom-columns=",
    "--output": "table wide json yaml name jsonpath= custom-columns=",
}


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _flags(parser: argparse.ArgumentParser) -> tuple[list[str], list[str]]:
    """Every flag of ``parser``, and those of them that take a value."""
    every: list[str] = []
    valued: list[str] = []
    for action in parser._actions:
        every += action.option_strings
        # a bare --dry-run never takes the next word (engine/cli/usage.py): only --dry-run=VALUE
        if action.option_strings and action.nargs != 0 and "--dry-run" not in action.option_strings:
            valued += action.option_strings
    return every, valued


def _choices(parser: argparse.ArgumentParser) -> tuple[dict[str, str], list[str]]:
    """Flag -> its fixed values; the choices of the first positional (an action such as ``run``)."""
    values: dict[str, str] = {}
    first: list[str] = []
    for action in parser._actions:
        choices = [str(c) for c in action.choices] if action.choices else []
        if action.option_strings:
            metavar = action.metavar if isinstance(action.metavar, str) else ""
            if choices:
                text = " ".join(choices)
            elif "|" in metavar and " " not in metavar and metavar.replace("|", "").isalpha():
                text = metavar.replace("|", " ")  # --dry-run's none|client|server
            else:
                text = ""
            for flag in action.option_strings:
                if text:
                    values[flag] = text
                elif flag in FLAG_VALUES and action.nargs != 0:
                    values[flag] = FLAG_VALUES[flag]
        elif not first and choices and not isinstance(action, argparse._SubParsersAction):
            first = choices
    return values, first


def _case(arms: dict[str, str]) -> str:
    lines = [f"        {pattern}) echo {shlex.quote(words)} ;;" for pattern, words in arms.items() if words]
    return "\n".join(lines)


def script(parser: argparse.ArgumentParser, shell: str) -> str:
    verbs = _subparsers(parser)
    global_flags, global_valued = _flags(parser)
    flags: dict[str, str] = {'""': " ".join(global_flags)}
    valued: dict[str, str] = {'""': " ".join(global_valued)}
    values: dict[str, str] = {}
    actions: dict[str, str] = {}
    for name, sub in verbs.items():
        every, takes = _flags(sub)
        flags[name] = " ".join(every)
        valued[name] = " ".join(takes)
        flag_values, first = _choices(sub)
        for flag, words in flag_values.items():
            values[f'"{name} {flag}"'] = words
        if first:
            actions[name] = " ".join(first)
    kinds = " ".join(TYPES)
    body = _TEMPLATE.format(
        verbs=shlex.quote(" ".join(verbs)),
        types=shlex.quote(kinds),
        all_types=" ".join(KINDS),
        flags=_case(flags),
        valued=_case(valued),
        values=_case(values),
        actions=_case(actions),
        object_verbs=_case(OBJECT_VERBS),
    )
    if shell == "zsh":
        return _ZSH_HEAD + body.replace(_BASH_TAIL, _ZSH_TAIL)
    return body


_ZSH_HEAD = """\
#compdef dsctl
# zsh completion for dsctl: the bash completion, through bashcompinit
# load it: source <(dsctl completion zsh)
(( $+functions[compdef] )) || { autoload -U +X compinit && compinit; }
autoload -U +X bashcompinit && bashcompinit
"""
_BASH_TAIL = "complete -F _dsctl dsctl\n"
# the bash function indexes arrays from 0, as bash does: ksharrays for its run only
_ZSH_TAIL = """\
__dsctl_zsh() {
    setopt localoptions ksharrays
    _dsctl "$@"
}
complete -F __dsctl_zsh dsctl
"""

# {{ }} are literal braces (str.format)
_TEMPLATE = r"""# bash completion for dsctl (generated by `dsctl completion bash`)
# load it: source <(dsctl completion bash)

__dsctl_flags() {{
    case "$1" in
{flags}
    esac
}}

__dsctl_valued() {{
    case "$1" in
{valued}
    esac
}}

__dsctl_values() {{
    case "$1 $2" in
{values}
    esac
}}

__dsctl_actions() {{
    case "$1" in
{actions}
    esac
}}

__dsctl_object_kind() {{
    case "$1" in
{object_verbs}
    esac
}}

# object names of a type, from the cluster (nothing when none answers)
__dsctl_names() {{
    local kind="$1"
    shift
    command dsctl get "$kind" -o name "$@" 2>/dev/null | sed 's|^[^/]*/||'
}}

__dsctl_is_type() {{
    local t
    for t in {all_types}; do
        [[ "$1" == "$t" ]] && return 0
    done
    return 1
}}

_dsctl() {{
    local cur prev verb w i skip=0 flag=""
    local -a positionals=() ns=()
    COMPREPLY=()
    cur="${{COMP_WORDS[COMP_CWORD]}}"
    prev="${{COMP_WORDS[COMP_CWORD-1]}}"
    verb=""
    for ((i = 1; i < COMP_CWORD; i++)); do
        w="${{COMP_WORDS[i]}}"
        if ((skip)); then
            skip=0
            if [[ "$flag" == "-n" || "$flag" == "--namespace" ]]; then ns=(-n "$w"); fi
            continue
        fi
        case "$w" in
            --*=*)
                if [[ "${{w%%=*}}" == "--namespace" ]]; then ns=(-n "${{w#*=}}"); fi
                ;;
            =)
                # bash splits --flag=value at the = (COMP_WORDBREAKS): the next word is the value
                skip=1
                flag="${{COMP_WORDS[i-1]}}"
                ;;
            -*)
                if [[ "${{COMP_WORDS[i+1]}}" != "=" &&
                    " $(__dsctl_valued "$verb") $(__dsctl_valued "") " == *" $w "* ]]; then
                    skip=1
                    flag="$w"
                fi
                ;;
            *)
                if [[ -z "$verb" ]]; then verb="$w"; else positionals+=("$w"); fi
                ;;
        esac
    done

    if [[ -z "$verb" ]]; then
        if [[ "$cur" == -* ]]; then
            COMPREPLY=($(compgen -W "$(__dsctl_flags "")" -- "$cur"))
        elif [[ " $(__dsctl_valued "") " != *" $prev "* || "$COMP_CWORD" -eq 1 ]]; then
            COMPREPLY=($(compgen -W {verbs} -- "$cur"))
        fi
        return 0
    fi

    # the value of a flag: --flag VALUE, --flag=VALUE as one word, or split at the = by bash
    if [[ "$cur" == "=" && "$prev" == -* ]]; then
        COMPREPLY=($(compgen -P "=" -W "$(__dsctl_values "$verb" "$prev")" -- ""))
        return 0
    fi
    if [[ "$prev" == "=" ]]; then
        COMPREPLY=($(compgen -W "$(__dsctl_values "$verb" "${{COMP_WORDS[COMP_CWORD-2]}}")" -- "$cur"))
        return 0
    fi
    if ((skip)); then
        local values
        values="$(__dsctl_values "$verb" "$flag")"
        if [[ -n "$values" ]]; then
            COMPREPLY=($(compgen -W "$values" -- "$cur"))
        elif [[ "$flag" == "-f" || "$flag" == "--filename" || "$flag" == --*file* ]]; then
            COMPREPLY=($(compgen -f -- "$cur"))
        fi
        return 0
    fi
    if [[ "$cur" == --*=* ]]; then
        local values
        values="$(__dsctl_values "$verb" "${{cur%%=*}}")"
        COMPREPLY=($(compgen -P "${{cur%%=*}}=" -W "$values" -- "${{cur#*=}}"))
        return 0
    fi
    if [[ "$cur" == -* ]]; then
        COMPREPLY=($(compgen -W "$(__dsctl_flags "$verb")" -- "$cur"))
        return 0
    fi

    local actions n=${{#positionals[@]}}
    actions="$(__dsctl_actions "$verb")"
    if [[ -n "$actions" ]]; then
        if ((n == 0)); then
            COMPREPLY=($(compgen -W "$actions" -- "$cur"))
            return 0
        fi
        positionals=("${{positionals[@]:1}}")
        n=$((n - 1))
    fi

    case "$(__dsctl_object_kind "$verb")" in
        objects)
            if [[ "$cur" == */* ]]; then
                local type="${{cur%%/*}}"
                COMPREPLY=($(compgen -P "$type/" -W "$(__dsctl_names "$type" "${{ns[@]}}")" -- "${{cur#*/}}"))
            elif ((n == 0)); then
                if [[ "$cur" == *,* ]]; then
                    COMPREPLY=($(compgen -P "${{cur%,*}}," -W {types} -- "${{cur##*,}}"))
                else
                    COMPREPLY=($(compgen -W {types} -- "$cur"))
                fi
            elif [[ "${{positionals[0]}}" != */* && "${{positionals[0]}}" != *,* ]]; then
                COMPREPLY=($(compgen -W "$(__dsctl_names "${{positionals[0]}}" "${{ns[@]}}")" -- "$cur"))
            fi
            ;;
        explain)
            if ((n == 0)); then
                COMPREPLY=($(compgen -W "pod node" -- "$cur"))
            else
                COMPREPLY=($(compgen -W "$(__dsctl_names "${{positionals[0]}}" "${{ns[@]}}")" -- "$cur"))
            fi
            ;;
        nodes)
            if ((n == 0)); then
                COMPREPLY=($(compgen -W "nodes node no" -- "$cur"))
            elif __dsctl_is_type "${{positionals[0]}}"; then
                COMPREPLY=($(compgen -W "$(__dsctl_names nodes)" -- "$cur"))
            fi
            ;;
        node)
            COMPREPLY=($(compgen -W "$(__dsctl_names nodes)" -- "$cur"))
            ;;
        pod)
            if ((n == 0)); then
                COMPREPLY=($(compgen -W "$(__dsctl_names pods "${{ns[@]}}")" -- "$cur"))
            fi
            ;;
        ds)
            if ((n == 0)); then
                local names
                names="$(__dsctl_names daemonsets "${{ns[@]}}")"
                COMPREPLY=($(compgen -W "daemonset $(printf 'ds/%s ' $names)" -- "$cur"))
            elif ((n == 1)) && [[ "${{positionals[0]}}" != */* ]]; then
                COMPREPLY=($(compgen -W "$(__dsctl_names daemonsets "${{ns[@]}}")" -- "$cur"))
            fi
            ;;
    esac
    return 0
}}

complete -F _dsctl dsctl
"""
