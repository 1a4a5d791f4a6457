"""Shell command lines: what a command would run, read, write and reach, before it runs.

`analyse` parses a command line with bashlex into every simple command it contains
(pipelines, lists, compound commands, command and process substitutions, the string given
to `sh -c` and friends, the command `find -exec`, `xargs`, `sudo`, `env` and other
wrappers would start) and classifies each program. The result carries:

- `classes`: what the command does: read, write, destructive, network, privilege,
  interpreter, nested_shell.
- `effects`: what a posture restricts: `write` (read_only stops it) and `egress`
  (no_egress stops it). Anything not known to only read is assumed to write.
- `flags`: evasion and escalation patterns the bundled policy refuses outright:
  obfuscation (decoded text run as code), pipe_to_shell, dynamic_command (the program
  name is computed at run time), env_injection (LD_PRELOAD and other variables that load
  code), privilege_escalation, shell_escape (vim -c ':!sh', awk system(), find -exec sh),
  destructive_system (rm -rf /, mkfs, shutdown), dev_tcp (bash's /dev/tcp sockets),
  function_definition, code_from_stdin (a shell or interpreter that would read its
  program from stdin, where no decision sees it), hidden_substitution (a command
  substitution bashlex does not walk), runtime_code (text the shell will evaluate as
  code later, out of a decision's sight: arithmetic on a variable's value, `${!x}`,
  `${x@P}`, `trap`, `alias`, `hash -p`, `mapfile -C`, a crontab or an `at` job).

A command bashlex cannot parse (or nests deeper than `MAX_DEPTH`) raises
`ShellParseError`, and the PEP denies it: what cannot be read cannot be judged.
"""

from __future__ import annotations

import os
import posixpath
import re
from dataclasses import dataclass, field
from typing import Any

import bashlex

from interlock.classify.shellpath import OPAQUE, Paths, Where, is_pattern, resolve, unquote

MAX_COMMAND = 16 * 1024
MAX_DEPTH = 4

SHELLS = frozenset(
    {
        "sh", "bash", "dash", "zsh", "ksh", "mksh", "ash", "fish", "busybox", "rbash", "csh",
        "tcsh", "yash", "posh", "elvish", "xonsh", "nu", "oksh", "loksh",
    }
)  # fmt: skip
INTERPRETERS = frozenset(
    {
        "python", "python2", "python3", "perl", "ruby", "node", "nodejs", "php", "lua",
        "tclsh", "Rscript", "julia", "deno", "bun", "osascript", "pwsh", "powershell",
        "groovy", "java", "jshell", "irb", "gdb", "m4", "ed", "red", "dc", "expect",
        "wish", "guile", "scheme", "racket", "sbcl", "clisp", "ghci", "runghc", "erl",
        "elixir", "iex", "scala", "kotlin", "swift", "R", "octave", "gnuplot",
    }
)  # fmt: skip
RUNTIME_CODE_BUILTINS = frozenset(
    {"trap", "let", "enable", "bind", "complete", "compgen", "fc", "at", "batch"}
)
"""Builtins and programs that keep text to run as code later (or evaluate it as
arithmetic, which runs the command substitutions in a variable's value)."""
RUNTIME_CODE_TEXT = re.compile(
    r"\$\{!"  # ${!x}: the value of the variable named by x
    r"|\$\{[^}]*@P"  # ${x@P}: expanded as a prompt, substitutions included
    r"|\$\{#?\w+\[[^\]]*[^\]\d@*\s-][^\]]*\]"  # ${a[x]}: a subscript is arithmetic
    r"|\$\{#?\w+:(?![-=?+])[^}]*[A-Za-z_$]"  # ${x:i:j}: so are substring offsets
    r"|\$\["  # $[...]: old arithmetic
    r"|\w\[[^\]]*[$`]"  # a[$x]=1, unset 'a[$x]', printf -v 'a[$x]'
)
INLINE_CODE = {"-c", "-e", "-E", "-r", "--eval", "--command", "-x"}
AWKS = frozenset({"awk", "gawk", "mawk", "nawk"})
EDITORS = frozenset({"vi", "vim", "nvim", "ex", "view", "rvim", "vimdiff", "emacs", "nano"})
PAGERS = frozenset({"less", "more", "man", "most"})
READERS = frozenset(
    {
        "cat", "ls", "ll", "dir", "head", "tail", "grep", "egrep", "fgrep", "rg", "ag",
        "find", "locate", "stat", "du", "df", "ps", "top", "id", "whoami", "groups", "uname",
        "hostname", "uptime", "date", "pwd", "echo", "printf", "wc", "sort", "uniq", "cut",
        "tr", "less", "more", "file", "which", "whereis", "type", "printenv", "diff", "cmp",
        "md5sum", "sha1sum", "sha256sum", "sha512sum", "base64", "xxd", "od", "hexdump",
        "strings", "jq", "yq", "column", "nl", "tac", "rev", "realpath", "readlink",
        "basename", "dirname", "true", "false", "test", "[", "sleep", "free", "lsblk",
        "lscpu", "lsof", "netstat", "ss", "ip", "ifconfig", "env", "getent", "last", "w",
        "who", "history", "man", "tree", "seq", "yes", "expr", "zcat", "zgrep", "journalctl",
        "dmesg", "vmstat", "iostat", "git-log", ":", "cd", "export", "set", "unset", "read",
        "wait", "exit", "return", "local", "shift", "umask", "alias",
    }
)  # fmt: skip
WRITERS = frozenset(
    {
        "cp", "mv", "mkdir", "touch", "tee", "ln", "install", "chmod", "chown", "chgrp",
        "tar", "unzip", "gunzip", "gzip", "zip", "bzip2", "xz", "patch", "sed", "awk",
        "make", "cmake", "gcc", "cc", "go", "cargo", "rsync", "git", "npm", "pip", "pip3",
        "yarn", "pnpm", "docker", "kubectl", "helm", "terraform", "crontab", "systemctl",
        "service", "apt", "apt-get", "dpkg", "yum", "dnf", "apk", "brew", "truncate",
        "split", "mktemp", "dd", "sqlite3", "psql", "mysql", "redis-cli", "editor",
    }
)  # fmt: skip
DESTRUCTIVE = frozenset(
    {
        "rm", "rmdir", "shred", "unlink", "wipefs", "mkfs", "fdisk", "parted", "kill",
        "killall", "pkill", "shutdown", "reboot", "halt", "poweroff", "init", "truncate",
    }
)  # fmt: skip
NETWORK = frozenset(
    {
        "curl", "wget", "nc", "ncat", "netcat", "socat", "ssh", "scp", "sftp", "rsync", "ftp",
        "tftp", "telnet", "ping", "dig", "nslookup", "host", "traceroute", "nmap", "aria2c",
        "lftp", "smbclient", "mail", "sendmail", "openssl", "http", "httpie",
    }
)  # fmt: skip
PRIVILEGE = frozenset(
    {
        "sudo", "su", "doas", "pkexec", "runuser", "setcap", "chroot", "nsenter", "unshare",
        "passwd", "useradd", "usermod", "userdel", "groupadd", "visudo", "chpasswd",
        "capsh", "setpriv", "mount", "umount",
    }
)  # fmt: skip
WRAPPERS = frozenset(
    {
        "nohup", "nice", "ionice", "time", "timeout", "stdbuf", "setsid", "exec", "command",
        "builtin", "chrt", "taskset", "flock", "xargs", "watch", "strace", "ltrace",
        "unbuffer", "script", "eval",
    }
)  # fmt: skip
GIT_READS = frozenset({"status", "log", "diff", "show", "branch", "blame", "grep", "ls-files",
                       "rev-parse", "describe"})  # fmt: skip
