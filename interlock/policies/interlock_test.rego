# Unit tests of the bundled policy; run with `interlock policy test`.
package interlock_test

import rego.v1

import data.interlock

cfg := data.interlock.policy

base := {
	"agent": {"id": "reporter", "roles": ["analyst"], "owner": "alice@example.com", "delegation": [], "authn": "token"},
	"action": {"protocol": "postgres", "operation": "read", "target": "public.orders", "details": {}, "labels": [], "threat_matches": []},
	"context": {"taints": [], "first_seen": false, "posture": {"restrictions": [], "isolated": false}},
	"risk": {"score": 5, "tier": "low", "signals": {}},
	"time": {"hour": 12, "weekday": 2},
}

tiered(doc, tier, score) := object.union(doc, {"risk": {"score": score, "tier": tier, "signals": {}}})

acting(doc, op, target) := object.union(doc, {"action": object.union(doc.action, {"operation": op, "target": target})})

postured(doc, restrictions, isolated) := object.union(doc, {"context": object.union(doc.context, {"posture": {"restrictions": restrictions, "isolated": isolated}})})

tainted(doc, taints, first_seen) := object.union(doc, {"context": object.union(doc.context, {"taints": taints, "first_seen": first_seen})})

test_low_tier_allows if {
	interlock.decide(base, cfg).effect == "allow"
}

test_no_trial_rule_no_shadow_findings if {
	not "shadow" in object.keys(interlock.decide_with_trials(acting(base, "egress", "example.org"), cfg))
}

test_a_trial_rule_is_a_shadow_finding_and_changes_no_effect if {
	trial := object.union(cfg, {"trial": {"deny_egress_hosts": ["example.org"]}})
	d := interlock.decide_with_trials(acting(base, "egress", "example.org"), trial)
	d.effect == "allow"
	d.shadow == [{"effect": "deny", "reason": "trial: egress to example.org"}]
	not "shadow" in object.keys(interlock.decide_with_trials(acting(base, "egress", "other.org"), trial))
}

test_medium_tier_holds_for_approval if {
	interlock.decide(tiered(base, "medium", 40), cfg).effect == "approve"
}

test_high_tier_write_restricts_to_read_only if {
	d := interlock.decide(acting(tiered(base, "high", 70), "write", "public.orders"), cfg)
	d.effect == "restrict"
	d.restrictions == ["read_only"]
}

test_high_tier_egress_removes_egress if {
	d := interlock.decide(acting(tiered(base, "high", 70), "egress", "api.example.com"), cfg)
	d.restrictions == ["no_egress"]
}

test_high_tier_tool_call_disables_that_tool if {
	d := interlock.decide(acting(tiered(base, "high", 70), "tool_call", "shell"), cfg)
	d.restrictions == ["tool:shell"]
}

test_high_tier_unmapped_operation_gets_default_restriction if {
	d := interlock.decide(acting(tiered(base, "high", 70), "connect", "db"), cfg)
	d.restrictions == [cfg.default_restriction]
}

test_critical_tier_isolates if {
	interlock.decide(tiered(base, "critical", 90), cfg).effect == "isolate"
}

test_unknown_tier_is_undefined_so_the_pdp_denies if {
	not interlock.decide(tiered(base, "extreme", 99), cfg)
}

test_isolated_agent_denied_at_low_score if {
	d := interlock.decide(postured(base, [], true), cfg)
	d.effect == "deny"
	"agent is isolated" in d.reasons
}

test_read_only_denies_write_at_low_score if {
	interlock.decide(acting(postured(base, ["read_only"], false), "write", "public.orders"), cfg).effect == "deny"
}

test_read_only_keeps_reads if {
	interlock.decide(postured(base, ["read_only"], false), cfg).effect == "allow"
}

test_no_egress_denies_egress if {
	interlock.decide(acting(postured(base, ["no_egress"], false), "egress", "x.example"), cfg).effect == "deny"
}

test_disabled_tool_denied_other_tools_allowed if {
	doc := postured(base, ["tool:shell"], false)
	interlock.decide(acting(doc, "tool_call", "shell"), cfg).effect == "deny"
	interlock.decide(acting(doc, "tool_call", "search"), cfg).effect == "allow"
}

test_no_delegation_denies_delegate if {
	interlock.decide(acting(postured(base, ["no_delegation"], false), "delegate", "helper"), cfg).effect == "deny"
}

