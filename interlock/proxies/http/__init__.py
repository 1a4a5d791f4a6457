"""The HTTPS egress proxy: mitmproxy addons around the PDP."""