GIT_NETWORK = frozenset({"clone", "fetch", "pull", "push", "remote", "submodule", "ls-remote"})
TRUSTED_DIRS = ("/bin/", "/usr/bin/", "/usr/local/bin/", "/sbin/", "/usr/sbin/")
STDIN_FILES = frozenset({"-", "/dev/stdin", "/proc/self/fd/0", "/dev/fd/0"})
# Options that take a value, per wrapper, so the wrapped command is found correctly.
WRAPPER_VALUES = {
    "exec": {"-a"},
    "strace": {"-o", "-e", "-p", "-s", "-u", "-P", "-I", "-b", "-E", "-X", "-O", "-S"},
    "ltrace": {"-o", "-e", "-p", "-s", "-u", "-n", "-l", "-x"},
    "time": {"-f", "-o", "--format", "--output"},
    "timeout": {"-s", "-k", "--signal", "--kill-after"},
    "nice": {"-n", "--adjustment"},
    "ionice": {"-c", "-n", "-p", "-t"},
    "stdbuf": {"-i", "-o", "-e"},
    "xargs": {"-n", "-I", "-P", "-L", "-d", "-E", "-s", "-a", "-i"},
    "sudo": {"-u", "-g", "-C", "-h", "-p", "-r", "-t", "-U", "-D", "-R"},
    "doas": {"-u", "-C"},
    "runuser": {"-u", "-g", "-G"},
    "flock": {"-w", "-E", "--timeout", "--conflict-exit-code"},
    "chrt": set(),
    "taskset": set(),
    "setsid": set(),
    "nohup": set(),
    "command": set(),
    "builtin": set(),
    "unbuffer": set(),
    "watch": {"-n", "-d", "--interval"},
}
DECODERS = frozenset({"base64", "base32", "xxd", "openssl", "rev", "gpg", "uudecode", "gzip",
                      "gunzip", "zcat", "printf", "tr"})  # fmt: skip
LOADER_VARIABLES = re.compile(
    r"^(LD_[A-Z_]+|BASH_ENV|ENV|PROMPT_COMMAND|IFS|PS4|SHELLOPTS|BASHOPTS|PYTHONSTARTUP|"
    r"POSIXLY_CORRECT|BASH_COMPAT|BASH_LOADABLES_PATH|"
    r"PYTHONPATH|PYTHONINSPECT|PERL5OPT|PERL5LIB|PERLLIB|RUBYOPT|RUBYLIB|NODE_OPTIONS|"
    r"GIT_SSH_COMMAND|GIT_EXTERNAL_DIFF|GIT_PAGER|PAGER|EDITOR|VISUAL|LESSOPEN|"
    r"DYLD_[A-Z_]+|PATH|MANPAGER|SYSTEMD_PAGER|GIT_CONFIG\w*|GIT_EXEC_PATH|GIT_ASKPASS|"
    r"SSH_ASKPASS|GIT_TEMPLATE_DIR|BASH_FUNC_.*)$"
)
# Programs whose arguments never name a file they open.
NOT_PATHS = frozenset(
    {
        "echo", "printf", "seq", "yes", "sleep", "expr", "true", "false", ":", "kill",
        "pkill", "killall", "export", "unset", "set", "local", "declare", "typeset",
        "readonly", "shift", "exit", "return", "wait", "alias", "umask", "read", "test",
        "[", "cd", "pushd", "popd", "id", "whoami", "groups", "uname", "hostname",
        "uptime", "nproc", "ps", "which", "type", "basename", "dirname",
    }
)  # fmt: skip
# Programs whose first operand is a pattern or script unless one is given as an option.
PATTERN_FIRST = frozenset({"grep", "egrep", "fgrep", "zgrep", "rg", "ag", "jq", "yq",
                           "sed"} | AWKS)  # fmt: skip
# Programs that change (or may remove) every file they name.
WRITES_ALL = frozenset({"mv", "touch", "mkdir", "chmod", "chown", "chgrp", "tee", "truncate",
                        "shred", "rm", "rmdir", "unlink"})  # fmt: skip
# Options naming a directory the program works in (relative paths follow it).
CHDIR_OPTIONS = {"env": ("-C", "--chdir"), "git": ("-C",), "make": ("-C", "--directory"),
                 "tar": ("-C", "--directory"), "unzip": ("-d",)}  # fmt: skip
# HOME or CDPATH named other than as `$HOME`/`${HOME}`: a command that may set them
# (`HOME=/etc`, `export CDPATH=/etc`, `for HOME in ...`, `read HOME`) changes what `~`,
# `$HOME` and `cd` resolve to.
HOME_CHANGES = re.compile(r"(?<![$\w{])(HOME|CDPATH|OLDPWD|DIRSTACK)\b")
# Absolute or home-relative paths written in inline code (python -c "open('/etc/x')").
INLINE_PATH = re.compile(r"(?<![\w.])(?:~|/)[\w.@%+=:,/-]*")
# Programs that read or change everything under the directories they name: always (None)
# or with one of these options (a letter counts inside a cluster of short options).
_GREP_R = ("r", "R", "--recursive", "--dereference-recursive", "--directories=recurse")
RECURSIVE: dict[str, tuple[str, ...] | None] = {
    "grep": _GREP_R, "egrep": _GREP_R, "fgrep": _GREP_R, "zgrep": _GREP_R, "rg": None,
    "ag": None, "tar": None, "zip": ("r", "--recurse-paths"), "diff": ("r", "--recursive"),
    "cp": ("r", "R", "a", "--recursive", "--archive"), "scp": ("r",),
    "rsync": ("r", "a", "--recursive", "--archive"), "rm": ("r", "R", "--recursive"),
    "chmod": ("R", "--recursive"), "chown": ("R", "--recursive"),
    "chgrp": ("R", "--recursive"),
}  # fmt: skip
# find's actions that read or change the files it finds.
FIND_ACTIONS = frozenset({"-exec", "-execdir", "-ok", "-okdir", "-delete", "-fprint",
                          "-fprint0", "-fprintf", "-fls"})  # fmt: skip
