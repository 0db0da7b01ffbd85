"""Shell-completion plumbing that click's defaults do not get right for us.

click 8.4 changed the fish protocol to newline-separated fields but kept a template that
cannot parse it (fish reports "string split: missing argument"), and other click
versions use other separators.  We register our own fish class, whose script and output
agree whatever click version is installed.  Loaded only when completing
(``_MEMCGCTL_COMPLETE`` is set) and by tools/gen_completions.py.
"""

from __future__ import annotations

from click.shell_completion import CompletionItem, FishComplete, add_completion_class

_SOURCE_FISH = """\
function %(complete_func)s;
    set -l response (env %(complete_var)s=fish_complete COMP_WORDS=(commandline -cp) \
COMP_CWORD=(commandline -t) %(prog_name)s);

    for completion in $response;
        set -l metadata (string split -m 2 \\t -- $completion);

        if test "$metadata[1]" = "dir";
            __fish_complete_directories $metadata[2];
        else if test "$metadata[1]" = "file";
            __fish_complete_path $metadata[2];
        else if test "$metadata[1]" = "plain";
            if test -n "$metadata[3]";
                printf '%%s\\t%%s\\n' $metadata[2] $metadata[3];
            else;
                printf '%%s\\n' $metadata[2];
            end;
        end;
    end;
end;

complete --no-files --command %(prog_name)s --arguments "(%(complete_func)s)";
"""


def _flat(text: str) -> str:
    return " ".join(text.split())


class MemcgctlFishComplete(FishComplete):
    """One line per candidate: ``type<TAB>value<TAB>help``."""

    source_template = _SOURCE_FISH

    def format_completion(self, item: CompletionItem) -> str:
        value = item.value.replace("\t", " ").replace("\n", " ")
        return f"{item.type}\t{value}\t{_flat(item.help or '')}"


def install() -> None:
    add_completion_class(MemcgctlFishComplete, "fish")
