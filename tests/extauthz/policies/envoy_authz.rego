# A policy in the style of OPA's Envoy plugin documentation (the HTTP API example): run
# unchanged in interlock's OPA-Envoy mode. Guests and admins may list people; only
# admins may add one, and not themselves (read from the parsed JSON body).
package envoy.authz

import rego.v1

import input.attributes.request.http as http_request

default allow := false

allow if {
	is_token_valid
	action_allowed
}

is_token_valid if {
	token.valid
	now := time.now_ns() / 1000000000
	token.payload.nbf <= now
	now < token.payload.exp
}

action_allowed if {
	http_request.method == "GET"
	token.payload.role in {"guest", "admin"}
	glob.match("/people", ["/"], http_request.path)
}

action_allowed if {
	http_request.method == "POST"
	token.payload.role == "admin"
	glob.match("/people", ["/"], http_request.path)
	lower(input.parsed_body.firstname) != base64url.decode(token.payload.sub)
}

token := {"valid": valid, "payload": payload} if {
	[_, encoded] := split(http_request.headers.authorization, " ")
	[valid, _, payload] := io.jwt.decode_verify(encoded, {"secret": "opa-envoy-test-secret-0123456789abcdef"})
}

# The object form of the result, with everything OPA's plugin lets a policy say.
default result := {"allowed": false, "http_status": 401, "body": "who are you?", "headers": {"x-why": "no-token"}}

result := {
	"allowed": true,
	"headers": {"x-user-role": token.payload.role},
	"request_headers_to_remove": ["authorization"],
	"response_headers_to_add": {"x-policy": "envoy.authz"},
	"dynamic_metadata": {"role": token.payload.role},
} if {
	allow
}

result := {"allowed": false, "http_status": 403, "body": "not for you", "headers": {"x-why": "role"}} if {
	is_token_valid
	not allow
}