# find's options whose value is a file it reads (or, for -fprint and friends, writes).
FIND_FILES = {"-newer": "read", "-anewer": "read", "-cnewer": "read", "-samefile": "read",
              "-files0-from": "read", "-fprint": "write", "-fprint0": "write",
              "-fprintf": "write", "-fls": "write"}  # fmt: skip
SYSTEM_PATHS = (
    "/", "/*", "/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib64", "/opt",
    "/proc", "/root", "/sbin", "/sys", "/usr", "/var", "~", "~/", "$HOME", ".",
)  # fmt: skip


class ShellParseError(ValueError):
    """A command line that cannot be read; the PEP denies it."""


class Word(str):
    """An argument after quote removal (what bashlex gives), carrying the text as
    written, from which its paths are resolved (`shellpath.expand`)."""

    raw: str

    def __new__(cls, text: str, raw: str) -> Word:
        word = super().__new__(cls, text)
        word.raw = raw
        return word


def _raw(word: str) -> str:
    """The word as written; a word made here (not parsed) is taken as written."""
    return word.raw if isinstance(word, Word) else word


def _file_url(url: str) -> str:
    """The path of a `file:` URL (what follows `file:`); percent-escapes, which a URL
    reader decodes, leave it unresolved."""
    if "%" in url:
        return OPAQUE
    if url.startswith("//"):
        rest = url[2:]
        return "/" + rest.split("/", 1)[1] if "/" in rest else "/"
    return url


def _option_value(option: str) -> str | None:
    """The value inside an option word (`--file=/x`, `-f/x`), as written."""
    text, raw = str(option), _raw(option)
    if text.startswith("--"):
        if "=" not in text:
            return None
        k = text.index("=") + 1
    elif len(text) > 2 and not text[1:].isalpha():
        k = 2  # -f/etc/x, -o~/x; a cluster of letters (-la) is taken for flags
    else:
        return None
    if raw[:k] == text[:k]:
        return raw[k:]
    # Quoted in a way that moves the value: take the value as plain text, unless it
    # holds an expansion whose quoting is lost here.
    return OPAQUE if any(c in text[k:] for c in "$`~") else "'" + text[k:].replace("'", "") + "'"


@dataclass
class Analysis:
    commands: list[list[str]] = field(default_factory=list)
    """argv of every simple command found, nested ones included."""
    programs: set[str] = field(default_factory=set)
    classes: set[str] = field(default_factory=set)
    effects: set[str] = field(default_factory=set)
    flags: set[str] = field(default_factory=set)
    paths: Paths = field(default_factory=Paths)
    """The files named, as the target resolves them."""
    substitutions: int = 0
    command_substitutions: int = 0
    """`$(...)` and backquotes walked: what `hidden_substitution` compares the text with
    (a process substitution `<(...)` is not one, and must not make up for one)."""
    path_words: list[tuple[str, str, tuple[str, ...]]] = field(default_factory=list)
    """(word as written, "read", "write" or "link", the words a symbolic link's target
    is relative to), resolved once every `cd` is known."""
    cd_words: list[tuple[str | None, bool]] = field(default_factory=list)
    """(`cd` target as written or None for home, whether inside a loop)."""
    loops: int = 0
    """How many loops (for, while, until) the walk is inside."""
    unread: list[str] = field(default_factory=list)
    """Words whose text could not be worked out (they make the command unresolved)."""
    expansion_rules: bool = False
    """`shopt` or GLOBIGNORE: globs may match what the default rules would not."""
    relative_symlinks: bool = False
    """A symbolic link made with a relative target (or `ln -r`): where it leads depends
    on where it ends up."""
    link_commands: int = 0
    """`ln` commands in the command line."""

    def details(self) -> dict[str, Any]:
        """The action details a decision sees: whole, never shortened (the command is
        bounded by `max_command_bytes`, the details by the PDP's limit on values, over
        which the action is denied)."""
        return {
            "programs": sorted(self.programs),
            "classes": sorted(self.classes),
            "effects": sorted(self.effects),
            "flags": sorted(self.flags),
            "argv": [[str(w) for w in c] for c in self.commands],
            "reads": list(self.paths.reads),
            "writes": list(self.paths.writes),
            "globs": list(self.paths.globs),
            "link_targets": list(self.paths.links),
            "trees": list(self.paths.trees),
            "unresolved": list(self.paths.unresolved),
            "substitutions": self.substitutions,
        }


def _name(word: str) -> str:
    base = os.path.basename(word)
    # python3.11 -> python3, pip3.12 -> pip3: versioned names run the same thing; so do
    # perl5.36.0, ruby3.1 and gcc-12 (perl, ruby, gcc) when that name is a known one.
    short = re.sub(r"(\d)\.\d+$", r"\1", base)
    if short in _KNOWN:
        return short
    bare = re.sub(r"[-_.]?\d+(\.\d+)*$", "", base)
    return bare if bare in _KNOWN else short


def _dynamic(node: Any) -> bool:
    """A word whose value is only known when it runs ($VAR, $(...), `...`)."""
    for part in getattr(node, "parts", []) or []:
        if part.kind in ("parameter", "commandsubstitution", "processsubstitution"):
            return True
    return False