test_unauthenticated_agent_denied if {
	doc := object.union(base, {"agent": object.union(base.agent, {"authn": "none"})})
	interlock.decide(doc, cfg).effect == "deny"
}

test_threat_intel_match_denied if {
	doc := object.union(base, {"action": object.union(base.action, {"threat_matches": ["feed:bad.example"]})})
	d := interlock.decide(doc, cfg)
	d.effect == "deny"
	d.reasons == ["threat intel: feed:bad.example"]
}

test_threat_intel_can_isolate if {
	doc := object.union(base, {"action": object.union(base.action, {"threat_matches": ["feed:bad.example"]})})
	interlock.decide(doc, object.union(cfg, {"isolate_on_threat_intel": true})).effect == "isolate"
}

test_exfiltration_pattern_isolates if {
	doc := tainted(acting(base, "egress", "paste.example"), ["restricted_data_read", "untrusted_content"], true)
	interlock.decide(doc, cfg).effect == "isolate"
}

test_exfiltration_pattern_isolates_a_request_shaped_as_a_prompt if {
	# An HTTP request is egress whatever the proxy reads it as: the agent writes the shape.
	prompt := acting(base, "prompt", "paste.example")
	doc := object.union(prompt, {"action": object.union(prompt.action, {"details": {"effects": ["egress"]}})})
	interlock.decide(tainted(doc, ["restricted_data_read", "untrusted_content"], true), cfg).effect == "isolate"
	interlock.decide(tainted(prompt, ["restricted_data_read", "untrusted_content"], true), cfg).effect == "allow"
}

test_no_egress_stops_a_request_shaped_as_a_prompt if {
	prompt := acting(base, "prompt", "paste.example")
	doc := object.union(prompt, {"action": object.union(prompt.action, {"details": {"effects": ["egress"]}})})
	d := interlock.decide(postured(doc, ["no_egress"], false), cfg)
	d.effect == "deny"
	"posture no_egress: this action sends data out" in d.reasons
	interlock.decide(postured(prompt, ["no_egress"], false), cfg).effect == "allow"
}

test_exfiltration_needs_first_seen_destination if {
	doc := tainted(acting(base, "egress", "api.example"), ["restricted_data_read", "untrusted_content"], false)
	interlock.decide(doc, cfg).effect == "allow"
}

test_exfiltration_needs_untrusted_content if {
	doc := tainted(acting(base, "egress", "paste.example"), ["restricted_data_read"], true)
	interlock.decide(doc, cfg).effect == "allow"
}

test_forbidden_operation_denied if {
	doc := acting(base, "ddl", "public.orders")
	interlock.decide(doc, object.union(cfg, {"forbidden_operations": {"postgres": ["ddl"]}})).effect == "deny"
	interlock.decide(doc, cfg).effect == "allow"
}

test_hard_deny_reasons_are_all_listed if {
	doc := acting(postured(base, ["read_only"], true), "write", "public.orders")
	d := interlock.decide(doc, cfg)
	d.reasons == ["agent is isolated", "posture read_only: this operation writes"]
}

test_disabled_tool_reason_names_the_tool if {
	doc := acting(postured(base, ["tool:shell"], false), "tool_call", "shell")
	interlock.decide(doc, cfg).reasons == ["posture tool:shell: this tool is disabled"]
}

test_score_reason_states_tier_and_score if {
	interlock.decide(tiered(base, "medium", 42), cfg).reasons == ["risk medium (42)"]
}

test_forbidden_sql_flags_are_denied if {
	doc := object.union(base, {"action": object.union(base.action, {"details": {"flags": ["copy", "copy_program"]}})})
	d := interlock.decide(doc, cfg)
	d.effect == "deny"
	d.reasons == ["forbidden construct: copy_program"]
}

test_server_files_and_sql_in_strings_are_denied if {
	every flag in ["copy_file", "dynamic_sql", "load_library", "risky_function", "unparsed"] {
		doc := object.union(base, {"action": object.union(base.action, {"details": {"flags": ["copy", flag]}})})
		interlock.decide(doc, cfg).effect == "deny"
	}
}

test_sql_that_may_write_is_denied_to_read_only if {
	details := {"flags": ["volatile_function"], "effects": ["write"]}
	doc := object.union(base, {"action": object.union(base.action, {"operation": "exec", "details": details})})
	interlock.decide(doc, cfg).effect == "allow"
	d := interlock.decide(postured(doc, ["read_only"], false), cfg)
	d.effect == "deny"
	"posture read_only: this command writes" in d.reasons
}

