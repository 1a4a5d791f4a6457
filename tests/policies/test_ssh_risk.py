"""The bundled risk model on shell commands: for the same agent state, a command that
writes or destroys never weighs less than one that only reads."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from interlock.classify.shell import analyse
from interlock.classify.shellpath import Where
from interlock.core.bundle import bundled_policy_dir, load_bundle
from interlock.core.model import Tier
from interlock.core.signals import Facts, RiskModel, compute, score

MODEL = RiskModel.from_data(load_bundle(bundled_policy_dir()).data["interlock"]["risk"])
WHERE = Where("/home/deploy", "deploy")
READ_ONLY = ["uname -s", "cat /etc/hostname", "ls -la /tmp", "grep -c x /var/log/syslog",
             "true", "git status", "ps aux | head"]  # fmt: skip
WRITING = ["rm -rf /tmp/build", "touch /tmp/x", "echo x > /tmp/f", "cp /tmp/a /tmp/b",
           "mystery-tool --go", "curl https://x.example", "shred /tmp/k", "kill 1234",
           "uname -s; rm -f /tmp/x", "python3 -c 'print(1)'", "sed -i s/a/b/ /tmp/f",
           "mkdir /tmp/d", "chmod 600 /tmp/f"]  # fmt: skip

states = st.builds(
    Facts,
    operation=st.just("exec"),
    labels=st.frozensets(st.sampled_from(["public", "pii", "secret", "restricted", "other"])),
    first_seen=st.booleans(),
    taints=st.frozensets(
        st.sampled_from(["untrusted_content", "prompt_injection_suspected", "restricted_data_read"])
    ),
    threat_matches=st.lists(st.just("feed:x"), max_size=1).map(tuple),
    approved=st.integers(0, 20),
    denied=st.integers(0, 20),
    confidence=st.none() | st.floats(0, 1),
    authn=st.sampled_from(["ssh_key", "ssh_cert", "none"]),
    actions_last_minute=st.integers(0, 1200),
    flows=st.integers(0, 2),
    baseline_per_minute=st.none() | st.floats(0, 100),
)


def weigh(state: Facts, command: str) -> int:
    classes = frozenset(analyse(command, WHERE).classes)
    return score(compute(replace(state, classes=classes), MODEL), MODEL).score


@settings(max_examples=300, deadline=None)
@given(
    state=states,
    reading=st.sampled_from(READ_ONLY),
    writing=st.sampled_from(WRITING),
)
def test_writing_never_weighs_less_than_reading(state: Facts, reading: str, writing: str) -> None:
    read, written = weigh(state, reading), weigh(state, writing)
    assert written >= read
    if "destructive" in analyse(writing, WHERE).classes and read < 100:
        assert written > read


def test_issue_19_a_tainted_session_holds_rm_not_uname() -> None:
    """Tainted by a fetched page: `uname -s` first (a first-seen target) stays low,
    `rm -rf /tmp/...` after it is held."""
    tainted = Facts("exec", frozenset(), True, frozenset({"untrusted_content"}), (), 0, 0, None,
                    "ssh_key", 1)  # fmt: skip
    first = score(compute(replace(tainted, classes=frozenset({"read"})), MODEL), MODEL)
    later = replace(tainted, first_seen=False, classes=frozenset({"destructive"}))
    second = score(compute(later, MODEL), MODEL)
    assert first.tier is Tier.LOW
    assert second.tier is Tier.MEDIUM
    assert second.score > first.score
