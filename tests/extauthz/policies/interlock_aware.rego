# An OPA-Envoy-mode policy that also reads the interlock context (input.interlock).
package envoy.aware

import rego.v1

default allow := false

allow if {
	input.interlock.agent.id == "coder"
	not "prompt_injection_suspected" in input.interlock.context.taints
	input.parsed_path[0] == "people"
}