class _Walker:
    def __init__(self, out: Analysis, depth: int, text: str) -> None:
        self.out = out
        self.depth = depth
        self.text = text

    def word(self, node: Any) -> Word:
        """The word as bash passes it: bashlex removes mixed quotes wrongly (`"a"'b'`
        is `a'b'` to it) and does not decode `$'...'`, so quotes are removed here."""
        start, end = node.pos
        raw = self.text[start:end]
        text = unquote(raw)
        if text is None:
            self.out.unread.append(f"{raw[:80]}: cannot remove its quotes")
            return Word(node.word, raw)
        return Word(text, raw)

    def cd(self, word: str | None) -> None:
        self.out.cd_words.append((word, self.out.loops > 0))

    def path(self, word: str, kind: str = "read") -> None:
        raw = _raw(word)
        self.out.path_words.append((raw, kind, ()))
        # curl -d @/x, -F f=@/x, http file=@/x; file:///x URLs.
        if "@" in raw:
            self.out.path_words.append((raw.split("@", 1)[1], kind, ()))
        if "file:" in raw:
            self.out.path_words.append((_file_url(raw.split("file:", 1)[1]), kind, ()))

    # --- traversal ------------------------------------------------------------------------

    def node(self, n: Any) -> None:
        kind = n.kind
        if kind == "command":
            self.command(n)
        elif kind == "pipeline":
            self.pipeline(n)
        elif kind == "function":
            self.out.flags.add("function_definition")
            self.out.effects.add("write")
            for p in n.parts:
                self.node(p)
        elif kind in ("commandsubstitution", "processsubstitution"):
            self.out.substitutions += 1
            self.out.command_substitutions += kind == "commandsubstitution"
            self.node(n.command)
        elif kind in ("for", "while", "until"):
            # A `cd` in here may run any number of times.
            self.out.loops += 1
            for p in n.parts:
                self.node(p)
            self.out.loops -= 1
        else:
            for p in getattr(n, "parts", None) or []:
                self.node(p)
            for p in getattr(n, "list", None) or []:
                self.node(p)
            # Redirections of a compound command ({ ...; } > file, ( ... ) > /dev/tcp/..).
            for r in getattr(n, "redirects", None) or []:
                if getattr(r, "kind", "") == "redirect":
                    self.redirect(r)

    def pipeline(self, n: Any) -> None:
        commands = [p for p in n.parts if p.kind == "command"]
        for p in n.parts:
            self.node(p)
        # Text piped into something that executes its input.
        for i, c in enumerate(commands[1:], start=1):
            argv = [w.word for w in c.parts if w.kind == "word"]
            if not argv:
                continue
            prog = _name(argv[0])
            if prog in ("sudo", "env", "nohup", "exec", "command", "timeout"):
                rest = [a for a in argv[1:] if not a.startswith("-") and "=" not in a]
                prog = _name(rest[0]) if rest else prog
            runs_stdin = (prog in SHELLS and not any(a in ("-c",) for a in argv[1:])) or (
                prog in INTERPRETERS and len([a for a in argv[1:] if not a.startswith("-")]) == 0
            )
            if runs_stdin or (prog == "xargs" and any(_name(a) in SHELLS for a in argv[1:])):
                self.out.flags.add("pipe_to_shell")
                upstream = {
                    _name(w.word) for cmd in commands[:i] for w in cmd.parts[:1] if w.kind == "word"
                }
                if upstream & DECODERS:
                    self.out.flags.add("obfuscation")

    def command(self, n: Any) -> None:
        words: list[Any] = []
        for p in n.parts:
            if p.kind == "assignment":
                self.assignment(p.word)
                self.sub(p)
            elif p.kind == "word":
                words.append(p)
                self.sub(p)
            elif p.kind == "redirect":
                self.redirect(p)
            else:
                self.node(p)
        if not words:
            return
        argv: list[str] = [self.word(w) for w in words]
        if _dynamic(words[0]) or is_pattern(_raw(argv[0])):
            # `$(echo rm)`, `{cat,/etc/x}` (brace expansion makes the program and its
            # arguments), `c?t`: the program is only known when the command runs.
            self.out.flags.add("dynamic_command")
            self.out.effects.update(("write", "egress"))
        self.argv(argv)

    def sub(self, word: Any) -> None:
        for part in getattr(word, "parts", None) or []:
            if part.kind in ("commandsubstitution", "processsubstitution"):
                self.out.substitutions += 1
                self.out.command_substitutions += part.kind == "commandsubstitution"
                self.node(part.command)

    def assignment(self, text: str) -> None:
        name = text.split("=", 1)[0].removeprefix("export ").strip()
        if LOADER_VARIABLES.match(name):
            self.out.flags.add("env_injection")
        if name == "GLOBIGNORE":
            self.out.expansion_rules = True  # HOME and CDPATH: HOME_CHANGES

    def redirect(self, r: Any) -> None:
        target = self.word(r.output) if hasattr(r.output, "word") else None
        if target is None:
            return
        self.sub(r.output)
        if target.startswith(("/dev/tcp/", "/dev/udp/")):
            self.out.flags.add("dev_tcp")
            self.out.classes.add("network")
            self.out.effects.add("egress")
            return
        if r.type in (">", ">>", ">|", "&>", "&>>", ">&", "<>") and target not in (
            "/dev/null",
            "1",
            "2",
        ):
            if not target.isdigit():
                self.path(target, "write")
                self.out.classes.add("write")
                self.out.effects.add("write")
        elif r.type in ("<", "<&") and not target.isdigit() and target != "-":
            self.path(target)

    # --- one program --------------------------------------------------------------------

    def argv(self, argv: list[str]) -> None:
        self.out.commands.append(argv)
        prog = _name(argv[0])
        args = argv[1:]
        self.out.programs.add(prog)
        if "/" in argv[0] and not argv[0].startswith(TRUSTED_DIRS):
            # ./ls or /tmp/x/cat: a file that only looks like a known program.
            self.out.classes.add("unknown")
            self.out.effects.update(("write", "egress"))
            return
        if prog == "busybox" and args:
            self.argv(args)
            return
        for option in CHDIR_OPTIONS.get(prog, ()):
            self.chdir_option(args, option)
        if prog == "shopt":
            self.out.expansion_rules = True
        if self.runtime_code(prog, args):
            self.out.flags.add("runtime_code")
            self.out.effects.update(("write", "egress"))
        if prog in ("cd", "pushd", "popd"):
            target = [a for a in args if not a.startswith(("-", "+")) or a == "-"]
            if prog == "popd" or any(re.match(r"^[-+]\d", a) for a in args):
                self.cd(OPAQUE)  # the directory stack: only known when it runs
            elif not target:
                self.cd(None)
            elif target[0] == "-":
                self.cd(OPAQUE)  # `cd -`: $OLDPWD, which the command line can set
            else:
                self.cd(_raw(target[0]))
            self.out.classes.add("read")
            return
        if prog in (".", "source"):
            # A script run in this shell: like `bash FILE`, its contents are unknown.
            self.script(args)
            return
        if prog == "crontab" and not any(a in ("-l", "-r") for a in args):
            # A crontab installed: commands that run later, undecided.
            self.out.flags.add("runtime_code")
            self.out.effects.update(("write", "egress"))
        if self.file_list(prog, args):
            self.out.unread.append(f"{prog}: reads the names of the files it opens when it runs")
        if prog == "script":
            self.out.flags.add("code_from_stdin")
            self.out.effects.update(("write", "egress"))
            return
        if prog in ("sudo", "doas", "su", "pkexec", "runuser"):
            self.out.classes.add("privilege")
            self.out.flags.add("privilege_escalation")
            self.out.effects.update(("write",))
            if prog == "su":
                if "-c" in args:
                    self.nested(args[args.index("-c") + 1 :][:1])
                return
            self.unwrap(args)
            return
        if prog == "env":
            self.env(args)
            return
        if prog in ("export", "declare", "typeset", "local", "readonly"):
            for a in args:
                if "=" in a:
                    self.assignment(a)
            self.out.classes.add("read")
            return
        if prog in WRAPPERS:
            if prog == "eval":
                self.out.classes.add("nested_shell")
                self.nested([" ".join(args)])
                return
            self.unwrap(args, wrapper=prog)
            return
        if prog in SHELLS:
            self.shell(args)
            return
        if prog in INTERPRETERS:
            self.out.classes.add("interpreter")
            self.out.effects.update(("write", "egress"))
            if prog == "gdb" or any(a in INLINE_CODE for a in args):
                self.out.classes.add("inline_code")
            elif not [a for a in args if not a.startswith("-")] or any(
                a in STDIN_FILES for a in args
            ):
                self.out.flags.add("code_from_stdin")
            self.interpreter_paths(args)
            return
        if prog in AWKS:
            program, skip = "", False
            for a in args:
                if skip:
                    skip = False
                    continue
                if a in ("-v", "-f", "-F", "--assign", "--file", "--field-separator"):
                    skip = True
                    continue
                if not a.startswith("-"):
                    program = a
                    break
            self.paths(prog, args)
            if any(a in ("-f", "--file") for a in args):
                self.out.classes.add("interpreter")
                self.out.effects.update(("write", "egress"))
            if re.search(r"\bsystem\s*\(|\|\s*getline|\|&|print[^;]*\|", program):
                self.out.flags.add("shell_escape")
            if re.search(r"getline[^;}]*<", program) or re.search(r"\bprintf?\b[^;}]*>", program):
                self.out.unread.append(f"{prog}: its program opens files it names itself")
            self.out.classes.add("read")
            if re.search(r">\s*\"", program):
                self.out.effects.add("write")
            return
        if prog in EDITORS:
            self.paths(prog, args, "write")
            joined = " ".join(args)
            if (
                re.search(r"(^|\s)(-c|\+)\S*\s*\S*(!|shell|term|system|py3?|lua|perl|ruby)", joined)
                or "!" in joined
            ):
                self.out.flags.add("shell_escape")
            self.out.classes.add("write")
            self.out.effects.add("write")
            return
        if prog == "find":
            self.find(args)
            return
        if prog == "git":
            self.git(args)
            return
        if prog in ("tar",) and any(
            a.startswith(("--to-command", "--checkpoint-action", "--use-compress-program", "-I"))
            for a in args
        ):
            self.out.flags.add("shell_escape")
        if prog in ("rsync", "ssh", "scp") and any(
            a.startswith(("-e", "--rsh", "ProxyCommand", "-oProxyCommand", "LocalCommand"))
            or "ProxyCommand" in a
            for a in args
        ):
            self.out.flags.add("shell_escape")
        self.classify(prog, args)

    def classify(self, prog: str, args: list[str]) -> None:
        if prog == "sed":
            scripts = " ".join(a for a in args if not a.startswith("-"))
            if re.search(r"(^|[;}\s\d,$/])e(\s|$|;)|/[gpIi0-9]*e[gpIi0-9]*(\s|$|;)", scripts):
                self.out.flags.add("shell_escape")  # GNU sed's e command or s///e
            if re.search(r"(^|[;}\s\d,$/])w\s|/[gpIi0-9]*w\s", scripts):
                self.out.effects.add("write")
            if not any(a.startswith("-i") or a == "--in-place" for a in args):
                prog = "cat"  # a stream editor that writes only to stdout reads
        if prog == "sort" and any(a.startswith(("--compress-program", "--compress")) for a in args):
            self.out.flags.add("shell_escape")
        if prog == "sort" and any(a.startswith(("-o", "--output")) for a in args):
            self.out.effects.add("write")
        if prog == "uniq" and len([a for a in args if not a.startswith("-")]) >= 2:
            self.out.effects.add("write")
        if prog == "xxd" and any(a.startswith("-r") for a in args):
            self.out.effects.add("write")
        if prog == "journalctl" and any(
            a.startswith(("--vacuum", "--rotate", "--flush")) for a in args
        ):
            self.out.effects.add("write")
        if prog == "man" and any(a.startswith(("-P", "--pager", "-H", "--html")) for a in args):
            self.out.flags.add("shell_escape")
        if prog == "getent" and any(a in ("hosts", "ahosts", "ahostsv4", "ahostsv6") for a in args):
            self.out.classes.add("network")
            self.out.effects.add("egress")
        if prog in ("curl", "wget") and any(a in ("-o", "-O", "--output") for a in args):
            self.out.effects.add("write")
        known = False
        if prog in DESTRUCTIVE or prog.startswith("mkfs"):
            known = True
            self.out.classes.add("destructive")
            self.out.effects.add("write")
            if self.system_wide(prog, args):
                self.out.flags.add("destructive_system")
        if prog == "dd" and any(a.startswith("of=/dev/") for a in args):
            self.out.flags.add("destructive_system")
        if prog in ("chmod",) and any(
            re.match(r"^([ugoa]*\+[rwx]*s|[0-7]?[4-7][0-7]{3})$", a) for a in args
        ):
            self.out.classes.add("privilege")
            self.out.flags.add("privilege_escalation")
        if prog in PRIVILEGE:
            known = True
            self.out.classes.add("privilege")
            self.out.flags.add("privilege_escalation")
            self.out.effects.add("write")
        if prog in NETWORK:
            known = True
            self.out.classes.add("network")
            self.out.effects.add("egress")
        if prog in WRITERS:
            known = True
            self.out.classes.add("write")
            self.out.effects.add("write")
        if prog in READERS and not known:
            known = True
            self.out.classes.add("read")
        self.paths(prog, args)
        if not known:
            # An unknown program may do anything: it counts as writing.
            self.out.classes.add("unknown")
            self.out.effects.add("write")

    @staticmethod
    def system_wide(prog: str, args: list[str]) -> bool:
        if prog in (
            "shutdown",
            "reboot",
            "halt",
            "poweroff",
            "init",
            "wipefs",
            "fdisk",
            "parted",
        ) or prog.startswith("mkfs"):
            return True
        if prog in ("rm", "shred"):
            recursive = any(
                a.startswith("-") and ("r" in a.lower() or a == "--recursive") for a in args
            )
            paths = [a.rstrip("/") or "/" for a in args if not a.startswith("-")]
            return recursive and any(p in SYSTEM_PATHS or p.rstrip("*") in ("/", "") for p in paths)
        if prog in ("kill", "killall", "pkill"):
            return any(a in ("-1", "1", "init", "systemd", "sshd") for a in args)
        return False

    # --- the files a program names ---------------------------------------------------

    def paths(self, prog: str, args: list[str], kind: str = "") -> None:
        """Every argument that may name a file, and every value inside an option
        (`--file=/x`, `-f/x`): a word that is not a path resolves to a harmless one,
        while a path left out would be read undecided."""
        if prog in NOT_PATHS:
            return
        operands: list[str] = []
        options_end = False
        for a in args:
            if not options_end and a == "--":
                options_end = True
            elif not options_end and a.startswith("-") and a != "-":
                value = _option_value(a)
                if value is not None:
                    self.path(value)
            else:
                operands.append(a)
        if prog in PATTERN_FIRST and operands and not self.script_option(args):
            operands = operands[1:]
        if prog == "ln":
            self.links(args, operands)
            return
        if prog in ("tar", "unzip") and self.extracts(prog, args):
            # Extracting writes whatever the archive holds under where it extracts to.
            self.out.path_words.append((".", "tree", ()))
        if self.recursive(prog, args):
            for a in operands or (["."] if prog in ("rg", "ag", *PATTERN_FIRST) else []):
                self.out.path_words.append((_raw(a), "tree", ()))
        for i, a in enumerate(operands):
            if a == "-":
                continue
            if "=" in a:
                # dd if=/x, make -f, key=value operands: the value may be a file.
                value = _raw(a).split("=", 1)[1] if "=" in _raw(a) else OPAQUE
                self.path(value)
            if kind:
                self.path(a, kind)
            elif (
                prog in WRITES_ALL
                or prog in DESTRUCTIVE
                or (prog in WRITERS and i == len(operands) - 1)
            ):
                self.path(a, "write")
            else:
                self.path(a)

    def interpreter_paths(self, args: list[str]) -> None:
        """The files an interpreter is given (`perl -ne 1 /etc/x`, a script and its
        arguments), and the absolute or `~` paths written literally in inline code
        (best effort: code can build a path no reading of its text finds)."""
        code = False
        for a in args:
            if code:
                for literal in INLINE_PATH.findall(str(a)):
                    self.path(
                        "'" + literal.replace("'", "") + "'" if literal[0] == "/" else literal
                    )
                code = False
            elif a in INLINE_CODE:
                code = True
            elif not a.startswith("-") and a not in STDIN_FILES:
                self.path(a)

    @staticmethod
    def extracts(prog: str, args: list[str]) -> bool:
        if prog == "unzip":
            return not any(a in ("-l", "-v", "-t", "-Z", "-p", "-c") for a in args)
        first = args[0] if args else ""
        mode = first if not first.startswith("-") else ""
        short = "".join(a[1:] for a in args if a.startswith("-") and not a.startswith("--"))
        return "x" in mode + short or any(a in ("--extract", "--get") for a in args)

    @staticmethod
    def recursive(prog: str, args: list[str]) -> bool:
        if prog not in RECURSIVE:
            return False
        options = RECURSIVE[prog]
        if options is None:
            return True
        short = "".join(a[1:] for a in args if a.startswith("-") and not a.startswith("--"))
        return any(o in args if o.startswith("--") else o in short for o in options)

    def links(self, args: list[str], operands: list[str]) -> None:
        """`ln`: the link is written, each source is a link target. A symbolic link's
        relative target is read from the link's directory, not the working directory
        (unless `--relative`): it is resolved from every other operand and its
        directory, since which one is the link is only known on the target (`ln -s T
        DIR`, `ln -s T NAME`, `-t DIR`)."""
        short = "".join(a for a in args if a.startswith("-") and not a.startswith("--"))
        symbolic = "--symbolic" in args or "s" in short
        relative = "--relative" in args or "r" in short
        sources = operands[:-1] or operands
        self.out.link_commands += 1
        if symbolic and (relative or any(not _raw(src).startswith("/") for src in sources)):
            self.out.relative_symlinks = True
        if len(operands) > 1:
            self.path(operands[-1], "write")
        for source in sources:
            bases: tuple[str, ...] = ()
            if symbolic and not relative and len(operands) > 1:
                bases = tuple(_raw(o) for o in operands if o is not source)
            self.out.path_words.append((_raw(source), "link", bases))

    @staticmethod
    def script_option(args: list[str]) -> bool:
        """Whether the pattern or script comes from an option (`-e x`, `-f file`,
        `--regexp=x`, or a cluster holding e or f): then the first operand is a file."""
        for a in args:
            if a == "--":
                return False
            if a.startswith(("--regexp", "--file", "--expression", "--from-file")):
                return True
            if a.startswith("-") and not a.startswith("--") and ("e" in a or "f" in a):
                return True
        return False

    def chdir_option(self, args: list[str], option: str) -> None:
        """`env -C dir`, `git -C dir`, `tar --directory=dir`: one more directory the
        command's relative paths may be in."""
        for i, a in enumerate(args):
            if a == option and i + 1 < len(args):
                self.cd(_raw(args[i + 1]))
            elif a.startswith(option) and len(a) > len(option):
                value = _option_value(a) if option.startswith("-") else None
                if value is not None:
                    self.cd(value.removeprefix("="))

    @staticmethod
    def runtime_code(prog: str, args: list[str]) -> bool:
        """Whether `prog` keeps text to run later or evaluates it as arithmetic (see
        RUNTIME_CODE_BUILTINS), by name or by the option that makes it do so."""
        if prog in RUNTIME_CODE_BUILTINS:
            return True
        short = "".join(a[1:] for a in args if a.startswith("-") and not a.startswith("--"))
        if prog in ("mapfile", "readarray"):
            return "C" in short
        if prog == "hash":
            return "p" in short
        if prog == "alias":
            return any("=" in a for a in args)
        if prog in ("printf", "test", "["):
            return "v" in short  # the variable named by a value: its subscript is arithmetic
        if prog in ("declare", "typeset", "local", "readonly"):
            return any(c in short for c in "in")  # integer (arithmetic) and nameref
        if prog == "set":
            return "posix" in args  # aliases expand in a posix-mode script
        return False

    @staticmethod
    def file_list(prog: str, args: list[str]) -> bool:
        """Whether `prog` reads the names of files it opens from a file or stdin
        (`--files0-from=-`, `tar -T`, `cpio`, `zip -@`): they are not in the command."""
        if prog in ("cpio", "pax", "afio"):
            return True
        if any(
            re.search(r"files0?-from|pathspec-from-file", a) and not a.endswith("=/dev/null")
            for a in args
        ):
            return True
        if prog == "tar":
            first = args[0] if args and not args[0].startswith("-") else ""
            short = "".join(a[1:] for a in args if a.startswith("-") and not a.startswith("--"))
            return "T" in first + short
        return prog == "zip" and "-@" in args

    # --- things that run other things ---------------------------------------------------

    def git(self, args: list[str]) -> None:
        sub = next((a for a in args if not a.startswith("-")), "")
        dangerous = ("core.pager", "core.sshcommand", "core.fsmonitor", "core.hookspath",
                     "core.editor", "core.gitproxy", "diff.external", "alias.", "credential.helper",
                     "protocol.ext", "uploadpack.", "receivepack.", "sequence.editor")  # fmt: skip
        if any(a.lower().startswith(dangerous) or "=!" in a for a in args) or "-c" in args:
            self.out.flags.add("shell_escape")
        if any(a.startswith("--output") for a in args):
            self.out.effects.add("write")
        self.paths("git", args[args.index(sub) + 1 :] if sub else [])
        if sub in GIT_NETWORK:
            self.out.classes.add("network")
            self.out.effects.update(("egress", "write"))
        elif sub in GIT_READS:
            self.out.classes.add("read")
        else:
            self.out.classes.add("write")
            self.out.effects.add("write")

    def unwrap(self, args: list[str], wrapper: str = "") -> None:
        """The command a wrapper (sudo, nohup, timeout, xargs, ...) starts; a wrapper this
        does not know the options of is assumed to run anything."""
        rest = list(args)
        takes = WRAPPER_VALUES.get(wrapper)
        if takes is None and wrapper:
            self.out.classes.add("unknown")
            self.out.effects.update(("write", "egress"))
        while rest and rest[0].startswith("-") and rest[0] != "-":
            flag = rest.pop(0)
            if "=" in flag:
                continue
            valued = takes if takes is not None else {"-u", "-g", "-s", "-k", "-n"}
            if flag in valued and rest:
                rest.pop(0)
        if wrapper == "flock" and rest:
            rest.pop(0)  # the lock file
            if rest and rest[0] in ("-c", "--command"):
                self.out.classes.add("nested_shell")
                self.nested(rest[1:2])
                return
        if wrapper == "xargs" and _name(rest[0] if rest else "echo") not in NOT_PATHS:
            self.out.unread.append("xargs: arguments read when the command runs")
        if wrapper == "xargs" and rest and _name(rest[0]) in SHELLS:
            shell_args = rest[1:]
            if "-c" in shell_args and shell_args.index("-c") + 1 >= len(shell_args):
                self.out.flags.add("code_from_stdin")  # the program is what xargs reads
        if wrapper in ("timeout",) and rest and re.match(r"^\d+[smhd]?$", rest[0]):
            rest.pop(0)
        if (
            wrapper in ("nice", "ionice", "chrt", "taskset")
            and rest
            and re.match(r"^-?\d+$", rest[0])
        ):
            rest.pop(0)
        if wrapper == "watch":
            self.out.loops += 1
            self.nested([" ".join(rest)])
            self.out.loops -= 1
            return
        if rest:
            self.argv(rest)

    def env(self, args: list[str]) -> None:
        rest = list(args)
        while rest and (rest[0].startswith("-") or "=" in rest[0]):
            item = rest.pop(0)
            if item.startswith(("--split-string=", "-S")) and item not in ("-S",):
                self.nested([item.split("=", 1)[1] if "=" in item else item[2:]])
                return
            if "=" in item and not item.startswith("-"):
                self.assignment(item)
            elif item in ("-u", "-C", "-S", "--unset", "--chdir", "--split-string") and rest:
                if item in ("-S", "--split-string"):
                    self.nested([rest.pop(0)])
                    return
                rest.pop(0)
        if rest:
            self.argv(rest)
        else:
            self.out.classes.add("read")

    def shell(self, args: list[str]) -> None:
        self.out.classes.add("nested_shell")
        if "-c" in args:
            i = args.index("-c")
            self.nested(args[i + 1 : i + 2])
            return
        self.script([a for a in args if not a.startswith("-") or a == "-"], stdin=True)

    def script(self, scripts: list[str], stdin: bool = False) -> None:
        """A script run from a file (`bash FILE`, `. FILE`): its contents are unknown
        here. From stdin, a pipe or a process substitution (`<(...)`, /dev/fd/N), no
        decision sees it at all."""
        self.out.effects.update(("write", "egress"))
        if scripts and (scripts[0] in STDIN_FILES or _from_pipe(scripts[0])):
            self.out.flags.add("code_from_stdin")
        elif scripts:
            self.out.classes.add("interpreter")
            self.path(scripts[0])
        elif stdin:
            # Commands would arrive on stdin, unseen by any decision.
            self.out.flags.add("code_from_stdin")

    def nested(self, texts: list[str]) -> None:
        for text in texts:
            if self.depth + 1 > MAX_DEPTH:
                raise ShellParseError(f"commands nested deeper than {MAX_DEPTH}")
            _parse_into(text, self.out, self.depth + 1)

    def find(self, args: list[str]) -> None:
        self.out.classes.add("read")
        acts = any(a in FIND_ACTIONS for a in args)
        for a in args:
            if a.startswith(("-", "(", "!", ")")):
                break
            self.path(a)
            if acts:
                self.out.path_words.append((_raw(a), "tree", ()))
        for i, a in enumerate(args):
            if a in FIND_FILES and i + 1 < len(args):
                self.path(args[i + 1], FIND_FILES[a])
            if a in ("-delete",):
                self.out.classes.add("destructive")
                self.out.effects.add("write")
            if a in ("-execdir", "-okdir"):
                # Relative paths of the command are then relative to every directory found.
                self.cd(OPAQUE)
            if a in ("-exec", "-execdir", "-ok", "-okdir"):
                inner: list[str] = []
                for b in args[i + 1 :]:
                    if b in (";", "+", "\\;"):
                        break
                    inner.append(b)
                if inner:
                    if _name(inner[0]) in SHELLS or _name(inner[0]) in INTERPRETERS:
                        self.out.flags.add("shell_escape")
                    self.argv([x for x in inner if x != "{}"] or inner)
            if a in ("-fprint", "-fprintf", "-fls"):
                self.out.effects.add("write")


