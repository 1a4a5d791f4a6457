# The bundled default policy: progressive enforcement by risk tier, plus hard rules that
# no score can override. Input and result are documented in docs/policy-input.md.
#
# Written as pure functions of (input, config) so the Rego tests call them directly, and
# strings are built with concat rather than sprintf: two rego-cpp 1.5 defects this avoids
# are described in docs/policy-input.md ("Writing policies for rego-cpp"). A comprehension
# never sits in a function with `else` (regorus does not schedule it): it goes in a helper.
package interlock

import rego.v1

# The decision the PDP queries (entrypoint interlock/decision).
decision := decide_with_trials(input, data.interlock.policy)

# Rules on trial add findings under `shadow`: the PDP records them and never enforces
# them, so a new rule can be tried inside an enforcing policy (docs/operations.md,
# "Rolling out"). Empty by default, one `count` per decision.
decide_with_trials(inp, cfg) := decide(inp, cfg) if {
	count(object.get(object.get(cfg, "trial", {}), "deny_egress_hosts", [])) == 0
} else := decide(inp, cfg) if {
	count(trial_reasons(inp, cfg)) == 0
} else := object.union(decide(inp, cfg), {"shadow": trial_findings(inp, cfg)})

trial_findings(inp, cfg) := [{"effect": "deny", "reason": r} | some r in sort(trial_reasons(inp, cfg))]

# The example trial: denying egress to listed hosts, before it joins the hard rules.
trial_reasons(inp, cfg) := set() if {
	count(object.get(object.get(cfg, "trial", {}), "deny_egress_hosts", [])) == 0
} else := trial_found(inp, cfg)

trial_found(inp, cfg) := {concat("", ["trial: egress to ", inp.action.target]) |
	inp.action.operation in cfg.egress_operations
	inp.action.target in cfg.trial.deny_egress_hosts
}

# The common action first: no taint or threat match (so nothing to isolate for) and
# nothing to deny, decided by its tier without evaluating either set of rules.
decide(inp, cfg) := by_tier(inp, cfg) if {
	count(inp.context.taints) == 0
	count(inp.action.threat_matches) == 0
	nothing_to_deny(inp, cfg)
} else := isolation(inp, cfg) if {
	count(isolate_reasons(inp, cfg)) > 0
} else := denial(inp, cfg) if {
	count(deny_reasons(inp, cfg)) > 0
} else := by_tier(inp, cfg)

isolation(inp, cfg) := {"effect": "isolate", "reasons": sort([r | some r in isolate_reasons(inp, cfg)])}

denial(inp, cfg) := {"effect": "deny", "reasons": sort([r | some r in deny_reasons(inp, cfg)])}

# --- hard rules: isolate ------------------------------------------------------------------

isolate_reasons(inp, cfg) := exfiltration(inp, cfg) | intel_isolation(inp, cfg)

intel_isolation(inp, cfg) := set() if {
	count(inp.action.threat_matches) == 0
} else := intel_isolation_found(inp, cfg)

intel_isolation_found(inp, cfg) := {concat("", ["threat intel: ", m]) |
	cfg.isolate_on_threat_intel
	some m in inp.action.threat_matches
}

# The sentence this product exists for: restricted data read, untrusted content ingested,
# and now data leaving for a destination this agent has never used.
exfiltration(inp, cfg) := set() if {
	count(inp.context.taints) == 0
} else := exfiltration_found(inp, cfg)

exfiltration_found(inp, cfg) := {"exfiltration pattern: restricted data read and untrusted content, then egress to a first-seen destination" |
	sends_out(inp, cfg)
	"restricted_data_read" in inp.context.taints
	count({t | some t in inp.context.taints; t in {"untrusted_content", "prompt_injection_suspected"}}) > 0
	inp.context.first_seen
}

# Data leaves: an egress operation, or an action its proxy says sends data out whatever
# it is read as (every HTTP request, which an agent can shape as an LLM prompt or a tool
# call; an SSH command that reaches the network).
sends_out(inp, cfg) if inp.action.operation in cfg.egress_operations

sends_out(inp, cfg) if "egress" in object.get(inp.action.details, "effects", [])

# --- hard rules: deny ---------------------------------------------------------------------

# One rule body first: the common action trips none of the guards below, and checking
# that once costs a fraction of evaluating ten rules (docs/benchmarks.md). It is each
# rule's own "nothing to find" guard, conjoined; anything undefined takes the full path.
deny_reasons(inp, cfg) := set() if {
	nothing_to_deny(inp, cfg)
} else := file_denials(inp, cfg) if {
	# A command or file operation tripping nothing else: only its paths can deny it.
	nothing_else_to_deny(inp, cfg)
} else := all_deny_reasons(inp, cfg)

