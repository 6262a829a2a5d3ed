"""Tests of the SSH host driver against a real OpenSSH server."""