def _parse_into(text: str, out: Analysis, depth: int) -> None:
    if not text.strip():
        return
    try:
        parts = bashlex.parse(text)
    except Exception as exc:  # bashlex raises ParsingError, NotImplementedError, others
        raise ShellParseError(f"cannot parse command: {type(exc).__name__}: {exc}"[:300]) from None
    walker = _Walker(out, depth, text)
    for p in parts:
        walker.node(p)


def analyse(command: str, where: Where | None = None) -> Analysis:
    """Classify `command` as the target in `where` would run it (without a home
    directory, paths relative to it are unresolved and `paths.needs_home` says so)."""
    if len(command) > MAX_COMMAND:
        raise ShellParseError(f"command longer than {MAX_COMMAND} characters")
    if "\x00" in command:
        raise ShellParseError("NUL byte in command")
    out = Analysis()
    try:
        _parse_into(command, out, 0)
    except RecursionError:
        raise ShellParseError("command nests too deeply") from None
    if not out.commands and command.strip():
        raise ShellParseError("no command found")
    # Substitutions bashlex does not walk (inside here-documents, ${x:-$(...)}, array
    # subscripts evaluated by printf -v / test -v / read, single-quoted text later eval'd)
    # would run unseen: their presence is a flag.
    visible = len(re.findall(r"\$\((?!\()", command)) + command.count("`") // 2
    if HOME_CHANGES.search(command):
        out.expansion_rules = True
    if visible > out.command_substitutions:
        out.flags.add("hidden_substitution")
        out.effects.update(("write", "egress"))
    if RUNTIME_CODE_TEXT.search(command):
        out.flags.add("runtime_code")
        out.effects.update(("write", "egress"))
    where = where or Where()
    out.paths = paths = resolve(out.path_words, out.cd_words, where)
    paths.unresolved += out.unread
    paths.unresolved += [f"{t}: {HOMES_REACHED}" for t in paths.trees if _holds_homes(t, where)]
    if out.expansion_rules:
        paths.unresolved.append("shopt, GLOBIGNORE, HOME or CDPATH change how paths expand")
    if out.relative_symlinks and (out.programs & MOVERS or out.link_commands > 1):
        # Paths are resolved on the target before the command runs; a relative link
        # this command makes and then moves (`ln -s ../x a/l && mv a/l l && cat l`)
        # leads somewhere no resolution saw.
        paths.unresolved.append(RELATIVE_LINK_MOVED)
    elif _places_then_opens(out.commands):
        # A link already on the target, moved or copied by this command (`mv a/l l &&
        # cat l`, `cp -a a/sub c && cat c/l`: a relative link then leads elsewhere) or
        # checked out or unpacked by it, is where the paths were resolved before it ran
        # only by chance: what the later commands name cannot be resolved ahead.
        paths.unresolved.append(LINK_CARRIED)
    if paths.unresolved:
        out.flags.add("unresolved")
    if paths.expansions:
        out.flags.add("glob")
    return out