nothing_to_deny(inp, cfg) if {
	not inp.action.operation in {"file_read", "file_write", "exec"}
	nothing_else_to_deny(inp, cfg)
}

# Every deny rule's guard but the one for file operations and commands.
nothing_else_to_deny(inp, cfg) if {
	not inp.context.posture.isolated
	count(inp.context.posture.restrictions) == 0
	inp.agent.authn != "none"
	count(inp.action.threat_matches) == 0
	not inp.action.operation in object.get(cfg.forbidden_operations, inp.action.protocol, [])
	count(object.get(inp.action.details, "flags", [])) == 0
	count(object.get(inp.action.details, "globs", [])) == 0
	count(object.get(inp.action.details, "trees", [])) == 0
	count(object.get(inp.action.details, "link_targets", [])) == 0
	count(object.get(inp.action.details, "paths", [])) == 0
}

# The rules gated on the operation being a file operation or a command.
file_denials(inp, cfg) := path_denials(inp, cfg) | root_denials(inp, cfg)

all_deny_reasons(inp, cfg) := posture_denials(inp, cfg) | identity_denials(inp) | intel_denials(inp, cfg) | forbidden(inp, cfg) | flag_denials(inp, cfg) | path_denials(inp, cfg) | glob_denials(inp, cfg) | tree_denials(inp, cfg) | root_denials(inp, cfg) | mcp_path_denials(inp, cfg)

# Each set below starts with a guard for the common case (nothing to find), because
# rego-cpp evaluates every comprehension otherwise and that is most of a decision's cost.
posture_denials(inp, cfg) := set() if {
	not inp.context.posture.isolated
	count(inp.context.posture.restrictions) == 0
} else := posture_found(inp, cfg)

posture_found(inp, cfg) := {"agent is isolated" | inp.context.posture.isolated} | {
"posture read_only: this operation writes" |
	"read_only" in inp.context.posture.restrictions
	inp.action.operation in cfg.write_operations
} | {"posture no_egress: this operation sends data out" |
	"no_egress" in inp.context.posture.restrictions
	inp.action.operation in cfg.egress_operations
} | {concat("", ["posture tool:", inp.action.target, ": this tool is disabled"]) |
	inp.action.operation == "tool_call"
	concat("", ["tool:", inp.action.target]) in inp.context.posture.restrictions
} | {"posture read_only: this command writes" |
	"read_only" in inp.context.posture.restrictions
	"write" in object.get(inp.action.details, "effects", [])
} | {"posture no_egress: this action sends data out" |
	"no_egress" in inp.context.posture.restrictions
	"egress" in object.get(inp.action.details, "effects", [])
} | {"posture no_delegation: this agent may not delegate" |
	"no_delegation" in inp.context.posture.restrictions
	inp.action.operation == "delegate"
}

identity_denials(inp) := {"unauthenticated agent" | inp.agent.authn == "none"}

intel_denials(inp, cfg) := set() if {
	count(inp.action.threat_matches) == 0
} else := intel_denials_found(inp, cfg)

intel_denials_found(inp, cfg) := {concat("", ["threat intel: ", m]) |
	not cfg.isolate_on_threat_intel
	some m in inp.action.threat_matches
}

forbidden(inp, cfg) := {concat("", ["operation ", inp.action.operation, " is never allowed on ", inp.action.protocol]) |
	inp.action.operation in object.get(cfg.forbidden_operations, inp.action.protocol, [])
}

# Classifier flags that no score excuses, per protocol (unparsable SQL, COPY ... PROGRAM,
# changing the session's role, ...).
flag_denials(inp, cfg) := set() if {
	count(object.get(inp.action.details, "flags", [])) == 0
} else := flags_found(inp, cfg)

flags_found(inp, cfg) := {concat("", ["forbidden construct: ", f]) |
	some f in inp.action.details.flags
	f in object.get(cfg.forbidden_flags, inp.action.protocol, [])
}

# --- progressive table --------------------------------------------------------------------

by_tier(inp, cfg) := {"effect": "allow", "reasons": [score_reason(inp)], "obligations": obligations(inp, cfg)} if {
	inp.risk.tier == "low"
} else := {"effect": "approve", "reasons": [score_reason(inp)], "obligations": obligations(inp, cfg)} if {
	inp.risk.tier == "medium"
} else := {"effect": "restrict", "reasons": [score_reason(inp)], "restrictions": [restriction_for(inp, cfg)]} if {
	inp.risk.tier == "high"
} else := {"effect": "isolate", "reasons": [score_reason(inp)]} if {
	inp.risk.tier == "critical"
}