test_harmless_sql_flags_are_not_denied if {
	doc := object.union(base, {"action": object.union(base.action, {"details": {"flags": ["copy"]}})})
	interlock.decide(doc, cfg).effect == "allow"
}

test_pii_reads_carry_a_mask_obligation if {
	doc := object.union(base, {"action": object.union(base.action, {"labels": ["pii", "financial"]})})
	d := interlock.decide(doc, cfg)
	d.effect == "allow"
	d.obligations == [{"type": "mask", "labels": ["pii"]}]
}

test_exempt_role_reads_unmasked if {
	doc := object.union(base, {
		"agent": object.union(base.agent, {"roles": ["pii_reader"]}),
		"action": object.union(base.action, {"labels": ["pii"]}),
	})
	interlock.decide(doc, cfg).obligations == []
}

test_mesh_requests_carry_the_verified_agent_id if {
	mesh := object.union(base, {"action": object.union(base.action, {"protocol": "envoy"})})
	d := interlock.decide(mesh, cfg)
	d.effect == "allow"
	{"type": "add_header", "name": "x-interlock-agent", "value": "reporter"} in d.obligations
}

test_other_protocols_get_no_identity_header if {
	d := interlock.decide(base, cfg)
	every o in d.obligations {
		o.type != "add_header"
	}
}

ssh_exec(details) := object.union(base, {"action": object.union(base.action, {"protocol": "ssh", "operation": "exec", "target": "web1", "details": details})})

test_ssh_evasion_flags_are_denied if {
	d := interlock.decide(ssh_exec({"flags": ["obfuscation"], "effects": ["write"]}), cfg)
	d.effect == "deny"
	"forbidden construct: obfuscation" in d.reasons
}

test_read_only_posture_stops_commands_that_write if {
	d := interlock.decide(postured(ssh_exec({"effects": ["write"]}), ["read_only"], false), cfg)
	d.effect == "deny"
	interlock.decide(postured(ssh_exec({"effects": []}), ["read_only"], false), cfg).effect == "allow"
}

test_no_egress_posture_stops_commands_that_reach_out if {
	d := interlock.decide(postured(ssh_exec({"effects": ["egress"]}), ["no_egress"], false), cfg)
	d.effect == "deny"
}

ssh_file(op, path) := object.union(base, {"action": object.union(base.action, {"protocol": "ssh", "operation": op, "target": path})})

test_protected_paths_are_denied if {
	interlock.decide(ssh_file("file_read", "/etc/shadow"), cfg).effect == "deny"
	interlock.decide(ssh_file("file_write", "/home/deploy/.ssh/authorized_keys"), cfg).effect == "deny"
	interlock.decide(ssh_file("file_write", "/tmp/report.txt"), cfg).effect == "allow"
}

test_protected_directories_and_commands if {
	interlock.decide(ssh_file("file_write", "/root/.ssh"), cfg).effect == "deny"
	interlock.decide(ssh_file("file_write", "/home/deploy/.ssh"), cfg).effect == "deny"
	interlock.decide(ssh_exec({"reads": ["/etc/shadow"], "effects": []}), cfg).effect == "deny"
	interlock.decide(ssh_exec({"reads": ["/etc/hosts"], "effects": []}), cfg).effect == "allow"
}

# `/etc/ssh/` is protected as a prefix and no suffix names it: only the rule for a path
# that is a protected directory itself catches these.
test_a_protected_directory_itself_is_denied if {
	interlock.decide(ssh_file("file_write", "/etc/ssh"), cfg).effect == "deny"
	interlock.decide(ssh_file("file_write", "/etc/ssh"), cfg).reasons == ["protected path: /etc/ssh"]
	interlock.decide(ssh_exec({"reads": ["/etc/ssh"], "effects": []}), cfg).effect == "deny"
	interlock.decide(ssh_exec({"writes": ["/tmp/x", "/etc/ssh"], "effects": ["write"]}), cfg).effect == "deny"
	interlock.decide(ssh_file("file_write", "/etc/ss"), cfg).effect == "allow"
	interlock.decide(ssh_file("file_write", "/etc"), cfg).effect == "allow"
}

test_ssh_unresolved_and_truncated_commands_are_denied if {
	interlock.decide(ssh_exec({"flags": ["unresolved"], "unresolved": ["$F: ..."], "effects": []}), cfg).effect == "deny"
	interlock.decide(ssh_exec({"flags": ["truncated", "unparsable"], "effects": []}), cfg).effect == "deny"
}