HOMES_REACHED = "a recursive operation here reaches home directories and their .ssh"
RELATIVE_LINK_MOVED = (
    "a relative symbolic link made in a command that also moves, copies or links files: "
    "where it leads depends on where it ends up"
)
MOVERS = frozenset(
    {"mv", "rename", "cp", "rsync", "install", "tar", "cpio", "pax", "zip", "unzip", "mmv"}
)
"""Programs that can move or copy a symbolic link (as a link) to another directory."""
GIT_PLACES = frozenset(
    {
        "checkout", "switch", "pull", "merge", "reset", "restore", "clone", "stash", "apply",
        "am", "rebase", "cherry-pick", "revert", "worktree", "submodule",
    }
)  # fmt: skip
"""git subcommands that write the working tree (and so may place links)."""
PLACERS = frozenset({"mv", "rename", "cp", "install", "mmv", "ln"})
"""Programs that put a file (a link among them) where their last operand says."""
NOT_FILES = frozenset({"cd", "pushd", "popd", "true", "false", ":", "pwd", "ls"})
"""Commands that open no file's content: after a checkout or a copy, `cd` into it and
`ls` it are not reading through a link it placed (`ls` shows a linked directory's names,
never a file's bytes)."""


def _unpacks(prog: str, args: list[str]) -> bool:
    """Whether `prog args` places files (links among them) whose targets or places the
    command line does not show: an archive extracted, a tree synced or patched, a
    repository's working tree written. Creating an archive or reading a log does not."""
    if prog in ("rsync", "patch"):
        return True
    if prog == "unzip":  # unless it only lists or tests (-l, -t, -v, -Z, -z)
        return not any(a.startswith("-") and set(a[1:]) & set("ltvZz") for a in args)
    if prog == "git":
        return any(a in GIT_PLACES for a in args)
    letters = {
        "tar": ("x", ("--extract", "--get")),
        "cpio": ("i", ("--extract",)),
        "pax": ("r", ()),
    }.get(prog)
    if letters is None:
        return False
    letter, long = letters
    return any(
        a in long
        or (a.startswith("-") and not a.startswith("--") and letter in a[1:])
        or (prog == "tar" and i == 0 and not a.startswith("-") and letter in a)
        for i, a in enumerate(args)
    )