obligations(inp, cfg) := array.concat(mask_obligations(inp, cfg), header_obligations(inp, cfg))

# Masking: values carrying these labels are hidden from agents without an exempt role.
mask_obligations(inp, cfg) := [] if {
	count(inp.action.labels) == 0
} else := [] if {
	count(masked_labels(inp, cfg)) == 0
} else := mask_obligation(inp, cfg)

mask_obligation(inp, cfg) := [{"type": "mask", "labels": sort([l | some l in masked_labels(inp, cfg)])}]

# The verified agent id, on requests to services behind a mesh (ext_authz), so the
# service need not trust what the caller claims.
header_obligations(inp, cfg) := [{"type": "add_header", "name": cfg.identity_header.name, "value": inp.agent.id}] if {
	inp.action.protocol in object.get(object.get(cfg, "identity_header", {}), "protocols", [])
} else := []

masked_labels(inp, cfg) := set() if {
	some role in inp.agent.roles
	role in cfg.mask.exempt_roles
} else := labels_to_mask(inp, cfg)

labels_to_mask(inp, cfg) := {l | some l in inp.action.labels; l in cfg.mask.labels}

score_reason(inp) := concat("", ["risk ", inp.risk.tier, " (", format_int(inp.risk.score, 10), ")"])

# The one permission a high-risk action costs the agent.
restriction_for(inp, cfg) := concat("", ["tool:", inp.action.target]) if {
	inp.action.operation == "tool_call"
} else := cfg.restriction_for_operation[inp.action.operation] if {
	cfg.restriction_for_operation[inp.action.operation]
} else := cfg.default_restriction

# Files no agent reads or writes through a proxy: credentials, sudoers, SSH keys. File
# operations are checked on their path; shell commands on the paths they name.
path_denials(inp, cfg) := set() if {
	not inp.action.operation in {"file_read", "file_write", "exec"}
} else := set() if {
	# One built-in call over every path first: a command may name hundreds of paths, and
	# a function call per path and entry costs rego-cpp tens of microseconds each.
	not any_protected(touched_paths(inp), inp.action.protocol, object.get(cfg, "protected_paths", {}))
} else := protected_found(inp, cfg)

protected_found(inp, cfg) := {concat("", ["protected path: ", path]) |
	some path in protected_among(touched_paths(inp), inp.action.protocol, object.get(cfg, "protected_paths", {}))
}

# A link's target counts as touched: the link is a way to reach it later. Arrays, not a
# set comprehension: rego-cpp builds sets in time quadratic in their size.
touched_paths(inp) := array.concat([inp.action.target], object.get(inp.action.details, "link_targets", [])) if {
	inp.action.operation in {"file_read", "file_write"}
} else := array.concat(array.concat(object.get(inp.action.details, "reads", []), object.get(inp.action.details, "writes", [])), object.get(inp.action.details, "trees", []))

any_protected(paths, protocol, table) if strings.any_prefix_match(paths, object.get(table, protocol, []))

any_protected(paths, protocol, table) if {
	strings.any_suffix_match(paths, object.get(table, concat("", [protocol, "_suffixes"]), []))
}

# A path naming a protected directory itself: the path plus "/" is a protected prefix
# (a lookup per path, not a comprehension over the table per decision).
any_protected(paths, protocol, table) if {
	some p in paths
	concat("", [p, "/"]) in object.get(table, protocol, [])
}

# A path with a protected directory anywhere in it (`<protocol>_inside`: "/.ssh/" is
# every home's .ssh, and every file in it, whatever its name).
any_protected(paths, protocol, table) if {
	some s in object.get(table, concat("", [protocol, "_inside"]), [])
	some p in paths
	contains(p, s)
}

# Paths under a protected prefix, ending in a protected suffix, or naming a protected
# directory itself ("/root/.ssh/" protects "/root/.ssh").
protected_among(paths, protocol, table) := {p | some p in paths; strings.any_prefix_match(p, object.get(table, protocol, []))} | {p |
	some p in paths
	strings.any_suffix_match(p, object.get(table, concat("", [protocol, "_suffixes"]), []))
} | {p | some p in paths; concat("", [p, "/"]) in object.get(table, protocol, [])} | {p |
	some s in object.get(table, concat("", [protocol, "_inside"]), [])
	some p in paths
	contains(p, s)
}

