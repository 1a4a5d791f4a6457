# Policies in the style of OPA's Envoy plugin documentation that read form bodies from
# input.parsed_body, as the plugin gives them (field name -> list of values): an HTML form
# adding a person, and an upload whose JSON manifest part is parsed as JSON.
package envoy.forms

import rego.v1

import input.attributes.request.http as http_request

default allow := false

allow if {
	http_request.method == "POST"
	glob.match("/people", ["/"], http_request.path)
	count(input.parsed_body.firstname) == 1
	lower(input.parsed_body.firstname[0]) != "alice"
}

allow if {
	http_request.method == "POST"
	glob.match("/uploads", ["/"], http_request.path)
	input.parsed_body.kind == ["report"]
	manifest := input.parsed_body.manifest[0]
	manifest.pages <= 10
}

# The plugin sets the top-level decision_id in dynamic metadata itself, over the policy's.
result := {"allowed": allow, "dynamic_metadata": {"decision_id": "chosen-by-policy"}}
