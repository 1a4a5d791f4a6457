"""The exceptions interlock raises, translated once at the boundary where they arise.

Hierarchy::

    InterlockError
    ├── ConfigError            the configuration file is unreadable or invalid (names the key)
    ├── PolicyError            the policy could not produce a usable answer => deny
    │   ├── BundleError        a bundle could not be read or compiled (old bundle keeps serving)
    │   ├── PolicyUndefined    the entrypoint had no value for this input
    │   ├── PolicyEvaluationError  the engine raised while evaluating (built-in error, ...)
    │   ├── PolicyTimeout      evaluation took longer than its budget
    │   └── MalformedResult    the value did not have the shape of a decision
    ├── IdentityError          credentials missing, wrong, expired or not verifiable
    ├── StateError             the session / posture store failed
    ├── AuditError             the audit log could not record (store down, disk full, ...)
    ├── HostError              the host enforcer could not change the firewall or an ACL
    └── UsageError             a command-line mistake (printed without a traceback, exit 2)

Every PolicyError becomes a `deny` decision with the error's text as its reason; nothing
above the PDP ever sees one.
"""


class InterlockError(Exception):
    """Base class of every error interlock raises on purpose."""


class ConfigError(InterlockError):
    """The configuration is invalid; the message names the offending key."""


class PolicyError(InterlockError):
    """The policy could not produce a usable answer; the action is denied."""


class BundleError(PolicyError):
    """A policy bundle could not be read or compiled."""


class PolicyUndefined(PolicyError):
    """The queried entrypoint is undefined for this input."""


class PolicyEvaluationError(PolicyError):
    """The engine reported an error while evaluating."""


class PolicyTimeout(PolicyError):
    """Evaluation exceeded its time budget."""


class MalformedResult(PolicyError):
    """The policy returned a value that is not a valid decision."""


class IdentityError(InterlockError):
    """An agent's credentials are missing, wrong or cannot be verified."""


class StateError(InterlockError):
    """The session or posture store failed."""


class AuditError(InterlockError):
    """The audit log could not make a record durable."""


class UsageError(InterlockError):
    """A command-line mistake: printed without a traceback, exit status 2."""


class HostError(InterlockError):
    """The host enforcer could not change the firewall or an ACL (the message says which)."""