def _carries(argv: list[str]) -> bool:
    """Whether `argv` may put an existing symbolic link in another directory (a relative
    one then leads elsewhere), or make links from content the text does not show. A move
    or copy within one directory (`mv a b`) leaves a relative link leading where it did;
    a symbolic link made by `ln -s` has its target decided (`link_targets`)."""
    prog = _name(argv[0])
    args = [a for a in argv[1:] if a != "--"]
    if _unpacks(prog, args):
        return True
    if prog not in PLACERS:
        return False
    flags = [a for a in args if a.startswith("-")]
    if prog == "ln" and any(
        a in ("--symbolic", "-s") or (not a.startswith("--") and "s" in a[1:]) for a in flags
    ):
        return False  # its target is decided; moved in the same command: RELATIVE_LINK_MOVED
    if any(a.startswith(("-t", "--target-directory")) for a in flags):
        return True
    operands = [a for a in args if not a.startswith("-")]
    if len(operands) < 2:
        return False
    dest = operands[-1]
    if dest.endswith("/") or posixpath.basename(dest) in (".", "..", ""):
        return True
    return any(
        posixpath.dirname(src.rstrip("/")) != posixpath.dirname(dest) for src in operands[:-1]
    )


LINK_CARRIED = (
    "a command that moves, copies, links or checks out files runs with others: a link "
    "it carries can lead the others' paths where no resolution before the run saw"
)


