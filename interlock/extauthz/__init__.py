"""Envoy ext_authz (gRPC) and HTTP authz (NGINX auth_request).

One pipeline, a module per stage: request -> input, evaluate, result -> response.
"""