ssh_glob(g) := ssh_exec({"reads": [g], "globs": [g], "flags": ["glob"], "effects": []})

test_globs_that_may_match_a_protected_path_are_denied if {
	every g in ["/etc/shad*", "/etc/sh?dow", "/etc/*", "/e*/shadow", "/etc/shadow*", "/e*", "/*", "/root/.s*/id_rsa", "/home/*/.ssh/authorized_k*", "/home/deploy/.*", "/etc/ss?/sshd_config", "/home/*/.??h/id_rsa", "/data/*/.ssh"] {
		interlock.decide(ssh_glob(g), cfg).effect == "deny"
	}
}

test_globs_away_from_protected_paths_are_allowed if {
	every g in ["/tmp/*.log", "/home/deploy/*.txt", "/etc/host*", "/var/log/*/x", "/home/deploy/src/*.py", "/data/*", "/home/*/?ssh/id_rsa"] {
		interlock.decide(ssh_glob(g), cfg).effect == "allow"
	}
}

ssh_link(path, targets) := object.union(base, {"action": object.union(base.action, {"protocol": "ssh", "operation": "file_write", "target": path, "details": {"link_targets": targets}})})

rooted := object.union(cfg, {"path_roots": {"ssh": ["/data/"]}})

test_path_roots_confine_paths_globs_and_link_targets if {
	interlock.decide(ssh_exec({"reads": ["/data/a", "/data"], "effects": []}), rooted).effect == "allow"
	interlock.decide(ssh_exec({"reads": ["/etc/passwd"], "effects": []}), rooted).effect == "deny"
	interlock.decide(ssh_exec({"reads": ["/database"], "effects": []}), rooted).effect == "deny"
	interlock.decide(ssh_glob("/data/*"), rooted).effect == "allow"
	interlock.decide(ssh_glob("/dat*/x"), rooted).effect == "deny"
	interlock.decide(ssh_file("file_read", "/data/x"), rooted).effect == "allow"
	interlock.decide(ssh_link("/data/l", ["/etc/passwd"]), rooted).effect == "deny"
	interlock.decide(ssh_link("/data/l", ["/data/x"]), rooted).effect == "allow"
}

test_link_targets_under_protected_paths_are_denied if {
	interlock.decide(ssh_link("/tmp/l", ["/etc/shadow"]), cfg).effect == "deny"
	interlock.decide(ssh_link("/tmp/l", ["/etc"]), cfg).effect == "deny"
	interlock.decide(ssh_link("/tmp/l", ["/"]), cfg).effect == "deny"
	interlock.decide(ssh_exec({"reads": ["/root"], "link_targets": ["/root"], "effects": []}), cfg).effect == "deny"
	interlock.decide(ssh_link("/tmp/l", ["/tmp/x"]), cfg).effect == "allow"
}

test_recursive_operations_above_protected_paths_are_denied if {
	interlock.decide(ssh_exec({"reads": ["/etc"], "trees": ["/etc"], "effects": []}), cfg).effect == "deny"
	interlock.decide(ssh_exec({"reads": ["/"], "trees": ["/"], "effects": []}), cfg).effect == "deny"
	interlock.decide(ssh_exec({"reads": ["/srv/app"], "trees": ["/srv/app"], "effects": []}), cfg).effect == "allow"
	interlock.decide(ssh_exec({"reads": [], "trees": ["/srv"], "effects": []}), rooted).effect == "deny"
}

mcp_tool(paths) := object.union(base, {"action": {"protocol": "mcp", "operation": "tool_call", "target": "read_text_file", "details": {"paths": paths, "arguments": ["path"]}, "labels": [], "threat_matches": []}})

test_mcp_tool_paths_meet_the_ssh_protected_paths if {
	d := interlock.decide(mcp_tool(["/tmp/work/notes.txt", "/etc/shadow"]), cfg)
	d.effect == "deny"
	"protected path: /etc/shadow" in d.reasons
	interlock.decide(mcp_tool(["/home/deploy/.ssh/authorized_keys"]), cfg).effect == "deny"
	interlock.decide(mcp_tool(["/root/.ssh"]), cfg).effect == "deny"
}

test_mcp_tool_with_ordinary_paths_is_decided_by_risk if {
	interlock.decide(mcp_tool(["/tmp/work/notes.txt"]), cfg).effect == "allow"
	interlock.decide(mcp_tool([]), cfg).effect == "allow"
}