def _places_then_opens(commands: list[list[str]]) -> bool:
    """Whether one command places files (`_carries`) and another opens files: not one
    that opens none (`cd`, `ls`), not git (it stores a working tree's links as links,
    never following them: `git stash && git pull && git stash pop` is fine), and not the
    command a wrapper runs (`sudo mv a b` is one command)."""
    independent = [
        argv
        for i, argv in enumerate(commands)
        if argv
        and not any(prev[-len(argv) :] == argv for prev in commands[:i] if len(prev) > len(argv))
    ]
    carriers = [i for i, argv in enumerate(independent) if _carries(argv)]
    return bool(carriers) and any(
        i not in carriers and _name(argv[0]) not in NOT_FILES and _name(argv[0]) != "git"
        for i, argv in enumerate(independent)
    )


def _holds_homes(tree: str, where: Where) -> bool:
    """Whether a recursive operation on `tree` reaches a home directory: `/`, `/home`,
    `/root`, or the target user's home or a directory above it. Protected files inside
    a home (`~/.ssh/...`) have no fixed prefix that the tree could be compared with."""
    base = tree.rstrip("/") or "/"
    if base in ("/", "/home", "/root"):
        return True
    home = where.home
    return home is not None and (
        home.rstrip("/") == base or home.startswith(base.rstrip("/") + "/")
    )


def _from_pipe(word: str) -> bool:
    """A script read from a pipe or a process substitution, not a file."""
    raw = _raw(word)
    return raw.startswith(("<(", ">(")) or str(word).startswith(("/dev/fd/", "/proc/"))


_KNOWN = (
    SHELLS
    | INTERPRETERS
    | AWKS
    | EDITORS
    | PAGERS
    | READERS
    | WRITERS
    | DESTRUCTIVE
    | NETWORK
    | PRIVILEGE
    | WRAPPERS
    | NOT_PATHS
    | RUNTIME_CODE_BUILTINS
    | DECODERS
)
"""Every program name classified by name: what a versioned spelling is reduced to."""
