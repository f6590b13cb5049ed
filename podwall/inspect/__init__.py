"""Inspectors that look inside allowed connections: network threats, WAF, SQL injection, DLP."""