# MCP tool arguments and file: resources that name local files (`details.paths`, resolved
# by the stdio gateway as the server on the same machine resolves them, links followed)
# meet the protected paths of SSH/SFTP: a file server is another way to the same files.
mcp_path_denials(inp, cfg) := set() if {
	count(object.get(inp.action.details, "paths", [])) == 0
} else := mcp_paths_found(inp, cfg)

mcp_paths_found(inp, cfg) := {concat("", ["protected path: ", p]) |
	inp.action.protocol == "mcp"
	some p in protected_among(inp.action.details.paths, "ssh", object.get(cfg, "protected_paths", {}))
}

# Globs (`details.globs`: absolute patterns where only * and ? are special) are refused
# when some path they could match is protected, lies under a protected prefix, or is a
# directory holding one. Compared one path component at a time, with the shell's rule
# that a leading dot is only matched by a dot (bash without dotglob).
glob_denials(inp, cfg) := set() if {
	count(object.get(inp.action.details, "globs", [])) == 0
} else := globs_found(inp, cfg)

# (Comprehensions live in helpers, never in an `else` branch: regorus does not schedule
# them there; see docs/policy-input.md.)
globs_found(inp, cfg) := {concat("", ["protected path: ", g, " may match ", p]) |
	some g in inp.action.details.globs
	some p in object.get(object.get(cfg, "protected_paths", {}), inp.action.protocol, [])
	glob_reaches(split(g, "/"), split(trim_suffix(p, "/"), "/"))
} | {concat("", ["protected path: ", g, " may match *", s]) |
	some g in inp.action.details.globs
	some s in object.get(object.get(cfg, "protected_paths", {}), concat("", [inp.action.protocol, "_suffixes"]), [])
	glob_ends_with(split(g, "/"), split(trim_suffix(s, "/"), "/"))
} | {concat("", ["protected path: ", g, " may match *", s, "*"]) |
	some g in inp.action.details.globs
	some s in object.get(object.get(cfg, "protected_paths", {}), concat("", [inp.action.protocol, "_inside"]), [])
	some c in split(g, "/")
	component_match(c, trim(s, "/"))
}

# A recursive operation (`details.trees`: grep -r, cp -r, tar, find -exec...) on a
# directory above a protected prefix reaches it; so does a link to such a directory.
tree_denials(inp, cfg) := set() if {
	count(object.get(inp.action.details, "trees", [])) == 0
	count(object.get(inp.action.details, "link_targets", [])) == 0
} else := trees_found(inp, cfg)

trees_found(inp, cfg) := {concat("", ["protected path: ", p, " is under ", t]) |
	some t in array.concat(object.get(inp.action.details, "trees", []), object.get(inp.action.details, "link_targets", []))
	some p in object.get(object.get(cfg, "protected_paths", {}), inp.action.protocol, [])
	startswith(p, concat("", [trim_suffix(t, "/"), "/"]))
}

# The pattern matches a directory above the protected path.
glob_reaches(gc, pc) if {
	count(gc) < count(pc)
	every i, c in gc {
		component_match(c, pc[i])
	}
}

# The pattern matches the protected path, or a path it is a string prefix of.
glob_reaches(gc, pc) if {
	count(gc) >= count(pc)
	k := count(pc) - 1
	every i in numbers.range(0, k - 1) {
		component_match(gc[i], pc[i])
	}
	not hidden_from(gc[k], pc[k])
	some j in numbers.range(0, count(gc[k]))
	glob.match(substring(gc[k], 0, j), ["/"], pc[k])
}

glob_ends_with(gc, sc) if {
	m := count(sc) - 1
	count(gc) > m
	every i in numbers.range(1, m) {
		component_match(gc[(count(gc) - m - 1) + i], sc[i])
	}
}

component_match(pattern, name) if {
	not hidden_from(pattern, name)
	glob.match(pattern, ["/"], name)
}

hidden_from(pattern, name) if {
	startswith(name, ".")
	not startswith(pattern, ".")
}

# `path_roots.<protocol>`: when set, the only directories an agent's paths (and link
# targets and globs) may be in.
root_denials(inp, cfg) := set() if {
	count(object.get(object.get(cfg, "path_roots", {}), inp.action.protocol, [])) == 0
} else := set() if {
	not inp.action.operation in {"file_read", "file_write", "exec"}
} else := outside_roots(inp, cfg)

outside_roots(inp, cfg) := {concat("", ["outside the allowed directories: ", path]) |
	roots := cfg.path_roots[inp.action.protocol]
	inside := [concat("", [trim_suffix(r, "/"), "/"]) | some r in roots]
	itself := [trim_suffix(r, "/") | some r in roots]
	some path in touched_paths(inp)
	not strings.any_prefix_match(path, inside)
	not path in itself
}
